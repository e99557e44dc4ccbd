"""
The C{line} protocol: text lines ending in C{\\r\\n} or C{\\n}.

- Heartbeat: sends C{PING <token>\\r\\n}, expects C{PONG <token>}.
- A peer's C{PING [payload]} is answered with C{PONG [payload]}.
- No handshake: the connection is ready as soon as the transport is up
  (on C{tls:} endpoints the supervisor holds that until TLS has completed).
- Any other line counts as proof of life (option C{lines_are_liveness},
  default true) and is otherwise ignored.
- Drain: nothing is in flight; the connection is closed at once.

Options: C{lines_are_liveness} (bool), C{max_line_length} (int, default 16384:
a longer line is a protocol error and drops the connection).
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.internet.defer import Deferred, succeed
from twisted.plugin import IPlugin
from twisted.protocols.basic import LineOnlyReceiver
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


@implementer(ISupervisedProtocol, IDrainable, IFailureClassifier)
class LineProtocol(LineOnlyReceiver):
    """
    One connection speaking the line protocol.
    """

    delimiter = b"\n"

    def __init__(self, handle: IConnectionHandle, linesAreLiveness: bool, maxLength: int) -> None:
        self.handle = handle
        self.linesAreLiveness = linesAreLiveness
        self.MAX_LENGTH = maxLength

    def connectionMade(self) -> None:
        self.handle.ready()

    def lineReceived(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        verb, _, payload = line.partition(b" ")
        if verb == b"PONG":
            self.handle.pong(payload)
        elif verb == b"PING":
            self.sendLine(b"PONG " + payload if payload else b"PONG")
        elif self.linesAreLiveness:
            self.handle.activity()

    def sendLine(self, line: bytes) -> None:
        self.transport.writeSequence((line, b"\r\n"))  # type: ignore[union-attr]

    def lineLengthExceeded(self, line: bytes) -> None:
        self.handle.reject(f"line longer than {self.MAX_LENGTH} bytes", permanent=False)

    def sendPing(self, token: bytes) -> None:
        self.sendLine(b"PING " + token)

    def drain(self) -> Deferred[None]:
        return succeed(None)

    def classifyFailure(self, failure: Failure) -> Classification | None:
        return None


@implementer(IPlugin, IProtocolPlugin)
class LinePlugin:
    """
    Builds L{LineProtocol}s.
    """

    name = "line"

    def buildProtocol(
        self, handle: IConnectionHandle, options: Mapping[str, object]
    ) -> ISupervisedProtocol:
        return LineProtocol(
            handle,
            linesAreLiveness=bool(options.get("lines_are_liveness", True)),
            maxLength=int(str(options.get("max_line_length", 16384))),
        )


linePlugin = LinePlugin()
