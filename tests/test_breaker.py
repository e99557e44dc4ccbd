"""
Every edge of one circuit breaker (L{supervisor.breaker.Breaker}), driven
directly on a fake clock with members the test controls.

The breaker's jitter comes from its own C{random.Random}; the tests draw
the same numbers from a twin seeded alike, so every expected time is exact.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from supervisor.breaker import INITIAL_WINDOW, RELEASE_FLOOR, RELEASE_SPREAD, Breaker
from supervisor.scheduler import Scheduler
from supervisor.spec import BreakerSpec
from supervisor.states.records import Cause
from tests.clocks import TurnClock

SEED = 4
EPSILON = 1e-6


class Member:
    """
    One connection's ticket: remembers when and why it was released.
    """

    def __init__(self, name: str, log: list[tuple[float, str, str]], clock: Clock) -> None:
        self.name = name
        self.log = log
        self.clock = clock

    def release(self, cause: Cause) -> None:
        self.log.append((self.clock.seconds(), self.name, cause.reason))

    def __repr__(self) -> str:
        return f"<Member {self.name}>"


class Bench:
    """
    One breaker on a fake clock, its members, and a twin of its random source.
    """

    def __init__(self, clock: Clock | None = None, **spec: object) -> None:
        self.clock = Clock() if clock is None else clock
        self.scheduler = Scheduler(self.clock)
        self.twin = random.Random(SEED)
        self.breaker = Breaker(
            "endpoint tcp:x", BreakerSpec(**spec), self.scheduler, random.Random(SEED)
        )  # type: ignore[arg-type]
        self.log: list[tuple[float, str, str]] = []
        self.changes: list[tuple[str, str]] = []
        self.breaker.addObserver(lambda old, new: self.changes.append((old, new)))

    def members(self, count: int, prefix: str = "m") -> list[Member]:
        return [Member(f"{prefix}{i}", self.log, self.clock) for i in range(count)]

    def jittered(self, delay: float) -> float:
        "What the breaker's next jittered draw of C{delay} is."
        return delay * (0.5 + 0.5 * self.twin.random())

    def advance(self, seconds: float, step: float = 0.001) -> None:
        "Advance in small steps, so that the scheduler fires each timer as it comes due."
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end - 1e-12:
            self.clock.advance(min(step, end - self.clock.seconds()))

    def fail(self, member: Member, count: int = 1, overloaded: bool = False) -> None:
        for _ in range(count):
            self.breaker.failed(member, overloaded)

    def open(self, held: list[Member]) -> None:
        """
        Open the breaker with C{failures} failures of an outsider, then hold C{held}.
        """
        outsider = Member("outsider", self.log, self.clock)
        self.fail(outsider, self.breaker.spec.failures)
        assert self.breaker.state == "open"
        for member in held:
            assert self.breaker.admit(member) is False

    def released(self, reason: str | None = None) -> list[str]:
        return [name for _, name, why in self.log if reason is None or why == reason]

    def assertQuiet(self) -> None:
        assert len(self.scheduler) == 0
        assert self.clock.getDelayedCalls() == []


# CLOSED


def test_closedAdmitsEveryone() -> None:
    bench = Bench()
    assert all(bench.breaker.admit(m) for m in bench.members(10))
    assert bench.breaker.state == "closed"
    assert bench.breaker.held == 0
    bench.assertQuiet()


@pytest.mark.parametrize("failures", [1, 2, 5])
def test_opensAfterFailuresConsecutiveFailures(failures: int) -> None:
    bench = Bench(failures=failures)
    members = bench.members(failures)
    for member in members[:-1]:
        bench.fail(member)
    assert bench.breaker.state == "closed"
    bench.fail(members[-1])
    assert bench.breaker.state == "open"
    assert bench.changes == [("closed", "open")]


def test_aSuccessBetweenFailuresStartsTheCountOver() -> None:
    bench = Bench(failures=3)
    a, b = bench.members(2)
    bench.fail(a, 2)
    bench.breaker.succeeded(b)
    bench.fail(a, 2)
    assert bench.breaker.state == "closed"
    bench.fail(a)
    assert bench.breaker.state == "open"


def test_lossesCountLikeFailures() -> None:
    """
    Members' ESTABLISHED connections lost together (a shared peer died)
    open the breaker before any of their retries fails.
    """
    bench = Bench(failures=3)
    members = bench.members(3)
    for member in members[:-1]:
        bench.breaker.lost(member)
    assert bench.breaker.state == "closed"
    bench.breaker.lost(members[-1])
    assert bench.breaker.state == "open"


def test_aLossThenASuccessfulReconnectStartsTheCountOver() -> None:
    """
    Connections lost now and then, each back at its next attempt, never
    open the breaker.
    """
    bench = Bench(failures=2)
    a, b = bench.members(2)
    for _ in range(10):
        bench.breaker.lost(a)
        bench.breaker.succeeded(a)
        bench.breaker.lost(b)
        bench.breaker.succeeded(b)
    assert bench.breaker.state == "closed"


def test_lossesWhileOpenOrReleasingChangeNothing() -> None:
    bench = Bench(failures=1, probe_interval=0.5, probe_max=0.5)
    a, b = bench.members(2)
    bench.open([a])
    bench.breaker.lost(b)
    assert bench.breaker.state == "open"
    bench.advance(0.5)
    assert bench.released() == ["m0"]
    bench.breaker.succeeded(a)
    assert bench.breaker.state in ("half_open", "closed")
    state = bench.breaker.state
    bench.breaker.lost(b)
    assert bench.breaker.state == state


def test_pushBackOpensAtOnce() -> None:
    """
    An explicit "overloaded" answer opens the breaker whatever the count.
    """
    bench = Bench(failures=100)
    (a,) = bench.members(1)
    bench.fail(a, overloaded=True)
    assert bench.breaker.state == "open"


# OPEN


def test_openHoldsMembersAndReleasesNobodyBeforeTheProbe() -> None:
    bench = Bench(failures=1, probe_interval=1.0, probe_max=4.0)
    members = bench.members(5)
    bench.open(members)
    assert bench.breaker.held == 5
    first = bench.jittered(1.0)
    bench.advance(first - EPSILON)
    assert bench.log == []
    bench.advance(2 * EPSILON)
    assert bench.released() == ["m0"]
    assert bench.released("probe") == ["m0"]
    assert bench.breaker.held == 4


def test_theFirstProbeIsDueAfterAJitteredProbeInterval() -> None:
    """
    The jitter spreads the first probe over the upper half of C{probe_interval}.
    """
    times = []
    for seed in range(30):
        clock = Clock()
        breaker = Breaker(
            "k",
            BreakerSpec(failures=1, probe_interval=2.0, probe_max=4.0),
            Scheduler(clock),
            random.Random(seed),
        )
        log: list[tuple[float, str, str]] = []
        member = Member("m", log, clock)
        breaker.failed(member)
        breaker.admit(member)
        while not log:
            clock.advance(0.01)
        times.append(log[0][0])
    assert all(1.0 <= t <= 2.0 + 0.011 for t in times)
    assert max(times) - min(times) > 0.5


def test_probeDelayDoublesUpToProbeMax() -> None:
    bench = Bench(failures=1, probe_interval=0.5, probe_max=3.0)
    members = bench.members(8)
    bench.open(members)
    expected, delay = [bench.jittered(0.5)], 0.5
    for _ in range(6):
        delay = min(3.0, delay * 2)
        expected.append(bench.jittered(delay))
    gaps = []
    last = 0.0
    for probe in members[:7]:
        while bench.released() != [m.name for m in members[: members.index(probe) + 1]]:
            bench.advance(0.001)
        now = bench.clock.seconds()
        gaps.append(now - last)
        bench.fail(probe)
        last = now
    assert gaps == pytest.approx(expected, abs=0.0011)
    # 0.5, 1, 2, 3, 3, ...: each jittered into the upper half of its delay.
    assert gaps[-1] <= 3.0 + 0.0011 and gaps[-1] >= 1.5 - 0.0011
    assert bench.released("probe") == [m.name for m in members[:7]]
    assert bench.breaker.state == "open"


def test_oneProbeAtATime() -> None:
    """
    While a probe is in flight no other member goes, however long it takes.
    """
    bench = Bench(failures=1, probe_interval=0.2, probe_max=0.4)
    members = bench.members(4)
    bench.open(members)
    bench.advance(0.3)
    assert bench.released() == ["m0"]
    bench.advance(60)
    assert bench.released() == ["m0"]
    assert len(bench.scheduler) == 0  # nothing scheduled: the probe's outcome decides


def test_aProbeDueWithNobodyHeldIsTheNextToAsk() -> None:
    bench = Bench(failures=1, probe_interval=0.2, probe_max=0.4)
    bench.open([])
    bench.advance(1.0)
    first, second = bench.members(2)
    assert bench.breaker.admit(first) is True
    assert bench.breaker.admit(second) is False
    assert bench.breaker.state == "open"


def test_aFailureOfAnAttemptBegunBeforeOpeningIsNotTheProbes() -> None:
    bench = Bench(failures=2, probe_interval=1.0, probe_max=1.0)
    early, *held = bench.members(3)
    assert bench.breaker.admit(early)
    bench.open(held)
    bench.advance(1.0)
    assert bench.released() == ["m1"]
    bench.fail(early)  # the attempt admitted while closed fails now
    bench.advance(5.0)
    assert bench.released() == ["m1"], "the probe's outcome is still awaited"


def test_aProbeThatSucceedsHalfOpens() -> None:
    bench = Bench(failures=1, probe_interval=0.2, probe_max=0.4)
    (probe,) = bench.members(1)
    bench.open([probe])
    bench.advance(0.2)
    bench.breaker.succeeded(probe)
    assert bench.breaker.state == "half_open"
    bench.advance(0.02)
    assert bench.breaker.state == "closed", "nobody else was held"
    assert bench.changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    bench.assertQuiet()


def test_anySuccessAgainstTheTargetHalfOpens() -> None:
    """
    An attempt begun before the breaker opened that succeeds proves the
    target answers as well as a probe would.
    """
    bench = Bench(failures=1, probe_interval=5.0, probe_max=5.0)
    early, held = bench.members(2)
    bench.breaker.admit(early)
    bench.open([held])
    bench.breaker.succeeded(early)
    assert bench.breaker.state == "half_open"
    bench.advance(0.02)
    assert bench.released("release") == ["m1"]


# HALF_OPEN


def halfOpen(bench: Bench, count: int) -> list[Member]:
    """
    Open with C{count} members held; the first probes and succeeds.
    """
    members = bench.members(count)
    bench.open(members)
    while not bench.log:
        bench.advance(0.01)
    bench.breaker.succeeded(members[0])
    assert bench.breaker.state == "half_open"
    bench.log.clear()
    return members[1:]


def test_theRampStartsWithAFewAndGrowsWithSuccesses() -> None:
    bench = Bench(failures=1, probe_interval=0.1, probe_max=1.0, release_rate=10_000.0)
    held = halfOpen(bench, 101)
    bench.advance(0.02)
    assert bench.released("release") == [m.name for m in held[:INITIAL_WINDOW]]
    rounds = [INITIAL_WINDOW]
    # Every released attempt of a round succeeds: each success lets one
    # more go, and widens the window by one.
    while bench.breaker.held:
        inflight = [m for m in held if m.name in bench.released()][-rounds[-1] :]
        before = len(bench.log)
        for member in inflight:
            bench.breaker.succeeded(member)
        # A round trip of 100 ms: the pace (RELEASE_FLOOR a second here)
        # allows a whole window per round; the window is the limit.
        bench.advance(0.1)
        rounds.append(len(bench.log) - before)
    assert rounds[:4] == [4, 8, 16, 32], "the window doubles each round trip, as slow start"
    assert sum(rounds) == 100
    assert bench.breaker.state == "half_open"


def test_theRampWaitsForSuccessesWhenItsWindowIsFull() -> None:
    bench = Bench(failures=1, probe_interval=0.1, probe_max=1.0, release_rate=10_000.0)
    held = halfOpen(bench, 11)
    bench.advance(0.5)
    assert len(bench.log) == INITIAL_WINDOW
    bench.breaker.succeeded(held[0])
    bench.advance(0.02)
    assert len(bench.log) == INITIAL_WINDOW + 2


def releaseTimes(bench: Bench, held: list[Member]) -> list[float]:
    """
    Let every released member succeed at once, from one due timer to the
    next, until nobody is held: when each was released, from the start.
    """
    names = {m.name: m for m in held}
    start = bench.clock.seconds()
    while bench.breaker.held:
        before = len(bench.log)
        calls = bench.clock.getDelayedCalls()
        bench.clock.advance(calls[0].getTime() - bench.clock.seconds())
        for _, name, _ in bench.log[before:]:
            bench.breaker.succeeded(names[name])
    return [t - start for t, _, _ in bench.log]


def test_aLargeFleetIsReleasedOverTheSpread() -> None:
    """
    Held when the breaker half-opened, many members are released at
    C{held / RELEASE_SPREAD} a second, below a generous C{release_rate}: a
    returning peer sees any fleet come back over a few seconds.
    """
    count = 10_000
    bench = Bench(failures=1, probe_interval=0.1, probe_max=1.0, release_rate=100_000.0)
    times = releaseTimes(bench, halfOpen(bench, count + 1))
    assert len(times) == count
    assert times[-1] == pytest.approx(RELEASE_SPREAD, rel=0.05)
    pace = count / RELEASE_SPREAD
    for second in range(int(RELEASE_SPREAD)):
        within = sum(1 for t in times if second <= t < second + 1)
        assert within <= pace * 1.01 + 1, (second, within)


def test_aSmallFleetIsReleasedAtTheFloorAtLeast() -> None:
    bench = Bench(failures=1, probe_interval=0.1, probe_max=1.0, release_rate=100_000.0)
    times = releaseTimes(bench, halfOpen(bench, 201))
    assert times[-1] <= 200 / RELEASE_FLOOR + 0.01


def test_releaseRateCapsTheSpread() -> None:
    bench = Bench(failures=1, probe_interval=0.1, probe_max=1.0, release_rate=500.0)
    times = releaseTimes(bench, halfOpen(bench, 10_001))
    assert times[-1] == pytest.approx(10_000 / 500.0, rel=0.01)


def test_releasesNeverExceedReleaseRate() -> None:
    """
    However wide the window, at most C{release_rate} a second go (in bursts
    of at most one scheduler wake-up's worth), and at that pace.
    """
    rate = 50.0
    bench = Bench(failures=1, probe_interval=0.1, probe_max=1.0, release_rate=rate)
    times = releaseTimes(bench, halfOpen(bench, 301))
    burst = max(1.0, rate * bench.scheduler.resolution)
    for i, t in enumerate(times):
        # the (i+1)-th release cannot come before (i + 1 - burst) / rate
        assert t >= (i + 1 - burst) / rate - 1e-9, (i, t)
    # Each release when it is due, not a scheduler wake-up later.
    assert times[-1] - times[0] == pytest.approx(299 / rate, abs=1e-6)


def test_aLateSchedulerDoesNotSlowTheReleasesDown() -> None:
    """
    When the reactor is busy and the scheduler wakes up only every 100 ms,
    each wake-up releases what the rate allowed meanwhile: the pace is the
    clock's, not the number of wake-ups' (at most 100 ms' worth at once).
    """
    rate = 1000.0
    bench = Bench(failures=1, probe_interval=0.1, probe_max=1.0, release_rate=rate)
    held = halfOpen(bench, 501)
    names = {m.name: m for m in held}
    start = bench.clock.seconds()
    batches = []
    while bench.breaker.held:
        before = len(bench.log)
        bench.clock.advance(0.1)  # a wake-up every 100 ms, however due the timers
        batches.append(len(bench.log) - before)
        for _, name, _ in bench.log[before:]:
            bench.breaker.succeeded(names[name])
    took = bench.clock.seconds() - start
    # The slow start's window (4, then growing by one per success) is the
    # limit in the first rounds; after that the rate is: 500 in about 0.5 s.
    assert took <= 500 / rate + 0.5, (took, batches)
    assert max(batches) <= rate * 0.1 + 1


def test_noHundredMillisecondsReleaseMoreThanATenthOfTheRate() -> None:
    """
    A late wake-up makes up for lost time, but never so that any 100 ms
    sees more than release_rate / 10 releases: here the reactor alternates
    100 ms stalls with 100 ms of on-time wake-ups.
    """
    rate = 1000.0
    # One turn of a reactor each time it is advanced: a call that falls due
    # meanwhile (the clock moved on) waits for the next turn.
    bench = Bench(TurnClock(), failures=1, probe_interval=0.1, probe_max=5.0, release_rate=rate)
    held = halfOpen(bench, 2001)
    names = {m.name: m for m in held}
    while bench.breaker.held:
        steps = [0.1] if int(bench.clock.seconds() * 10) % 2 else [0.001] * 100
        for step in steps:
            before = len(bench.log)
            bench.clock.advance(step)
            for _, name, _ in bench.log[before:]:
                bench.breaker.succeeded(names[name])
    times = [t for t, _, _ in bench.log]
    j = 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] < start + 0.1 - 1e-9:
            j += 1
        assert j - i <= rate * 0.1, (start, j - i)
    # Releases due during a stall go when it ends, as many as the last
    # 100 ms allow: half the time stalled, half the rate at worst.
    assert times[-1] - times[0] <= 2000 / (rate / 2) + 0.5


def test_aLateWakeUpReleasesForOneBudgetAtMost() -> None:
    """
    Each release starts a connect, which takes time: one wake-up of the
    scheduler releases for its C{budget} at most (and the one that crossed
    it), however much a late wake-up has to make up for; the rest go at the
    next wake-ups, none lost.
    """
    rate, cost = 1000.0, 0.002
    # One turn of a reactor each time it is advanced: a call that falls due
    # meanwhile (the clock moved on) waits for the next turn.
    bench = Bench(TurnClock(), failures=1, probe_interval=0.1, probe_max=5.0, release_rate=rate)
    held = halfOpen(bench, 1001)
    names = {m.name: m for m in held}

    def succeed(before: int) -> None:
        for _, name, _ in bench.log[before:]:
            bench.breaker.succeeded(names[name])

    # On-time wake-ups and quick releases, till the window is wide.
    for _ in range(30):
        before = len(bench.log)
        bench.clock.advance(0.01)
        succeed(before)
    for member in held:

        def release(cause: Cause, member: Member = member) -> None:
            Member.release(member, cause)
            bench.clock.rightNow += cost

        member.release = release  # type: ignore[method-assign]
    # The reactor was held for 100 ms: 100 releases are owed.
    before = len(bench.log)
    bench.clock.advance(0.1)
    late = len(bench.log) - before
    assert 1 <= late <= bench.scheduler.budget / cost + 1
    succeed(before)
    for _ in range(1000):
        if not bench.breaker.held:
            break
        before = len(bench.log)
        bench.clock.advance(0.01)
        assert len(bench.log) - before <= bench.scheduler.budget / cost + 1
        succeed(before)
    assert sorted(name for _, name, _ in bench.log) == sorted(m.name for m in held)


def test_aReleasedFailureReopens() -> None:
    bench = Bench(failures=3, probe_interval=0.4, probe_max=2.0)
    held = halfOpen(bench, 20)
    bench.advance(0.02)
    first = held[0]
    assert bench.released() == [m.name for m in held[:INITIAL_WINDOW]]
    bench.fail(first)
    assert bench.breaker.state == "open", "one failure re-opens, not `failures`"
    # Still held: those not released; the probe delay starts over.
    assert bench.breaker.held == len(held) - INITIAL_WINDOW
    bench.log.clear()
    failedAt = bench.clock.seconds()
    # The twin has drawn nothing yet; the breaker drew once for its first probe.
    bench.jittered(0.4)
    due = bench.jittered(0.4)
    while not bench.log:
        bench.advance(0.001)
    assert bench.clock.seconds() - failedAt == pytest.approx(due, abs=0.0015)
    assert bench.released("probe") == [held[INITIAL_WINDOW].name]


def test_aFailureNotReleasedByTheRampDoesNotReopen() -> None:
    """
    An attempt admitted before the breaker opened that fails while it is
    half-open says nothing about the target now.
    """
    bench = Bench(failures=1, probe_interval=0.2, probe_max=1.0)
    early = Member("early", bench.log, bench.clock)
    bench.breaker.admit(early)
    halfOpen(bench, 5)
    bench.fail(early)
    assert bench.breaker.state == "half_open"


def test_pushBackReopensAHalfOpenBreakerWhoeverSaysIt() -> None:
    bench = Bench(failures=1, probe_interval=0.2, probe_max=1.0)
    early = Member("early", bench.log, bench.clock)
    bench.breaker.admit(early)
    halfOpen(bench, 5)
    bench.fail(early, overloaded=True)
    assert bench.breaker.state == "open"


def test_closesOnceEveryoneIsBack() -> None:
    bench = Bench(failures=1, probe_interval=0.2, probe_max=5.0)
    held = halfOpen(bench, 4)
    bench.advance(0.02)
    assert bench.released() == [m.name for m in held]
    for member in held[:-1]:
        bench.breaker.succeeded(member)
        bench.advance(0.02)
        assert bench.breaker.state == "half_open"
    bench.breaker.succeeded(held[-1])
    bench.advance(0.02)
    assert bench.breaker.state == "closed"
    bench.assertQuiet()


def test_closesAfterProbeMaxWithNothingFailing() -> None:
    """
    Released attempts that neither succeed nor fail (a slow handshake)
    do not keep the breaker half-open for ever.
    """
    bench = Bench(failures=1, probe_interval=0.2, probe_max=1.5)
    held = halfOpen(bench, 3)
    bench.advance(0.02)
    assert bench.released() == [m.name for m in held]
    released = bench.clock.seconds()
    bench.advance(1.5 - 0.05)
    assert bench.breaker.state == "half_open"
    bench.advance(0.1)
    assert bench.breaker.state == "closed"
    assert bench.clock.seconds() - released >= 1.5
    bench.assertQuiet()


def test_aMemberArrivingWhileHalfOpenIsHeldAndReleasedInTurn() -> None:
    bench = Bench(failures=1, probe_interval=0.2, probe_max=1.0)
    held = halfOpen(bench, 2)
    bench.advance(0.02)
    bench.advance(0.9)  # the settle timer runs: 1.0 after the last release
    late = Member("late", bench.log, bench.clock)
    assert bench.breaker.admit(late) is False
    bench.advance(0.02)
    assert bench.released()[-1] == "late"
    bench.advance(0.5)
    assert bench.breaker.state == "half_open", "the late arrival restarted the settle time"
    for member in [*held, late]:
        bench.breaker.succeeded(member)
    bench.advance(0.02)
    assert bench.breaker.state == "closed"
    bench.assertQuiet()


# Withdrawal


def test_aWithdrawnHeldMemberIsNeverReleased() -> None:
    bench = Bench(failures=1, probe_interval=0.2, probe_max=0.2)
    a, b, c = bench.members(3)
    bench.open([a, b, c])
    bench.breaker.withdraw(a)
    assert bench.breaker.held == 2
    bench.advance(0.2)
    assert bench.released("probe") == ["m1"]
    bench.breaker.succeeded(b)
    bench.advance(0.05)
    assert bench.released() == ["m1", "m2"]


def test_aWithdrawnProbeIsReplacedAfterTheSameDelay() -> None:
    bench = Bench(failures=1, probe_interval=1.0, probe_max=8.0)
    members = bench.members(3)
    bench.open(members)
    first = bench.jittered(1.0)
    bench.advance(first + 0.001)
    assert bench.released() == ["m0"]
    bench.fail(members[0])  # the delay is now 2.0
    second = bench.jittered(2.0)
    bench.advance(second + 0.001)
    assert bench.released() == ["m0", "m1"]
    bench.breaker.withdraw(members[1])  # stopped while probing
    withdrawn = bench.clock.seconds()
    third = bench.jittered(2.0)
    while len(bench.log) < 3:
        bench.advance(0.001)
    assert bench.clock.seconds() - withdrawn == pytest.approx(third, abs=0.0015)
    assert bench.released("probe") == ["m0", "m1", "m2"]


def test_aWithdrawnInFlightMemberFreesItsPlaceInTheWindow() -> None:
    bench = Bench(failures=1, probe_interval=0.1, probe_max=5.0)
    held = halfOpen(bench, 10)
    bench.advance(0.02)
    assert len(bench.log) == INITIAL_WINDOW
    bench.breaker.withdraw(held[0])
    bench.advance(0.02)
    assert len(bench.log) == INITIAL_WINDOW + 1
    assert bench.breaker.state == "half_open"


def test_withdrawingEveryoneWhileHalfOpenCloses() -> None:
    bench = Bench(failures=1, probe_interval=0.1, probe_max=5.0)
    held = halfOpen(bench, 6)
    bench.advance(0.02)
    for member in held:
        bench.breaker.withdraw(member)
    bench.advance(0.02)
    assert bench.breaker.state == "closed"
    bench.assertQuiet()


def test_withdrawingAnUnknownMemberChangesNothing() -> None:
    bench = Bench(failures=1, probe_interval=0.2, probe_max=0.2)
    stranger, held = bench.members(2)
    bench.breaker.withdraw(stranger)
    bench.open([held])
    bench.breaker.withdraw(stranger)
    bench.advance(0.25)
    assert bench.released("probe") == ["m1"]


# Retune and retire


def test_retuneAppliesToTheNextCount() -> None:
    bench = Bench(failures=5)
    (a,) = bench.members(1)
    bench.fail(a, 2)
    bench.breaker.retune(BreakerSpec(failures=3))
    bench.fail(a)
    assert bench.breaker.state == "open"


def test_retuneAppliesToTheNextProbeDelay() -> None:
    bench = Bench(failures=1, probe_interval=1.0, probe_max=1.0)
    members = bench.members(3)
    bench.open(members)
    bench.advance(1.01)
    assert bench.released() == ["m0"]
    bench.jittered(1.0)
    bench.breaker.retune(BreakerSpec(failures=1, probe_interval=0.1, probe_max=0.1))
    bench.fail(members[0])
    failedAt = bench.clock.seconds()
    while len(bench.log) < 2:
        bench.advance(0.001)
    # min(probe_max, 2 x 1.0) with the new probe_max: 0.1, jittered.
    assert bench.clock.seconds() - failedAt == pytest.approx(bench.jittered(0.1), abs=0.0015)


def test_retuneAppliesToTheNextReleases() -> None:
    bench = Bench(failures=1, probe_interval=0.1, probe_max=5.0, release_rate=10_000.0)
    held = halfOpen(bench, 200)
    bench.breaker.retune(
        BreakerSpec(failures=1, probe_interval=0.1, probe_max=5.0, release_rate=10.0)
    )
    names = {m.name: m for m in held}
    bench.advance(0.02)
    start = bench.clock.seconds()
    while bench.clock.seconds() - start < 2.0:
        before = len(bench.log)
        bench.advance(0.001)
        for _, name, _ in bench.log[before:]:
            bench.breaker.succeeded(names[name])
    # The first wake-up was already paced at the old rate (its burst), the rest at 10/s.
    assert len(bench.log) <= INITIAL_WINDOW + 2 * 10 + 1


@pytest.mark.parametrize("state", ["open", "half_open pacing", "half_open settling"])
def test_retireCancelsEveryTimer(state: str) -> None:
    bench = Bench(failures=1, probe_interval=0.5, probe_max=1.0, release_rate=1.0)
    if state == "open":
        bench.open(bench.members(3))
    elif state == "half_open pacing":
        halfOpen(bench, 30)
        bench.advance(0.02)
    else:
        halfOpen(bench, 2)
        bench.advance(0.02)
    assert len(bench.scheduler) > 0
    bench.breaker.retire()
    bench.assertQuiet()
    before = list(bench.log)
    bench.advance(10)
    assert bench.log == before


def test_retireWhileClosedLeavesNothing() -> None:
    bench = Bench()
    bench.breaker.retire()
    bench.assertQuiet()


class Eager(Member):
    """
    A member that reports its released attempt's outcome at once, from
    inside the breaker's handling of the input that released it.
    """

    def __init__(self, name: str, log: list[tuple[float, str, str]], clock: Clock) -> None:
        super().__init__(name, log, clock)
        self.breaker: Breaker | None = None
        self.outcome = "succeeded"

    def release(self, cause: Cause) -> None:
        super().release(cause)
        assert self.breaker is not None
        if self.outcome == "succeeded":
            self.breaker.succeeded(self)
        else:
            self.breaker.failed(self, False)


_ACTIONS = st.one_of(
    st.tuples(st.just("admit"), st.integers(0, 3)),
    st.tuples(st.just("failed"), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("succeeded"), st.integers(0, 3)),
    st.tuples(st.just("lost"), st.integers(0, 3)),
    st.tuples(st.just("withdraw"), st.integers(0, 3)),
    st.tuples(st.just("eager"), st.integers(0, 3), st.sampled_from(["succeeded", "failed"])),
    st.tuples(st.just("advance"), st.floats(0.0, 3.0)),
)


def _play(actions: list[tuple[object, ...]], throughTheMachine: bool) -> list[object]:
    """
    Play C{actions} on a breaker; with C{throughTheMachine}, its C{admit}
    and C{succeeded} always go through its machine (no closed fast path).
    """
    bench = Bench(failures=2, probe_interval=0.5, probe_max=2.0)
    breaker = bench.breaker
    if throughTheMachine:
        breaker.admit = breaker._inputs.admit  # type: ignore[method-assign]
        breaker.succeeded = breaker._inputs.succeeded  # type: ignore[method-assign]
    members = [Eager(f"m{i}", bench.log, bench.clock) for i in range(4)]
    for member in members:
        member.breaker = breaker
    seen: list[object] = []
    for action in actions:
        kind = action[0]
        if kind == "advance":
            bench.advance(float(action[1]), step=0.05)  # type: ignore[arg-type]
            seen.append(None)
            continue
        member = members[action[1]]  # type: ignore[index]
        if kind == "admit":
            seen.append(breaker.admit(member))
        elif kind == "failed":
            breaker.failed(member, bool(action[2]))
        elif kind == "succeeded":
            breaker.succeeded(member)
        elif kind == "lost":
            breaker.lost(member)
        elif kind == "withdraw":
            breaker.withdraw(member)
        else:
            member.outcome = str(action[2])
        seen.append((breaker.state, breaker.held, breaker._core.failures))
    return [seen, bench.log, bench.changes]


@settings(max_examples=300, deadline=None)
@given(st.lists(_ACTIONS, max_size=40))
def test_theClosedFastPathsDoWhatTheMachineDoes(actions: list[tuple[object, ...]]) -> None:
    """
    C{admit} and C{succeeded} of a closed breaker that handles no other
    input skip its machine; any sequence of inputs (including members that
    report their released attempt's outcome from inside the breaker) gives
    the same answers, states, counts, releases and changes as when every
    input goes through the machine.
    """
    assert _play(actions, throughTheMachine=False) == _play(actions, throughTheMachine=True)
