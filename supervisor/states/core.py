"""
What all states of one connection share: the inputs the machine accepts, the
core object, and the base of every state's data.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger

from supervisor.interfaces import IProtocolPlugin
from supervisor.policy import ReconnectPolicy
from supervisor.scheduler import Scheduler
from supervisor.spec import ConnectionSpec
from supervisor.states.records import Cause, State, Transition

if TYPE_CHECKING:
    from supervisor.link import Link

HISTORY_LENGTH = 50

log = Logger(namespace="netsupervisor.connection")
"""Where transitions are logged: one event per transition, with the
connection's name and the L{Transition} as C{transition}."""

Observer = Callable[[Transition], object]
"""Receives every transition of a connection."""

HeartbeatObserver = Callable[[str, "float | None"], object]
"""Receives the connection's name and a heartbeat's round-trip time, or
L{None} for a missed heartbeat."""


class Inputs(Protocol):
    """
    Everything that can happen to a connection. Each returns L{None}, so an
    input given while another is being handled is queued, never nested.
    """

    def start(self) -> None:
        "The connection is started: make the first attempt."

    def retry(self) -> None:
        "The backoff delay is over: make the next attempt."

    def ready(self) -> None:
        "The plugin declared the connection ready."

    def attemptFailed(self, cause: Cause) -> None:
        "The attempt failed and may be retried."

    def attemptAbandoned(self, cause: Cause) -> None:
        "The attempt failed permanently, or it was the last one allowed."

    def lost(self, cause: Cause) -> None:
        "An ESTABLISHED connection went away (lost, or dropped for heartbeats)."

    def close(self, cause: Cause) -> None:
        "Close for good: stop, removal or drain."

    def rotate(self) -> None:
        "Reconnect: close gracefully if ESTABLISHED, retry now if IDLE."

    def closed(self, cause: Cause) -> None:
        "A graceful close finished, or its deadline passed."


class StateData:
    """
    The data of one state, alive exactly as long as the machine is in it.

    @cvar state: the user-visible state this internal state maps to.
    @cvar internal: the internal state's name (the machine's own).
    @cvar keepsLink: the transport of the current attempt survives in this state.
    """

    __slots__ = ()
    state: ClassVar[State]
    internal: ClassVar[str]
    keepsLink: ClassVar[bool] = False

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


class NotStarted(StateData):
    """
    Before C{start}: shown as IDLE with nothing scheduled.
    """

    __slots__ = ()
    state = "IDLE"
    internal = "INIT"


NOT_STARTED = NotStarted()


@dataclass(slots=True, eq=False)
class Core:
    """
    The state every internal state of one connection shares.
    """

    spec: ConnectionSpec
    endpoint: IStreamClientEndpoint
    plugin: IProtocolPlugin
    scheduler: Scheduler
    rng: random.Random
    policy: ReconnectPolicy
    since: float
    options: object
    current: StateData = NOT_STARTED
    visible: State = "IDLE"
    link: Link | None = None
    attempts: int = 0
    lastError: str | None = None
    lastRtt: float | None = None
    history: list[Transition] = field(default_factory=list)
    # Tuples, and no list for waiters until one is needed: ten thousand
    # connections should not carry three empty lists each.
    observers: tuple[Observer, ...] = ()
    heartbeatObservers: tuple[HeartbeatObserver, ...] = ()
    waiters: list[Deferred[None]] | None = None

    def now(self) -> float:
        """
        The current time on the connection's clock.
        """
        return self.scheduler.now()

    def enter(self, data: StateData) -> None:
        """
        Called by every state's data factory: C{data} is now current.
        """
        self.current = data

    def dropLink(self) -> None:
        """
        Abort the current attempt's transport, if any, and forget it.
        """
        link, self.link = self.link, None
        if link is not None:
            link.abort()

    def settle(self, cause: Cause) -> None:
        """
        Finish a transition: the new state's data is in place and the old
        state's data has been left. Record and announce the change of
        user-visible state, if any, and fire the stop waiters once CLOSED.
        """
        data = self.current
        if not data.keepsLink:
            self.dropLink()
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
