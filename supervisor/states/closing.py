"""
CLOSING: a graceful close is in progress: the plugin drains, then the
transport is closed; past C{drain_timeout} it is aborted. The internal state
ROTATING is the same close followed by an immediate new attempt instead of
CLOSED; a stop during a rotation continues the same close (same drain, same
deadline) as CLOSING.
"""

from __future__ import annotations

from typing import ClassVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from supervisor.operations import Mode
from supervisor.scheduler import Timer
from supervisor.states.core import Core, Inputs, StateData, log
from supervisor.states.records import Cause


class Closing(StateData):
    """
    The plugin's drain and the deadline past which the transport is aborted.
    """

    __slots__ = ("deadline", "draining", "name")
    state = "CLOSING"
    internal = "CLOSING"
    keepsAttempt = True
    takesOperations: ClassVar[Mode] = "refuse"

    def __init__(self, name: str, deadline: Timer, draining: Deferred[None] | None) -> None:
        self.name = name
        self.deadline = deadline
        self.draining = draining

    def leave(self) -> None:
        self.deadline.cancel()
        draining, self.draining = self.draining, None
        if draining is not None:
            draining.cancel()

    def watch(self, inputs: Inputs) -> None:
        """
        Tell the machine when the drain is over (unless this state was left).
        """
        assert self.draining is not None

        def failed(failure: Failure) -> None:
            if self.draining is not None:
                log.failure(
                    "{connection} drain failed; closing anyway", failure, connection=self.name
                )

        def done(result: object) -> None:
            if self.draining is not None:
                self.draining = None
                inputs.drained()

        self.draining.addErrback(failed)
        self.draining.addBoth(done)


class Rotating(Closing):
    """
    CLOSING, then IDLE with the next attempt due at once.
    """

    __slots__ = ()
    internal = "ROTATING"
    takesOperations = "wait"


def _drain(inputs: Inputs, core: Core, kind: type[Closing]) -> Closing:
    attempt = core.attempt
    assert attempt is not None, "CLOSING is entered only with a connection"

    def expire() -> None:
        inputs.ended(Cause("deadline", "drain_timeout passed; transport aborted"))

    deadline = core.scheduler.callLater(core.spec.drain_timeout, expire)
    # Operations in flight finish first, then the plugin says goodbye.
    draining = core.operations.whenSettled().addCallback(lambda _: attempt.drain())
    data = kind(core.spec.name, deadline, draining)
    core.enter(data)
    data.watch(inputs)
    return data


def drainToClose(inputs: Inputs, core: Core, cause: Cause) -> Closing:
    """
    Enter CLOSING: ask the plugin to drain, then close the transport. From
    ROTATING, the drain under way goes on with its deadline.
    """
    previous = core.current
    if isinstance(previous, Rotating):
        data = Closing(previous.name, previous.deadline, previous.draining)
        previous.draining = None
        core.enter(data)
        if data.draining is not None:
            data.watch(inputs)
    else:
        data = _drain(inputs, core, Closing)
    core.operations.closing()
    return data


def drainToRotate(inputs: Inputs, core: Core) -> Closing:
    """
    Enter ROTATING: the same drain, ending in a new attempt.
    """
    return _drain(inputs, core, Rotating)
