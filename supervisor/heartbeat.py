"""
Supervisor-owned heartbeats: ping every C{interval} on a quiet connection,
wait C{timeout} for each pong, drop the connection after C{misses}
consecutive misses, and measure the round trip.

After a miss the next ping goes out at once, and after a pong the next ping
is due C{interval} after the previous one was due (at most C{interval} after
it was sent), so a peer that goes silent right after a pong is detected
within C{interval + timeout * misses}.
Each heartbeat holds exactly one timer on the shared L{Scheduler} at any time.
The timeout of a ping is a deadline (L{Scheduler.deadlineAt}), withdrawn when
the pong arrives: only a miss makes it fire. After the process was held up
past it, it is decided once the pong that may have arrived meanwhile has been
read.

The first ping is due on a grid of C{interval / PHASES} seconds of the
clock (moved up to that much sooner), and so are the next ones, each an
interval after the last was due: a ping sent late (a busy process) does not
move the schedule, so heartbeats stay spread over the grid rather than piling
up on its later points. Heartbeats of one interval then share a few wake-ups
of the scheduler, and their pongs a few reads, rather than each waking the
process on its own.
"""

from __future__ import annotations

from typing import Protocol

from twisted.logger import Logger

from supervisor.scheduler import Scheduler, Timer
from supervisor.spec import HeartbeatSpec

_log = Logger(namespace="netsupervisor.heartbeat")

PHASES = 20
"""How many points of an interval pings may be due at: with a 1 s interval,
every 50 ms of the clock."""


class HeartbeatTarget(Protocol):
    """
    What a heartbeat drives: one object rather than three callbacks, so that
    ten thousand heartbeats hold no closures.
    """

    def sendPing(self, token: bytes) -> None:
        "Send a ping carrying C{token}."

    def heartbeatObserved(self, rtt: float | None) -> None:
        "A round-trip time, or L{None} for a miss."

    def heartbeatDead(self, misses: int) -> None:
        "The limit of consecutive misses was reached (called once)."


class Heartbeat:
    """
    The ping/pong schedule of one ESTABLISHED connection.

    @ivar misses: consecutive pings unanswered so far.
    @ivar awaiting: the token of the unanswered ping, or L{None}.
    """

    __slots__ = (
        "_due",
        "_scheduler",
        "_sentAt",
        "_seq",
        "_spec",
        "_target",
        "_timer",
        "awaiting",
        "lastActivity",
        "misses",
    )

    def __init__(self, spec: HeartbeatSpec, scheduler: Scheduler, target: HeartbeatTarget) -> None:
        self._spec = spec
        self._scheduler = scheduler
        self._target: HeartbeatTarget | None = target
        self._seq = 0
        self._due = 0.0
        self._sentAt = 0.0
        self._timer: Timer | None = None
        self.awaiting: bytes | None = None
        self.lastActivity: float | None = None
        self.misses = 0

    def start(self, firstDelay: float) -> None:
        """
        Send the first ping after C{firstDelay} seconds (spread by the caller
        so that connections that came up together do not ping together),
        moved sooner to the grid of C{interval / PHASES} seconds, never into
        the past.
        """
        now = self._scheduler.now()
        self._timer = self._scheduler.callAt(
            max(self._onGrid(now + firstDelay), now), self._pingDue
        )

    def stop(self) -> None:
        """
        Stop for good; idempotent. The target is let go, so that the
        heartbeat and what it drove (which holds it) are freed without the
        cyclic garbage collector.
        """
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self.awaiting = None
        self._target = None

    @property
    def pending(self) -> bool:
        """
        Whether a timer is scheduled.
        """
        return self._timer is not None and self._timer.active

    def pong(self, token: bytes) -> None:
        """
        The peer answered the ping carrying C{token}; other tokens are stale and ignored.
        """
        target = self._target
        if self._timer is None or target is None or token != self.awaiting:
            return
        self.awaiting = None
        self.misses = 0
        now = self._scheduler.now()
        # The deadline is met: its timer waits for the next ping instead.
        self._timer = self._scheduler.reschedule(self._timer, self._nextPing(now), self._pingDue)
        target.heartbeatObserved(now - self._sentAt)

    def activity(self) -> None:
        """
        A frame arrived that proves the peer alive: it answers an outstanding
        ping (without a round-trip sample) and postpones the next one.
        """
        if self._timer is None:
            return
        self.lastActivity = self._scheduler.now()
        self.awaiting = None
        self.misses = 0

    def _onGrid(self, when: float) -> float:
        """
        The last point of the grid of pings at or before C{when}.
        """
        step = self._spec.interval / PHASES
        # A microsecond over (more than a float's error on an epoch's
        # seconds), so that a point computed a hair short is still its own.
        return (when + 1e-6) // step * step

    def _nextPing(self, now: float) -> float:
        """
        When the ping after the one answered is due: an interval after it
        was due (so at most an interval after it was sent, and on the grid),
        or now if that is past.
        """
        return max(self._due + self._spec.interval, now)

    def _pingDue(self) -> None:
        now = self._scheduler.now()
        assert self._timer is not None
        self._due = self._timer.when
        quietSince = self.lastActivity
        if quietSince is not None and quietSince + self._spec.interval > now:
            self._timer = self._scheduler.reschedule(
                self._timer, quietSince + self._spec.interval, self._pingDue
            )
            return
        self._ping(now)

    def _ping(self, now: float) -> None:
        self._seq += 1
        token = self.awaiting = b"%d" % (self._seq,)
        self._sentAt = now
        # The timer that just fired (the ping's, or the last one's deadline)
        # becomes this one's deadline.
        assert self._timer is not None
        self._timer = self._scheduler.reschedule(
            self._timer, now + self._spec.timeout, self._check, deadline=True
        )
        target = self._target
        if target is None:
            return
        try:
            target.sendPing(token)
        except Exception:
            _log.failure("sending a heartbeat ping failed")

    def _check(self) -> None:
        now = self._scheduler.now()
        if self.awaiting is None:
            # Answered by activity (a pong withdraws the deadline).
            assert self._timer is not None
            self._timer = self._scheduler.reschedule(
                self._timer, self._nextPing(now), self._pingDue
            )
            return
        target = self._target
        if target is None:
            return
        self.misses += 1
        target.heartbeatObserved(None)
        if self._timer is None:
            # An observer stopped it.
            return
        if self.misses >= self._spec.misses:
            self._timer = None
            target.heartbeatDead(self.misses)
        else:
            # At once; the next ones an interval after this one.
            self._due = now
            self._ping(now)
