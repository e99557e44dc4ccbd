"""
Random lives of a fleet of connections sharing one target, its circuit
breaker(s) and the connect budget: whatever the order of failures,
successes, push-back, losses, stops and reloads (breaker and budget
settings retuned in place, connections removed and added back):

- no attempt bypasses an open breaker: every connect made while the
  connection's breaker is open is that breaker's probe;
- no attempt bypasses the budget: over any stretch with the same budget
  settings, the connects in any window of W seconds number at most
  C{connect_rate * W + connect_burst};
- no connection waits for a closed breaker, and none waits for ever: once
  the peer answers, every connection not stopped is ESTABLISHED within a
  bounded time;
- a stop of everything leaves nothing scheduled.
"""

from __future__ import annotations

import itertools
import random

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from supervisor import Config
from supervisor.spec import BackoffSpec, BreakerSpec, FlapSpec, SupervisorSpec
from tests.fleetworld import FleetWorld

COUNT = 8

BREAKERS = [
    BreakerSpec(failures=2, probe_interval=0.2, probe_max=0.8, release_rate=20.0),
    BreakerSpec(failures=1, probe_interval=0.5, probe_max=0.5, release_rate=3.0),
    BreakerSpec(failures=4, probe_interval=0.1, probe_max=1.6, release_rate=1000.0),
    BreakerSpec(scope="connection", failures=2, probe_interval=0.3, probe_max=0.6),
    BreakerSpec(scope="off"),
]

BUDGETS = [
    SupervisorSpec(),
    SupervisorSpec(connect_rate=4.0, connect_burst=1),
    SupervisorSpec(connect_rate=10.0, connect_burst=3),
    SupervisorSpec(connect_rate=50.0, connect_burst=20),
]

BACKOFF = BackoffSpec(initial=0.2, multiplier=2.0, max=2.0, jitter="full", reset_after=1.0)
FLAP = FlapSpec(max=1, within=10.0, hold=1.5)

RECOVERY_LIMIT = 120.0
"""Fake seconds within which everyone must be back once the peer answers:
far above the slowest settings (2 s of backoff, a 1.6 s probe, 8 releases
at 3 a second, 8 tokens at 4 a second, a 1.5 s flap hold)."""


class FleetLife(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = FleetWorld(
            COUNT,
            breaker=BREAKERS[0],
            budget=BUDGETS[2],
            backoff=BACKOFF,
            flap=FLAP,
            latency=None,
            connect_timeout=1.0,
        )
        self.world.supervisor.startService()
        # (index into world.connects where it began, the budget settings)
        self.budgets: list[tuple[int, SupervisorSpec]] = [(0, BUDGETS[2])]
        self.checked = 0

    # The peer.

    @rule(mode=st.sampled_from(["up", "down", "silent", "busy"]))
    def peerBecomes(self, mode: str) -> None:
        self.world.mode = "up" if mode == "busy" else mode  # type: ignore[assignment]
        self.busy = mode == "busy"

    @rule()
    def answerAll(self) -> None:
        for name in list(self.world.pending):
            self.answerOne(name)

    @rule(data=st.data())
    def answerOne_(self, data: st.DataObject) -> None:
        if self.world.pending:
            name = data.draw(st.sampled_from(sorted(self.world.pending)))
            self.answerOne(name)

    def answerOne(self, name: str) -> None:
        entry = self.world.pending.get(name)
        if entry is None:
            return
        self.world._answerOne(name, entry[0])
        if getattr(self, "busy", False) and name in self.world.live:
            # The peer accepts, then says it is overloaded in the handshake.
            protocol = self.world.protocolOf(name)
            if self.world.supervisor.connection(name).state == "CONNECTING":  # type: ignore[union-attr]
                protocol.handle.reject("max clients", permanent=False, overloaded=True)

    @rule(data=st.data())
    def lose(self, data: st.DataObject) -> None:
        if self.world.live:
            self.world.lose(data.draw(st.sampled_from(sorted(self.world.live))))

    @rule()
    def kill(self) -> None:
        self.world.kill()

    # Time.

    @rule(seconds=st.sampled_from([0.01, 0.05, 0.2, 0.5, 1.5, 4.0]))
    def advance(self, seconds: float) -> None:
        self.world.advance(seconds, step=0.01)

    # The operator.

    @rule(data=st.data())
    def stop(self, data: st.DataObject) -> None:
        running = [c for c in self.world.supervisor.connections.values() if c.state != "CLOSED"]
        if len(running) > 2:
            data.draw(st.sampled_from(running)).stop()

    @rule(data=st.data())
    def reconnect(self, data: st.DataObject) -> None:
        connections = sorted(self.world.supervisor.connections)
        connection = self.world.supervisor.connection(data.draw(st.sampled_from(connections)))
        assert connection is not None
        connection.reconnect()

    @rule(
        breakers=st.lists(st.sampled_from(BREAKERS), min_size=COUNT, max_size=COUNT),
        budget=st.sampled_from(BUDGETS),
        removed=st.sets(st.integers(0, COUNT - 1), max_size=2),
    )
    def reload(
        self, breakers: list[BreakerSpec], budget: SupervisorSpec, removed: set[int]
    ) -> None:
        specs = tuple(
            attrs.evolve(spec, breaker=breakers[i])
            for i, spec in enumerate(self.world.specs.values())
            if i not in removed
        )
        config = Config(path="<reload>", connections=specs, supervisor=budget)
        self.world.config = config
        # Marked first: the reload applies the budget first, and the
        # attempts it lets go happen inside it.
        self.budgets.append((len(self.world.connects), budget))
        self.world.supervisor.reload(config)

    # What always holds.

    @invariant()
    def onlyProbesWhileOpen(self) -> None:
        world = self.world
        for connect in world.connects[self.checked :]:
            if connect.breaker == "open":
                reasons = [
                    t.reason
                    for t in world.transitions
                    if t.connection == connect.name
                    and t.to == "CONNECTING"
                    and t.time == connect.time
                ]
                assert reasons[-1:] == ["probe"], (connect, reasons)
        self.checked = len(world.connects)

    @invariant()
    def nobodyWaitsForAClosedBreaker(self) -> None:
        for connection in self.world.supervisor.connections.values():
            if connection.held == "breaker":
                assert connection.breaker in ("open", "half_open"), connection
            if connection.held == "budget":
                assert self.world.supervisor.fleet.budget.spec.budgeted

    @invariant()
    def waitersHaveATimer(self) -> None:
        """
        Someone waiting for a token means the budget will wake up.
        """
        if self.world.supervisor.fleet.budget.waiting:
            assert len(self.world.supervisor.scheduler) > 0

    # The end of every life.

    def budgetNeverExceeded(self) -> None:
        connects = self.world.connects
        marks = [*self.budgets, (len(connects), SupervisorSpec())]
        for (start, spec), (end, _) in itertools.pairwise(marks):
            if not spec.budgeted:
                continue
            times = [c.time for c in connects[start:end]]
            for i, first in enumerate(times):
                for j in range(i, len(times)):
                    window = times[j] - first
                    assert j - i + 1 <= spec.connect_rate * window + spec.connect_burst + 1e-6, (
                        spec,
                        times[i : j + 1],
                    )

    def everyoneComesBack(self) -> None:
        world = self.world
        world.mode = "up"
        self.busy = False
        world.latency = 0.001
        world.answer()
        # (A connection stopped is CLOSING, then CLOSED; one closing to be
        # replaced by a reload is replaced once CLOSED: read them afresh.)
        world.runUntil(
            lambda: all(
                c.state in ("ESTABLISHED", "CLOSED") for c in world.supervisor.connections.values()
            ),
            RECOVERY_LIMIT,
            step=0.05,
        )
        # A breaker still open here has nobody to hold: it opened on the
        # failures of members that are gone (stopped, moved), the others
        # never left ESTABLISHED, and only an attempt can tell it the
        # target answers again.
        for breaker in world.supervisor.fleet.breakers:
            assert breaker.state == "closed" or breaker.held == 0, breaker
        self.onlyProbesWhileOpen()

    def teardown(self) -> None:
        self.everyoneComesBack()
        self.budgetNeverExceeded()
        self.world.stop()
        self.world.advance(1.0)
        assert all(c.state == "CLOSED" for c in self.world.supervisor.connections.values())
        self.world.assertQuiet()


TestFleetLife = FleetLife.TestCase


class Draws:
    """
    Stands in for Hypothesis's data: draws at random.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def draw(self, strategy: object) -> object:
        return self.rng.choice(list(strategy.elements))  # type: ignore[attr-defined]


def randomLife(rng: random.Random, steps: int) -> tuple[FleetLife, set[str], set[str]]:
    """
    One life of C{steps} rules drawn at random, the invariants checked
    after each; the breaker states and the kinds of hold it went through.
    """
    data: st.DataObject = Draws(rng)  # type: ignore[assignment]
    life = FleetLife()
    rules = [
        (3, lambda: life.peerBecomes(rng.choice(["up", "down", "silent", "busy"]))),
        (6, life.answerAll),
        (6, lambda: life.answerOne_(data)),
        (3, lambda: life.lose(data)),
        (1, life.kill),
        (10, lambda: life.advance(rng.choice([0.01, 0.05, 0.2, 0.5, 1.5, 4.0]))),
        (1, lambda: life.stop(data)),
        (2, lambda: life.reconnect(data)),
        (
            2,
            lambda: life.reload(
                [rng.choice(BREAKERS) for _ in range(COUNT)],
                rng.choice(BUDGETS),
                set(rng.sample(range(COUNT), rng.choice([0, 0, 1]))),
            ),
        ),
    ]
    breakerStates: set[str] = set()
    held: set[str] = set()
    for _ in range(steps):
        rng.choices([r for _, r in rules], [w for w, _ in rules])[0]()
        life.onlyProbesWhileOpen()
        life.nobodyWaitsForAClosedBreaker()
        life.waitersHaveATimer()
        breakerStates |= {b.state for b in life.world.supervisor.fleet.breakers}
        held |= {str(c.held) for c in life.world.supervisor.connections.values()}
    return life, breakerStates, held


def test_randomLivesReachEveryRecoveryState() -> None:
    """
    The rules above are rich enough to reach what the properties are about
    (so that the property test exercises it): every breaker state, probes
    and releases, and connections held by each of the breaker, the budget,
    the flap guard and the backoff, with the invariants holding throughout.
    """
    rng = random.Random(2)
    breakerStates: set[str] = set()
    held: set[str] = set()
    reasons: set[str] = set()
    for _ in range(6):
        life, states, kinds = randomLife(rng, 400)
        breakerStates |= states
        held |= kinds
        life.teardown()
        reasons |= set(life.world.reasons())
    assert {"probe", "release", "retry", "start"} <= reasons
    assert breakerStates == {"closed", "open", "half_open"}
    assert {"breaker", "budget", "flapping", "backoff"} <= held
