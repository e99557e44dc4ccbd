"""
What all states of one connection share: the inputs the machine accepts, the
core object, the base of every state's data, and the one judgement of a
failed attempt.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from supervisor.attempt import Attempt, AttemptEvents
from supervisor.endpoints import Endpoints
from supervisor.fleet import Gate
from supervisor.interfaces import Classification, IFailureClassifier, IProtocolPlugin
from supervisor.logs import logsAt
from supervisor.operations import Mode, Operations
from supervisor.policy import (
    HeartbeatTimeout,
    IdleTimeout,
    ReconnectPolicy,
    classify,
    isCertificateRefusal,
)
from supervisor.scheduler import Scheduler
from supervisor.spec import ConnectionSpec
from supervisor.states.records import Cause, Held, State, Transition

HISTORY_LENGTH = 50

log = Logger(namespace="netsupervisor.connection")
"""Where transitions are logged: one info event per transition, with the
connection's name and the L{Transition} as C{transition} (unless
L{supervisor.logs.setLogLevel} says info events are not kept)."""

Observer = Callable[[Transition], object]
"""Receives every transition of a connection."""

HeartbeatObserver = Callable[[str, "float | None"], object]
"""Receives the connection's name and a heartbeat's round-trip time, or
L{None} for a missed heartbeat."""


class Inputs(AttemptEvents, Protocol):
    """
    Everything that can happen to a connection: what its attempt reports
    (L{AttemptEvents}), and the inputs below.

    Inputs that return L{None} may be given while another is being handled
    (from a behaviour, an observer or a synchronous callback): they are
    queued, never nested. The operator's L{rotate} and L{close} answer
    whether they were accepted, so they must not be given from inside the
    machine (a transition observer included).
    """

    # The operator.

    def start(self) -> None:
        "Make the first attempt (only before the first start)."

    def rotate(self) -> bool:
        "Reconnect: close gracefully and retry at once if ESTABLISHED, retry now if IDLE."

    def close(self, cause: Cause) -> bool:
        "Close for good: stop, removal or drain."

    # The machine's own timers and Deferreds.

    def retry(self) -> None:
        "The delay before the next attempt is over."

    # The gate: the target's circuit breaker and the connect budget.

    def held(self, kind: Held) -> None:
        "The attempt waits for the circuit breaker or the connect budget."

    def admitted(self, cause: Cause) -> None:
        "The attempt may go (C{cause}: start, retry, probe or release)."

    def drained(self) -> None:
        "The plugin finished draining: the transport may close."

    # The attempt's inputs are those of L{AttemptEvents}: securing, ready,
    # handshakeCompleted, failed, pong, activity.

    # What the machine decided about a failure or a close.

    def retryLater(self, cause: Cause) -> None:
        "The failure is transient: wait, then try again."

    def giveUp(self, cause: Cause) -> None:
        "The failure is permanent, it was the last attempt allowed, or the flap guard closes."

    def hold(self, cause: Cause) -> None:
        "The connection flaps: hold it for C{flap.hold} before its next attempt."

    def expired(self) -> None:
        "The ESTABLISHED connection's lifetime is over: rotate it."

    def ended(self, cause: Cause) -> None:
        "A graceful close finished (C{closed}) or was cut short (C{deadline})."


class StateData:
    """
    The data of one state, alive exactly as long as the machine is in it.

    @cvar state: the user-visible state this internal state maps to.
    @cvar internal: the internal state's name (the machine's own).
    @cvar keepsAttempt: the transport of the current attempt survives in this state.
    @cvar takesOperations: what a submitted operation does in this state:
        C{run} on the protocol, C{wait} in the queue, or is C{refuse}d.
    """

    __slots__ = ()
    state: ClassVar[State]
    internal: ClassVar[str]
    keepsAttempt: ClassVar[bool] = False
    takesOperations: ClassVar[Mode] = "wait"

    @property
    def held(self) -> Held | None:
        """
        What keeps an IDLE connection from attempting, if anything.
        """
        return None

    def leave(self) -> None:
        """
        The machine leaves this state: cancel everything it scheduled.
        """

    @property
    def backoffDelay(self) -> float:
        """
        The retry delay this state has scheduled; 0 unless IDLE.
        """
        return 0.0

    @property
    def rotatesAt(self) -> float | None:
        """
        When an ESTABLISHED connection's lifetime ends, if it has one.
        """
        return None


class NotStarted(StateData):
    """
    Before C{start}: shown as IDLE with nothing scheduled.
    """

    __slots__ = ()
    state = "IDLE"
    internal = "INIT"


NOT_STARTED = NotStarted()


def lossCause(failure: Failure) -> Cause:
    """
    Why an ESTABLISHED connection was lost.
    """
    if isinstance(failure.value, HeartbeatTimeout):
        return Cause("heartbeat", failure.getErrorMessage())
    if isinstance(failure.value, IdleTimeout):
        return Cause("idle", failure.getErrorMessage())
    return Cause("lost", failure.getErrorMessage())


LossVerdict = Literal["retry", "hold", "close"]
"""What becomes of a connection lost from ESTABLISHED."""


@dataclass(slots=True, eq=False)
class Core:
    """
    The state every internal state of one connection shares.

    @ivar endpoints: where each attempt connects, and how each endpoint fared.
    @ivar options: what the plugin's C{buildProtocol} is given.
    @ivar gate: the way through the target's breaker and the budget.
    @ivar attempt: the current attempt, from CONNECTING until the machine
        leaves the states that keep it.
    @ivar losses: when it was lost from ESTABLISHED lately (flap guard).
    @ivar flapHolds: how many times the flap guard held it.
    @ivar operations: what is submitted to it (L{supervisor.operations}).
    @ivar rotationHold: when set and true, a connection whose lifetime is
        over stays ESTABLISHED a little longer (the last ESTABLISHED member
        of its pool).
    """

    spec: ConnectionSpec
    endpoints: Endpoints
    plugin: IProtocolPlugin
    options: object
    scheduler: Scheduler
    rng: random.Random
    policy: ReconnectPolicy
    since: float
    current: StateData = NOT_STARTED
    visible: State = "IDLE"
    attempt: Attempt | None = None
    attempts: int = 0
    lastError: str | None = None
    lastRtt: float | None = None
    losses: deque[float] | None = None
    flapHolds: int = 0
    history: list[Transition] = field(default_factory=list)
    # Tuples, and no list for waiters until one is needed: ten thousand
    # connections should not carry three empty lists each.
    observers: tuple[Observer, ...] = ()
    heartbeatObservers: tuple[HeartbeatObserver, ...] = ()
    waiters: list[Deferred[None]] | None = None
    rotationHold: Callable[[], bool] | None = None
    gate: Gate = field(init=False)
    operations: Operations = field(init=False)

    def now(self) -> float:
        """
        The current time on the connection's clock.
        """
        return self.scheduler.now()

    def enter(self, data: StateData) -> None:
        """
        Called by every state's data factory: C{data} is now current (the
        operations learn whether they may run).
        """
        self.current = data
        self.operations.stateChanged()

    def classify(self, failure: Failure) -> Classification:
        """
        What C{failure} of the current attempt means: the plugin's protocol
        knows most (it exists once the transport is up), then the plugin
        (failures before that), then the default classification.
        """
        protocol = None if self.attempt is None else self.attempt.protocol
        for source in (protocol, self.plugin):
            if IFailureClassifier.providedBy(source):
                chosen = IFailureClassifier(source).classifyFailure(failure)
                if chosen is not None:
                    return chosen
        return classify(failure)

    def judge(self, failure: Failure) -> tuple[bool, Cause]:
        """
        Judge a failed attempt: whether it was the last (a permanent failure,
        or the last retry C{max_retries} allows), and why. The target's
        breaker and the endpoints hear of it.
        """
        c = self.classify(failure)
        self.gate.failed(c.overloaded)
        self.endpoints.failed()
        detail = failure.getErrorMessage()
        if c.permanent:
            return True, Cause(c.reason, detail, permanent=True)
        if self.policy.failed():
            return True, Cause(c.reason, f"{detail} (retries exhausted)")
        return False, Cause(c.reason, detail)

    def judgeLoss(self, failure: Failure) -> tuple[LossVerdict, Cause]:
        """
        Judge the loss of an ESTABLISHED connection: retry after the
        backoff, or, when it was lost more than C{flap.max} times within
        C{flap.within} seconds, hold it (or close it, with C{flap.hold = 0}).

        A server that refuses the client's certificate under TLS 1.3 says so
        after the client's handshake completed (and a plugin ready at once
        made it ESTABLISHED): that is the permanent failure C{tls} too.
        """
        if isCertificateRefusal(failure):
            return "close", Cause("tls", failure.getErrorMessage(), permanent=True)
        cause = lossCause(failure)
        if cause.reason != "idle":
            # The peer's doing (or the network's), not the connection's own
            # idle rule: the target's breaker counts it.
            self.gate.lost()
        flap = self.spec.flap
        now = self.now()
        if not flap.enabled or self.policy.proven(now):
            # A connection that proved healthy before it was lost (up for
            # reset_after, a heartbeat answered) is not flapping: a peer
            # restarted now and then is not held, one that drops every
            # session before it proves anything is.
            return "retry", cause
        losses = self.losses
        if losses is None:
            losses = self.losses = deque()
        losses.append(now)
        while losses[0] <= now - flap.within:
            losses.popleft()
        if len(losses) <= flap.max:
            return "retry", cause
        losses.clear()
        self.flapHolds += 1
        detail = f"{cause.detail}; flapping: more than {flap.max} losses within {flap.within:g}s"
        return ("hold" if flap.hold > 0 else "close"), Cause(cause.reason, detail)

    def settle(self, cause: Cause) -> None:
        """
        Finish a transition: the new state's data is in place and the old
        state's data has been left. Detach the attempt unless the new state
        keeps it; record and announce the change of user-visible state, if
        any; fire the stop waiters once CLOSED.
        """
        data = self.current
        if not data.keepsAttempt and self.attempt is not None:
            attempt, self.attempt = self.attempt, None
            if attempt.detach():
                # Decided by a timer (a missed heartbeat): its transport is
                # aborted once the timers due now have run, so that a burst
                # of misses is decided before the teardown of any of them.
                if self.scheduler.waking:
                    self.scheduler.soon(attempt.abortNow)
                else:
                    attempt.abort()
        if cause.detail and cause.reason not in ("start", "retry", "ready"):
            self.lastError = f"{cause.reason}: {cause.detail}"
        new, old = data.state, self.visible
        if new != old:
            now = self.now()
            record = Transition(self.spec.name, now, old, new, cause.reason, cause.detail)
            self.visible, self.since = new, now
            self.history.append(record)
            if len(self.history) > HISTORY_LENGTH:
                del self.history[0]
            if logsAt(LogLevel.info):
                log.info(
                    "{connection} {from_} -> {to} ({reason}{detail})",
                    connection=record.connection,
                    from_=old,
                    to=new,
                    reason=record.reason,
                    detail=f": {record.detail}" if record.detail else "",
                    transition=record,
                )
            for observer in self.observers:
                try:
                    observer(record)
                except Exception:
                    log.failure("transition observer {observer!r} failed", observer=observer)
        if new == "CLOSED" and self.waiters is not None:
            waiters, self.waiters = self.waiters, None
            for waiter in waiters:
                waiter.callback(None)

    def heartbeat(self, rtt: float | None) -> None:
        """
        A heartbeat was answered in C{rtt} seconds, or missed (L{None}).
        """
        if rtt is not None:
            self.lastRtt = rtt
        for observer in self.heartbeatObservers:
            try:
                observer(self.spec.name, rtt)
            except Exception:
                log.failure("heartbeat observer {observer!r} failed", observer=observer)
