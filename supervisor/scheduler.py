"""
One shared schedule for the timers of many connections.

Ten thousand connections with their own C{callLater} each make ten thousand
C{DelayedCall}s in the reactor's heap and, at 1 Hz heartbeats, ten thousand
reactor wake-ups a second. L{Scheduler} keeps its timers in its own heap and
holds a single C{DelayedCall} for the earliest of them. A timer never fires
early; when timers are dense, wake-ups are coalesced so that at most one
happens per C{resolution} seconds, and a timer may fire up to C{resolution}
late. When sparse, each fires on time.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from itertools import count

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

_log = Logger()


class Timer:
    """
    One scheduled call in a L{Scheduler}; cancel it with L{Timer.cancel}.
    """

    __slots__ = ("_callback", "_scheduler", "active", "when")

    def __init__(self, scheduler: Scheduler, when: float, callback: Callable[[], object]) -> None:
        self._scheduler = scheduler
        self._callback = callback
        self.when = when
        self.active = True

    def cancel(self) -> None:
        """
        Make sure the call does not happen; idempotent, and harmless once fired.
        """
        if self.active:
            self.active = False
            self._scheduler._released()

    def __repr__(self) -> str:
        return f"<Timer at {self.when!r} active={self.active}>"


class Scheduler:
    """
    A heap of L{Timer}s driven by one C{DelayedCall} on C{clock}.

    @ivar resolution: the shortest time between two wake-ups.
    """

    def __init__(self, clock: IReactorTime, resolution: float = 0.01) -> None:
        self._clock = clock
        self.resolution = resolution
        self._heap: list[tuple[float, int, Timer]] = []
        self._sequence = count()
        self._live = 0
        self._call: IDelayedCall | None = None
        self._lastWake = float("-inf")

    def __len__(self) -> int:
        """
        The number of timers still to fire.
        """
        return self._live

    def now(self) -> float:
        """
        The current time of the underlying clock.
        """
        return self._clock.seconds()

    def callLater(self, delay: float, callback: Callable[[], object]) -> Timer:
        """
        Call C{callback} after C{delay} seconds (never earlier).
        """
        return self.callAt(self._clock.seconds() + max(delay, 0.0), callback)

    def callAt(self, when: float, callback: Callable[[], object]) -> Timer:
        """
        Call C{callback} at C{when} on the clock (never earlier).
        """
        timer = Timer(self, when, callback)
        heapq.heappush(self._heap, (when, next(self._sequence), timer))
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
        delay = max(target - self._clock.seconds(), 0.0)
        if self._call is None:
            self._call = self._clock.callLater(delay, self._wake)
        elif self._call.getTime() > target:
            self._call.reset(delay)

    def _wake(self) -> None:
        self._call = None
        now = self._lastWake = self._clock.seconds()
        # Timers added while this batch runs wait for the next wake-up, so a
        # callback that schedules at "now" cannot starve the reactor.
        limit = next(self._sequence)
        heap = self._heap
        while heap and heap[0][0] <= now and heap[0][1] < limit:
            timer = heapq.heappop(heap)[2]
            if not timer.active:
                continue
            timer.active = False
            self._live -= 1
            try:
                timer._callback()
            except Exception:
                _log.failure("scheduled call {timer!r} failed", timer=timer)
        if self._live == 0:
            heap.clear()
        else:
            self._arm()
