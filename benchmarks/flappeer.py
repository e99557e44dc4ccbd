"""
A line peer that starts flapping on SIGUSR1, for the flap benchmark::

    python -m benchmarks.flappeer --port 7000 [--backlog 4096] [--drop-after 0.5]

Until SIGUSR1 it is C{python -m supervisor.peer}: it answers every
C{PING x} with C{PONG x}. From SIGUSR1 on it flaps: on every connection,
those already open included, it answers the next heartbeat and drops the
connection C{--drop-after} seconds after that answer; a new connection is
accepted and treated the same way. It prints C{listening on HOST:PORT}
once listening, as the plain peer does.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from typing import Any, ClassVar, cast

from twisted.internet.interfaces import IReactorCore, IReactorTCP

from supervisor.peer import PeerFactory, PeerProtocol, raiseFileLimit


class FlappingProtocol(PeerProtocol):
    """
    A peer connection that, once the peer flaps, answers one heartbeat and
    then drops.
    """

    flapping: ClassVar[bool] = False
    dropAfter: ClassVar[float] = 0.5
    reactor: ClassVar[Any] = None
    doomed = False

    def lineReceived(self, line: bytes) -> None:
        super().lineReceived(line)
        if self.flapping and not self.doomed and line.startswith(b"PING"):
            self.doomed = True
            self.reactor.callLater(self.dropAfter, self._drop)

    def _drop(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()


class FlappingFactory(PeerFactory):
    protocol = FlappingProtocol


def parseArguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flappeer")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--backlog", type=int, default=50)
    parser.add_argument("--drop-after", type=float, default=0.5)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parseArguments(argv)
    raiseFileLimit()
    from twisted.internet import reactor

    FlappingProtocol.reactor = reactor
    FlappingProtocol.dropAfter = arguments.drop_after

    def flap(signum: int, frame: object) -> None:
        FlappingProtocol.flapping = True

    signal.signal(signal.SIGUSR1, flap)
    port = cast("IReactorTCP", reactor).listenTCP(
        arguments.port, FlappingFactory(), backlog=arguments.backlog, interface=arguments.host
    )
    print(f"listening on {arguments.host}:{getattr(port.getHost(), 'port', 0)}", flush=True)
    cast("IReactorCore", reactor).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
