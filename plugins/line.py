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
"""

from __future__ import annotations

import attrs
from zope.interface import implementer

from plugins._support import BundledPlugin, CheckedOptions, LineReader, ReadingProtocol
from supervisor.interfaces import IConnectionHandle, ISupervisedProtocol
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
