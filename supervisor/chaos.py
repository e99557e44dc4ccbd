"""
The chaos proxy from a shell::

    python -m supervisor.chaos --listen PORT --target HOST:PORT
        [--host 127.0.0.1] [--fault FAULT]... [--control PORT] [--seed N] [--backlog N]

It listens on C{--host:--listen} and forwards every connection to
C{--target} through the faults given (L{supervisor.testing.chaos}; a FAULT is
C{KIND[:KEY=VALUE[,KEY=VALUE]...]}, e.g. C{latency:delay=0.2,jitter=0.05} or
C{stall}). Once listening it prints C{listening on HOST:PORT} and, with
C{--control}, C{control on 127.0.0.1:PORT} (port 0 picks a free one).

The control channel switches faults at run time: one command per line, one
answer per line, starting C{ok} or C{error}::

    status                    the faults in force and the counters
    set FAULT [FAULT...]      put these faults in force instead
    add FAULT                 add one
    clear                     no faults: a plain proxy
    help, quit

It listens on 127.0.0.1 only, serves at most L{MAX_CLIENTS} clients at
once, drops a line longer than L{MAX_LINE} bytes and a client that sends no
complete line for L{IDLE_TIMEOUT} seconds, and stops reading a client that
does not read its answers. SIGTERM and SIGINT stop it with status 0.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from typing import cast

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from supervisor.testing.chaos import (
    FAULT_TYPES,
    MAX_FAULTS,
    ChaosProxy,
    Fault,
    FaultSyntaxError,
    checkFaults,
    describeFault,
    parseFault,
)

CONTROL_HOST = "127.0.0.1"
MAX_CLIENTS = 8
"""Control clients served at once; more are told so and closed."""

MAX_LINE = 1024
"""The longest command line, in bytes."""

IDLE_TIMEOUT = 300.0
"""Seconds a control client may go without sending a complete line."""

HELP = (
    "commands: status | set FAULT [FAULT...] | add FAULT | clear | help | quit; "
    f"FAULT is KIND[:KEY=VALUE,...] with KIND one of {', '.join(sorted(FAULT_TYPES))}"
)


def describeState(proxy: ChaosProxy) -> str:
    """
    The faults in force and the proxy's counters, on one line.
    """
    faults = ";".join(describeFault(f) for f in proxy.faults) or "none"
    s = proxy.stats
    return (
        f"faults={faults} connections={proxy.connections} accepted={s.accepted} "
        f"upstream_failures={s.upstreamFailures} resets={s.resets} to_client={s.toClient} "
        f"to_server={s.toServer} dropped={s.dropped} corrupted={s.corrupted}"
    )


class ControlProtocol(LineReceiver):
    """
    One control client: a command per line, an answer per line.

    It is the producer of its own answers: when the transport's buffer is
    full (a client that pipelines commands and never reads), it stops
    handling lines and reading until the answers are out.
    """

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE

    def __init__(self, factory: ControlFactory) -> None:
        self.factory = factory
        self._idle: IDelayedCall | None = None
        self._counted = False

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self.factory.clients >= self.factory.maxClients:
            self.transport.write(b"error too many control clients\n")
            self.transport.loseConnection()
            return
        self.factory.clients += 1
        self._counted = True
        self.transport.registerProducer(self, True)  # type: ignore[attr-defined]
        self._restartIdle()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._counted:
            self._counted = False
            self.factory.clients -= 1
        idle, self._idle = self._idle, None
        if idle is not None and idle.active():
            idle.cancel()

    def _restartIdle(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = self.factory.clock.callLater(self.factory.idleTimeout, self._idleTooLong)

    def _idleTooLong(self) -> None:
        self._idle = None
        self._answer(f"error no command for {self.factory.idleTimeout:g} s; closing")
        assert self.transport is not None
        self.transport.loseConnection()

    def lineLengthExceeded(self, line: bytes) -> None:
        self._answer(f"error line longer than {self.MAX_LENGTH} bytes; closing")
        assert self.transport is not None
        self.transport.loseConnection()

    def _answer(self, text: str) -> None:
        assert self.transport is not None
        self.transport.write(text.encode("ascii", "replace") + b"\n")

    def lineReceived(self, line: bytes) -> None:
        if self.transport is None or self.transport.disconnecting:  # type: ignore[attr-defined]
            return
        self._restartIdle()
        try:
            text = line.rstrip(b"\r").decode("ascii")
        except UnicodeDecodeError:
            self._answer("error commands are ASCII")
            return
        words = text.split()
        if not words:
            return
        self._answer(self.command(words[0].lower(), words[1:]))
        if words[0].lower() == "quit":
            self.transport.loseConnection()

    def command(self, verb: str, arguments: list[str]) -> str:
        """
        Run one command; return its answer.
        """
        proxy = self.factory.proxy
        if verb == "status":
            return "ok " + describeState(proxy)
        if verb == "help":
            return "ok " + HELP
        if verb == "quit":
            return "ok bye"
        if verb == "clear":
            proxy.setFaults()
            return "ok " + describeState(proxy)
        if verb not in ("set", "add"):
            return f"error unknown command {verb[:20]!r}; try help"
        if not arguments and verb == "add":
            return "error add needs one FAULT"
        if len(arguments) > (1 if verb == "add" else MAX_FAULTS):
            return f"error too many faults for {verb}"
        try:
            faults: list[Fault] = [parseFault(a) for a in arguments]
            if verb == "add":
                proxy.addFault(faults[0])
            else:
                proxy.setFaults(*faults)
        except (FaultSyntaxError, ValueError) as e:
            return f"error {e}"
        return "ok " + describeState(proxy)


class ControlFactory(ServerFactory):
    """
    Builds L{ControlProtocol}s for one proxy, counting the clients.
    """

    noisy = False

    def __init__(
        self,
        proxy: ChaosProxy,
        clock: IReactorTime,
        maxClients: int = MAX_CLIENTS,
        idleTimeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.proxy = proxy
        self.clock = clock
        self.maxClients = maxClients
        self.idleTimeout = idleTimeout
        self.clients = 0

    def buildProtocol(self, addr: object) -> ControlProtocol:
        return ControlProtocol(self)


def parseTarget(text: str) -> tuple[str, int]:
    """
    C{HOST:PORT} (C{[V6]:PORT} for an IPv6 address) as host and port.

    @raise ValueError: it is not.
    """
    host, colon, port = text.rpartition(":")
    if not colon or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"expected a port in 1..65535, got {port!r}")
    return host, int(port)


def parseArguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """
    The command line, checked; faults are parsed into C{arguments.faults}.
    """
    parser = argparse.ArgumentParser(
        prog="python -m supervisor.chaos",
        description="A TCP proxy that injects faults, switchable at run time.",
    )
    parser.add_argument("--listen", type=int, required=True, help="port to listen on (0: any)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="FAULT",
        help="KIND[:KEY=VALUE,...]; repeatable; KIND one of " + ", ".join(sorted(FAULT_TYPES)),
    )
    parser.add_argument("--control", type=int, help="control port on 127.0.0.1 (0: any)")
    parser.add_argument("--seed", type=int, help="seed of jitter and corruption")
    parser.add_argument("--backlog", type=int, default=50, help="listen queue length (default 50)")
    arguments = parser.parse_args(argv)
    for name in ("listen", "control"):
        port = getattr(arguments, name)
        if port is not None and not 0 <= port <= 65535:
            parser.error(f"--{name} must be in 0..65535, got {port}")
    try:
        arguments.target = parseTarget(arguments.target)
        arguments.faults = [parseFault(f) for f in arguments.fault]
        checkFaults(*arguments.faults)
    except ValueError as e:
        parser.error(str(e))
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    """
    Listen, announce the addresses on stdout and proxy until SIGTERM or SIGINT.

    @return: the exit status: 0 after a signalled stop, 1 if a port could
        not be bound.
    """
    arguments = parseArguments(argv)
    from twisted.internet import reactor as _reactor
    from twisted.internet.endpoints import HostnameEndpoint
    from twisted.internet.error import CannotListenError
    from twisted.internet.interfaces import IReactorCore, IReactorTCP

    from supervisor.peer import raiseFileLimit

    raiseFileLimit()
    reactor = cast(IReactorTCP, _reactor)
    host, port = arguments.target
    rng = random.Random(arguments.seed)
    proxy = ChaosProxy(
        cast(IReactorTime, _reactor), HostnameEndpoint(_reactor, host, port), rng=rng
    )
    proxy.setFaults(*arguments.faults)
    try:
        listening = reactor.listenTCP(
            arguments.listen, proxy, backlog=arguments.backlog, interface=arguments.host
        )
        control = None
        if arguments.control is not None:
            control = reactor.listenTCP(
                arguments.control,
                ControlFactory(proxy, cast(IReactorTime, _reactor)),
                interface=CONTROL_HOST,
            )
    except CannotListenError as e:
        print(f"chaos: {e}", file=sys.stderr)
        return 1
    print(f"listening on {arguments.host}:{getattr(listening.getHost(), 'port', 0)}", flush=True)
    if control is not None:
        print(f"control on {CONTROL_HOST}:{getattr(control.getHost(), 'port', 0)}", flush=True)
    cast(IReactorCore, _reactor).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
