"""
ESTABLISHED: the plugin declared the connection ready; heartbeats run. The
heartbeat is this state's alone: it starts on entry and stops on exit.
"""

from __future__ import annotations

from supervisor.attempt import Attempt
from supervisor.heartbeat import Heartbeat
from supervisor.policy import HeartbeatTimeout, failureOf
from supervisor.states.core import Core, Inputs, StateData


class Established(StateData):
    """
    The running heartbeat, if heartbeats are on, and what it drives.
    """

    __slots__ = ("_attempt", "_core", "_inputs", "heartbeat")
    state = "ESTABLISHED"
    internal = "ESTABLISHED"
    keepsAttempt = True

    def __init__(self, inputs: Inputs, core: Core, attempt: Attempt) -> None:
        self._inputs = inputs
        self._core = core
        self._attempt = attempt
        self.heartbeat: Heartbeat | None = None

    def leave(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()

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
        heartbeat = data.heartbeat = Heartbeat(spec, core.scheduler, data)
        heartbeat.start(spec.interval * (0.5 + 0.5 * core.rng.random()))
    core.enter(data)
    return data
