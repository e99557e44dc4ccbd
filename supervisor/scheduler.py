"""
One shared schedule for the timers of many connections.

Ten thousand connections with their own C{callLater} each make ten thousand
C{DelayedCall}s in the reactor's heap and, at 1 Hz heartbeats, ten thousand
reactor wake-ups a second. L{Scheduler} keeps its timers in slots of
C{resolution} seconds (a dictionary of lists and a heap of the slots'
numbers: adding a timer appends it to a list, and only a new slot costs a
heap step; the timers of a slot fire earliest first) and holds a single
C{DelayedCall} for the earliest of them. A timer never fires early; when
timers are dense, wake-ups are coalesced so that at most one
happens per C{resolution} seconds, and a timer may fire up to C{resolution}
late. When sparse, each fires on time. A wake-up runs timers for at most
C{budget} seconds (by default C{resolution}), or C{perWake} of them: when
more are due, the rest run at the next turn of the reactor, once it has read
and written, so that a burst of due timers (ten thousand heartbeats) does not
keep it from reading for longer than that.

A deadline (L{Scheduler.deadlineAt}) decides that something did not arrive
in time. The reactor runs due timers before it reads its sockets, so after
the process was held up (a long garbage collection, a busy host) a deadline
could be decided while what would meet it sits unread. A deadline found more
than L{Scheduler.grace} past its time is therefore decided at the next
wake-up instead, once the reactor has read what arrived, ahead of the timers
due after it: once, and only when late, so that a process that is behind
does no more than one more step per late deadline.

Work that a timer's callback starts and that nothing due waits for (the
teardown of a connection a missed deadline dropped) can be handed to
L{Scheduler.soon}: during a wake-up it runs once the due timers have, in
what is left of the wake-up's time and not past the time of the next timer
(one piece at least), so that a burst of due deadlines is decided before
the work any of them leaves behind, and that work does not hold up the next
timers. While due timers are left over for the next turn (the
process is behind), that work waits, unless it has waited
L{Scheduler.patience} seconds already: a burst of drops that takes more than
a core (ten thousand connections whose peer froze) is decided in time, not
slowed by the teardown of the drops decided before it, and the teardown is
never put off for longer than that.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from operator import attrgetter

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

_log = Logger()


def _cancelled() -> None:
    "What a cancelled L{Timer} calls instead of its callback: never called."


class Timer:
    """
    One scheduled call in a L{Scheduler}; cancel it with L{Timer.cancel}.
    """

    __slots__ = ("_callback", "_deadline", "_index", "_scheduler", "_slot", "active", "when")

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
        self._slot: _Slot | None = None
        self._index = 0
        self.when = when
        self.active = True

    def cancel(self) -> None:
        """
        Make sure the call does not happen; idempotent, and harmless once fired.
        """
        if self.active:
            self.active = False
            # A cancelled timer in a slot that a wake-up has taken stays
            # there until the wake-up passes it: what its callback holds
            # need not wait with it.
            self._callback = _cancelled
            self._scheduler._released(self)

    def __repr__(self) -> str:
        return f"<Timer at {self.when!r} active={self.active}>"


class _Slot:
    """
    The timers of one slot of C{resolution} seconds (a cancelled one is taken
    out at once, unless a wake-up under way took the slot out).

    @ivar first: the earliest C{when} among them (possibly of one cancelled
        since: then the wake-up it sets is early, never late).
    """

    __slots__ = ("first", "key", "timers")

    def __init__(self, key: int) -> None:
        self.key = key
        self.timers: list[Timer] = []
        self.first = float("inf")


_when = attrgetter("when")


def _unlink(timers: list[Timer]) -> None:
    """
    Let C{timers} go of the slot that is letting them go: a timer and its
    slot hold each other, and a process with ten thousand heartbeats should
    not need the cyclic garbage collector to free them.
    """
    for timer in timers:
        timer._slot = None


class Scheduler:
    """
    Slots of L{Timer}s driven by one C{DelayedCall} on C{clock}.

    @ivar resolution: the shortest time between two wake-ups, and the width
        of a slot.
    @ivar grace: how late a deadline may be found and still be decided at
        once (by default two resolutions: later than that, the reactor was
        held up).
    @ivar perWake: the most timers one wake-up runs; it also stops after
        C{budget} seconds of work.
    @ivar budget: how long one wake-up runs timers before it leaves the
        rest to the reactor's next turn (by default C{resolution}; each
        wake-up runs at least one due timer, however late it started).
    @ivar patience: how long work handed to L{soon} may wait while due
        timers are left over for the reactor's next turns; then it gets its
        share of every turn again.
    @ivar now: the current time of the underlying clock (a callable: one
        for all, which each connection's attempts keep as their clock).
    """

    def __init__(
        self,
        clock: IReactorTime,
        resolution: float = 0.01,
        grace: float | None = None,
        perWake: int = 1000,
        budget: float | None = None,
        patience: float = 2.0,
    ) -> None:
        self._clock = clock
        self.now: Callable[[], float] = clock.seconds
        self.resolution = resolution
        self.grace = 2 * resolution if grace is None else grace
        self.perWake = perWake
        self.budget = resolution if budget is None else budget
        if not self.budget > 0:
            raise ValueError(f"budget must be more than 0, not {budget!r}")
        if not patience >= 0:
            raise ValueError(f"patience must be 0 or more, not {patience!r}")
        self.patience = patience
        self._perSecond = 1 / resolution
        # The slots by number (int(when / resolution)), and a heap of the
        # numbers: a number stays there after its slot emptied, until popped.
        self._slots: dict[int, _Slot] = {}
        self._keys: list[int] = []
        self._live = 0
        self._waking = False
        self._call: IDelayedCall | None = None
        # When _call is due: comparing with this, rather than with
        # _call.getTime(), which the clock computed from a slightly later
        # now, keeps a new timer from moving the DelayedCall every time.
        self._callTime = float("inf")
        self._lastWake = float("-inf")
        # When the wake-up under way started.
        self._wakeTime = 0.0
        # Work handed to soon() during a wake-up, not run yet, with when
        # that wake-up started.
        self._soon: deque[tuple[float, Callable[[], object]]] = deque()

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
        return self._add(Timer(self, when, callback))

    def deadlineAt(self, when: float, callback: Callable[[], object]) -> Timer:
        """
        Call C{callback} at C{when} to decide that something did not arrive
        in time: if the reactor was held up past C{when} by more than
        L{grace}, it is called one wake-up later, after the reactor has read
        what arrived meanwhile.
        """
        return self._add(Timer(self, when, callback, deadline=True))

    @property
    def waking(self) -> bool:
        """
        Whether a wake-up is under way: what is handed to L{soon} now waits
        for the due timers, and runs from the scheduler's own call, not from
        inside whatever called L{soon}.
        """
        return self._waking

    def soon(self, callback: Callable[[], object]) -> None:
        """
        Call C{callback} once the timers due now have run: at once, unless
        called from a timer's callback (L{waking}); then after the due
        timers, in what is left of this wake-up's time and before the next
        timer is due, or at the reactor's next turns, in the order given.
        While due timers are left over for the next turn, it waits for them
        for at most L{patience} seconds; then it gets a tenth of
        C{resolution} of every wake-up.
        """
        if not self._waking:
            callback()
            return
        self._soon.append((self._wakeTime, callback))

    def _runSoon(self, until: float, handedBy: float = float("inf")) -> None:
        """
        Run the work handed to L{soon}, oldest first, until the clock passes
        C{until} (one at least), or until the next was handed on by a
        wake-up that started after C{handedBy}.
        """
        work, seconds = self._soon, self._clock.seconds
        while work:
            if work[0][0] > handedBy:
                return
            callback = work.popleft()[1]
            try:
                callback()
            except Exception:
                _log.failure("deferred call {callback!r} failed", callback=callback)
            if seconds() > until:
                return

    def reschedule(
        self, timer: Timer, when: float, callback: Callable[[], object], deadline: bool = False
    ) -> Timer:
        """
        Call C{callback} at C{when} (as L{callAt}, or as L{deadlineAt} if
        C{deadline}) in place of C{timer}, which the caller alone holds and
        which may have fired, been cancelled or still be waiting (then it
        waits no more). A heartbeat does this twice a second: moving the
        timer it has spares making a new one, and the cancelled one's trip
        out of its slot.

        @return: the timer that now waits: C{timer} itself, or a new one
            when a wake-up under way still holds C{timer} in its batch.
        """
        slot = timer._slot
        if timer.active:
            if slot is None or self._slots.get(slot.key) is not slot:
                timer.cancel()
                return self._add(Timer(self, when, callback, deadline))
            self._unslot(timer, slot)
        elif slot is None:
            self._live += 1
        else:
            # Cancelled, in a batch that a wake-up under way will pass.
            return self._add(Timer(self, when, callback, deadline))
        timer._callback = callback
        timer._deadline = deadline
        timer.when = when
        timer.active = True
        self._insert(timer, int(when * self._perSecond))
        if when < self._callTime and not self._waking:
            self._arm()
        return timer

    def _add(self, timer: Timer) -> Timer:
        self._live += 1
        self._insert(timer, int(timer.when * self._perSecond))
        if timer.when < self._callTime and not self._waking:
            self._arm()
        return timer

    def _insert(self, timer: Timer, key: int) -> None:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot(key)
            heapq.heappush(self._keys, key)
        timer._index = len(slot.timers)
        slot.timers.append(timer)
        if timer.when < slot.first:
            slot.first = timer.when
        timer._slot = slot

    def _clear(self) -> None:
        """
        Drop every slot: no timer is left to fire.
        """
        for slot in self._slots.values():
            _unlink(slot.timers)
        self._slots.clear()
        self._keys.clear()

    def _released(self, timer: Timer) -> None:
        self._live -= 1
        if self._live == 0:
            # Nothing left to do: no DelayedCall may outlive the last timer.
            self._clear()
            if self._call is not None and not self._soon:
                self._call.cancel()
                self._call = None
                self._callTime = float("inf")
            return
        slot = timer._slot
        if slot is None:
            return
        if self._slots.get(slot.key) is not slot:
            # Taken out by a wake-up under way, which skips it.
            return
        # Out of its slot at once: freed now, rather than when the slot
        # comes up, which would leave the garbage collector to count them.
        self._unslot(timer, slot)

    def _unslot(self, timer: Timer, slot: _Slot) -> None:
        """
        Take active or just cancelled C{timer} out of C{slot}, one of the
        slots waiting (the last of its timers takes its place).
        """
        timer._slot = None
        timers = slot.timers
        last = timers.pop()
        if last is not timer:
            timers[timer._index] = last
            last._index = timer._index
        if not timers:
            # Its number waits in the heap until popped.
            slots = self._slots
            del slots[slot.key]
            if len(self._keys) > 2 * len(slots) + 64:
                self._keys = list(slots)
                heapq.heapify(self._keys)

    def _earliest(self) -> _Slot | None:
        """
        The waiting slot of the earliest timers, or L{None}: the numbers of
        slots emptied meanwhile are popped off the heap on the way.
        """
        keys, slots = self._keys, self._slots
        while keys and keys[0] not in slots:
            heapq.heappop(keys)
        return slots[keys[0]] if keys else None

    def _arm(self) -> None:
        earliest = self._earliest()
        if self._soon:
            # Work waits: at the reactor's next turn.
            target = float("-inf")
        elif earliest is None:
            return
        else:
            target = max(earliest.first, self._lastWake + self.resolution)
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
        now = self._lastWake = self._wakeTime = self._clock.seconds()
        # The slots that may hold due timers, taken out first: timers added
        # while this batch runs go to new slots and wait for the next
        # wake-up, so a callback that schedules at "now" cannot starve the
        # reactor.
        due = int(now * self._perSecond)
        keys, slots = self._keys, self._slots
        batch = []
        while keys and keys[0] <= due:
            slot = slots.pop(heapq.heappop(keys), None)
            if slot is not None:
                batch.append(slot)
        late = now - self.grace
        seconds, enough = self._clock.seconds, now + self.budget
        left = self.perWake
        self._waking = True
        try:
            for index, slot in enumerate(batch):
                timers = slot.timers
                if len(timers) > 1:
                    timers.sort(key=_when)
                for position, timer in enumerate(timers):
                    if not timer.active:
                        timer._slot = None
                        continue
                    if timer.when > now:
                        # The rest of the slot is not due yet.
                        self._restore(slot.key, timers[position:])
                        break
                    if left == 0 or (left < self.perWake and seconds() > enough):
                        # More are due: the rest at the reactor's next turn,
                        # after it has read and written, not a resolution
                        # later.
                        self._lastWake = float("-inf")
                        self._restore(slot.key, timers[position:])
                        for rest in batch[index + 1 :]:
                            self._putBack(rest)
                        # What the timers that ran left behind waits for the
                        # rest, but for no longer than patience allows; then
                        # it gets its share.
                        self._runSoon(
                            max(enough, seconds() + self.resolution / 10),
                            now - self.patience,
                        )
                        return
                    if timer._deadline and timer.when < late:
                        # Held up past it: decide after the reactor has read,
                        # at the next wake-up, ahead of the timers due
                        # after it (behind them, a process that is behind
                        # would decide it only once it caught up with them).
                        timer._deadline = False
                        self._insert(timer, slot.key)
                        continue
                    timer.active = False
                    timer._slot = None
                    self._live -= 1
                    left -= 1
                    try:
                        timer._callback()
                    except Exception:
                        _log.failure("scheduled call {timer!r} failed", timer=timer)
            # Every due timer ran: what they left behind, in the time left,
            # but not into the next timers' time (a process that keeps up
            # with the timers only just would run them late).
            until = max(enough, seconds() + self.resolution / 10)
            earliest = self._earliest()
            if earliest is not None:
                until = min(until, earliest.first)
            self._runSoon(until)
        finally:
            self._waking = False
            if self._live == 0:
                self._clear()
            if self._live or self._soon:
                self._arm()

    def _putBack(self, slot: _Slot) -> None:
        """
        Put back C{slot}, which a wake-up took out and did not start: as it
        is (its cancelled timers with it), unless timers were added to its
        number meanwhile. A process that is behind takes out many slots and
        runs few of them: putting back costs a step per slot, not per timer.
        """
        if slot.key in self._slots:
            self._restore(slot.key, slot.timers)
            return
        self._slots[slot.key] = slot
        heapq.heappush(self._keys, slot.key)

    def _restore(self, key: int, timers: list[Timer]) -> None:
        """
        Put back into slot C{key}, ahead of any added meanwhile, the active
        ones of C{timers}: a wake-up took them out and did not run them.
        """
        kept = [timer for timer in timers if timer.active]
        _unlink([timer for timer in timers if not timer.active])
        if not kept:
            return
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot(key)
            heapq.heappush(self._keys, key)
        slot.timers = kept + slot.timers
        for index, timer in enumerate(slot.timers):
            timer._slot = slot
            timer._index = index
            if timer.when < slot.first:
                slot.first = timer.when
