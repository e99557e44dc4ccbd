"""
A tiny standalone peer for the C{line} protocol, for demos and integration
tests::

    python -m supervisor.peer --port 7000 [--host 127.0.0.1] [--backlog 50]

It answers every C{PING [payload]} line with C{PONG [payload]\\r\\n} (lines
end in C{\\r\\n} or C{\\n}) and ignores every other line. Once listening, it
prints exactly one line, C{listening on HOST:PORT}, to stdout, so that
C{--port 0} can be used and the real port read back. SIGTERM and SIGINT stop
the reactor; the process then exits with status 0.

It raises its soft limit of open files to the hard limit, so that it can
serve as many connections as the system allows (the benchmarks open ten
thousand); C{--backlog} sizes the listen queue for connection storms.
"""

from __future__ import annotations

import argparse
import resource
import sys
from collections.abc import Sequence
from typing import cast

from twisted.internet.interfaces import IReactorCore, IReactorTCP
from twisted.internet.protocol import ServerFactory
from twisted.protocols.basic import LineOnlyReceiver

DEFAULT_HOST = "127.0.0.1"

MAX_LINE_LENGTH = 16384
"""A longer line drops the connection, as the C{line} plugin does."""


class PeerProtocol(LineOnlyReceiver):
    """
    One accepted connection: answers C{PING} lines with C{PONG} lines.
    """

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE_LENGTH

    def lineReceived(self, line: bytes) -> None:
        """
        Answer C{PING [payload]} with C{PONG [payload]}; ignore anything else.
        """
        verb, separator, payload = line.rstrip(b"\r").partition(b" ")
        if verb == b"PING" and self.transport is not None:
            self.transport.write(b"PONG" + separator + payload + b"\r\n")


class PeerFactory(ServerFactory):
    """
    Builds a L{PeerProtocol} for every accepted connection.
    """

    protocol = PeerProtocol
    noisy = False


def parseArguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """
    The command line: C{--port} (required, 0 for any free port) and C{--host}.
    """
    parser = argparse.ArgumentParser(
        prog="python -m supervisor.peer",
        description="A line-protocol peer: answers 'PING x' with 'PONG x'.",
    )
    parser.add_argument("--port", type=int, required=True, help="TCP port; 0 picks a free one")
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})"
    )
    parser.add_argument("--backlog", type=int, default=50, help="listen queue length (default 50)")
    arguments = parser.parse_args(argv)
    if not 0 <= arguments.port <= 65535:
        parser.error(f"--port must be in 0..65535, got {arguments.port}")
    return arguments


def raiseFileLimit() -> int:
    """
    Raise the soft limit of open files to the hard limit, where allowed.

    @return: the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def main(argv: Sequence[str] | None = None) -> int:
    """
    Listen, announce the address on stdout and serve until SIGTERM or SIGINT.

    @return: the process exit status: 0 after a signalled stop, 1 if the
        address could not be bound.
    """
    arguments = parseArguments(argv)
    raiseFileLimit()

    from twisted.internet import reactor as _reactor
    from twisted.internet.error import CannotListenError

    reactor = cast("IReactorTCP", _reactor)
    try:
        port = reactor.listenTCP(
            arguments.port, PeerFactory(), backlog=arguments.backlog, interface=arguments.host
        )
    except CannotListenError as e:
        print(f"peer: {e}", file=sys.stderr)
        return 1
    bound = port.getHost()
    print(f"listening on {arguments.host}:{getattr(bound, 'port', arguments.port)}", flush=True)
    # run() installs Twisted's SIGTERM/SIGINT handlers, which stop the reactor
    # (closing the listening port) instead of killing the process mid-write.
    cast("IReactorCore", _reactor).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
