"""
The breaker seen from the connections that share it (L{supervisor.fleet}):
many connections to one target on a fake clock, through the supervisor,
as a process runs them.
"""

from __future__ import annotations

import attrs

from supervisor.interfaces import Classification
from supervisor.spec import BackoffSpec, BreakerSpec, FlapSpec, SupervisorSpec
from tests.fleetworld import FleetWorld
from tests.harness import ScriptedPlugin

BREAKER = BreakerSpec(failures=3, probe_interval=0.5, probe_max=2.0, release_rate=1000.0)
BACKOFF = BackoffSpec(initial=1.0, multiplier=2.0, max=8.0, jitter="full", reset_after=1.0)


def started(count: int, **options: object) -> FleetWorld:
    options.setdefault("breaker", BREAKER)
    options.setdefault("backoff", BACKOFF)
    world = FleetWorld(count, **options)  # type: ignore[arg-type]
    world.supervisor.startService()
    world.answer()
    world.runUntil(world.allEstablished, 30)
    world.advance(2.0)  # past reset_after: losses start the backoff over
    return world


def reasonOf(world: FleetWorld, name: str, time: float) -> str:
    """
    The reason of C{name}'s transition into CONNECTING at C{time}.
    """
    (reason,) = [
        t.reason
        for t in world.transitions
        if t.connection == name and t.to == "CONNECTING" and t.time == time
    ]
    return reason


def assertOnlyProbesWhileOpen(world: FleetWorld) -> None:
    """
    Every connect made while its breaker was open was that breaker's probe.
    """
    for connect in world.connects:
        if connect.breaker == "open":
            assert reasonOf(world, connect.name, connect.time) == "probe", connect


def test_aDeadTargetOpensTheBreakerAndHoldsItsConnections() -> None:
    world = started(40)
    killed = world.clock.seconds()
    world.kill()
    world.advance(10.0)
    (breaker,) = world.supervisor.fleet.breakers
    assert breaker.state == "open"
    # Every connection but the one probing waits for the breaker, as IDLE.
    assert world.held("breaker") >= 39
    assert world.states() == {"IDLE": world.held("breaker")} or world.states()["IDLE"] >= 39
    for connection in world.supervisor.connections.values():
        assert connection.breaker == "open"
    whileDown = world.connectsSince(killed)
    probes = [c for c in whileDown if c.breaker == "open"]
    # At most 2.0 s apart (probe_max), each at least 0.25 s after the last.
    assert 5 <= len(probes) <= 40
    # The losses themselves opened it: no retry went out but the probes.
    assert len(whileDown) == len(probes)
    assertOnlyProbesWhileOpen(world)
    world.stop()
    world.assertQuiet()


def test_lossesWithoutAnyFailedAttemptOpenTheBreaker() -> None:
    """
    C{failures} members lost from ESTABLISHED (the peer still accepts) open
    their breaker: the retries wait for the probe, which succeeds, and the
    ramp brings everyone back.
    """
    world = started(10)  # failures = 3
    (breaker,) = world.supervisor.fleet.breakers
    for name in ("c0", "c1"):
        world.lose(name)
    assert breaker.state == "closed"
    world.lose("c2")
    assert breaker.state == "open"
    lost = world.clock.seconds()
    world.runUntil(world.allEstablished, 10)
    reasons = [t.reason for t in world.transitions if t.to == "CONNECTING" and t.time >= lost]
    # The probe first; the others once it succeeded (released if they were
    # held by then, else their own retries once it closed).
    assert reasons[0] == "probe"
    assert len(reasons) == 3
    assertOnlyProbesWhileOpen(world)
    assert breaker.state == "closed"
    world.stop()
    world.assertQuiet()


def test_aLossFollowedByASuccessfulReconnectDoesNotCount() -> None:
    world = started(10, flap=FlapSpec(max=0))
    (breaker,) = world.supervisor.fleet.breakers
    for _ in range(5):
        for name in ("c0", "c1"):
            world.lose(name)
            world.runUntil(world.allEstablished, 10)
    assert breaker.openings == 0
    world.stop()
    world.assertQuiet()


def test_idleTimeoutsDoNotCount() -> None:
    """
    Connections dropped by their own idle rule (the peer sends nothing, and
    no heartbeat runs here) are not the target's failure: however many go
    idle together, the breaker stays closed.
    """
    world = started(10, idle_timeout=5.0, flap=FlapSpec(max=0))
    (breaker,) = world.supervisor.fleet.breakers
    world.advance(6.0)
    idled = [t for t in world.transitions if t.reason == "idle"]
    assert len(idled) >= 10
    assert breaker.openings == 0
    world.stop()
    world.assertQuiet()


def test_theTargetBackReleasesEveryoneThroughTheRamp() -> None:
    world = started(40)
    world.kill()
    world.advance(6.0)
    world.mode = "up"
    back = world.clock.seconds()
    took = world.runUntil(world.allEstablished, 10)
    assert took <= 2.0 + 0.5, "the next probe (probe_max) and a ramp of 40"
    reasons = [t.reason for t in world.transitions if t.to == "CONNECTING" and t.time >= back]
    assert reasons.count("probe") == 1
    assert reasons.count("release") >= 35
    world.advance(0.1)
    (breaker,) = world.supervisor.fleet.breakers
    assert breaker.state == "closed"
    assert world.held("breaker") == 0
    assertOnlyProbesWhileOpen(world)
    world.stop()
    world.assertQuiet()


def test_pushBackOpensTheBreakerAtTheFirstAnswer() -> None:
    """
    A plugin that classifies the peer's answer as "overloaded" opens the
    breaker at once: the other connections do not try.
    """
    plugin = ScriptedPlugin(
        readyOnConnect=False, classification=Classification("handshake", overloaded=True)
    )
    world = FleetWorld(
        10,
        plugin=plugin,
        breaker=BreakerSpec(failures=50, probe_interval=1.0, probe_max=2.0),
        backoff=BACKOFF,
        latency=None,
    )
    world.supervisor.startService()
    assert len(world.pending) == 10
    world.answer()  # accepted; the plugins' handshakes are under way
    world.protocolOf("c0").handle.reject("max number of clients reached", permanent=False)
    assert world.supervisor.fleet.breakers[0].state == "open"
    world.advance(0.4)
    # The nine others are still in their handshake; when they fail the same
    # way, nobody else tries before the probe.
    for i in range(1, 10):
        world.protocolOf(f"c{i}").handle.reject("busy", permanent=False)
    before = len(world.connects)
    world.advance(0.45)
    assert len(world.connects) == before
    world.stop()
    world.assertQuiet()


def test_heldConnectionsShowWhatHoldsThem() -> None:
    world = started(10)
    world.kill()
    world.advance(5.0)
    held = [c for c in world.supervisor.connections.values() if c.held == "breaker"]
    assert held
    for connection in held:
        assert connection.state == "IDLE"
        assert connection.breaker == "open"
        assert connection.internalState == "ADMITTING"
    world.stop()


def test_stoppingAHeldConnectionLeavesTheBreaker() -> None:
    world = started(10)
    world.kill()
    world.advance(5.0)
    (breaker,) = world.supervisor.fleet.breakers
    held = [c for c in world.supervisor.connections.values() if c.held == "breaker"]
    count = breaker.held
    held[0].stop()
    assert held[0].state == "CLOSED"
    assert breaker.held == count - 1
    world.mode = "up"
    world.runUntil(lambda: world.established() == 9, 10)
    world.stop()
    world.assertQuiet()


def test_stoppingTheProbeLetsAnotherProbe() -> None:
    world = started(10, latency=None)
    world.kill()
    world.answer()
    world.advance(0.1)
    for _ in range(50):
        world.answer()
        world.advance(0.1)
    world.mode = "silent"  # the next probe hangs
    world.runUntil(lambda: len(world.pending) == 1, 5)
    (probing,) = world.pending
    world.supervisor.connection(probing).stop()  # type: ignore[union-attr]
    assert world.pending == {}
    world.mode = "down"
    world.runUntil(lambda: len(world.pending) == 1, 2.5)
    (other,) = world.pending
    assert other != probing
    assertOnlyProbesWhileOpen(world)
    world.stop()
    world.assertQuiet()


def test_stoppingAReleasedAttemptFreesItsPlaceInTheRamp() -> None:
    world = started(30, latency=None)
    world.kill()
    for _ in range(60):
        world.answer()
        world.advance(0.1)
    world.mode = "up"
    world.runUntil(lambda: len(world.pending) == 1, 3)
    world.answer()  # the probe succeeds: half-open
    world.advance(0.05)
    released = sorted(world.pending)
    assert len(released) == 4, "a ramp starts with a few"
    world.supervisor.connection(released[0]).stop()  # type: ignore[union-attr]
    world.advance(0.05)
    assert len(world.pending) == 4
    assert released[0] not in world.pending
    world.latency = 0.001
    world.answer()
    world.runUntil(lambda: world.established() == 29, 5)
    world.stop()
    world.assertQuiet()


def test_removingEveryConnectionRetiresTheBreaker() -> None:
    world = started(5)
    world.kill()
    world.advance(3.0)
    assert world.supervisor.fleet.breakers[0].state == "open"
    world.supervisor.reload(world.config.__class__(path="<empty>", connections=()))
    world.advance(0.5)
    assert world.supervisor.fleet.breakers == []
    world.assertQuiet()


def test_connectionsOfAnotherTargetAreNotHeld() -> None:
    """
    Scope "connection": each connection has its breaker, so one dead
    target's connection does not hold another's.
    """
    world = started(4, breaker=BreakerSpec(scope="connection", failures=1))
    assert len(world.supervisor.fleet.breakers) == 4
    world.kill()
    world.advance(3.0)
    assert {b.state for b in world.supervisor.fleet.breakers} == {"open"}
    world.stop()
    world.assertQuiet()


def test_scopeOffHasNoBreaker() -> None:
    world = started(3, breaker=BreakerSpec(scope="off"))
    assert world.supervisor.fleet.breakers == []
    world.kill()
    world.advance(3.0)
    assert world.held("breaker") == 0
    assert all(c.breaker is None for c in world.supervisor.connections.values())
    world.stop()
    world.assertQuiet()


def test_aBudgetedAttemptDoesNotBypassABreakerThatOpenedMeanwhile() -> None:
    """
    Attempts admitted by a closed breaker and then waiting for a budget
    token wait for the breaker again if it opened in the meantime.
    """
    world = FleetWorld(
        60,
        breaker=BREAKER,
        backoff=BACKOFF,
        budget=SupervisorSpec(connect_rate=5.0, connect_burst=1),
        latency=0.3,
    )
    # The peer refuses from the start: the first attempts fail one by one
    # while the others wait for their tokens.
    world.mode = "down"
    world.supervisor.startService()
    (breaker,) = world.supervisor.fleet.breakers
    opened: list[float] = []
    breaker.addObserver(lambda old, new: opened.append(world.clock.seconds()))
    world.advance(8.0)
    assert breaker.state == "open"
    # Attempts were waiting for tokens when the breaker opened...
    assert any(c.budgetWaiting > 0 for c in world.connects if c.time < opened[0])
    # ... and none of them went while it was open.
    assertOnlyProbesWhileOpen(world)
    world.mode = "up"
    took = world.runUntil(world.allEstablished, 30)
    assert took <= 60 / 5.0 + 2.0 + 1.0, "the budget's pace, after the next probe"
    assertOnlyProbesWhileOpen(world)
    world.stop()
    world.assertQuiet()


def retuned(world: FleetWorld, name: str, breaker: BreakerSpec) -> None:
    """
    Reload the world's configuration with C{name}'s breaker settings changed.
    """
    specs = tuple(
        attrs.evolve(spec, breaker=breaker) if spec.name == name else spec
        for spec in world.config.connections
    )
    world.config = attrs.evolve(world.config, connections=specs)
    report = world.supervisor.reload(world.config)
    assert report.retuned == (name,)


def test_aProbeMovedToAnotherBreakerDoesNotStrandTheOthers() -> None:
    """
    A reload gives the probing connection a breaker of its own while its
    probe is in flight: the breaker it left probes with someone else.
    """
    world = started(3, latency=None)
    world.kill()
    for _ in range(40):
        world.answer()
        world.advance(0.1)
    world.mode = "silent"
    world.runUntil(lambda: len(world.pending) == 1, 5)
    (probing,) = world.pending
    retuned(world, probing, BreakerSpec(scope="connection", failures=3))
    world.mode = "up"
    world.latency = 0.001
    world.answer()
    world.runUntil(world.allEstablished, 10)
    world.stop()
    world.assertQuiet()


def test_aHeldConnectionMovedToAnotherBreakerAsksItsNewOne() -> None:
    world = started(3)
    world.kill()
    world.advance(5.0)
    held = sorted(c.name for c in world.supervisor.connections.values() if c.held == "breaker")
    retuned(world, held[0], BreakerSpec(scope="off"))
    # No breaker holds it now: it goes at once (and is refused, and retries).
    assert world.supervisor.connection(held[0]).held != "breaker"  # type: ignore[union-attr]
    world.mode = "up"
    world.runUntil(world.allEstablished, 10)
    world.stop()
    world.assertQuiet()


def test_retuningAClosedConnectionJoinsNoBreaker() -> None:
    """
    A connection CLOSED for good (here: stopped while held by the breaker)
    stays listed; a reload that changes its breaker settings must not make
    it a member again, nor wake it.
    """
    world = started(3)
    world.kill()
    world.advance(5.0)
    held = sorted(c.name for c in world.supervisor.connections.values() if c.held == "breaker")
    closed = world.supervisor.connection(held[0])
    assert closed is not None
    closed.stop()
    assert closed.state == "CLOSED"
    retuned(world, held[0], BreakerSpec(scope="connection", failures=2))
    retuned(world, held[0], BreakerSpec(scope="endpoint", failures=4))
    assert closed.state == "CLOSED"
    (breaker,) = world.supervisor.fleet.breakers
    assert breaker.members == 2
    world.stop()
    world.assertQuiet()


def test_aReleasedAttemptWaitingForATokenDoesNotOutliveItsRamp() -> None:
    """
    Attempts a half-open breaker released, still waiting for budget tokens
    when a released attempt fails and the breaker re-opens, wait for the
    breaker again: they were let through by a judgement now void.
    """
    world = started(
        30,
        budget=SupervisorSpec(connect_rate=2.0, connect_burst=1),
        breaker=BreakerSpec(failures=3, probe_interval=0.5, probe_max=1.0),
    )
    world.kill()
    world.advance(20.0)
    assert world.held("breaker") >= 25
    world.mode = "up"
    world.runUntil(lambda: world.supervisor.fleet.breakers[0].state == "half_open", 3)
    world.mode = "down"
    world.advance(0.05)
    assert world.held("budget") >= 2, "released, waiting for tokens"
    world.runUntil(lambda: world.supervisor.fleet.breakers[0].state == "open", 3)
    world.advance(5.0)
    assertOnlyProbesWhileOpen(world)
    world.mode = "up"
    world.runUntil(world.allEstablished, 30)
    assertOnlyProbesWhileOpen(world)
    world.stop()
    world.assertQuiet()
