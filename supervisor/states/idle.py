"""
IDLE: not connected; the next attempt is scheduled. The internal state
RESTARTING is IDLE after a rotation: the next attempt is due at once.
"""

from __future__ import annotations

from supervisor.scheduler import Timer
from supervisor.states.core import Core, Inputs, StateData
from supervisor.states.records import Cause


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


class Restarting(Waiting):
    """
    IDLE with the next attempt due at once (no backoff): a rotation ended.
    """

    __slots__ = ()
    internal = "RESTARTING"


def _wait(inputs: Inputs, core: Core, delay: float, kind: type[Waiting]) -> Waiting:
    data = kind(delay, core.scheduler.callLater(delay, inputs.retry))
    core.enter(data)
    return data


def waitToRetry(inputs: Inputs, core: Core, cause: Cause) -> Waiting:
    """
    Enter IDLE: schedule the next attempt after the policy's delay.
    """
    return _wait(inputs, core, core.policy.nextDelay(core.now()), Waiting)


def restartNow(inputs: Inputs, core: Core, cause: Cause) -> Waiting:
    """
    Enter RESTARTING: schedule the next attempt at once.
    """
    return _wait(inputs, core, 0.0, Restarting)
