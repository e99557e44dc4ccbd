"""
CLOSING: a graceful close is in progress, bounded by C{drain_timeout}. The
internal state ROTATING is the same close followed by an immediate new
attempt instead of CLOSED.
"""

from __future__ import annotations

from supervisor.scheduler import Timer
from supervisor.states.core import Core, Inputs, StateData
from supervisor.states.records import Cause


class Closing(StateData):
    """
    The deadline past which the transport is aborted.
    """

    __slots__ = ("deadline",)
    state = "CLOSING"
    internal = "CLOSING"
    keepsLink = True

    def __init__(self, deadline: Timer) -> None:
        self.deadline = deadline

    def leave(self) -> None:
        self.deadline.cancel()


class Rotating(Closing):
    """
    CLOSING, then IDLE with the next attempt due at once.
    """

    __slots__ = ()
    internal = "ROTATING"


def _drain(inputs: Inputs, core: Core, kind: type[Closing]) -> Closing:
    link = core.link
    assert link is not None, "CLOSING is entered only from ESTABLISHED"
    deadlineAt = link.drain(core.now() + core.spec.drain_timeout)

    def expire() -> None:
        inputs.closed(Cause("deadline", "drain_timeout passed; transport aborted"))

    data = kind(core.scheduler.callAt(deadlineAt, expire))
    core.enter(data)
    return data


def drainToClose(inputs: Inputs, core: Core, cause: Cause) -> Closing:
    """
    Enter CLOSING: ask the plugin to drain, then close the transport.
    """
    return _drain(inputs, core, Closing)


def drainToRotate(inputs: Inputs, core: Core) -> Closing:
    """
    Enter ROTATING: the same drain, ending in a new attempt.
    """
    return _drain(inputs, core, Rotating)
