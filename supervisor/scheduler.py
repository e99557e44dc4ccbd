"""
One shared schedule for the timers of many connections.

Ten thousand connections with their own C{callLater} each make ten thousand
C{DelayedCall}s in the reactor's heap and, at 1 Hz heartbeats, ten thousand
reactor wake-ups a second. L{Scheduler} keeps its timers in its own heap and
holds a single C{DelayedCall} for the earliest of them. A timer never fires
early; when timers are dense, wake-ups are coalesced so that at most one
happens per C{resolution} seconds, and a timer may fire up to C{resolution}
late. When sparse, each fires on time. A wake-up runs timers for at most
C{resolution} seconds (or C{perWake} of them): when more are due, the rest
run at the next turn of the reactor, once it has read and written, so that a
burst of due timers (ten thousand heartbeats) does not keep it from reading
for longer than that.

A deadline (L{Scheduler.deadlineAt}) decides that something did not arrive
in time. The reactor runs due timers before it reads its sockets, so after
the process was held up (a long garbage collection, a busy host) a deadline
could be decided while what would meet it sits unread. A deadline found more
than L{Scheduler.grace} past its time is therefore decided at the next
wake-up instead, once the reactor has read what arrived: once, and only when
late, so that a process that is behind does no more than one more heap step
per late deadline.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from itertools import count

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

_log = Logger()


def _cancelled() -> None:
    "What a cancelled L{Timer} calls instead of its callback: never called."


class Timer:
    """
    One scheduled call in a L{Scheduler}; cancel it with L{Timer.cancel}.
    """

    __slots__ = ("_callback", "_deadline", "_scheduler", "active", "when")

    def __init__(
        self,
        scheduler: Scheduler,
        when: float,
        callback: Callable[[], object],
        deadline: bool = False,
    ) -> None:
        self._scheduler = scheduler
        self._callback = callback
        self._deadline = deadline
        self.when = when
        self.active = True

    def cancel(self) -> None:
        """
        Make sure the call does not happen; idempotent, and harmless once fired.
        """
        if self.active:
            self.active = False
            # A cancelled timer may wait in the heap until its time comes
            # (a connect timeout, ten seconds): what its callback holds
            # need not wait with it.
            self._callback = _cancelled
            self._scheduler._released()

    def __repr__(self) -> str:
        return f"<Timer at {self.when!r} active={self.active}>"


class Scheduler:
    """
    A heap of L{Timer}s driven by one C{DelayedCall} on C{clock}.

    @ivar resolution: the shortest time between two wake-ups.
    @ivar grace: how late a deadline may be found and still be decided at
        once (by default two resolutions: later than that, the reactor was
        held up).
    @ivar perWake: the most timers one wake-up runs; it also stops after
        C{resolution} seconds of work.
    @ivar now: the current time of the underlying clock (a callable: one
        for all, which each connection's attempts keep as their clock).
    """

    def __init__(
        self,
        clock: IReactorTime,
        resolution: float = 0.01,
        grace: float | None = None,
        perWake: int = 1000,
    ) -> None:
        self._clock = clock
        self.now: Callable[[], float] = clock.seconds
        self.resolution = resolution
        self.grace = 2 * resolution if grace is None else grace
        self.perWake = perWake
        self._heap: list[tuple[float, int, Timer]] = []
        self._sequence = count()
        self._live = 0
        self._call: IDelayedCall | None = None
        # When _call is due: comparing with this, rather than with
        # _call.getTime(), which the clock computed from a slightly later
        # now, keeps a new timer from moving the DelayedCall every time.
        self._callTime = float("inf")
        self._lastWake = float("-inf")

    def __len__(self) -> int:
        """
        The number of timers still to fire.
        """
        return self._live

    def callLater(self, delay: float, callback: Callable[[], object]) -> Timer:
        """
        Call C{callback} after C{delay} seconds (never earlier).
        """
        return self.callAt(self._clock.seconds() + max(delay, 0.0), callback)

    def callAt(self, when: float, callback: Callable[[], object]) -> Timer:
        """
        Call C{callback} at C{when} on the clock (never earlier).
        """
        return self._push(Timer(self, when, callback))

    def deadlineAt(self, when: float, callback: Callable[[], object]) -> Timer:
        """
        Call C{callback} at C{when} to decide that something did not arrive
        in time: if the reactor was held up past C{when} by more than
        L{grace}, it is called one wake-up later, after the reactor has read
        what arrived meanwhile.
        """
        return self._push(Timer(self, when, callback, deadline=True))

    def _push(self, timer: Timer) -> Timer:
        heapq.heappush(self._heap, (timer.when, next(self._sequence), timer))
        self._live += 1
        self._arm()
        return timer

    def _released(self) -> None:
        self._live -= 1
        heap = self._heap
        if self._live == 0:
            # Nothing left to do: no DelayedCall may outlive the last timer.
            heap.clear()
            if self._call is not None:
                self._call.cancel()
                self._call = None
                self._callTime = float("inf")
        elif len(heap) > 2 * self._live + 64:
            # Cancelled timers wait in the heap until they come up; when they
            # outnumber the live ones, drop them (in place: _wake may be
            # iterating this very list).
            heap[:] = [entry for entry in heap if entry[2].active]
            heapq.heapify(heap)

    def _arm(self) -> None:
        while self._heap and not self._heap[0][2].active:
            heapq.heappop(self._heap)
        if not self._heap:
            return
        target = max(self._heap[0][0], self._lastWake + self.resolution)
        if target >= self._callTime:
            return
        delay = max(target - self._clock.seconds(), 0.0)
        if self._call is None:
            self._call = self._clock.callLater(delay, self._wake)
        else:
            self._call.reset(delay)
        self._callTime = target

    def _wake(self) -> None:
        self._call = None
        self._callTime = float("inf")
        now = self._lastWake = self._clock.seconds()
        # Timers added while this batch runs wait for the next wake-up, so a
        # callback that schedules at "now" cannot starve the reactor.
        limit = next(self._sequence)
        heap = self._heap
        late = now - self.grace
        seconds, enough = self._clock.seconds, now + self.resolution
        left = self.perWake
        while heap and heap[0][0] <= now and heap[0][1] < limit:
            if left == 0 or seconds() > enough:
                # More are due: the rest at the reactor's next turn, after
                # it has read and written, not a resolution later.
                self._lastWake = float("-inf")
                break
            timer = heapq.heappop(heap)[2]
            if not timer.active:
                continue
            if timer._deadline and timer.when < late:
                # Held up past it: decide after the reactor has read.
                timer._deadline = False
                heapq.heappush(heap, (now, next(self._sequence), timer))
                continue
            timer.active = False
            self._live -= 1
            left -= 1
            try:
                timer._callback()
            except Exception:
                _log.failure("scheduled call {timer!r} failed", timer=timer)
        if self._live == 0:
            heap.clear()
        else:
            self._arm()
