"""
The circuit breaker of one target, shared by the connections whose attempts
go to it: its own small machine, CLOSED / OPEN / HALF_OPEN.

- CLOSED: attempts go out. C{failures} consecutive failed attempts against
  the target (no success between them; a member's ESTABLISHED connection
  lost counts as one), or one explicit push-back from the peer
  ("overloaded"), open it.
- OPEN: members that ask to attempt are held. One probe at a time goes out,
  a real member's attempt, the first held: after C{probe_interval}, then
  backing off (doubling, jittered) up to C{probe_max}. Any success against
  the target half-opens it.
- HALF_OPEN: the held members are released in order, starting with a few
  and growing by one per success (so the window doubles per round trip, as
  TCP's slow start does), spread over about L{RELEASE_SPREAD} seconds (at
  no less than L{RELEASE_FLOOR} a second) and never faster than
  C{release_rate} per second. A released attempt that fails re-opens it.
  Once nobody is held it closes, when the attempts it released have all
  succeeded or after C{probe_max} with nothing failing.

A member is a L{Ticket}: the breaker holds it, and calls its C{release}
with the reason C{probe} or C{release} when its attempt may go.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from automat import TypeMachine, TypeMachineBuilder

from supervisor.automaton import idle, indexed
from supervisor.budget import WHOLE
from supervisor.scheduler import Scheduler, Timer
from supervisor.spec import BreakerSpec
from supervisor.states.records import BreakerState, Cause

INITIAL_WINDOW = 4
"""How many held attempts a half-open breaker releases before any succeeds."""


class Ticket(Protocol):
    """
    A member of a breaker: one connection's request to attempt.
    """

    def release(self, cause: Cause) -> None:
        "The breaker lets this member's attempt go (reason C{probe} or C{release})."


class BreakerInputs(Protocol):
    """
    What happens to a breaker. Inputs that return L{None} may arrive while
    another is handled (a released member may fail at once): they are queued.
    """

    def admit(self, ticket: Ticket) -> bool:
        "A member wants to attempt: true if it may now; false: held, released later."

    def withdraw(self, ticket: Ticket) -> None:
        "A member no longer waits, or no longer has an attempt in flight."

    def failed(self, ticket: Ticket, overloaded: bool) -> None:
        "A member's attempt failed; C{overloaded}: the peer said so itself."

    def succeeded(self, ticket: Ticket) -> None:
        "A member's attempt succeeded."

    def lost(self, ticket: Ticket) -> None:
        "A member's ESTABLISHED connection to the target was lost."

    def probeDue(self) -> None:
        "The probe timer fired."

    def releaseDue(self) -> None:
        "The release pacing timer fired."

    def settleDue(self) -> None:
        "Nothing failed for C{probe_max} since the last member was released."

    def trip(self) -> None:
        "Judgement: open."

    def recovered(self) -> None:
        "Judgement: the target answers again; release the held members."

    def settled(self) -> None:
        "Judgement: everybody is back; close."

    def retire(self) -> None:
        "The last member left: cancel every timer; the breaker is not used again."


@dataclass(eq=False)
class BreakerCore:
    """
    What every state of one breaker shares.

    @ivar held: the members waiting, in the order they asked (a dict for
        O(1) withdrawal).
    @ivar observers: called with (old, new) on every change of state.
    @ivar openings: how many times it opened.
    """

    key: str
    spec: BreakerSpec
    scheduler: Scheduler
    rng: random.Random
    state: BreakerState = "closed"
    failures: int = 0
    openings: int = 0
    held: dict[Ticket, None] = field(default_factory=dict)
    observers: list[Callable[[BreakerState, BreakerState], object]] = field(default_factory=list)

    def enter(self, state: BreakerState) -> None:
        old, self.state = self.state, state
        if old != state:
            for observer in self.observers:
                observer(old, state)

    def jittered(self, delay: float) -> float:
        """
        C{delay} spread over its upper half, so that breakers opened together
        do not probe together.
        """
        return delay * (0.5 + 0.5 * self.rng.random())


class _Data:
    """
    The data of one state of a breaker.
    """

    __slots__ = ()

    def leave(self) -> None:
        "The breaker leaves this state: cancel its timers."


class _Closed(_Data):
    __slots__ = ()


class _Open(_Data):
    """
    The probe timer, its current delay, and the probe in flight.
    """

    __slots__ = ("delay", "probing", "timer", "waitingForAsker")

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.timer: Timer | None = None
        self.probing: Ticket | None = None
        self.waitingForAsker = False

    def leave(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _HalfOpen(_Data):
    """
    The release window, the attempts released and not yet judged, the
    release pacing and the settle timer.
    """

    __slots__ = (
        "credit",
        "inflight",
        "lastTick",
        "pace",
        "pacer",
        "recent",
        "settler",
        "window",
    )

    def __init__(self, pace: float, now: float) -> None:
        self.pace = pace
        self.window = INITIAL_WINDOW
        self.inflight: set[Ticket] = set()
        # When the releases of the last SPAN seconds went.
        self.recent: deque[float] = deque()
        self.pacer: Timer | None = None
        self.settler: Timer | None = None
        self.credit = 1.0
        self.lastTick = now

    def wake(self, inputs: BreakerInputs, core: BreakerCore) -> None:
        """
        Release (or settle) as soon as the pace allows, unless already due.
        """
        if self.pacer is None:
            self.pacer = core.scheduler.callLater(0, inputs.releaseDue)

    def leave(self) -> None:
        for timer in (self.pacer, self.settler):
            if timer is not None:
                timer.cancel()
        self.pacer = self.settler = None


# Entering each state.


def _enterClosed(inputs: BreakerInputs, core: BreakerCore) -> _Closed:
    core.failures = 0
    core.enter("closed")
    return _Closed()


def _enterOpen(inputs: BreakerInputs, core: BreakerCore) -> _Open:
    core.openings += 1
    core.enter("open")
    data = _Open(core.spec.probe_interval)
    data.timer = core.scheduler.callLater(core.jittered(data.delay), inputs.probeDue)
    return data


SPAN = 0.1
"""In any SPAN seconds, at most C{release_rate * SPAN} releases; and the most
a late wake-up makes up for: a busy reactor may wake the shared scheduler
seldom, and each wake-up then releases what the rate allowed since the last,
up to this much time's worth."""


RELEASE_SPREAD = 2.5
"""Seconds over which a half-open breaker spreads the release of the members
it held when it half-opened (unless C{release_rate} is slower): a returning
peer sees the fleet come back over a few seconds, whatever its size, rather
than in a wall that grows with it."""

RELEASE_FLOOR = 1000.0
"""Releases per second a small fleet is never spread below (unless
C{release_rate} is lower): a few hundred connections are back in well under
a second."""


def _rate(core: BreakerCore, data: _HalfOpen) -> float:
    # The release pace: the spread one, never above release_rate (read
    # each time, so that a retune applies at once).
    return min(core.spec.release_rate, data.pace)


def _burst(core: BreakerCore, rate: float, elapsed: float) -> float:
    # What may be released in one wake-up: one scheduler resolution's worth,
    # or, when it came late, what the rate allowed meanwhile (bounded), so
    # that the pace follows the clock rather than the number of wake-ups.
    span = min(SPAN, max(core.scheduler.resolution, elapsed))
    return max(1.0, rate * span)


def _room(rate: float, data: _HalfOpen, now: float) -> float:
    # How many more may go now without more than rate x SPAN in the last
    # SPAN seconds.
    recent = data.recent
    while recent and recent[0] <= now - SPAN + 1e-9:
        recent.popleft()
    return max(1.0, rate * SPAN) - len(recent)


def _enterHalfOpen(inputs: BreakerInputs, core: BreakerCore) -> _HalfOpen:
    core.enter("half_open")
    data = _HalfOpen(max(RELEASE_FLOOR, len(core.held) / RELEASE_SPREAD), core.scheduler.now())
    data.credit = _burst(core, _rate(core, data), 0.0)
    data.wake(inputs, core)
    return data


# Behaviours.


def _admitted(inputs: BreakerInputs, core: BreakerCore, ticket: Ticket) -> bool:
    return True


def _holdForRelease(
    inputs: BreakerInputs, core: BreakerCore, data: _HalfOpen, ticket: Ticket
) -> bool:
    core.held[ticket] = None
    if data.settler is not None:
        data.settler.cancel()
        data.settler = None
    data.wake(inputs, core)
    return False


def _holdOrProbe(inputs: BreakerInputs, core: BreakerCore, data: _Open, ticket: Ticket) -> bool:
    if data.waitingForAsker and data.probing is None:
        # The probe was due with nobody held: the first to ask is the probe.
        data.waitingForAsker = False
        data.probing = ticket
        return True
    core.held[ticket] = None
    return False


def _countFailure(
    inputs: BreakerInputs, core: BreakerCore, data: _Closed, ticket: Ticket, overloaded: bool
) -> None:
    core.failures += 1
    if overloaded or core.failures >= core.spec.failures:
        inputs.trip()


def _countLoss(inputs: BreakerInputs, core: BreakerCore, data: _Closed, ticket: Ticket) -> None:
    # Losses count like failed attempts: when a shared peer dies, its
    # connections are lost together, and their first retries come due before
    # any of them has failed; counted, the first losses open the breaker and
    # those retries are held behind a probe instead of hitting a dead peer.
    # A loss followed by a successful reconnect starts the count over.
    _countFailure(inputs, core, data, ticket, False)


def _countSuccess(inputs: BreakerInputs, core: BreakerCore, data: _Closed, ticket: Ticket) -> None:
    core.failures = 0


def _forget(inputs: BreakerInputs, core: BreakerCore, data: _Data, ticket: Ticket) -> None:
    core.held.pop(ticket, None)


def _leave(inputs: BreakerInputs, core: BreakerCore, data: _Data) -> None:
    data.leave()


def _probe(inputs: BreakerInputs, core: BreakerCore, data: _Open) -> None:
    data.timer = None
    if data.probing is not None:
        return  # one probe at a time; its outcome schedules the next
    if not core.held:
        data.waitingForAsker = True
        return
    ticket = next(iter(core.held))
    del core.held[ticket]
    data.probing = ticket
    ticket.release(Cause("probe"))


def _probeFailed(
    inputs: BreakerInputs, core: BreakerCore, data: _Open, ticket: Ticket, overloaded: bool
) -> None:
    if ticket is not data.probing:
        return  # an attempt that began before the breaker opened
    data.probing = None
    data.delay = min(core.spec.probe_max, data.delay * 2)
    data.timer = core.scheduler.callLater(core.jittered(data.delay), inputs.probeDue)


def _probeWithdrawn(inputs: BreakerInputs, core: BreakerCore, data: _Open, ticket: Ticket) -> None:
    core.held.pop(ticket, None)
    if ticket is data.probing:
        data.probing = None
        if data.timer is None:
            data.timer = core.scheduler.callLater(core.jittered(data.delay), inputs.probeDue)


def _recover(inputs: BreakerInputs, core: BreakerCore, data: _Open, ticket: Ticket) -> None:
    inputs.recovered()


def _release(inputs: BreakerInputs, core: BreakerCore, data: _HalfOpen) -> None:
    data.pacer = None
    if core.held:
        now = core.scheduler.now()
        rate = _rate(core, data)
        elapsed = now - data.lastTick
        data.credit = min(_burst(core, rate, elapsed), data.credit + elapsed * rate)
        data.lastTick = now
        room = _room(rate, data, now)
        # For one wake-up's budget of the scheduler at most: each release
        # starts a connect, and what a late wake-up makes up for (up to a
        # hundred milliseconds' worth: 400 releases at 10,000 connections)
        # held the reactor for 50 to 100 ms. The rest go at the next
        # wake-up.
        clock = core.scheduler.now
        stop = now + core.scheduler.budget
        while (
            core.held
            and data.credit >= WHOLE
            and room >= WHOLE
            and len(data.inflight) < data.window
        ):
            ticket = next(iter(core.held))
            del core.held[ticket]
            data.inflight.add(ticket)
            data.credit -= 1
            room -= 1
            data.recent.append(now)
            ticket.release(Cause("release"))
            if clock() >= stop:
                break
        if core.held and len(data.inflight) < data.window:
            # Out of pace: wake when the next release is due, by the rate
            # and by the last SPAN's releases (at the next wake-up, if the
            # budget stopped it). (A full window waits for a success
            # instead.)
            delay = (1 - data.credit) / rate
            if room < WHOLE:
                delay = max(delay, data.recent[0] + SPAN - now)
            data.pacer = core.scheduler.callLater(delay, inputs.releaseDue)
    if not core.held:
        # Nobody left to release (the last one may have just gone): close
        # now, or after probe_max unless a released attempt fails first.
        if not data.inflight:
            inputs.settled()
        elif data.settler is None:
            data.settler = core.scheduler.callLater(core.spec.probe_max, inputs.settleDue)


def _releasedSucceeded(
    inputs: BreakerInputs, core: BreakerCore, data: _HalfOpen, ticket: Ticket
) -> None:
    if ticket in data.inflight:
        data.inflight.discard(ticket)
        data.window += 1
    data.wake(inputs, core)


def _releasedFailed(
    inputs: BreakerInputs, core: BreakerCore, data: _HalfOpen, ticket: Ticket, overloaded: bool
) -> None:
    if ticket in data.inflight or overloaded:
        inputs.trip()


def _releasedWithdrawn(
    inputs: BreakerInputs, core: BreakerCore, data: _HalfOpen, ticket: Ticket
) -> None:
    core.held.pop(ticket, None)
    if ticket in data.inflight:
        data.inflight.discard(ticket)
        data.wake(inputs, core)


def _settle(inputs: BreakerInputs, core: BreakerCore, data: _HalfOpen) -> None:
    data.settler = None
    if not core.held:
        inputs.settled()


def makeBreakerMachine() -> TypeMachine[BreakerInputs, BreakerCore]:
    """
    Build the breaker machine (done once, at import).
    """
    b = TypeMachineBuilder(BreakerInputs, BreakerCore)
    START = b.state("START")
    RETIRED = b.state("RETIRED")
    CLOSED = b.state("CLOSED", _enterClosed)
    OPEN = b.state("OPEN", _enterOpen)
    HALF_OPEN = b.state("HALF_OPEN", _enterHalfOpen)

    # The first declared state cannot carry data: the breaker is built in
    # START and enters CLOSED at once (see Breaker.__init__).
    START.upon(BreakerInputs.settled).to(CLOSED).returns(None)

    CLOSED.upon(BreakerInputs.admit, nodata=True).loop()(_admitted)
    CLOSED.upon(BreakerInputs.failed).loop()(_countFailure)
    CLOSED.upon(BreakerInputs.succeeded).loop()(_countSuccess)
    CLOSED.upon(BreakerInputs.lost).loop()(_countLoss)
    CLOSED.upon(BreakerInputs.withdraw).loop()(_forget)
    CLOSED.upon(BreakerInputs.trip).to(OPEN)(_leave)
    # Timers of a state just left, already fired and queued behind a change.
    CLOSED.upon(BreakerInputs.settled, nodata=True).loop().returns(None)

    OPEN.upon(BreakerInputs.admit).loop()(_holdOrProbe)
    OPEN.upon(BreakerInputs.probeDue).loop()(_probe)
    OPEN.upon(BreakerInputs.failed).loop()(_probeFailed)
    OPEN.upon(BreakerInputs.withdraw).loop()(_probeWithdrawn)
    OPEN.upon(BreakerInputs.succeeded).loop()(_recover)
    OPEN.upon(BreakerInputs.recovered).to(HALF_OPEN)(_leave)
    OPEN.upon(BreakerInputs.trip, nodata=True).loop().returns(None)
    # Already open (or releasing): the probe and the released attempts judge.
    OPEN.upon(BreakerInputs.lost, nodata=True).loop().returns(None)

    HALF_OPEN.upon(BreakerInputs.admit).loop()(_holdForRelease)
    HALF_OPEN.upon(BreakerInputs.releaseDue).loop()(_release)
    HALF_OPEN.upon(BreakerInputs.succeeded).loop()(_releasedSucceeded)
    HALF_OPEN.upon(BreakerInputs.failed).loop()(_releasedFailed)
    HALF_OPEN.upon(BreakerInputs.withdraw).loop()(_releasedWithdrawn)
    HALF_OPEN.upon(BreakerInputs.settleDue).loop()(_settle)
    HALF_OPEN.upon(BreakerInputs.trip).to(OPEN)(_leave)
    HALF_OPEN.upon(BreakerInputs.settled).to(CLOSED)(_leave)
    HALF_OPEN.upon(BreakerInputs.recovered, nodata=True).loop().returns(None)
    HALF_OPEN.upon(BreakerInputs.lost, nodata=True).loop().returns(None)
    for state in (CLOSED, OPEN, HALF_OPEN):
        state.upon(BreakerInputs.retire).to(RETIRED)(_leave)
    return b.build()


BreakerMachine = indexed(makeBreakerMachine(), BreakerInputs)


class Breaker:
    """
    One target's circuit breaker.

    @ivar key: what its members share (an endpoint, or a connection's name).
    @ivar members: how many connections use it.
    """

    def __init__(
        self, key: str, spec: BreakerSpec, scheduler: Scheduler, rng: random.Random
    ) -> None:
        self.key = key
        self.members = 0
        self._core = BreakerCore(key, spec, scheduler, rng)
        self._inputs: BreakerInputs = BreakerMachine(self._core)
        self._inputs.settled()

    @property
    def state(self) -> BreakerState:
        """
        C{closed}, C{open} or C{half_open}.
        """
        return self._core.state

    @property
    def spec(self) -> BreakerSpec:
        return self._core.spec

    @property
    def held(self) -> int:
        """
        Members waiting for this breaker to let them attempt.
        """
        return len(self._core.held)

    @property
    def openings(self) -> int:
        """
        How many times it opened: an attempt it let through before its
        latest opening was let through by a judgement now void.
        """
        return self._core.openings

    def addObserver(self, observer: Callable[[BreakerState, BreakerState], object]) -> None:
        """
        Call C{observer(old, new)} on every change of state.
        """
        self._core.observers.append(observer)

    def retune(self, spec: BreakerSpec) -> None:
        """
        Apply new settings from now on (the next probe, the next release).
        """
        self._core.spec = spec

    def retire(self) -> None:
        """
        The last member left: cancel every timer. Not used again.
        """
        self._inputs.retire()

    def admit(self, ticket: Ticket) -> bool:
        """
        C{ticket} wants to attempt: true if it may go now; false if it is
        held (its C{release} is called when it may).
        """
        if self._core.state == "closed" and idle(self._inputs):
            # What the machine does for it when closed, without its dispatch
            # (twice on every connection's way to ESTABLISHED).
            return True
        return self._inputs.admit(ticket)

    def withdraw(self, ticket: Ticket) -> None:
        """
        C{ticket} no longer waits and has no attempt in flight.
        """
        self._inputs.withdraw(ticket)

    def failed(self, ticket: Ticket, overloaded: bool = False) -> None:
        """
        An attempt of C{ticket} failed (C{overloaded}: the peer pushed back).
        """
        self._inputs.failed(ticket, overloaded)

    def succeeded(self, ticket: Ticket) -> None:
        """
        An attempt of C{ticket} succeeded.
        """
        core = self._core
        if core.state == "closed" and idle(self._inputs):
            # As the machine does when closed, without its dispatch.
            core.failures = 0
            return
        self._inputs.succeeded(ticket)

    def lost(self, ticket: Ticket) -> None:
        """
        The ESTABLISHED connection of C{ticket} was lost: while CLOSED, it
        counts toward C{failures} like a failed attempt.
        """
        self._inputs.lost(ticket)

    def __repr__(self) -> str:
        return f"<Breaker {self.key} {self.state} held={self.held}>"
