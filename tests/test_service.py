"""
The Supervisor service: start, reload by difference, readiness, drain.
"""

from __future__ import annotations

from random import Random
from typing import Any

import attrs
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport

from supervisor.config import AdminSpec, Config
from supervisor.service import START_SLICE, Supervisor
from supervisor.spec import ConnectionSpec, HeartbeatSpec
from supervisor.states.records import Transition
from tests.harness import ADDRESS, ScriptedPlugin
from tests.logs import loggedMessages


def spec(name: str, **kwargs: Any) -> ConnectionSpec:
    kwargs.setdefault("endpoint", "tcp:host=127.0.0.1:port=7")
    kwargs.setdefault("heartbeat", HeartbeatSpec(interval=0))
    kwargs.setdefault("drain_timeout", 5.0)
    return ConnectionSpec(name, **kwargs)


def config(*specs: ConnectionSpec, readyShare: float = 0.0) -> Config:
    return Config("test.toml", AdminSpec(ready_share=readyShare), tuple(specs))


class Fleet:
    """
    A supervisor on a memory reactor whose connects the test accepts by name.
    """

    def __init__(self, cfg: Config, plugin: ScriptedPlugin | None = None, **options: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.plugin = plugin or ScriptedPlugin()
        self.pending: dict[str, list[Any]] = {}
        self.supervisor = Supervisor(
            cfg,
            self.reactor,
            plugins=lambda name: self.plugin,
            endpoints=self._endpoint,
            rng=Random(0),
            **options,
        )
        self.transitions: list[Transition] = []
        self.supervisor.addObserver(self.transitions.append)
        self.transports: dict[str, StringTransport] = {}

    def _endpoint(self, s: ConnectionSpec) -> Any:
        fleet = self

        class Recording(TCP4ClientEndpoint):
            def connect(self, factory: Any) -> Any:
                d = super().connect(factory)
                fleet.pending.setdefault(s.name, []).append(fleet.reactor.tcpClients[-1][2])
                return d

        return Recording(self.reactor, "127.0.0.1", 7)

    def accept(self, name: str) -> StringTransport:
        factory = self.pending[name].pop(0)
        protocol = factory.buildProtocol(ADDRESS)
        transport = self.transports[name] = StringTransport()
        protocol.makeConnection(transport)
        return transport

    def state(self, name: str) -> str:
        connection = self.supervisor.connection(name)
        assert connection is not None
        return connection.state


def test_startStartsEveryConnection() -> None:
    fleet = Fleet(config(spec("a"), spec("b")))
    assert {fleet.state("a"), fleet.state("b")} == {"IDLE"}
    fleet.supervisor.startService()
    assert {fleet.state("a"), fleet.state("b")} == {"CONNECTING"}
    fleet.accept("a")
    assert fleet.state("a") == "ESTABLISHED"
    assert [(t.connection, t.to) for t in fleet.transitions] == [
        ("a", "CONNECTING"),
        ("b", "CONNECTING"),
        ("a", "ESTABLISHED"),
    ]


class SlowConnects(TCP4ClientEndpoint):
    """
    An endpoint whose every connect takes a millisecond of the clock.
    """

    def connect(self, factory: Any) -> Any:
        self._reactor.rightNow += 0.001  # type: ignore[attr-defined]
        return super().connect(factory)


def slowFleet(count: int) -> tuple[MemoryReactorClock, Supervisor]:
    """
    A supervisor of C{count} connections whose connects take a millisecond each.
    """
    reactor = MemoryReactorClock()
    supervisor = Supervisor(
        config(*(spec(f"c{i:03d}") for i in range(count))),
        reactor,
        plugins=lambda name: ScriptedPlugin(),
        endpoints=lambda s: SlowConnects(reactor, "127.0.0.1", 7),
    )
    return reactor, supervisor


def test_startServiceStartsASliceAtOnceAndTheRestOverTheNextTurns() -> None:
    """
    C{startService} starts connections for L{START_SLICE} seconds, and as
    many again at each of the reactor's next turns, none waiting longer.
    """
    reactor, supervisor = slowFleet(40)
    attempts: list[str] = []
    supervisor.addObserver(lambda t: attempts.append(t.connection))
    perSlice = round(START_SLICE / 0.001) + 1
    supervisor.startService()
    started = [len(reactor.tcpClients)]
    while len(reactor.tcpClients) < 40:
        # The next slice is due at once, not a timer's resolution later; it
        # runs at the reactor's next turn (where calls it adds wait for the
        # turn after, unlike in Clock.advance).
        [turn] = [c for c in reactor.getDelayedCalls() if c.getTime() <= reactor.seconds()]
        reactor.calls.remove(turn)
        turn.func(*turn.args, **turn.kw)
        started.append(len(reactor.tcpClients))
    # A slice ends with the first start that finds it over (give or take a
    # rounding of the clock's sums).
    slices = [b - a for a, b in zip([0, *started], started, strict=False)]
    assert started[-1] == 40
    assert all(perSlice - 1 <= n <= perSlice for n in slices[:-1]), slices
    assert 0 < slices[-1] <= perSlice
    # In the order of the configuration.
    assert attempts == sorted(supervisor.connections)


def test_stopBeforeEveryConnectionStartedStartsNoMore() -> None:
    reactor, supervisor = slowFleet(40)
    supervisor.startService()
    started = len(reactor.tcpClients)
    assert 0 < started < 40
    done = supervisor.stopService()
    reactor.advance(0)
    assert len(reactor.tcpClients) == started
    assert done.called
    assert {c.state for c in supervisor.connections.values()} == {"CLOSED"}
    assert reactor.getDelayedCalls() == []


def test_connectionsWithOneEndpointStringShareOneEndpoint() -> None:
    """
    A C{tcp:} or C{unix:} endpoint string is parsed once; other schemes (a
    C{tls:} string names files that may change) are parsed per connection.
    """
    specs = [
        spec("a"),
        spec("b"),
        spec("c", endpoint="tcp:host=127.0.0.1:port=8"),
        spec("d", endpoint="unix:/tmp/ns.sock"),
        spec("e", endpoint="unix:/tmp/ns.sock"),
        spec("f", endpoint="tls:host=127.0.0.1:port=9"),
        spec("g", endpoint="tls:host=127.0.0.1:port=9"),
    ]
    supervisor = Supervisor(
        config(*specs), MemoryReactorClock(), plugins=lambda n: ScriptedPlugin()
    )
    endpoints = {name: c._core.endpoints.pick() for name, c in supervisor.connections.items()}
    assert endpoints["a"] is endpoints["b"]
    assert endpoints["c"] is not endpoints["a"]
    assert endpoints["d"] is endpoints["e"]
    assert endpoints["f"] is not endpoints["g"]
    assert isinstance(endpoints["a"], TCP4ClientEndpoint)


def test_reloadAddsRemovesRestartsAndLeavesTheRestAlone() -> None:
    fleet = Fleet(config(spec("keep"), spec("drop"), spec("change")))
    fleet.supervisor.startService()
    for name in ("keep", "drop", "change"):
        fleet.accept(name)
    keepBefore = fleet.supervisor.connection("keep")
    keepTransport = fleet.transports["keep"]
    before = len(fleet.transitions)

    report = fleet.supervisor.reload(
        config(spec("keep"), spec("change", connect_timeout=3.0), spec("new"))
    )

    assert report.added == ("new",)
    assert report.removed == ("drop",)
    assert report.changed == ("change",)
    assert report.unchanged == ("keep",)
    # unchanged: the very same object and transport, no transition
    assert fleet.supervisor.connection("keep") is keepBefore
    assert fleet.transports["keep"] is keepTransport and not keepTransport.disconnecting
    assert all(t.connection != "keep" for t in fleet.transitions[before:])
    # removed: drained and closed, and gone from the list
    assert "drop" not in fleet.supervisor.connections
    assert ("drop", "ESTABLISHED", "CLOSING", "removed") in [
        (t.connection, t.from_, t.to, t.reason) for t in fleet.transitions
    ]
    # changed: closed first (and shown, CLOSING, until then), then started
    # again with the new spec
    closing = fleet.supervisor.connection("change")
    assert closing is not None and closing.state == "CLOSING"
    assert closing.spec.connect_timeout == 10.0
    old = fleet.plugin.built[2]
    old.handle.connectionLost(_done())  # type: ignore[attr-defined]
    replacement = fleet.supervisor.connection("change")
    assert replacement is not None and replacement.spec.connect_timeout == 3.0
    assert replacement.state == "CONNECTING"
    # added: started at once
    assert fleet.state("new") == "CONNECTING"


def test_reloadBeforeStartDoesNotStartAnything() -> None:
    fleet = Fleet(config(spec("a")))
    fleet.supervisor.reload(config(spec("a"), spec("b")))
    assert fleet.state("b") == "IDLE" and fleet.reactor.tcpClients == []


def test_reloadsAreCounted() -> None:
    fleet = Fleet(config(spec("a")))
    fleet.supervisor.reload(config(spec("a")))
    fleet.supervisor.reloadFailed()
    assert fleet.supervisor.reloads == {"success": 1, "failure": 1}


def test_readiness() -> None:
    fleet = Fleet(config(spec("a"), spec("b"), readyShare=0.5))
    r = fleet.supervisor.readiness()
    assert (r.ready, r.reason) == (False, "not started")
    fleet.supervisor.startService()
    r = fleet.supervisor.readiness()
    assert not r.ready and r.notEstablished == ("a", "b")
    assert r.reason == "0 of 2 established, below ready_share 0.5"
    fleet.accept("a")
    r = fleet.supervisor.readiness()
    assert r.ready and (r.established, r.total, r.notEstablished) == (1, 2, ("b",))
    fleet.supervisor.stopService()
    r = fleet.supervisor.readiness()
    assert (r.ready, r.reason) == (False, "draining")


def test_stopDrainsEveryConnectionAndCountsAborts(noLoggedErrors: list[Any]) -> None:
    fleet = Fleet(
        config(spec("fast"), spec("slow"), spec("idle")),
        plugin=ScriptedPlugin(drainAtOnce=False),
    )
    fleet.supervisor.startService()
    fleet.accept("fast")
    fleet.accept("slow")
    done = fleet.supervisor.stopService()
    assert fleet.supervisor.draining
    assert fleet.supervisor.stopService() is done
    assert fleet.state("idle") == "CLOSED"
    assert {fleet.state("fast"), fleet.state("slow")} == {"CLOSING"}
    fast = fleet.plugin.built[0]
    fast.drains[0].callback(None)
    fast.handle.connectionLost(_done())  # type: ignore[attr-defined]
    assert fleet.state("fast") == "CLOSED" and not done.called
    with loggedMessages() as messages:
        fleet.reactor.advance(5.0)
    assert fleet.state("slow") == "CLOSED"
    assert done.called
    assert "drain finished: 1 of 3 connections aborted at drain_timeout" in messages
    assert fleet.reactor.getDelayedCalls() == []


def _done() -> Any:
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    return Failure(ConnectionDone())


def test_specsAreValuesSoEqualFilesMeanNoChange() -> None:
    a = config(spec("a", labels={"group": "x"}))
    b = config(spec("a", labels={"group": "x"}))
    assert a == b
    assert attrs.evolve(a.connections[0], max_retries=1) != b.connections[0]
