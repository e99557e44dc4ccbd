"""
IDLE: not connected; the next attempt is scheduled.
"""

from __future__ import annotations

from supervisor.scheduler import Timer
from supervisor.states.core import Core, Inputs, StateData
from supervisor.states.records import Cause

# A graceful close that was part of a rotation ends with one of these; the
# next attempt is then due at once, not after a backoff.
_ROTATION_ENDS = ("closed", "deadline")


class Waiting(StateData):
    """
    The retry timer and the delay it was scheduled with.
    """

    __slots__ = ("delay", "timer")
    state = "IDLE"
    internal = "IDLE"

    def __init__(self, delay: float, timer: Timer) -> None:
        self.delay = delay
        self.timer = timer

    def leave(self) -> None:
        self.timer.cancel()

    @property
    def backoffDelay(self) -> float:
        return self.delay


def waitToRetry(inputs: Inputs, core: Core, cause: Cause) -> Waiting:
    """
    Enter IDLE: schedule the next attempt after the policy's delay.
    """
    now = core.now()
    delay = 0.0 if cause.reason in _ROTATION_ENDS else core.policy.nextDelay(now)
    data = Waiting(delay, core.scheduler.callAt(now + delay, inputs.retry))
    core.enter(data)
    return data
