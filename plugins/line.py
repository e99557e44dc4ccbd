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

Applications send lines with L{sendLine} on a supervised connection or pool,
or many at once, as one operation, with L{sendLines}.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

import attrs
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from plugins._support import (
    BundledPlugin,
    CheckedOptions,
    LineReader,
    ReadingProtocol,
    batchOf,
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

    def sendLines(self, lines: Iterable[bytes]) -> None:
        """
        Write C{lines} in order, each ending in C{\\r\\n}, in one write.
        """
        self.write(b"\r\n".join([*lines, b""]))

    def sendPing(self, token: bytes) -> None:
        self.writePing(b"PING " + token + b"\r\n")


linePlugin = BundledPlugin("line", Options, LineProtocol)

# The line breaks a line to send must not hold, as the byte values that
# C{in} looks for: C{10 in line} is one C{memchr}, while C{b"\\n" in line}
# first tries C{b"\\n"} as an integer, and makes and clears a TypeError,
# some 1,500 instructions, before it searches.
LF = ord("\n")
CR = ord("\r")


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
    if LF in line or CR in line:
        raise ValueError("a line to send must not hold \\r or \\n")
    return connection.submit(partial(_write, line + b"\r\n"))


def sendLines(connection: Submitter, lines: Iterable[bytes]) -> Deferred[None]:
    """
    Send C{lines} (each without its line ending: C{\\r\\n} is added to
    each) on a supervised C{line} connection or pool as B{one} operation, in
    turn with what was submitted before it: they are written in order, in
    one write to the transport, nothing else between them.

    One operation for all: it takes one place in the connection's queue
    (C{queue.max} counts it once, however many lines it holds), counts once
    in C{netsupervisor_operations_total}, and waits, while the transport's
    buffer is full, as one operation does. C{lines} is read once (a
    generator may be given); the lines are checked, and joined, before
    anything is submitted.

    @return: fires with L{None} once all the lines are written to the
        transport, or fails as any submitted operation
        (L{supervisor.operations}): then none of them was written. An
        empty batch fires with L{None} at once, whatever the connection's
        state: nothing is submitted or counted.
    @raise TypeError: a line is not L{bytes}; nothing is submitted.
    @raise ValueError: a line holds a line break (it would send two
        lines); nothing is submitted.
    """
    batch = batchOf(lines, "line")
    if not batch:
        return succeed(None)
    # Checked all at once, at the speed of bytes (a join and two searches),
    # not line by line in Python.
    together = b"".join(batch)
    if LF in together or CR in together:
        index = next(i for i, line in enumerate(batch) if LF in line or CR in line)
        raise ValueError(f"a line to send must not hold \\r or \\n (line {index} of the batch)")
    batch.append(b"")
    return connection.submit(partial(_write, b"\r\n".join(batch)))


def _write(data: bytes, protocol: object) -> None:
    if not isinstance(protocol, LineProtocol):
        protocol = speaking(protocol, LineProtocol, "line")
    protocol.write(data)
