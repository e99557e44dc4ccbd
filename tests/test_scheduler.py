"""
The shared scheduler: never early, one DelayedCall, coalesced when dense.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from supervisor.scheduler import Scheduler


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
    assert len(scheduler._heap) <= 2 * 1 + 64 + 1
    keep.cancel()
    assert clock.getDelayedCalls() == []
