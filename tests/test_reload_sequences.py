"""
Reloads in any order while connections drain, on a memory reactor: one name
never has two live connections, a name in the running configuration always
answers, and once every drain is over each name runs its latest spec.

A I{live} connection of a name is a connect attempt in flight or a transport
that is not closing, among every connection ever built for that name.
"""

from __future__ import annotations

from random import Random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from supervisor.config import AdminSpec, Config
from supervisor.service import Supervisor
from supervisor.spec import ConnectionSpec, HeartbeatSpec
from tests.harness import ADDRESS, ScriptedPlugin, ScriptedProtocol

NAMES = ("a", "b")
DRAIN_TIMEOUT = 5.0

Layout = dict[str, int]
"""A configuration: name -> the variant of its spec (names left out are absent)."""


def spec(name: str, variant: int) -> ConnectionSpec:
    return ConnectionSpec(
        name,
        endpoint="tcp:host=127.0.0.1:port=7",
        connect_timeout=1.0 + variant,
        drain_timeout=DRAIN_TIMEOUT,
        heartbeat=HeartbeatSpec(interval=0),
    )


def config(layout: Layout) -> Config:
    return Config(
        "test.toml", AdminSpec(), tuple(spec(name, variant) for name, variant in layout.items())
    )


class Attempt:
    """
    One connect attempt of one connection and, once accepted, its transport.
    """

    def __init__(self, name: str, factory: Any, connector: Any) -> None:
        self.name = name
        self.factory = factory
        self.connector = connector
        self.protocol: Any = None
        self.scripted: ScriptedProtocol | None = None
        self.transport: StringTransport | None = None
        self.lost = False

    @property
    def live(self) -> bool:
        if self.transport is None:
            return not self.connector.stoppedConnecting
        return not self.transport.disconnecting


class ReloadWorld:
    """
    A supervisor whose peers drain only when the test says so.
    """

    def __init__(self, layout: Layout) -> None:
        self.reactor = MemoryReactorClock()
        self.plugin = ScriptedPlugin(drainAtOnce=False)
        self.attempts: list[Attempt] = []
        self.layout = dict(layout)
        self.supervisor = Supervisor(
            config(layout),
            self.reactor,
            plugins=lambda name: self.plugin,
            endpoints=self._endpoint,
            rng=Random(0),
        )
        self.supervisor.startService()

    def _endpoint(self, s: ConnectionSpec) -> Any:
        world = self

        class Recording(TCP4ClientEndpoint):
            def connect(self, factory: Any) -> Any:
                d = super().connect(factory)
                reactor = world.reactor
                world.attempts.append(
                    Attempt(s.name, reactor.tcpClients[-1][2], reactor.connectors[-1])
                )
                return d

        return Recording(self.reactor, "127.0.0.1", 7)

    # Steps.

    def reload(self, layout: Layout) -> None:
        self.layout = dict(layout)
        self.supervisor.reload(config(layout))

    def accept(self, name: str) -> None:
        """
        The peer accepts the oldest attempt of C{name} in flight, if any.
        """
        for attempt in self.attempts:
            if attempt.name == name and attempt.transport is None and attempt.live:
                attempt.protocol = attempt.factory.buildProtocol(ADDRESS)
                attempt.transport = StringTransport()
                attempt.protocol.makeConnection(attempt.transport)
                attempt.scripted = self.plugin.built[-1]
                return

    def drain(self, name: str) -> None:
        """
        Every drain of C{name} in progress finishes, and every transport of
        it that is closing closes.
        """
        for attempt in self.attempts:
            if attempt.name != name or attempt.scripted is None:
                continue
            for d in attempt.scripted.drains:
                if not d.called:
                    d.callback(None)
        self.closeClosing()

    def closeClosing(self) -> None:
        for attempt in self.attempts:
            transport = attempt.transport
            if transport is not None and transport.disconnecting and not attempt.lost:
                attempt.lost = True
                attempt.protocol.connectionLost(Failure(ConnectionDone()))

    def advance(self, seconds: float) -> None:
        self.reactor.advance(seconds)
        self.closeClosing()

    # What must hold.

    def live(self, name: str) -> int:
        return sum(1 for a in self.attempts if a.name == name and a.live)

    def check(self) -> None:
        for name in NAMES:
            assert self.live(name) <= 1, f"{name} has {self.live(name)} live connections"
            shown = self.supervisor.connections.get(name)
            if name in self.layout:
                assert shown is not None, f"{name} is configured but answers 404"
                if shown.spec != spec(name, self.layout[name]):
                    assert shown.state in ("CLOSING", "CLOSED"), (name, shown.state)
            else:
                assert shown is None, f"{name} was removed but is still shown"

    def settle(self) -> None:
        """
        Let every drain finish and every attempt be accepted.
        """
        for _ in range(10):
            for name in NAMES:
                self.drain(name)
                self.accept(name)
            self.advance(DRAIN_TIMEOUT)
        self.check()
        for name in NAMES:
            shown = self.supervisor.connections.get(name)
            if name in self.layout:
                assert shown is not None
                assert shown.spec == spec(name, self.layout[name])
                assert shown.state == "ESTABLISHED", (name, shown.state)
                assert self.live(name) == 1
            else:
                assert self.live(name) == 0


def established(layout: Layout) -> ReloadWorld:
    world = ReloadWorld(layout)
    for name in layout:
        world.accept(name)
    world.check()
    return world


# The cases of the issue, one by one ----------------------------------------


def test_aSecondReloadWhileDrainingStartsNoSecondConnection() -> None:
    world = established({"a": 0})
    world.reload({"a": 1})
    world.check()
    world.reload({"a": 2})  # SIGHUP again while a's first version drains
    world.check()
    assert world.live("a") == 1
    closing = world.supervisor.connection("a")
    assert closing is not None and closing.state == "CLOSING" and closing.spec == spec("a", 0)
    world.drain("a")
    replacement = world.supervisor.connection("a")
    assert replacement is not None and replacement.spec == spec("a", 2)
    assert replacement.state == "CONNECTING"
    world.settle()


def test_aChangedNameAnswersUntilItsReplacementExists() -> None:
    world = established({"a": 0})
    old = world.supervisor.connection("a")
    world.reload({"a": 1})
    assert world.supervisor.connection("a") is old
    assert "a" in world.supervisor.connections
    world.advance(DRAIN_TIMEOUT)  # the drain deadline closes it
    new = world.supervisor.connection("a")
    assert new is not None and new is not old and new.spec == spec("a", 1)
    world.settle()


def test_changedThenRemovedWhileDrainingStartsNothing() -> None:
    world = established({"a": 0, "b": 0})
    world.reload({"a": 1, "b": 0})
    world.reload({"b": 0})
    world.check()
    world.drain("a")
    assert "a" not in world.supervisor.connections and world.live("a") == 0
    world.settle()


def test_removedThenAddedWhileDrainingWaitsForTheOldOne() -> None:
    world = established({"a": 0})
    world.reload({})
    with pytest.raises(KeyError):
        world.supervisor.connection("a")
    world.reload({"a": 0})
    world.check()
    shown = world.supervisor.connection("a")
    assert shown is not None and shown.state == "CLOSING"
    world.drain("a")
    shown = world.supervisor.connection("a")
    assert shown is not None and shown.state == "CONNECTING"
    world.settle()


def test_changedBackWhileDrainingStartsTheOriginalAgain() -> None:
    world = established({"a": 0})
    world.reload({"a": 1})
    report = world.supervisor.reload(config({"a": 0}))
    world.layout = {"a": 0}
    assert report.changed == ("a",)
    world.check()
    world.settle()


def test_aConnectionThatIsNotEstablishedIsReplacedAtOnce() -> None:
    world = ReloadWorld({"a": 0})  # its attempt is in flight
    world.reload({"a": 1})
    world.check()
    shown = world.supervisor.connection("a")
    assert shown is not None and shown.spec == spec("a", 1) and shown.state == "CONNECTING"
    assert world.live("a") == 1
    world.settle()


def test_aReloadDuringTheStopStartsNothing() -> None:
    world = established({"a": 0})
    world.reload({"a": 1})
    stopped = world.supervisor.stopService()
    world.drain("a")
    assert stopped.called
    assert world.live("a") == 0


# Any sequence ----------------------------------------------------------------

layouts = st.dictionaries(st.sampled_from(NAMES), st.integers(0, 2))
steps = st.one_of(
    st.tuples(st.just("reload"), layouts),
    st.tuples(st.just("accept"), st.sampled_from(NAMES)),
    st.tuples(st.just("drain"), st.sampled_from(NAMES)),
    st.tuples(st.just("advance"), st.sampled_from([0.0, 1.0, DRAIN_TIMEOUT])),
)


@given(initial=layouts, sequence=st.lists(steps, max_size=20))
def test_anySequenceOfReloads(initial: Layout, sequence: list[tuple[str, Any]]) -> None:
    world = established(initial)
    for step, argument in sequence:
        if step == "reload":
            world.reload(argument)
        elif step == "accept":
            world.accept(argument)
        elif step == "drain":
            world.drain(argument)
        else:
            world.advance(argument)
        world.check()
    world.settle()
