"""
IDLE: not connected. Four internal states show as IDLE:

    IDLE        the next attempt is due after the backoff delay
    RESTARTING  a rotation ended: the next attempt is due at once
    FLAPPING    the flap guard holds the connection for C{flap.hold}
    ADMITTING   the attempt is due and waits for its way through the target's
                circuit breaker and the connect budget (usually not at all)
"""

from __future__ import annotations

from supervisor.scheduler import Timer
from supervisor.states.core import Core, Inputs, StateData
from supervisor.states.records import Cause, Held


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

    @property
    def held(self) -> Held | None:
        return "backoff"


class Restarting(Waiting):
    """
    IDLE with the next attempt due at once (no backoff): a rotation ended.
    """

    __slots__ = ()
    internal = "RESTARTING"

    @property
    def held(self) -> Held | None:
        return None


class Flapping(Waiting):
    """
    IDLE, held by the flap guard.
    """

    __slots__ = ()
    internal = "FLAPPING"

    @property
    def held(self) -> Held | None:
        return "flapping"


class Admitting(StateData):
    """
    The attempt is due and waits for the gate, held by what it names.
    """

    __slots__ = ("_held", "core")
    state = "IDLE"
    internal = "ADMITTING"

    def __init__(self, core: Core) -> None:
        self.core = core
        self._held: Held | None = None

    def hold(self, kind: Held) -> None:
        self._held = kind

    @property
    def held(self) -> Held | None:
        return self._held

    def leave(self) -> None:
        self.core.gate.withdraw()


def _wait(inputs: Inputs, core: Core, delay: float, kind: type[Waiting]) -> Waiting:
    data = kind(delay, core.scheduler.callLater(delay, inputs.retry))
    core.enter(data)
    # From ESTABLISHED or a close: what was in flight is lost.
    core.operations.disconnected()
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


def holdFlapping(inputs: Inputs, core: Core, cause: Cause) -> Waiting:
    """
    Enter FLAPPING: schedule the next attempt after C{flap.hold}.
    """
    return _wait(inputs, core, core.spec.flap.hold, Flapping)


# Why an attempt is asked for (a Cause is frozen: one each for all).
_FIRST, _AGAIN = Cause("start"), Cause("retry")


def admit(inputs: Inputs, core: Core) -> Admitting:
    """
    Enter ADMITTING: ask the gate for the attempt; it answers with the
    inputs C{held} (then waits) and C{admitted}.
    """
    data = Admitting(core)
    core.enter(data)
    core.gate.request(_FIRST if core.attempts == 0 else _AGAIN)
    return data
