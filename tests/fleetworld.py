"""
A deterministic world for many supervised connections sharing one target:
a L{Supervisor} on a fake clock whose endpoints connect nowhere, and a peer
the test switches between up (accepts), down (refuses) and silent (never
answers a connect).

Every connect is recorded with the state of the connection's breaker at
that moment and the budget's queue, so that tests can check what went out
and when.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Literal

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from supervisor import Config, ConnectionSpec, Supervisor, Transition
from supervisor.spec import BackoffSpec, BreakerSpec, FlapSpec, HeartbeatSpec, SupervisorSpec
from tests.harness import ScriptedPlugin, ScriptedProtocol

ADDRESS = IPv4Address("TCP", "127.0.0.1", 7)
TARGET = "tcp:host=127.0.0.1:port=7"

Mode = Literal["up", "down", "silent"]


@attrs.frozen
class Connect:
    """
    One connect the endpoint was asked for.

    @ivar breaker: the state of the connection's breaker at that moment.
    @ivar budgetWaiting: how many attempts waited for a budget token then.
    """

    time: float
    name: str
    breaker: str | None
    budgetWaiting: int


@implementer(IStreamClientEndpoint)
class WorldEndpoint:
    """
    The endpoint of one connection: every connect goes to the world's peer.
    """

    def __init__(self, world: FleetWorld, name: str) -> None:
        self.world = world
        self.name = name

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        return self.world._connect(self.name, factory)


class FleetWorld:
    """
    N connections (C{c0} ... C{c<N-1>}) to one target, on one fake clock.

    @ivar mode: what the peer does with a connect: C{up} accepts it (the
        plugin declares ready at once), C{down} refuses it, C{silent} never
        answers.
    @ivar latency: seconds before the peer answers a connect; L{None}: only
        when the test calls L{answer}.
    """

    def __init__(
        self,
        count: int,
        *,
        seed: int = 0,
        breaker: BreakerSpec | None = None,
        flap: FlapSpec | None = None,
        backoff: BackoffSpec | None = None,
        heartbeat: HeartbeatSpec | None = None,
        budget: SupervisorSpec | None = None,
        latency: float | None = 0.001,
        plugin: ScriptedPlugin | None = None,
        connect_timeout: float = 5.0,
        idle_timeout: float = 0.0,
    ) -> None:
        self.clock = Clock()
        self.plugin = plugin if plugin is not None else ScriptedPlugin()
        self.mode: Mode = "up"
        self.latency = latency
        self.pending: dict[str, tuple[Deferred[IProtocol], IProtocolFactory]] = {}
        self.connects: list[Connect] = []
        self.transitions: list[Transition] = []
        self.live: dict[str, tuple[IProtocol, StringTransport]] = {}
        self.specs = {
            f"c{i}": ConnectionSpec(
                name=f"c{i}",
                endpoint=TARGET,
                protocol="scripted",
                connect_timeout=connect_timeout,
                idle_timeout=idle_timeout,
                backoff=backoff or BackoffSpec(),
                heartbeat=heartbeat or HeartbeatSpec(interval=0.0),
                breaker=breaker or BreakerSpec(),
                flap=flap or FlapSpec(),
            )
            for i in range(count)
        }
        self.config = Config(
            path="<fleet world>",
            connections=tuple(self.specs.values()),
            supervisor=budget or SupervisorSpec(),
        )
        self.supervisor = Supervisor(
            self.config,
            self.clock,
            plugins=lambda name: self.plugin,
            endpoints=lambda spec: WorldEndpoint(self, spec.name),
            rng=random.Random(seed),
        )
        self.supervisor.addObserver(self.transitions.append)

    # The peer.

    def _connect(self, name: str, factory: IProtocolFactory) -> Deferred[IProtocol]:
        connection = self.supervisor.connection(name)
        self.connects.append(
            Connect(
                self.clock.seconds(),
                name,
                None if connection is None else connection.breaker,
                len(self.supervisor.fleet.budget.waiting),
            )
        )
        assert name not in self.pending, f"{name} connects twice at once"

        def cancel(d: Deferred[IProtocol]) -> None:
            self.pending.pop(name, None)

        d: Deferred[IProtocol] = Deferred(cancel)
        self.pending[name] = (d, factory)
        if self.latency is not None:
            self.clock.callLater(self.latency, self._answerOne, name, d)
        return d

    def _answerOne(self, name: str, d: Deferred[IProtocol]) -> None:
        entry = self.pending.get(name)
        if entry is None or entry[0] is not d:
            return  # cancelled, or answered already
        if self.mode == "silent":
            return
        del self.pending[name]
        factory = entry[1]
        if self.mode == "down":
            d.errback(Failure(ConnectionRefusedError()))
            return
        protocol = factory.buildProtocol(ADDRESS)
        assert protocol is not None
        transport = StringTransport()
        self.live[name] = (protocol, transport)
        protocol.makeConnection(transport)
        d.callback(protocol)

    def answer(self) -> None:
        """
        Answer every pending connect now, as the peer's mode says.
        """
        for name, (d, _) in list(self.pending.items()):
            self._answerOne(name, d)

    def kill(self) -> None:
        """
        The peer dies: it refuses from now on, and every live transport is lost.
        """
        self.mode = "down"
        for name in list(self.live):
            self.lose(name)

    def lose(self, name: str) -> None:
        """
        The transport of C{name} goes away.
        """
        protocol, _ = self.live.pop(name)
        protocol.connectionLost(Failure(ConnectionLost()))

    def protocolOf(self, name: str) -> ScriptedProtocol:
        """
        The plugin's protocol of C{name}'s current attempt.
        """
        protocol = self.supervisor.connection(name).protocol
        assert isinstance(protocol, ScriptedProtocol)
        return protocol

    # Time.

    def advance(self, seconds: float, step: float = 0.005) -> None:
        """
        Let C{seconds} pass in small steps, dropping transports the
        connections closed (as a real transport would report).
        """
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end - 1e-12:
            self.clock.advance(min(step, end - self.clock.seconds()))
            self._reapClosed()

    def runUntil(self, predicate: Callable[[], object], limit: float, step: float = 0.005) -> float:
        """
        Advance until C{predicate} holds; return how long that took.

        @raise AssertionError: if it does not within C{limit} seconds.
        """
        start = self.clock.seconds()
        while not predicate():
            assert self.clock.seconds() - start < limit, f"not within {limit}s"
            self.advance(step, step)
        return self.clock.seconds() - start

    def _reapClosed(self) -> None:
        for name, (protocol, transport) in list(self.live.items()):
            if transport.disconnecting:
                del self.live[name]
                protocol.connectionLost(Failure(ConnectionLost()))

    # Looking.

    @property
    def connections(self) -> list[object]:
        return list(self.supervisor.connections.values())

    def states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for connection in self.supervisor.connections.values():
            counts[connection.state] = counts.get(connection.state, 0) + 1
        return counts

    def established(self) -> int:
        return sum(1 for c in self.supervisor.connections.values() if c.state == "ESTABLISHED")

    def allEstablished(self) -> bool:
        return self.established() == len(self.supervisor.connections)

    def held(self, kind: str) -> int:
        return sum(1 for c in self.supervisor.connections.values() if c.held == kind)

    def reasons(self, to: str = "CONNECTING") -> list[str]:
        return [t.reason for t in self.transitions if t.to == to]

    def connectsSince(self, time: float) -> list[Connect]:
        return [c for c in self.connects if c.time >= time]

    # The end.

    def stop(self) -> None:
        """
        Stop the supervisor and let everything close.
        """
        done = self.supervisor.stopService()
        self.advance(0.1)
        for name in list(self.live):
            self.lose(name)
        self.advance(0.1)
        assert done is None or done.called  # type: ignore[union-attr]

    def assertQuiet(self) -> None:
        """
        Nothing is scheduled any more: no timer of any connection, breaker
        or budget, and no delayed call in the clock.
        """
        assert len(self.supervisor.scheduler) == 0
        assert self.clock.getDelayedCalls() == []
        assert self.supervisor.fleet.breakers == []
