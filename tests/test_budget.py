"""
The global connect budget (L{supervisor.budget.ConnectBudget}): a token
bucket every attempt passes through, serving waiting attempts in order.
Driven directly on a fake clock, then through a fleet of connections.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from supervisor.budget import ConnectBudget
from supervisor.scheduler import Scheduler
from supervisor.spec import BackoffSpec, BreakerSpec, SupervisorSpec
from supervisor.states.records import Cause
from tests.fleetworld import FleetWorld


class Request:
    """
    One attempt waiting for a token; remembers when it was granted.
    """

    def __init__(
        self, name: str, granted: list[tuple[float, str]], clock: Clock, goes: bool = True
    ) -> None:
        self.name = name
        self.granted = granted
        self.clock = clock
        self.goes = goes

    def grant(self, cause: Cause) -> bool:
        if self.goes:
            self.granted.append((self.clock.seconds(), self.name))
        return self.goes


class Bucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.clock = Clock()
        self.scheduler = Scheduler(self.clock)
        self.budget = ConnectBudget(
            SupervisorSpec(connect_rate=rate, connect_burst=burst), self.scheduler
        )
        self.granted: list[tuple[float, str]] = []

    def request(self, name: str, goes: bool = True) -> tuple[Request, bool]:
        request = Request(name, self.granted, self.clock, goes)
        now = self.budget.take(request, Cause("retry"))
        if now:
            self.granted.append((self.clock.seconds(), name))
        return request, now

    def advance(self, seconds: float, step: float = 0.001) -> None:
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end - 1e-12:
            self.clock.advance(min(step, end - self.clock.seconds()))

    def runTimers(self) -> None:
        "Advance from one delayed call to the next until none is left."
        while calls := self.clock.getDelayedCalls():
            self.clock.advance(max(0.0, calls[0].getTime() - self.clock.seconds()))

    def names(self) -> list[str]:
        return [name for _, name in self.granted]

    def assertQuiet(self) -> None:
        assert len(self.scheduler) == 0
        assert self.clock.getDelayedCalls() == []


def test_offByDefault() -> None:
    clock = Clock()
    budget = ConnectBudget(SupervisorSpec(), Scheduler(clock))
    assert not budget.spec.budgeted
    assert all(budget.take(Request(str(i), [], clock), Cause("start")) for i in range(10_000))
    assert budget.waiting == {}
    assert clock.getDelayedCalls() == []


def test_aBurstGoesAtOnceThenTheRestWait() -> None:
    bucket = Bucket(rate=10.0, burst=5)
    answers = [bucket.request(f"r{i}")[1] for i in range(8)]
    assert answers == [True] * 5 + [False] * 3
    assert list(r.name for r in bucket.budget.waiting) == ["r5", "r6", "r7"]


def test_waitingRequestsAreServedInOrder() -> None:
    bucket = Bucket(rate=10.0, burst=1)
    for i in range(20):
        bucket.request(f"r{i}")
    bucket.advance(3.0)
    assert bucket.names() == [f"r{i}" for i in range(20)]
    bucket.assertQuiet()


def test_aTokenNotUsedGoesToTheNext() -> None:
    """
    A request whose attempt does not go when its token comes (its breaker
    opened meanwhile, and holds it) gives the token back: the next waiting
    request has it at once.
    """
    bucket = Bucket(rate=10.0, burst=1)
    bucket.request("first")
    bucket.request("held", goes=False)
    bucket.request("next")
    bucket.advance(0.1)
    assert bucket.granted == [(0.0, "first"), (0.1, "next")]
    assert bucket.budget.waiting == {}
    bucket.runTimers()
    bucket.assertQuiet()


def test_aNewcomerDoesNotOvertakeTheQueue() -> None:
    """
    Even when a token is in hand by the time it asks, a newcomer waits
    behind those already waiting.
    """
    bucket = Bucket(rate=10.0, burst=3)
    for i in range(4):
        bucket.request(f"r{i}")
    bucket.clock.advance(0.05)  # half a token: r3 still waits
    _, now = bucket.request("late")
    assert now is False
    bucket.advance(1.0)
    assert bucket.names() == ["r0", "r1", "r2", "r3", "late"]


@pytest.mark.parametrize(("rate", "burst"), [(10.0, 1), (3.0, 2), (1000.0, 100), (7.0, 40)])
def test_grantsNeverExceedRateTimesWindowPlusBurst(rate: float, burst: int) -> None:
    bucket = Bucket(rate=rate, burst=burst)
    count = int(rate * 3) + burst
    for i in range(count):
        bucket.request(f"r{i}")
    bucket.runTimers()
    times = [t for t, _ in bucket.granted]
    assert len(times) == count
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            window = times[j] - start
            assert j - i + 1 <= rate * window + burst + 1e-9, (i, j, window)
    # ... and the pace is the rate: the last token is used when it is due,
    # give or take one scheduler wake-up (not one wake-up late per token for
    # want of a rounding error).
    resolution = bucket.scheduler.resolution
    assert times[-1] == pytest.approx((count - burst) / rate, abs=resolution + 1e-9)
    bucket.assertQuiet()


def test_aWithdrawnRequestIsNeverGranted() -> None:
    bucket = Bucket(rate=10.0, burst=1)
    requests = [bucket.request(f"r{i}")[0] for i in range(4)]
    bucket.budget.withdraw(requests[2])
    bucket.advance(1.0)
    assert bucket.names() == ["r0", "r1", "r3"]


def test_withdrawingTheLastWaiterCancelsTheTimer() -> None:
    bucket = Bucket(rate=1.0, burst=1)
    bucket.request("r0")
    waiter, _ = bucket.request("r1")
    assert len(bucket.scheduler) == 1
    bucket.budget.withdraw(waiter)
    bucket.assertQuiet()
    bucket.budget.withdraw(waiter)  # twice: harmless
    bucket.assertQuiet()


def test_retuneToAFasterRate() -> None:
    bucket = Bucket(rate=1.0, burst=1)
    for i in range(11):
        bucket.request(f"r{i}")
    bucket.budget.retune(SupervisorSpec(connect_rate=100.0, connect_burst=1))
    bucket.advance(0.2)
    assert len(bucket.granted) == 11
    assert bucket.names() == [f"r{i}" for i in range(11)]
    bucket.assertQuiet()


def test_retuneToASmallerBurstKeepsNoMoreTokensThanIt() -> None:
    bucket = Bucket(rate=10.0, burst=50)
    bucket.budget.retune(SupervisorSpec(connect_rate=10.0, connect_burst=2))
    answers = [bucket.request(f"r{i}")[1] for i in range(4)]
    assert answers == [True, True, False, False]


def test_turningTheBudgetOffReleasesEveryoneInOrder() -> None:
    bucket = Bucket(rate=1.0, burst=1)
    for i in range(50):
        bucket.request(f"r{i}")
    bucket.budget.retune(SupervisorSpec(connect_rate=0.0))
    assert bucket.names() == [f"r{i}" for i in range(50)]
    assert bucket.budget.waiting == {}
    bucket.assertQuiet()
    assert bucket.request("after")[1] is True


def test_turningTheBudgetOnAppliesToTheNextRequests() -> None:
    bucket = Bucket(rate=0.0, burst=3)
    for i in range(10):
        assert bucket.request(f"r{i}")[1]
    bucket.budget.retune(SupervisorSpec(connect_rate=2.0, connect_burst=3))
    answers = [bucket.request(f"s{i}")[1] for i in range(5)]
    assert answers == [True] * 3 + [False] * 2
    bucket.advance(1.0)
    assert bucket.names()[-2:] == ["s3", "s4"]
    bucket.assertQuiet()


# Through the connections.


def test_startUpGoesThroughTheBudget() -> None:
    world = FleetWorld(60, budget=SupervisorSpec(connect_rate=20.0, connect_burst=10))
    world.supervisor.startService()
    assert len(world.connects) == 10
    assert world.held("budget") == 50
    waiting = [c for c in world.supervisor.connections.values() if c.held == "budget"]
    assert {c.state for c in waiting} == {"IDLE"}
    took = world.runUntil(world.allEstablished, 10)
    assert took == pytest.approx(50 / 20.0, abs=0.05)
    times = [c.time for c in world.connects]
    for i, start in enumerate(times):
        later = [t for t in times[i:] if t - start <= 1.0]
        assert len(later) <= 20 * 1.0 + 10
    # In the order they asked: the order the supervisor started them.
    assert [c.name for c in world.connects] == [f"c{i}" for i in range(60)]
    world.stop()
    world.assertQuiet()


def test_aConnectionStoppedWhileWaitingForATokenLeavesTheQueue() -> None:
    world = FleetWorld(5, budget=SupervisorSpec(connect_rate=1.0, connect_burst=1))
    world.supervisor.startService()
    stopped = world.supervisor.connection("c2")
    assert stopped is not None and stopped.held == "budget"
    stopped.stop()
    assert stopped.state == "CLOSED"
    world.runUntil(lambda: world.established() == 4, 10)
    assert [c.name for c in world.connects] == ["c0", "c1", "c3", "c4"]
    world.stop()
    world.assertQuiet()


def test_aReloadThatTurnsTheBudgetOffStartsEveryWaiterAtOnce() -> None:
    world = FleetWorld(30, budget=SupervisorSpec(connect_rate=1.0, connect_burst=1))
    world.supervisor.startService()
    assert world.held("budget") == 29
    world.supervisor.reload(world.config.__class__(path="x", connections=world.config.connections))
    assert world.held("budget") == 0
    assert len(world.connects) == 30
    world.advance(0.05)
    assert world.allEstablished()
    world.stop()
    world.assertQuiet()


def test_retriesAfterAStormGoThroughTheBudget() -> None:
    """
    With the breaker off, the budget alone bounds the attempts at a dead peer.
    """
    rate, burst = 10.0, 5
    world = FleetWorld(
        40,
        budget=SupervisorSpec(connect_rate=rate, connect_burst=burst),
        breaker=BreakerSpec(scope="off"),
        backoff=BackoffSpec(initial=0.1, multiplier=1.0, max=0.1),
    )
    world.supervisor.startService()
    world.runUntil(world.allEstablished, 10)
    world.advance(2.0)
    killed = world.clock.seconds()
    world.kill()
    world.advance(10.0)
    times = [c.time for c in world.connectsSince(killed)]
    assert len(times) <= rate * 10.0 + burst
    assert len(times) >= rate * 10.0 * 0.9, "the budget, not the backoff, paces them"
    world.stop()
    world.assertQuiet()
