"""
The C{line} protocol: text lines ending in C{\\r\\n} or C{\\n}.

- Heartbeat: sends C{PING <token>\\r\\n}, expects C{PONG <token>}.
- A peer's C{PING [payload]} is answered with C{PONG [payload]}.
- No handshake: the connection is ready as soon as the transport is up
  (on C{tls:} endpoints the supervisor holds that until TLS has completed).
- Any other line counts as proof of life (option C{lines_are_liveness},
  default true) and is otherwise ignored.
- Nothing to drain: the connection is closed at once.

Options (L{Options}): C{lines_are_liveness} (bool), C{max_line_length} (int,
default 16384: a longer line is a protocol error and drops the connection).

Applications send lines with L{sendLine} on a supervised connection or pool.
"""

from __future__ import annotations

from functools import partial

import attrs
from twisted.internet.defer import Deferred
from zope.interface import implementer

from plugins._support import (
    BundledPlugin,
    CheckedOptions,
    LineReader,
    ReadingProtocol,
    speaking,
)
from supervisor.interfaces import IConnectionHandle, ISupervisedProtocol
from supervisor.operations import Submitter
from supervisor.options import Flag, Integer, setting


@attrs.frozen
class Options(CheckedOptions):
    """
    The C{line} plugin's options (see C{docs/plugins/line.md}).
    """

    lines_are_liveness: bool = setting(True, Flag())
    max_line_length: int = setting(16384, Integer(1))


@implementer(ISupervisedProtocol)
class LineProtocol(ReadingProtocol[bytes]):
    """
    One connection speaking the line protocol.
    """

    def __init__(self, handle: IConnectionHandle, options: Options) -> None:
        super().__init__(handle, LineReader(b"\n", options.max_line_length))
        self.options = options

    def connectionMade(self) -> None:
        self.handle.ready()

    def received(self, line: bytes) -> None:
        verb, _, payload = line.removesuffix(b"\r").partition(b" ")
        if verb == b"PONG":
            self.handle.pong(payload)
        elif verb == b"PING":
            self.sendLine(b"PONG " + payload if payload else b"PONG")
        elif self.options.lines_are_liveness:
            self.handle.activity()

    def sendLine(self, line: bytes) -> None:
        """
        Write one line, ending it in C{\\r\\n}.
        """
        self.write(line + b"\r\n")

    def sendPing(self, token: bytes) -> None:
        self.writePing(b"PING " + token + b"\r\n")


linePlugin = BundledPlugin("line", Options, LineProtocol)


def sendLine(connection: Submitter, line: bytes) -> Deferred[None]:
    """
    Send C{line} (without its line ending: C{\\r\\n} is added) on a
    supervised C{line} connection or pool, in turn with what was submitted
    before it.

    @return: fires once the line is written to the transport (the protocol
        has no acknowledgement), or fails as any submitted operation
        (L{supervisor.operations}).
    @raise ValueError: C{line} holds a line break (it would send two
        lines); nothing is submitted.
    """
    if b"\n" in line or b"\r" in line:
        raise ValueError("a line to send must not hold \\r or \\n")
    return connection.submit(partial(_send, line))


def _send(line: bytes, protocol: object) -> None:
    if not isinstance(protocol, LineProtocol):
        protocol = speaking(protocol, LineProtocol, "line")
    protocol.write(line + b"\r\n")
