"""
The C{int32} protocol: frames prefixed by their length as a 32-bit
big-endian unsigned integer (Twisted's C{Int32StringReceiver}).

- Heartbeat: sends the frame C{<ping><token>}, expects C{<pong><token>}.
- A peer's frame C{<ping><payload>} is answered with C{<pong><payload>}.
- Handshake: optional. With C{hello} set, that frame is sent on connect.
  With C{ready_on_connect} (default true) the connection is ready at once;
  otherwise the peer's first frame decides: one starting with C{denied}
  (if set) is a permanent rejection, one starting with C{welcome} (any
  frame if C{welcome} is empty) makes the connection ready, anything else
  is a transient handshake error.
- Any other frame counts as proof of life (option C{frames_are_liveness}).
- A frame announced longer than C{max_frame_length} is a protocol error,
  detected from its length prefix: it is never buffered, and the
  connection is rejected (transient).
- Drain: sends C{goodbye} if set; nothing else is in flight.

Byte-valued options are strings in the configuration, encoded as Latin-1
(so C{"\\u0001"} is the byte 0x01), or as UTF-8 if they do not fit.
See C{docs/plugins/int32.md}.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.plugin import IPlugin
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from supervisor.interfaces import (
    Classification,
    IConnectionHandle,
    IDrainable,
    IFailureClassifier,
    IProtocolPlugin,
    ISupervisedProtocol,
)

DEFAULT_MAX_FRAME_LENGTH = 65536


class Int32OptionError(ValueError):
    """
    A connection's C{int32} options are wrong; retrying cannot help.
    """


def _bytes(value: object) -> bytes:
    text = str(value)
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


@attrs.frozen
class Int32Options:
    """
    The C{int32} plugin's options, parsed.
    """

    ping: bytes = b"PING "
    pong: bytes = b"PONG "
    hello: bytes = b""
    welcome: bytes = b""
    denied: bytes = b""
    goodbye: bytes = b""
    readyOnConnect: bool = True
    framesAreLiveness: bool = True
    answerPings: bool = True
    maxFrameLength: int = DEFAULT_MAX_FRAME_LENGTH

    @classmethod
    def fromMapping(cls, options: Mapping[str, object]) -> Int32Options:
        """
        Parse a connection's protocol options.

        @raise ValueError: for an unknown option or a bad value.
        """
        known = {
            "ping": ("ping", _bytes),
            "pong": ("pong", _bytes),
            "hello": ("hello", _bytes),
            "welcome": ("welcome", _bytes),
            "denied": ("denied", _bytes),
            "goodbye": ("goodbye", _bytes),
            "ready_on_connect": ("readyOnConnect", _bool),
            "frames_are_liveness": ("framesAreLiveness", _bool),
            "answer_pings": ("answerPings", _bool),
            "max_frame_length": ("maxFrameLength", lambda v: int(str(v))),
        }
        values: dict[str, object] = {}
        for key, value in options.items():
            if key not in known:
                raise Int32OptionError(f"int32: unknown option {key!r} (known: {', '.join(known)})")
            field, convert = known[key]
            try:
                values[field] = convert(value)
            except ValueError as e:
                raise Int32OptionError(f"int32: option {key!r}: {e}") from None
        parsed = cls(**values)  # type: ignore[arg-type]
        if not parsed.ping or not parsed.pong:
            raise Int32OptionError("int32: ping and pong must not be empty")
        if parsed.maxFrameLength < 1:
            raise Int32OptionError("int32: max_frame_length must be >= 1")
        return parsed


@implementer(ISupervisedProtocol, IDrainable, IFailureClassifier)
class Int32Protocol(Int32StringReceiver):
    """
    One connection speaking length-prefixed frames.
    """

    def __init__(self, handle: IConnectionHandle, options: Int32Options) -> None:
        self.handle = handle
        self.options = options
        self.MAX_LENGTH = options.maxFrameLength
        self.ready = options.readyOnConnect
        self.rejected = False

    def connectionMade(self) -> None:
        if self.options.hello:
            self.send(self.options.hello)
        if self.ready:
            self.handle.ready()

    def send(self, frame: bytes) -> None:
        """
        Write one frame.
        """
        self.sendString(frame)  # type: ignore[no-untyped-call]

    def dataReceived(self, data: bytes) -> None:
        if not self.rejected:
            super().dataReceived(data)  # type: ignore[no-untyped-call]

    def stringReceived(self, frame: bytes) -> None:
        if self.rejected:
            return
        options = self.options
        if not self.ready:
            self._handshake(frame)
        elif frame.startswith(options.pong):
            self.handle.pong(frame[len(options.pong) :])
        elif frame.startswith(options.ping) and options.answerPings:
            self.send(options.pong + frame[len(options.ping) :])
        elif options.framesAreLiveness:
            self.handle.activity()

    def _handshake(self, frame: bytes) -> None:
        options = self.options
        if options.denied and frame.startswith(options.denied):
            self._reject(f"denied by peer: {frame[:80]!r}", permanent=True)
        elif frame.startswith(options.welcome):
            self.ready = True
            self.handle.ready()
        else:
            self._reject(f"unexpected first frame {frame[:80]!r}", permanent=False)

    def lengthLimitExceeded(self, length: int) -> None:
        self._reject(
            f"frame of {length} bytes is longer than max_frame_length {self.MAX_LENGTH}",
            permanent=False,
        )

    def _reject(self, message: str, permanent: bool) -> None:
        self.rejected = True
        self._unprocessed = b""
        self.handle.reject(message, permanent=permanent)

    def sendPing(self, token: bytes) -> None:
        self.send(self.options.ping + token)

    def drain(self) -> Deferred[None]:
        if self.options.goodbye:
            self.send(self.options.goodbye)
        return succeed(None)

    def classifyFailure(self, failure: Failure) -> Classification | None:
        return None


@implementer(IPlugin, IProtocolPlugin, IFailureClassifier)
class Int32Plugin:
    """
    Builds L{Int32Protocol}s.
    """

    name = "int32"

    def buildProtocol(
        self, handle: IConnectionHandle, options: Mapping[str, object]
    ) -> ISupervisedProtocol:
        return Int32Protocol(handle, Int32Options.fromMapping(options))

    def classifyFailure(self, failure: Failure) -> Classification | None:
        """
        Bad options fail the attempt permanently: no retry can fix them.
        """
        if isinstance(failure.value, Int32OptionError):
            return Classification("other", permanent=True)
        return None


int32Plugin = Int32Plugin()
