"""
The connection machine: every input, every transition, in one block.

Internal states and the user-visible state each maps to::

    INIT        -> IDLE         (before start)
    IDLE        -> IDLE         (next attempt scheduled)
    CONNECTING  -> CONNECTING
    ESTABLISHED -> ESTABLISHED
    CLOSING     -> CLOSING      (graceful close, then CLOSED)
    ROTATING    -> CLOSING      (graceful close, then IDLE with no delay)
    CLOSED      -> CLOSED

Each state's data factory (in the module named after the state) runs on
entry and schedules what the state needs; the behaviour of every transition
out of a data state calls C{leave()} on the old data, which cancels it, and
then L{Core.settle} records the transition. Loops change nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from automat import TypeMachine, TypeMachineBuilder

from supervisor.states import closed, closing, connecting, established, idle
from supervisor.states.core import Core, Inputs, StateData
from supervisor.states.records import Cause, Reason


def _leave(inputs: Inputs, core: Core, data: StateData, cause: Cause) -> None:
    data.leave()
    core.settle(cause)


def _leaveBecause(reason: Reason) -> Callable[[Inputs, Core, StateData], None]:
    def leave(inputs: Inputs, core: Core, data: StateData) -> None:
        _leave(inputs, core, data, Cause(reason))

    leave.__name__ = f"leave({reason})"
    return leave


def _begin(inputs: Inputs, core: Core) -> None:
    core.settle(Cause("start"))


def _end(inputs: Inputs, core: Core, cause: Cause) -> None:
    core.settle(cause)


def _stillClosed(inputs: Inputs, core: Core, data: StateData, cause: Cause) -> None:
    core.settle(cause)


def makeMachine() -> TypeMachine[Inputs, Core]:
    """
    Build the connection machine (done once, at import).
    """
    b = TypeMachineBuilder(Inputs, Core)
    INIT = b.state("INIT")
    IDLE = b.state("IDLE", idle.waitToRetry)
    CONNECTING = b.state("CONNECTING", connecting.attempt)
    ESTABLISHED = b.state("ESTABLISHED", established.establish)
    CLOSING = b.state("CLOSING", closing.drainToClose)
    ROTATING = b.state("ROTATING", closing.drainToRotate)
    CLOSED = b.state("CLOSED", closed.close)

    INIT.upon(Inputs.start).to(CONNECTING)(_begin)
    INIT.upon(Inputs.close).to(CLOSED)(_end)
    INIT.upon(Inputs.rotate).loop().returns(None)

    IDLE.upon(Inputs.retry).to(CONNECTING)(_leaveBecause("retry"))
    IDLE.upon(Inputs.rotate).to(CONNECTING)(_leaveBecause("retry"))
    IDLE.upon(Inputs.close).to(CLOSED)(_leave)
    IDLE.upon(Inputs.start, nodata=True).loop().returns(None)

    CONNECTING.upon(Inputs.ready).to(ESTABLISHED)(_leaveBecause("ready"))
    CONNECTING.upon(Inputs.attemptFailed).to(IDLE)(_leave)
    CONNECTING.upon(Inputs.attemptAbandoned).to(CLOSED)(_leave)
    CONNECTING.upon(Inputs.close).to(CLOSED)(_leave)
    CONNECTING.upon(Inputs.start, nodata=True).loop().returns(None)
    CONNECTING.upon(Inputs.rotate, nodata=True).loop().returns(None)

    ESTABLISHED.upon(Inputs.lost).to(IDLE)(_leave)
    ESTABLISHED.upon(Inputs.close).to(CLOSING)(_leave)
    ESTABLISHED.upon(Inputs.rotate).to(ROTATING)(_leaveBecause("rotation"))
    ESTABLISHED.upon(Inputs.start, nodata=True).loop().returns(None)

    CLOSING.upon(Inputs.closed).to(CLOSED)(_leave)
    CLOSING.upon(Inputs.close, nodata=True).loop().returns(None)
    CLOSING.upon(Inputs.start, nodata=True).loop().returns(None)
    CLOSING.upon(Inputs.rotate, nodata=True).loop().returns(None)

    ROTATING.upon(Inputs.closed).to(IDLE)(_leave)
    ROTATING.upon(Inputs.close).to(CLOSING)(_leave)
    ROTATING.upon(Inputs.start, nodata=True).loop().returns(None)
    ROTATING.upon(Inputs.rotate, nodata=True).loop().returns(None)

    CLOSED.upon(Inputs.close).loop()(_stillClosed)
    CLOSED.upon(Inputs.start, nodata=True).loop().returns(None)
    CLOSED.upon(Inputs.rotate, nodata=True).loop().returns(None)

    return b.build()


ConnectionMachine = makeMachine()
