"""
The connection machine: every input, every transition, in one block.

Internal states and the user-visible state each maps to::

    INIT            -> IDLE         (before start)
    IDLE            -> IDLE         (next attempt after the backoff delay)
    RESTARTING      -> IDLE         (next attempt at once: a rotation ended)
    FLAPPING        -> IDLE         (held by the flap guard)
    ADMITTING       -> IDLE         (waiting for the circuit breaker and the budget)
    CONNECTING      -> CONNECTING   (connect in flight, or the plugin's handshake)
    SECURING        -> CONNECTING   (TLS handshake under way)
    SECURING_READY  -> CONNECTING   (plugin ready, TLS handshake under way)
    HANDSHAKING     -> CONNECTING   (TLS done, the plugin's handshake under way)
    ESTABLISHED     -> ESTABLISHED
    CLOSING         -> CLOSING      (graceful close, then CLOSED)
    ROTATING        -> CLOSING      (graceful close, then RESTARTING)
    CLOSED          -> CLOSED

Each state's data factory (in the module named after the state) runs on
entry and schedules what the state needs. Leaving a state cancels its data
(C{_leave}), except where the table says the data is handed over to the next
internal state of the same phase (C{_handOver}). A failure is judged where
it happens (C{_judge...}), and the judgement is itself an input
(C{retryLater}, C{giveUp}, C{ended}), so that every outcome is an edge here.

An input a state does not list raises C{NoTransition}: the tests show it
cannot happen. Inputs a state accepts and ignores are listed as loops.
"""

from __future__ import annotations

from collections.abc import Callable

from automat import TypeMachine, TypeMachineBuilder
from twisted.python.failure import Failure

from supervisor.automaton import indexed
from supervisor.states import closed, closing, connecting, established, idle
from supervisor.states.core import Core, Inputs, StateData
from supervisor.states.records import Cause, Held, Reason

# Behaviours: what a transition does besides entering its target (whose data
# factory has already run).


def _leave(inputs: Inputs, core: Core, data: StateData, cause: Cause) -> None:
    data.leave()
    core.settle(cause)


def _leaveBecause(reason: Reason) -> Callable[[Inputs, Core, StateData], None]:
    # A Cause is frozen: one for every transition made this way.
    cause = Cause(reason)

    def leave(inputs: Inputs, core: Core, data: StateData) -> None:
        _leave(inputs, core, data, cause)

    leave.__name__ = f"leave({reason})"
    return leave


def _handOver(inputs: Inputs, core: Core, data: StateData) -> None:
    "The next state took over this one's data: nothing to cancel, nothing to record."


def _admitted(inputs: Inputs, core: Core, data: StateData, cause: Cause) -> None:
    # Through the gate: nothing to withdraw from.
    core.settle(cause)


def _held(inputs: Inputs, core: Core, data: idle.Admitting, kind: Held) -> None:
    data.hold(kind)


def _closeUnstarted(inputs: Inputs, core: Core, cause: Cause) -> bool:
    core.settle(cause)
    return True


def _closeNow(inputs: Inputs, core: Core, data: StateData, cause: Cause) -> bool:
    _leave(inputs, core, data, cause)
    return True


def _closeDuringRotation(inputs: Inputs, core: Core, data: StateData, cause: Cause) -> bool:
    # The rotation's drain and deadline go on (handed over), now ending CLOSED.
    return True


def _due(inputs: Inputs, core: Core, data: StateData) -> None:
    data.leave()


def _retryNow(inputs: Inputs, core: Core, data: StateData) -> bool:
    data.leave()
    return True


def _rotate(inputs: Inputs, core: Core, data: StateData) -> bool:
    _leave(inputs, core, data, Cause("rotation"))
    return True


def _judgeAttempt(inputs: Inputs, core: Core, data: StateData, failure: Failure) -> None:
    final, cause = core.judge(failure)
    if final:
        inputs.giveUp(cause)
    else:
        inputs.retryLater(cause)


def _judgeLoss(inputs: Inputs, core: Core, data: StateData, failure: Failure) -> None:
    verdict, cause = core.judgeLoss(failure)
    if verdict == "retry":
        inputs.retryLater(cause)
    elif verdict == "hold":
        inputs.hold(cause)
    else:
        inputs.giveUp(cause)


def _closeEnded(inputs: Inputs, core: Core, data: StateData, failure: Failure) -> None:
    inputs.ended(Cause("closed"))


def _closeTransport(inputs: Inputs, core: Core, data: StateData) -> None:
    assert core.attempt is not None
    core.attempt.loseConnection()


def _pong(inputs: Inputs, core: Core, data: established.Established, token: bytes) -> None:
    data.pong(token)


def _activity(inputs: Inputs, core: Core, data: established.Established) -> None:
    data.activity()


def makeMachine() -> TypeMachine[Inputs, Core]:
    """
    Build the connection machine (done once, at import).
    """
    b = TypeMachineBuilder(Inputs, Core)
    INIT = b.state("INIT")
    IDLE = b.state("IDLE", idle.waitToRetry)
    RESTARTING = b.state("RESTARTING", idle.restartNow)
    FLAPPING = b.state("FLAPPING", idle.holdFlapping)
    ADMITTING = b.state("ADMITTING", idle.admit)
    CONNECTING = b.state("CONNECTING", connecting.attempt)
    SECURING = b.state("SECURING", connecting.secure)
    SECURING_READY = b.state("SECURING_READY", connecting.readyWhenSecure)
    HANDSHAKING = b.state("HANDSHAKING", connecting.handshake)
    ESTABLISHED = b.state("ESTABLISHED", established.establish)
    CLOSING = b.state("CLOSING", closing.drainToClose)
    ROTATING = b.state("ROTATING", closing.drainToRotate)
    CLOSED = b.state("CLOSED", closed.close)

    INIT.upon(Inputs.start).to(ADMITTING).returns(None)
    INIT.upon(Inputs.close).to(CLOSED)(_closeUnstarted)
    INIT.upon(Inputs.rotate).loop().returns(False)

    # Waiting for the next attempt; when it is due, the gate (the target's
    # circuit breaker, then the connect budget) admits it, now or later.
    for waiting in (IDLE, RESTARTING, FLAPPING):
        waiting.upon(Inputs.retry).to(ADMITTING)(_due)
        waiting.upon(Inputs.rotate).to(ADMITTING)(_retryNow)
        waiting.upon(Inputs.close).to(CLOSED)(_closeNow)
        waiting.upon(Inputs.start, nodata=True).loop().returns(None)
    ADMITTING.upon(Inputs.admitted).to(CONNECTING)(_admitted)
    ADMITTING.upon(Inputs.held).loop()(_held)
    ADMITTING.upon(Inputs.close).to(CLOSED)(_closeNow)
    ADMITTING.upon(Inputs.rotate, nodata=True).loop().returns(True)
    ADMITTING.upon(Inputs.start, nodata=True).loop().returns(None)

    # One attempt, from the connect to the plugin's ready (and TLS's).
    CONNECTING.upon(Inputs.securing).to(SECURING)(_handOver)
    CONNECTING.upon(Inputs.ready).to(ESTABLISHED)(_leaveBecause("ready"))
    SECURING.upon(Inputs.handshakeCompleted).to(HANDSHAKING)(_handOver)
    SECURING.upon(Inputs.ready).to(SECURING_READY)(_handOver)
    SECURING_READY.upon(Inputs.handshakeCompleted).to(ESTABLISHED)(_leaveBecause("ready"))
    SECURING_READY.upon(Inputs.ready, nodata=True).loop().returns(None)
    HANDSHAKING.upon(Inputs.ready).to(ESTABLISHED)(_leaveBecause("ready"))
    for attempting in (CONNECTING, SECURING, SECURING_READY, HANDSHAKING):
        attempting.upon(Inputs.failed).loop()(_judgeAttempt)
        attempting.upon(Inputs.retryLater).to(IDLE)(_leave)
        attempting.upon(Inputs.giveUp).to(CLOSED)(_leave)
        attempting.upon(Inputs.close).to(CLOSED)(_closeNow)
        attempting.upon(Inputs.rotate, nodata=True).loop().returns(True)
        attempting.upon(Inputs.start, nodata=True).loop().returns(None)
        attempting.upon(Inputs.pong, nodata=True).loop().returns(None)
        attempting.upon(Inputs.activity, nodata=True).loop().returns(None)

    ESTABLISHED.upon(Inputs.pong).loop()(_pong)
    ESTABLISHED.upon(Inputs.activity).loop()(_activity)
    ESTABLISHED.upon(Inputs.failed).loop()(_judgeLoss)
    ESTABLISHED.upon(Inputs.retryLater).to(IDLE)(_leave)
    ESTABLISHED.upon(Inputs.hold).to(FLAPPING)(_leave)
    ESTABLISHED.upon(Inputs.giveUp).to(CLOSED)(_leave)
    ESTABLISHED.upon(Inputs.close).to(CLOSING)(_closeNow)
    ESTABLISHED.upon(Inputs.rotate).to(ROTATING)(_rotate)
    ESTABLISHED.upon(Inputs.expired).to(ROTATING)(_leaveBecause("rotation"))
    ESTABLISHED.upon(Inputs.ready, nodata=True).loop().returns(None)
    ESTABLISHED.upon(Inputs.start, nodata=True).loop().returns(None)

    # A graceful close: the plugin drains, the transport closes (or the
    # deadline aborts it), then CLOSED, or RESTARTING after a rotation.
    ROTATING.upon(Inputs.close).to(CLOSING)(_closeDuringRotation)
    ROTATING.upon(Inputs.ended).to(RESTARTING)(_leave)
    ROTATING.upon(Inputs.rotate, nodata=True).loop().returns(True)
    CLOSING.upon(Inputs.ended).to(CLOSED)(_leave)
    CLOSING.upon(Inputs.close, nodata=True).loop().returns(False)
    CLOSING.upon(Inputs.rotate, nodata=True).loop().returns(False)
    for draining in (CLOSING, ROTATING):
        draining.upon(Inputs.drained).loop()(_closeTransport)
        draining.upon(Inputs.failed).loop()(_closeEnded)
        draining.upon(Inputs.start, nodata=True).loop().returns(None)
        draining.upon(Inputs.ready, nodata=True).loop().returns(None)
        draining.upon(Inputs.pong, nodata=True).loop().returns(None)
        draining.upon(Inputs.activity, nodata=True).loop().returns(None)

    CLOSED.upon(Inputs.close, nodata=True).loop().returns(False)
    CLOSED.upon(Inputs.start, nodata=True).loop().returns(None)
    CLOSED.upon(Inputs.rotate, nodata=True).loop().returns(False)

    return b.build()


ConnectionMachine = indexed(makeMachine(), Inputs)
