"""
ESTABLISHED: the plugin declared the connection ready; heartbeats run. The
heartbeat is this state's alone: it starts on entry and stops on exit.

Beside the heartbeat, one watch timer keeps the connection's lifetime (it
rotates once its drawn lifetime is over) and its idle timeout (nothing
received for C{idle_timeout}: dropped with the reason C{idle}).
"""

from __future__ import annotations

from supervisor.attempt import Attempt
from supervisor.heartbeat import Heartbeat
from supervisor.policy import HeartbeatTimeout, IdleTimeout, failureOf
from supervisor.scheduler import Timer
from supervisor.states.core import Core, Inputs, StateData

ROTATION_RECHECK = 1.0
"""Seconds between two looks at whether a connection whose lifetime is over
may rotate (see L{Core.rotationHold})."""


class Established(StateData):
    """
    The running heartbeat, if heartbeats are on, and what it drives.
    """

    __slots__ = ("_attempt", "_core", "_inputs", "_rotatesAt", "_watch", "heartbeat")
    state = "ESTABLISHED"
    internal = "ESTABLISHED"
    keepsAttempt = True
    takesOperations = "run"

    def __init__(self, inputs: Inputs, core: Core, attempt: Attempt) -> None:
        self._inputs = inputs
        self._core = core
        self._attempt = attempt
        self.heartbeat: Heartbeat | None = None
        self._rotatesAt: float | None = None
        self._watch: Timer | None = None

    def leave(self) -> None:
        self._core.policy.left(self._core.now())
        self._attempt.pongTo = None
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    @property
    def rotatesAt(self) -> float | None:
        return self._rotatesAt

    def watch(self, lifetime: float | None) -> None:
        """
        Start the watch: rotate after C{lifetime} seconds (if not L{None}),
        drop the connection after C{idle_timeout} with nothing received.
        """
        if lifetime is not None:
            self._rotatesAt = self._core.now() + lifetime
        self._arm()

    def _arm(self) -> None:
        due = self._rotatesAt
        idle = self._core.spec.idle_timeout
        if idle > 0:
            silentUntil = self._attempt.lastInbound + idle
            due = silentUntil if due is None else min(due, silentUntil)
        self._watch = None if due is None else self._core.scheduler.callAt(due, self._due)

    def _due(self) -> None:
        self._watch = None
        now = self._core.now()
        if self._rotatesAt is not None and now >= self._rotatesAt:
            hold = self._core.rotationHold
            if hold is None or not hold():
                self._inputs.expired()
                return
            # The last ESTABLISHED member of its pool: rotate once another is.
            self._rotatesAt = now + ROTATION_RECHECK
        idle = self._core.spec.idle_timeout
        if idle > 0 and now >= self._attempt.lastInbound + idle:
            self._inputs.failed(failureOf(IdleTimeout(idle)))
            return
        self._arm()

    def pong(self, token: bytes) -> None:
        if self.heartbeat is not None:
            self.heartbeat.pong(token)

    def activity(self) -> None:
        # Traffic that proves the peer alive counts as an answered heartbeat.
        self._core.policy.answered()
        if self.heartbeat is not None:
            self.heartbeat.activity()

    # HeartbeatTarget

    def sendPing(self, token: bytes) -> None:
        self._attempt.sendPing(token)

    def heartbeatObserved(self, rtt: float | None) -> None:
        if rtt is not None:
            self._core.policy.answered()
        self._core.heartbeat(rtt)

    def heartbeatDead(self, misses: int) -> None:
        self._inputs.failed(failureOf(HeartbeatTimeout(misses)))


def establish(inputs: Inputs, core: Core) -> Established:
    """
    Enter ESTABLISHED: note the success and start heartbeats.
    """
    core.policy.established(core.now())
    core.gate.succeeded()
    attempt = core.attempt
    assert attempt is not None, "ESTABLISHED is entered only from an attempt"
    data = Established(inputs, core, attempt)
    spec = core.spec.heartbeat
    if spec.enabled:
        heartbeat = data.heartbeat = attempt.pongTo = Heartbeat(spec, core.scheduler, data)
        heartbeat.start(spec.interval * (0.5 + 0.5 * core.rng.random()))
    data.watch(core.spec.drawLifetime(core.rng))
    core.enter(data)
    core.operations.established()
    return data
