"""
The C{int32} protocol: frames prefixed by their length as a 32-bit
big-endian unsigned integer (the framing of Twisted's C{Int32StringReceiver}).

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

Applications send frames with L{sendFrame} on a supervised connection or pool,
or many at once, as one operation, with L{sendFrames}.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import partial
from itertools import chain
from struct import Struct

import attrs
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from plugins._support import (
    BundledPlugin,
    CheckedOptions,
    ProtocolError,
    ReadingProtocol,
    batchOf,
    speaking,
)
from supervisor.interfaces import (
    IConnectionHandle,
    IDrainable,
    ISupervisedProtocol,
    OptionError,
)
from supervisor.operations import Submitter
from supervisor.options import Flag, Integer, Text, setting

MAX_FRAME_LENGTH = 2**32 - 1
"""The longest frame a 32-bit length prefix can announce."""

_prefix = Struct(">I").pack


@attrs.frozen
class Bytes:
    """
    Bytes, written as a string: Latin-1, or UTF-8 when it does not fit.
    """

    empty: bool = True

    def expected(self) -> str:
        return "a string" if self.empty else "a non-empty string"

    def check(self, value: object, key: str) -> bytes:
        if isinstance(value, bytes):
            data = value
        else:
            text = Text(self.expected(), maxLength=65536).check(value, key)
            try:
                data = text.encode("latin-1")
            except UnicodeEncodeError:
                data = text.encode("utf-8")
        if not (data or self.empty):
            raise OptionError(key, f"expected {self.expected()}, got an empty string")
        return data


@attrs.frozen
class Options(CheckedOptions):
    """
    The C{int32} plugin's options (see C{docs/plugins/int32.md}).
    """

    ping: bytes = setting(b"PING ", Bytes(empty=False))
    pong: bytes = setting(b"PONG ", Bytes(empty=False))
    hello: bytes = setting(b"", Bytes())
    welcome: bytes = setting(b"", Bytes())
    denied: bytes = setting(b"", Bytes())
    goodbye: bytes = setting(b"", Bytes())
    ready_on_connect: bool = setting(True, Flag())
    frames_are_liveness: bool = setting(True, Flag())
    answer_pings: bool = setting(True, Flag())
    max_frame_length: int = setting(65536, Integer(1, MAX_FRAME_LENGTH))


class FrameReader:
    """
    Length-prefixed frames, in time linear in the bytes received; a frame
    announced longer than C{maxLength} is refused from its prefix alone.
    """

    def __init__(self, maxLength: int) -> None:
        self.maxLength = maxLength
        self.buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        buffer = self.buffer
        buffer += data
        while len(buffer) >= 4:
            length = int.from_bytes(buffer[:4], "big")
            if length > self.maxLength:
                raise ProtocolError(
                    f"frame of {length} bytes is longer than max_frame_length {self.maxLength}"
                )
            end = 4 + length
            if len(buffer) < end:
                return
            frame = bytes(buffer[4:end])
            del buffer[:end]
            yield frame


def frame(payload: bytes) -> bytes:
    """
    C{payload} as one frame.
    """
    return len(payload).to_bytes(4, "big") + payload


def frames(payloads: list[bytes]) -> bytes:
    """
    C{payloads} as frames, one after the other (in time linear in their
    bytes, without a Python step per frame).

    @raise struct.error: a payload is longer than L{MAX_FRAME_LENGTH}.
    """
    prefixes = map(_prefix, map(len, payloads))
    return b"".join(chain.from_iterable(zip(prefixes, payloads, strict=True)))


@implementer(ISupervisedProtocol, IDrainable)
class Int32Protocol(ReadingProtocol[bytes]):
    """
    One connection speaking length-prefixed frames.
    """

    def __init__(self, handle: IConnectionHandle, options: Options) -> None:
        super().__init__(handle, FrameReader(options.max_frame_length))
        self.options = options
        self.ready = options.ready_on_connect

    def connectionMade(self) -> None:
        if self.options.hello:
            self.send(self.options.hello)
        if self.ready:
            self.handle.ready()

    def send(self, payload: bytes) -> None:
        """
        Write one frame.
        """
        self.write(frame(payload))

    def received(self, payload: bytes) -> None:
        options = self.options
        if not self.ready:
            self._handshake(payload)
        elif payload.startswith(options.pong):
            self.handle.pong(payload[len(options.pong) :])
        elif payload.startswith(options.ping) and options.answer_pings:
            self.send(options.pong + payload[len(options.ping) :])
        elif options.frames_are_liveness:
            self.handle.activity()

    def _handshake(self, payload: bytes) -> None:
        options = self.options
        if options.denied and payload.startswith(options.denied):
            self.reject(f"denied by peer: {payload[:80]!r}", permanent=True)
        elif payload.startswith(options.welcome):
            self.ready = True
            self.handle.ready()
        else:
            self.reject(f"unexpected first frame {payload[:80]!r}", permanent=False)

    def sendPing(self, token: bytes) -> None:
        self.writePing(frame(self.options.ping + token))

    def drain(self) -> Deferred[None]:
        if self.options.goodbye:
            self.send(self.options.goodbye)
        return succeed(None)


int32Plugin = BundledPlugin("int32", Options, Int32Protocol)


def sendFrame(connection: Submitter, payload: bytes) -> Deferred[None]:
    """
    Send C{payload} as one frame on a supervised C{int32} connection or
    pool, in turn with what was submitted before it.

    @return: fires once the frame is written to the transport (the protocol
        has no acknowledgement); fails with C{ValueError} when the
        payload is longer than the connection's C{max_frame_length} (its
        peer, speaking the same protocol, would refuse it), or as any
        submitted operation (L{supervisor.operations}).
    @raise ValueError: C{payload} is longer than a 32-bit length can say;
        nothing is submitted.
    """
    if len(payload) > MAX_FRAME_LENGTH:
        raise ValueError(f"a frame holds at most {MAX_FRAME_LENGTH} bytes")
    return connection.submit(partial(_write, frame(payload), len(payload)))


def sendFrames(connection: Submitter, payloads: Iterable[bytes]) -> Deferred[None]:
    """
    Send each of C{payloads} as a frame on a supervised C{int32} connection
    or pool as B{one} operation, in turn with what was submitted before it:
    they are written in order, in one write to the transport, nothing else
    between them.

    The batch is one operation for the queue's bound, for backpressure and
    for the counts, as with L{plugins.line.sendLines}; C{payloads} is read
    once, and checked and framed whole before anything is submitted.

    @return: fires with L{None} once all the frames are written to the
        transport; fails with C{ValueError}, none of them written, when one
        payload is longer than the connection's C{max_frame_length}, or as
        any submitted operation (L{supervisor.operations}). An empty batch
        fires with L{None} at once, whatever the connection's state:
        nothing is submitted or counted.
    @raise TypeError: a payload is not L{bytes}; nothing is submitted.
    @raise ValueError: a payload is longer than a 32-bit length can say;
        nothing is submitted.
    """
    batch = batchOf(payloads, "frame")
    if not batch:
        return succeed(None)
    longest = max(map(len, batch))
    if longest > MAX_FRAME_LENGTH:
        raise ValueError(f"a frame holds at most {MAX_FRAME_LENGTH} bytes")
    return connection.submit(partial(_write, frames(batch), longest))


def _write(data: bytes, longest: int, protocol: object) -> None:
    int32 = speaking(protocol, Int32Protocol, "int32")
    limit = int32.options.max_frame_length
    if longest > limit:
        raise ValueError(f"frame of {longest} bytes is longer than max_frame_length {limit}")
    int32.write(data)
