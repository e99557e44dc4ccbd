"""
The shared scheduler: never early, one DelayedCall, coalesced when dense.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from supervisor.scheduler import Scheduler
from tests.clocks import TurnClock


def test_sparseTimersFireOnTime() -> None:
    clock = Clock()
    scheduler = Scheduler(clock, resolution=0.01)
    fired: list[tuple[str, float]] = []
    scheduler.callLater(1.0, lambda: fired.append(("a", clock.seconds())))
    scheduler.callLater(2.5, lambda: fired.append(("b", clock.seconds())))
    clock.advance(0.999)
    assert fired == []
    clock.advance(0.001)
    assert fired == [("a", 1.0)]
    clock.advance(1.5)
    assert fired == [("a", 1.0), ("b", 2.5)]
    assert clock.getDelayedCalls() == []


def test_oneDelayedCallForManyTimers() -> None:
    clock = Clock()
    scheduler = Scheduler(clock)
    timers = [scheduler.callLater(1 + i / 1000, lambda: None) for i in range(1000)]
    assert len(clock.getDelayedCalls()) == 1
    assert len(scheduler) == 1000
    for timer in timers:
        timer.cancel()
    assert len(scheduler) == 0
    assert clock.getDelayedCalls() == []


def test_earlierTimerMovesTheWakeUp() -> None:
    clock = Clock()
    scheduler = Scheduler(clock)
    fired: list[float] = []
    scheduler.callLater(5, lambda: fired.append(clock.seconds()))
    scheduler.callLater(1, lambda: fired.append(clock.seconds()))
    clock.advance(1)
    assert fired == [1]
    clock.advance(4)
    assert fired == [1, 5]


def test_denseTimersAreCoalesced() -> None:
    """
    A thousand timers spread over one second wake the clock at most once
    per resolution, each at most one resolution late.
    """
    clock = Clock()
    scheduler = Scheduler(clock, resolution=0.05)
    lateness: list[float] = []
    for i in range(1000):
        when = i / 1000

        def fire(when: float = when) -> None:
            lateness.append(clock.seconds() - when)

        scheduler.callAt(when, fire)
    wakes = 0
    while clock.getDelayedCalls():
        clock.advance(clock.getDelayedCalls()[0].getTime() - clock.seconds())
        wakes += 1
    assert len(lateness) == 1000
    assert wakes <= 21
    assert min(lateness) >= 0
    assert max(lateness) <= 0.05 + 1e-9


def test_callbackSchedulingAtNowWaitsForTheNextWake() -> None:
    clock = Clock()
    scheduler = Scheduler(clock, resolution=0.01)
    fired: list[float] = []

    def again() -> None:
        fired.append(clock.seconds())
        if len(fired) < 3:
            scheduler.callLater(0, again)

    scheduler.callLater(0, again)
    clock.advance(0)
    assert fired == [0]
    clock.advance(0.01)
    clock.advance(0.01)
    assert fired == [0, 0.01, 0.02]


def test_cancelAfterFireIsHarmless() -> None:
    clock = Clock()
    scheduler = Scheduler(clock)
    timer = scheduler.callLater(1, lambda: None)
    other = scheduler.callLater(2, lambda: None)
    clock.advance(1)
    timer.cancel()
    assert len(scheduler) == 1
    other.cancel()
    assert clock.getDelayedCalls() == []


def test_aFailingCallbackIsLoggedAndOthersStillFire(
    noLoggedErrors: list[dict[str, object]],
) -> None:
    clock = Clock()
    scheduler = Scheduler(clock)
    fired: list[int] = []
    scheduler.callLater(1, lambda: 1 / 0)
    scheduler.callLater(1, lambda: fired.append(1))
    clock.advance(1)
    assert fired == [1]
    assert len(noLoggedErrors) == 1
    noLoggedErrors.clear()


@given(
    st.lists(
        st.tuples(st.floats(0, 100), st.booleans()),
        max_size=60,
    ),
    st.floats(0.001, 1),
)
def test_neverEarlyNeverLostAndNothingLeft(
    timers: list[tuple[float, bool]], resolution: float
) -> None:
    clock = Clock()
    scheduler = Scheduler(clock, resolution=resolution)
    fired: dict[int, float] = {}
    handles = []
    for i, (when, _) in enumerate(timers):
        handles.append(scheduler.callAt(when, lambda i=i: fired.__setitem__(i, clock.seconds())))
    for handle, (_, cancel) in zip(handles, timers, strict=True):
        if cancel:
            handle.cancel()
    for _ in range(10_000):
        calls = clock.getDelayedCalls()
        if not calls:
            break
        assert len(calls) == 1
        clock.advance(max(calls[0].getTime() - clock.seconds(), 0))
    expected = {i for i, (_, cancel) in enumerate(timers) if not cancel}
    assert set(fired) == expected
    for i in expected:
        assert timers[i][0] <= fired[i] <= timers[i][0] + resolution + 1e-9
    assert clock.getDelayedCalls() == []


def held(scheduler: Scheduler) -> int:
    """
    How many timers C{scheduler}'s slots hold, cancelled ones included.
    """
    return sum(len(slot.timers) for slot in scheduler._slots.values())


def test_cancelledTimersDoNotPileUp() -> None:
    """
    A timer that is cancelled long before it is due (a connect deadline, after
    a quick connect) does not keep its heap entry until then.
    """
    clock = Clock()
    scheduler = Scheduler(clock)
    keep = scheduler.callLater(1000, lambda: None)
    for _ in range(10_000):
        scheduler.callLater(500, lambda: None).cancel()
    assert len(scheduler) == 1
    assert held(scheduler) <= 2 * 1 + 64 + 1
    assert len(scheduler._keys) <= 2 * 1 + 64 + 1
    # Cancelled in a slot that keeps a live timer.
    for i in range(10_000):
        scheduler.callLater(1000 + i * 1e-9, lambda: None).cancel()
    assert len(scheduler) == 1
    assert held(scheduler) <= 2 * 1 + 64 + 1
    keep.cancel()
    assert clock.getDelayedCalls() == []


class CountingClock(Clock):
    """
    A L{Clock} whose time moves on a microsecond at each reading, as a real
    one does, and that counts how often its delayed calls are moved.
    """

    def __init__(self) -> None:
        super().__init__()
        self.resets = 0

    def seconds(self) -> float:
        self.rightNow += 1e-6
        return self.rightNow

    def callLater(self, delay: float, callable: Any, *args: object, **kw: object) -> Any:
        call = super().callLater(delay, callable, *args, **kw)
        reset = call.reset

        def counted(secondsLater: float) -> None:
            self.resets += 1
            reset(secondsLater)

        call.reset = counted  # type: ignore[method-assign]
        return call


def test_laterTimersLeaveTheWakeUpAlone() -> None:
    """
    Timers due after the armed wake-up do not move its C{DelayedCall}; one
    due earlier moves it once.
    """
    clock = CountingClock()
    scheduler = Scheduler(clock)
    scheduler.callLater(0.5, lambda: None)
    for i in range(100):
        scheduler.callLater(0.5 + i / 1000, lambda: None)
    assert clock.resets == 0
    scheduler.callLater(0.1, lambda: None)
    assert clock.resets == 1
    assert abs(clock.getDelayedCalls()[0].getTime() - 0.1) < 1e-3


def test_aLateDeadlineIsDecidedAfterTheNextRead() -> None:
    """
    A deadline found more than C{grace} past its time waits one wake-up
    (the reactor reads in between): what arrived meanwhile can still meet
    it. An ordinary timer found as late fires at once.
    """
    clock = Clock()
    scheduler = Scheduler(clock, resolution=0.01)
    assert scheduler.grace == 0.02
    decided: list[float] = []
    fired: list[float] = []
    scheduler.deadlineAt(1.0, lambda: decided.append(clock.seconds()))
    scheduler.callAt(1.0, lambda: fired.append(clock.seconds()))
    clock.advance(1.5)  # held up for half a second past both
    assert fired == [1.5]
    assert decided == []
    clock.advance(0.01)
    assert decided == [1.51]
    assert clock.getDelayedCalls() == []


def test_aDeadlineOnTimeIsDecidedAtOnce() -> None:
    clock = Clock()
    scheduler = Scheduler(clock, resolution=0.01)
    decided: list[float] = []
    scheduler.deadlineAt(1.0, lambda: decided.append(clock.seconds()))
    clock.advance(1.02)  # late by no more than the grace
    assert decided == [1.02]


def test_aLateDeadlineCancelledMeanwhileIsNotDecided() -> None:
    clock = Clock()
    scheduler = Scheduler(clock, resolution=0.01)
    decided: list[float] = []
    deadline = scheduler.deadlineAt(1.0, lambda: decided.append(clock.seconds()))
    clock.advance(2.0)
    deadline.cancel()  # what it waited for arrived
    clock.advance(0.01)
    assert decided == []
    assert len(scheduler) == 0
    assert clock.getDelayedCalls() == []


def test_aLateDeadlineWaitsOnlyOnce() -> None:
    """
    Held up again before the next wake-up, the deadline is decided then
    anyway: a process that stays behind does not put it off for ever.
    """
    clock = Clock()
    scheduler = Scheduler(clock, resolution=0.01)
    decided: list[float] = []
    scheduler.deadlineAt(1.0, lambda: decided.append(clock.seconds()))
    clock.advance(2.0)
    clock.advance(1.0)
    assert decided == [3.0]


def test_aWakeUpRunsAtMostPerWakeTimersThenYields() -> None:
    """
    The rest of the due timers run at the reactor's next turn (a delay of
    0, after it has read), not a resolution later.
    """
    clock = TurnClock()
    scheduler = Scheduler(clock, resolution=0.5, perWake=10)
    fired: list[int] = []
    for i in range(25):
        scheduler.callAt(1.0, lambda i=i: fired.append(i))
    clock.advance(1.0)
    assert fired == list(range(10))
    assert [call.getTime() for call in clock.getDelayedCalls()] == [1.0]
    clock.advance(0)
    assert fired == list(range(20))
    clock.advance(0)
    assert fired == list(range(25))
    assert clock.getDelayedCalls() == []


def slowTimersInTurns(scheduler: Scheduler, clock: TurnClock) -> tuple[int, int, list[int]]:
    """
    Thirty timers due at once, each taking a millisecond: how many the first
    turn ran, in how many turns all ran, and the order they ran in.
    """
    fired: list[int] = []

    def slow(i: int) -> None:
        clock.rightNow += 0.001
        fired.append(i)

    for i in range(30):
        scheduler.callAt(1.0, lambda i=i: slow(i))
    clock.advance(1.0)
    first, turns = len(fired), 1
    while clock.getDelayedCalls():
        clock.advance(0)
        turns += 1
    return first, turns, fired


def test_aWakeUpStopsAfterAResolutionOfWork() -> None:
    """
    Timers that take long (each a millisecond here) stop a wake-up once
    C{resolution} has passed; the rest run at the next turns.
    """
    clock = TurnClock()
    first, turns, fired = slowTimersInTurns(Scheduler(clock, resolution=0.01), clock)
    assert 10 <= first <= 11  # about a resolution of work
    assert fired == list(range(30))
    assert turns == 3


def test_aWakeUpStopsAfterItsBudget() -> None:
    """
    Given a C{budget} shorter than C{resolution}, a wake-up stops once the
    budget has passed: with timers of a millisecond each and a budget of
    five, about five run in each turn, and every one runs, in order.
    """
    clock = TurnClock()
    scheduler = Scheduler(clock, resolution=0.01, budget=0.005)
    assert scheduler.budget == 0.005
    first, turns, fired = slowTimersInTurns(scheduler, clock)
    assert 5 <= first <= 6  # about a budget of work
    assert fired == list(range(30))
    assert 5 <= turns <= 6


def test_theBudgetIsAResolutionByDefault() -> None:
    """
    Without a C{budget}, a wake-up may work for a whole C{resolution}.
    """
    assert Scheduler(Clock(), resolution=0.02).budget == 0.02


class SlowClock(TurnClock):
    """
    A clock on which reading the time takes longer than a scheduler's whole
    budget, as on a host that keeps taking the CPU away.
    """

    def seconds(self) -> float:
        self.rightNow += 0.006
        return self.rightNow


def test_aWakeUpRunsATimerHoweverLateItStarted() -> None:
    """
    A wake-up whose budget is spent before its first timer (the process was
    held up meanwhile) still runs that timer: every turn makes progress.
    """
    clock = SlowClock()
    scheduler = Scheduler(clock, resolution=0.01, budget=0.005)
    fired: list[int] = []
    for i in range(3):
        scheduler.callAt(1.0, lambda i=i: fired.append(i))
    clock.advance(1.0)
    assert fired == [0]
    for _ in range(10):
        if len(fired) == 3:
            break
        clock.advance(0)
    assert fired == [0, 1, 2]


def test_theBudgetIsMoreThanZero() -> None:
    with pytest.raises(ValueError, match="more than 0"):
        Scheduler(Clock(), budget=0)


def runUntilIdle(clock: Clock, scheduler: Scheduler, steps: list[float]) -> None:
    """
    Move C{clock} in uneven C{steps} (at once when a wake-up is due now)
    until C{scheduler} has nothing left, checking that it never holds more
    than one C{DelayedCall} and holds none at the end.
    """
    for i in range(20_000):
        calls = clock.getDelayedCalls()
        assert len(calls) <= 1
        if not calls:
            break
        clock.advance(steps[i % len(steps)] if calls[0].getTime() > clock.seconds() else 0)
    assert clock.getDelayedCalls() == []
    assert len(scheduler) == 0


def assertEachKeptItsPromise(
    fired: list[tuple[int, float]], promised: list[float], gone: set[int]
) -> list[int]:
    """
    Each of the timers promised (at the times C{promised}, by index) fired
    once, not before its time, unless it went (C{gone}: cancelled or moved
    away), and none that went fired.

    @return: the indices fired, in the order they fired.
    """
    indices = [i for i, _ in fired]
    assert len(indices) == len(set(indices))
    assert all(t >= promised[i] for i, t in fired)
    assert not set(indices) & gone
    assert set(indices) | gone == set(range(len(promised)))
    return indices


@given(
    st.lists(
        st.tuples(
            st.floats(0, 5),  # when
            st.sampled_from(["plain", "deadline"]),
            st.integers(-1, 30),  # which timer this one's callback cancels (-1: none)
            st.floats(0, 2) | st.none(),  # a timer this one's callback adds, that much later
        ),
        max_size=40,
    ),
    st.floats(0.001, 0.5),
    st.integers(1, 5),
    st.lists(st.floats(0.01, 0.3), min_size=1, max_size=20),
)
def test_callbacksThatCancelAndAddKeepEveryPromise(
    timers: list[tuple[float, str, int, float | None]],
    resolution: float,
    perWake: int,
    steps: list[float],
) -> None:
    """
    Timers whose callbacks cancel others and add new ones, a few per wake-up,
    the clock moving in uneven steps: each timer fires at most once, never
    before its time, never once cancelled; every other one fires; at most
    one C{DelayedCall} at any time and none at the end.
    """
    clock = TurnClock()
    scheduler = Scheduler(clock, resolution=resolution, perWake=perWake)
    handles: list[Any] = []
    whens: list[float] = []
    fired: list[tuple[int, float]] = []
    cancelled: set[int] = set()

    handedOn: list[int] = []

    def schedule(when: float, kind: str, cancels: int, adds: float | None) -> None:
        index = len(handles)

        def callback() -> None:
            fired.append((index, clock.seconds()))
            scheduler.soon(lambda: handedOn.append(index))
            if 0 <= cancels < len(handles) and cancels != index:
                if handles[cancels].active:
                    cancelled.add(cancels)
                handles[cancels].cancel()
            if adds is not None and len(handles) < 80:
                schedule(clock.seconds() + adds, "plain", -1, None)

        add = scheduler.deadlineAt if kind == "deadline" else scheduler.callAt
        handles.append(add(when, callback))
        whens.append(when)

    for timer in timers:
        schedule(*timer)
    runUntilIdle(clock, scheduler, steps)
    indices = assertEachKeptItsPromise(fired, whens, cancelled)
    # What each callback handed on ran, once, in the order handed on.
    assert handedOn == indices


def test_timersOfOneWakeUpFireInTimeOrder() -> None:
    """
    Timers that come due in one wake-up fire earliest first, whatever the
    order they were added in, within a slot as across slots.
    """
    clock = Clock()
    scheduler = Scheduler(clock, resolution=0.01)
    fired: list[float] = []
    for when in (1.009, 1.001, 1.005, 0.5, 1.0, 1.02):
        scheduler.callAt(when, lambda when=when: fired.append(when))
    clock.advance(0.5)
    clock.advance(1.0)
    assert fired == [0.5, 1.0, 1.001, 1.005, 1.009, 1.02]


def test_aDenseSlotIsAddedToWithoutMovingTheWakeUp() -> None:
    """
    Adding ten thousand timers costs no step of a heap each: they share the
    slots of their C{resolution}, and one C{DelayedCall} stays armed.
    """
    clock = CountingClock()
    scheduler = Scheduler(clock, resolution=0.01)
    for i in range(10_000):
        scheduler.callAt(1 + (i % 100) / 1000, lambda: None)
    assert len(scheduler._slots) == 10
    assert len(scheduler._keys) == 10
    assert clock.resets == 0
    assert len(clock.getDelayedCalls()) == 1


def test_aLateDeadlineIsDecidedAheadOfABacklog() -> None:
    """
    Held up, with more timers due than a wake-up runs: a late deadline is
    decided at the very next wake-up, ahead of the backlog of timers due
    after it, not once the process has caught up with them.
    """
    clock = TurnClock()
    scheduler = Scheduler(clock, resolution=0.01, perWake=10)
    order: list[str] = []
    scheduler.deadlineAt(1.0, lambda: order.append("deadline"))
    for i in range(50):
        scheduler.callAt(1.0 + i / 100, lambda i=i: order.append(f"t{i}"))
    clock.advance(2.0)  # held up for a second past all of them
    assert order == [f"t{i}" for i in range(10)]
    clock.advance(0)
    assert order[10] == "deadline"
    while clock.getDelayedCalls():
        clock.advance(0)
    assert order[11:] == [f"t{i}" for i in range(10, 50)]


def test_timersLeaveNoReferenceCyclesBehind() -> None:
    """
    A timer and its slot hold each other while it waits; whether it fires,
    is cancelled, waits behind a slice or empties the scheduler, what is
    done with is freed by reference counting, without the cyclic garbage
    collector (ten thousand heartbeats a second would keep it busy).
    """
    gc.collect()
    gc.disable()
    try:
        clock = TurnClock()
        scheduler = Scheduler(clock, resolution=0.01, perWake=50)
        timers = [scheduler.callAt(1 + i / 1000, lambda: None) for i in range(300)]
        deadlines = [scheduler.deadlineAt(1 + i / 1000, lambda: None) for i in range(300)]
        for timer in timers[::3] + deadlines[::2]:
            timer.cancel()
        for i in range(300):  # a whole slot cancelled
            scheduler.callAt(5 + i / 100_000, lambda: None).cancel()
        clock.advance(2.0)  # held up: late deadlines wait, slices yield
        for _ in range(1000):
            calls = clock.getDelayedCalls()
            if not calls:
                break
            clock.advance(max(0, calls[0].getTime() - clock.seconds()))
        for timer in [scheduler.callAt(3, lambda: None) for _ in range(10)]:
            timer.cancel()  # the last live one empties the scheduler
        del timers, deadlines, timer
        assert len(scheduler) == 0
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_workHandedOnOutsideAWakeUpRunsAtOnce() -> None:
    """
    L{Scheduler.soon} called when no timer is running calls at once.
    """
    scheduler = Scheduler(Clock())
    ran: list[str] = []
    scheduler.soon(lambda: ran.append("work"))
    assert ran == ["work"]


def test_workHandedOnByATimerRunsAfterEveryDueTimer() -> None:
    """
    What a timer's callback hands to L{Scheduler.soon} runs once every timer
    due in that wake-up has run (a burst of missed deadlines is decided
    before the teardown any of them leaves), in the order handed on, in the
    same wake-up when there is time.
    """
    clock = TurnClock()
    scheduler = Scheduler(clock, resolution=0.01)
    order: list[str] = []

    def due(name: str) -> None:
        order.append(name)
        scheduler.soon(lambda: order.append(f"after {name}"))

    scheduler.deadlineAt(1.0, lambda: due("a"))
    scheduler.deadlineAt(1.0, lambda: due("b"))
    scheduler.callAt(1.005, lambda: due("c"))
    clock.advance(1.01)
    assert order == ["a", "b", "c", "after a", "after b", "after c"]
    assert clock.getDelayedCalls() == []
    assert len(scheduler) == 0


def heldUp(patience: float) -> tuple[TurnClock, Scheduler, list[int], list[int]]:
    """
    A scheduler held up: thirty timers due at once, each taking a
    millisecond and handing on a millisecond of work, three times more than
    a wake-up has time for.
    """
    clock = TurnClock()
    scheduler = Scheduler(clock, resolution=0.01, patience=patience)
    timersRun: list[int] = []
    workDone: list[int] = []

    def slowWork(i: int) -> None:
        clock.rightNow += 0.001
        workDone.append(i)

    def slowTimer(i: int) -> None:
        clock.rightNow += 0.001
        timersRun.append(i)
        scheduler.soon(lambda: slowWork(i))

    for i in range(30):
        scheduler.callAt(1.0, lambda i=i: slowTimer(i))
    return clock, scheduler, timersRun, workDone


def test_workHandedOnWaitsForTheTimersLeftOver() -> None:
    """
    Held up with more timers due than a wake-up has time for, the work
    handed on waits until every due timer has run (a burst of deadlines is
    decided before the teardown of any of them), then runs, in the order
    handed on, at the reactor's next turns.
    """
    clock, scheduler, timersRun, workDone = heldUp(patience=2.0)
    clock.advance(1.0)
    assert 10 <= len(timersRun) <= 11  # a resolution of timers
    assert workDone == []
    turns = 1
    while len(timersRun) < 30 and turns < 100:
        clock.advance(0)
        turns += 1
        if len(timersRun) < 30:
            assert workDone == []
    turns = 0
    while clock.getDelayedCalls() and turns < 100:
        clock.advance(0)
        turns += 1
    assert timersRun == list(range(30))
    assert workDone == list(range(30))
    assert len(scheduler) == 0
    assert clock.getDelayedCalls() == []


def test_workHandedOnGetsItsShareOnceItWaitedItsPatience() -> None:
    """
    Work handed on waits for the timers left over for no longer than
    C{patience}: once it has waited that long (here at once), it gets a
    tenth of a resolution of every wake-up again, and the rest of it runs
    at the reactor's next turns, after the timers due then.
    """
    clock, scheduler, timersRun, workDone = heldUp(patience=0.0)
    clock.advance(1.0)
    assert 10 <= len(timersRun) <= 11  # a resolution of timers
    assert 1 <= len(workDone) <= 2  # then a tenth of one of work
    turns = 1
    while clock.getDelayedCalls() and turns < 100:
        before = len(workDone)
        clock.advance(0)
        turns += 1
        assert len(workDone) > before
    assert timersRun == list(range(30))
    assert workDone == list(range(30))
    assert len(scheduler) == 0
    assert clock.getDelayedCalls() == []


def test_workHandedOnWaitsNoLongerThanItsPatience() -> None:
    """
    A process that stays behind (every wake-up leaves due timers over)
    still runs the work handed on: what has waited C{patience} gets its
    share of each wake-up, what was handed on since waits its turn.
    """
    clock = TurnClock()
    scheduler = Scheduler(clock, resolution=0.01, patience=0.05)
    handedAt: dict[int, float] = {}
    doneAt: dict[int, float] = {}
    count = 0

    def slowTimer() -> None:
        nonlocal count
        clock.rightNow += 0.002
        i = count
        count += 1
        handedAt[i] = clock.seconds()
        scheduler.soon(lambda: doneAt.setdefault(i, clock.seconds()))
        # Another in its place: always more due than a wake-up has time for.
        scheduler.callAt(clock.seconds(), slowTimer)

    for _ in range(50):
        scheduler.callAt(1.0, slowTimer)
    clock.advance(1.0)
    turns = 0
    while clock.seconds() < 1.3 and turns < 1000:
        clock.advance(0.001)
        turns += 1
    assert clock.seconds() >= 1.3
    # Behind all along: timers were left over at every wake-up.
    assert len(scheduler) >= 40
    assert len(doneAt) > 10
    for i, done in doneAt.items():
        # Handed on by a wake-up that started at most a budget (and one
        # timer) before handedAt: it waited its patience, not much more.
        waited = done - handedAt[i]
        assert 0.05 - 0.012 <= waited <= 0.05 + 0.05
    assert sorted(doneAt) == list(range(len(doneAt)))


def test_workHandedOnDoesNotHoldUpTheNextTimer() -> None:
    """
    Work handed on by a wake-up that ran every due timer runs in what is
    left of the wake-up's time, but not into the next timer's time (one
    piece at least): the timer due 3 ms later runs then, and the rest of
    the work after it.
    """
    clock = TurnClock()
    scheduler = Scheduler(clock, resolution=0.01)
    order: list[str] = []
    ranAt: dict[str, float] = {}

    def slowWork(i: int) -> None:
        clock.rightNow += 0.002
        order.append(f"work {i}")

    def handOn() -> None:
        for i in range(8):
            scheduler.soon(lambda i=i: slowWork(i))

    scheduler.callAt(1.0, handOn)
    scheduler.callAt(1.003, lambda: ranAt.setdefault("next", clock.seconds()))
    clock.advance(1.0)
    # Two pieces take it to 1.004, past the next timer's time: no third.
    assert order == ["work 0", "work 1"]
    turns = 0
    while clock.getDelayedCalls() and turns < 100:
        clock.advance(0.001)
        turns += 1
        if "next" not in ranAt:
            assert len(order) <= 2
    assert ranAt["next"] <= 1.003 + 0.002
    assert order == [f"work {i}" for i in range(8)]
    assert len(scheduler) == 0


def test_wakingSaysWhetherAWakeUpIsUnderWay() -> None:
    """
    L{Scheduler.waking} is true in a timer's callback, where L{soon} waits
    for the due timers, and false elsewhere, where it runs at once.
    """
    clock = Clock()
    scheduler = Scheduler(clock)
    seen: list[tuple[bool, list[str]]] = []
    ran: list[str] = []
    scheduler.soon(lambda: ran.append("outside"))
    assert (scheduler.waking, ran) == (False, ["outside"])

    def callback() -> None:
        scheduler.soon(lambda: ran.append("inside"))
        seen.append((scheduler.waking, list(ran)))

    scheduler.callAt(1.0, callback)
    clock.advance(1.0)
    assert seen == [(True, ["outside"])]
    assert ran == ["outside", "inside"]
    assert not scheduler.waking


def test_patienceIsZeroOrMore() -> None:
    with pytest.raises(ValueError, match="0 or more"):
        Scheduler(Clock(), patience=-1)


def test_workHandedOnByTheLastTimerKeepsNoDelayedCall(
    noLoggedErrors: list[dict[str, object]],
) -> None:
    """
    Work handed on by the last timer still runs (in the same wake-up), and
    nothing is left scheduled after it; a failing one is logged and the
    rest still run.
    """
    clock = TurnClock()
    scheduler = Scheduler(clock)
    ran: list[str] = []

    def fail() -> None:
        raise RuntimeError("boom")

    def last() -> None:
        scheduler.soon(fail)
        scheduler.soon(lambda: ran.append("work"))

    scheduler.callAt(1.0, last)
    clock.advance(1.0)
    assert ran == ["work"]
    assert len(scheduler) == 0
    assert clock.getDelayedCalls() == []
    assert len(noLoggedErrors) == 1
    noLoggedErrors.clear()


def test_aHeldUpBacklogIsPutBackSlotBySlot() -> None:
    """
    A wake-up that takes out many due slots and runs only some puts the rest
    back as they are: their timers (cancelled ones skipped) still fire, in
    time order, and a timer cancelled after being put back does not.
    """
    clock = TurnClock()
    scheduler = Scheduler(clock, resolution=0.01, perWake=5)
    fired: list[int] = []
    timers = [scheduler.callAt(1.0 + i / 200, lambda i=i: fired.append(i)) for i in range(40)]
    timers[30].cancel()
    clock.advance(2.0)  # held up past all of them: 20 slots due
    assert fired == [0, 1, 2, 3, 4]
    timers[35].cancel()
    timers[7].cancel()
    while clock.getDelayedCalls():
        clock.advance(0)
    assert fired == [i for i in range(40) if i not in (7, 30, 35)]
    assert len(scheduler) == 0


def test_rescheduleMovesAWaitingTimer() -> None:
    """
    A waiting timer moved later fires once, at its new time, with its new
    callback; the same object keeps waiting.
    """
    clock = Clock()
    scheduler = Scheduler(clock, resolution=0.01)
    fired: list[tuple[str, float]] = []
    timer = scheduler.deadlineAt(1.0, lambda: fired.append(("old", clock.seconds())))
    moved = scheduler.reschedule(timer, 2.5, lambda: fired.append(("new", clock.seconds())))
    assert moved is timer and moved.active and len(scheduler) == 1
    clock.advance(1.0)
    assert fired == []
    clock.advance(1.5)
    assert fired == [("new", 2.5)]
    assert len(scheduler) == 0 and clock.getDelayedCalls() == []


def test_rescheduleReusesAFiredOrCancelledTimer() -> None:
    clock = Clock()
    scheduler = Scheduler(clock, resolution=0.01)
    fired: list[float] = []
    timers: list[Any] = []

    def again() -> None:
        fired.append(clock.seconds())
        if len(fired) < 3:
            timers[0] = scheduler.reschedule(timers[0], clock.seconds() + 1, again)

    timers.append(scheduler.callAt(1, again))
    first = timers[0]
    for _ in range(3):
        clock.advance(1)
    assert fired == [1, 2, 3]
    assert timers[0] is first and not first.active
    cancelled = scheduler.callAt(5, lambda: fired.append(-1))
    cancelled.cancel()
    again2 = scheduler.reschedule(cancelled, 6, lambda: fired.append(clock.seconds()))
    assert again2 is cancelled and len(scheduler) == 1
    clock.advance(3)
    assert fired == [1, 2, 3, 6]


def test_rescheduleOfATimerAWakeUpHoldsMakesANewOne() -> None:
    """
    Moving a timer that a wake-up under way has taken out with its batch (it
    is due in the same wake-up, or was cancelled there) gives a new timer:
    the old one neither fires nor is reused.
    """
    clock = Clock()
    scheduler = Scheduler(clock, resolution=0.01)
    fired: list[tuple[str, float]] = []
    handles: dict[str, Any] = {}

    def first() -> None:
        fired.append(("first", clock.seconds()))
        handles["second"] = scheduler.reschedule(
            handles["second"], 2, lambda: fired.append(("moved", clock.seconds()))
        )
        handles["third"].cancel()
        handles["third"] = scheduler.reschedule(
            handles["third"], 3, lambda: fired.append(("third", clock.seconds()))
        )

    handles["first"] = scheduler.callAt(1.0, first)
    second = handles["second"] = scheduler.callAt(1.001, lambda: fired.append(("old", 0)))
    third = handles["third"] = scheduler.callAt(1.002, lambda: fired.append(("old", 0)))
    clock.advance(1.01)
    assert fired == [("first", 1.01)]
    assert handles["second"] is not second and not second.active
    assert handles["third"] is not third and not third.active
    clock.advance(0.99)
    clock.advance(1)
    assert fired == [("first", 1.01), ("moved", 2), ("third", 3)]
    assert len(scheduler) == 0 and clock.getDelayedCalls() == []


@given(
    st.lists(
        st.tuples(
            st.floats(0, 5),  # when
            st.booleans(),  # a deadline
            st.integers(-1, 20),  # which handle this one's callback moves (-1: none)
            st.floats(0, 2),  # how much later than now it moves it
        ),
        max_size=30,
    ),
    st.floats(0.001, 0.5),
    st.integers(1, 5),
    st.lists(st.floats(0.01, 0.3), min_size=1, max_size=20),
)
def test_rescheduledTimersKeepEveryPromise(
    timers: list[tuple[float, bool, int, float]],
    resolution: float,
    perWake: int,
    steps: list[float],
) -> None:
    """
    Callbacks that move timers (waiting, fired, cancelled, their own, or
    ones due in the same wake-up) with L{Scheduler.reschedule}: a moved
    timer's old call never happens, its new one happens once, never early;
    every call not moved away happens; at most one C{DelayedCall} at any
    time and none at the end.
    """
    clock = TurnClock()
    scheduler = Scheduler(clock, resolution=resolution, perWake=perWake)
    handles: list[Any] = []
    promised: list[float] = []  # when each call was promised for
    current: list[int] = []  # each handle's latest promise
    fired: list[tuple[int, float]] = []
    movedAway: set[int] = set()

    def call(promise: int, moves: int, later: float) -> Any:
        def callback() -> None:
            fired.append((promise, clock.seconds()))
            if 0 <= moves < len(handles) and len(promised) < 80:
                old = current[moves]
                if old not in {p for p, _ in fired}:
                    movedAway.add(old)
                when = clock.seconds() + later
                current[moves] = len(promised)
                promised.append(when)
                handles[moves] = scheduler.reschedule(
                    handles[moves], when, call(current[moves], -1, 0.0), deadline=False
                )

        return callback

    for when, deadline, moves, later in timers:
        current.append(len(promised))
        promised.append(when)
        add = scheduler.deadlineAt if deadline else scheduler.callAt
        handles.append(add(when, call(current[-1], moves, later)))
    runUntilIdle(clock, scheduler, steps)
    assertEachKeptItsPromise(fired, promised, movedAway)
