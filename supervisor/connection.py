"""
L{SupervisedConnection}: one remote connection kept alive by the machine in
L{supervisor.states}, with its reconnect policy, heartbeat and plugin.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter
from typing import Any, Final, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint

from supervisor.endpoints import EndpointRecord, Endpoints
from supervisor.fleet import Fleet
from supervisor.interfaces import IConfigurable, IProtocolPlugin, ISupervisedProtocol
from supervisor.operations import Counts, Operations
from supervisor.policy import ReconnectPolicy
from supervisor.scheduler import Scheduler
from supervisor.spec import ConnectionSpec
from supervisor.states.core import NOT_STARTED, Core, HeartbeatObserver, Inputs, Observer
from supervisor.states.machine import ConnectionMachine
from supervisor.states.records import BreakerState, Cause, CloseReason, Held, State, Transition


def pluginOptions(plugin: IProtocolPlugin, spec: ConnectionSpec) -> object:
    """
    What C{plugin.buildProtocol} is given for C{spec}: its options parsed by
    the plugin when it provides L{IConfigurable}, else the options as a
    mapping.

    @raise supervisor.interfaces.OptionError: the plugin refuses an option
        (a configuration loaded from a file has been checked already).
    """
    options = dict(spec.options)
    if IConfigurable.providedBy(plugin):
        # It provides it itself: no adapter lookup (one per connection).
        return cast(IConfigurable, plugin).parseOptions(options)
    return options


class SupervisedConnection:
    """
    One supervised connection.

    Give every connection of a process the same L{Scheduler}, so that their
    timers share one C{DelayedCall}.
    """

    __slots__ = ("_core", "_inputs", "_operations", "submit")

    submit: Callable[[Callable[[Any], object]], Deferred[Any]]
    """
    C{submit(operation)}: run C{operation(protocol)} on the ESTABLISHED
    protocol, now if it is ESTABLISHED and nothing waits, else in turn once
    it is; it may return a L{Deferred} (or a coroutine) for its result.

    The Deferred returned fires exactly once: with the operation's result;
    with its own error; or with L{supervisor.operations.QueueFull} (at
    once: C{queue.max} wait), L{supervisor.operations.QueueTimeout} (it
    waited C{queue.timeout}), L{supervisor.operations.ConnectionClosed}
    (closing for good or CLOSED), L{supervisor.operations.ConnectionLost}
    (lost while in flight; it is not run again). For an operation that runs
    at once and returns a Deferred, it is that Deferred. Cancelling it takes
    a waiting operation out of the queue and cancels one in flight.

    (It is L{Operations.submit} of the connection's operations itself: one
    call less per operation.)
    """

    def __init__(
        self,
        spec: ConnectionSpec,
        endpoint: IStreamClientEndpoint | Sequence[IStreamClientEndpoint],
        plugin: IProtocolPlugin,
        clock: IReactorTime,
        scheduler: Scheduler | None = None,
        rng: random.Random | None = None,
        fleet: Fleet | None = None,
        counts: Counts | None = None,
        *,
        observers: tuple[Observer, ...] = (),
        heartbeatObservers: tuple[HeartbeatObserver, ...] = (),
    ) -> None:
        """
        @param spec: what to supervise and how.
        @param endpoint: where to connect: one endpoint for each of
            C{spec.targets}, in order (usually
            L{supervisor.transport.clientEndpoints}); for a spec with one
            endpoint string, that endpoint alone will do.
        @param plugin: the protocol plugin named by C{spec.protocol}.
        @param clock: the time source for every timer of this connection.
        @param scheduler: a scheduler on C{clock} shared with other
            connections; by default, one of its own.
        @param rng: the source of jitter; by default, a new L{random.Random}.
        @param fleet: the circuit breakers and connect budget shared with
            other connections; by default, a fleet of its own (a breaker for
            its own target, no budget).
        @param counts: where to count the endings of its operations (to
            go on with the counts of the connection it replaces); by
            default, counts of its own.
        @param observers: transition observers from the start, as
            L{addObserver} adds them (a supervisor gives all its
            connections the same tuple, rather than one each).
        @param heartbeatObservers: heartbeat observers from the start, as
            L{addHeartbeatObserver} adds them.
        """
        if scheduler is None:
            scheduler = Scheduler(clock)
        if rng is None:
            rng = random.Random()
        # A supervisor gives a shared tuple: taken as it is, without the ABC check.
        endpoints: tuple[IStreamClientEndpoint, ...] = (
            endpoint
            if type(endpoint) is tuple
            else tuple(endpoint)
            if isinstance(endpoint, Sequence)
            else (endpoint,)
        )
        targets = spec.targets
        # Round-robin connections sharing a list do not all start on its first.
        start = rng.randrange(len(targets)) if spec.failover == "round_robin" else 0
        self._core = Core(
            spec=spec,
            endpoints=Endpoints(targets, endpoints, spec.failover, start),
            plugin=plugin,
            scheduler=scheduler,
            rng=rng,
            policy=ReconnectPolicy(
                spec.backoff, spec.max_retries, rng, needsAnswer=spec.heartbeat.enabled
            ),
            since=scheduler.now(),
            options=pluginOptions(plugin, spec),
            observers=observers,
            heartbeatObservers=heartbeatObservers,
        )
        self._core.operations = self._operations = Operations(self._core, clock, counts)
        self.submit = self._operations.submit
        self._inputs: Inputs = ConnectionMachine(self._core)
        if fleet is None:
            fleet = Fleet(scheduler, rng)
        self._core.gate = fleet.gate(spec, self._inputs)

    @property
    def spec(self) -> ConnectionSpec:
        """
        The spec this connection was built from.
        """
        return self._core.spec

    @property
    def name(self) -> str:
        """
        The connection's unique name.
        """
        return self._core.spec.name

    @property
    def state(self) -> State:
        """
        The user-visible state.
        """
        return self._core.visible

    @property
    def internalState(self) -> str:
        """
        The machine's own state (see the mapping in L{supervisor.states.machine}).
        """
        return self._core.current.internal

    @property
    def since(self) -> float:
        """
        When the current user-visible state was entered, in clock seconds.
        """
        return self._core.since

    @property
    def attempts(self) -> int:
        """
        Connect attempts started since the connection was started.
        """
        return self._core.attempts

    @property
    def consecutiveFailures(self) -> int:
        """
        Failed attempts since the last successful one.
        """
        return self._core.policy.consecutiveFailures

    @property
    def lastError(self) -> str | None:
        """
        The last failure, as C{"reason: message"}, or L{None}.
        """
        return self._core.lastError

    @property
    def rtt(self) -> float | None:
        """
        The last heartbeat round-trip time in seconds, or L{None}.
        """
        return self._core.lastRtt

    @property
    def held(self) -> Held | None:
        """
        What keeps this IDLE connection from attempting: C{"backoff"},
        C{"breaker"}, C{"budget"}, C{"flapping"}, or L{None}.
        """
        return self._core.current.held

    @property
    def breaker(self) -> BreakerState | None:
        """
        The state of its target's circuit breaker (L{None}: it has none).
        """
        return self._core.gate.breakerState

    @property
    def lifetimeLeft(self) -> float | None:
        """
        Seconds until an ESTABLISHED connection rotates (its C{max_lifetime}
        drawn with jitter), or L{None}.
        """
        rotatesAt = self._core.current.rotatesAt
        return None if rotatesAt is None else max(0.0, rotatesAt - self._core.now())

    @property
    def writeBlocked(self) -> bool:
        """
        Whether what the connection wrote waits for the peer to read it (its
        transport's buffer is past its size; nothing is read meanwhile).
        """
        attempt = self._core.attempt
        return attempt is not None and attempt.writeBlocked

    @property
    def flapHolds(self) -> int:
        """
        How many times the flap guard held this connection.
        """
        return self._core.flapHolds

    @property
    def backoffDelay(self) -> float:
        """
        The delay of the retry now scheduled, or 0 if none is.
        """
        return self._core.current.backoffDelay

    @property
    def history(self) -> tuple[Transition, ...]:
        """
        The last 50 transitions, oldest first.
        """
        return tuple(self._core.history)

    @property
    def endpoint(self) -> str:
        """
        The endpoint string of the attempt in flight or the connection up,
        else of the last attempt (before any, of the first one).
        """
        return self._core.endpoints.inUse

    @property
    def endpointRecords(self) -> tuple[EndpointRecord, ...]:
        """
        How each of the connection's endpoints fared, in the spec's order.
        """
        return self._core.endpoints.records()

    @property
    def protocol(self) -> ISupervisedProtocol | None:
        """
        The plugin's protocol of the current attempt or connection, if any.
        """
        attempt = self._core.attempt
        return None if attempt is None else attempt.protocol

    @property
    def operations(self) -> Operations:
        """
        What is submitted to it: the queue, what is in flight, the counts
        of endings.
        """
        return self._core.operations

    @property
    def queueDepth(self) -> int:
        """
        How many submitted operations wait for the connection.
        """
        return self._core.operations.depth

    def holdRotationWhile(self, hold: Callable[[], bool] | None) -> None:
        """
        When its lifetime is over, rotate only once C{hold()} is false
        (asked again every second); L{None} rotates at once again. A pool
        holds its last ESTABLISHED member this way.
        """
        self._core.rotationHold = hold

    def addObserver(self, observer: Observer) -> None:
        """
        Call C{observer} with every future L{Transition}.
        """
        self._core.observers += (observer,)

    def removeObserver(self, observer: Observer) -> None:
        """
        Stop calling C{observer}.
        """
        observers = list(self._core.observers)
        observers.remove(observer)
        self._core.observers = tuple(observers)

    def addHeartbeatObserver(self, observer: HeartbeatObserver) -> None:
        """
        Call C{observer(name, rtt)} for every answered heartbeat and
        C{observer(name, None)} for every miss.
        """
        self._core.heartbeatObservers += (observer,)

    def retune(self, spec: ConnectionSpec) -> None:
        """
        Take on C{spec}, which differs from the current one only in its
        recovery settings (L{ConnectionSpec.TUNABLE}): from now on, with no
        reconnection.
        """
        assert spec.sameConnectionAs(self._core.spec), "only recovery settings change in place"
        self._core.spec = spec
        self._core.gate.retune(spec)
        self._core.operations.retuned()

    def start(self) -> None:
        """
        Make the first attempt now. Starting a started or closed connection
        does nothing.
        """
        self._inputs.start()

    def reconnect(self) -> bool:
        """
        Rotate: an ESTABLISHED connection is closed gracefully and a new
        attempt follows at once; an IDLE one retries now.

        Not to be called from a transition observer (call it later).

        @return: whether a new connection will follow: true when IDLE,
            CONNECTING, ESTABLISHED or rotating already; false before
            L{start}, when closing for good, and when CLOSED.
        """
        return self._inputs.rotate()

    def drain(self) -> bool:
        """
        Close for good, as L{stop} with the reason C{"drain"}, without
        waiting.

        Not to be called from a transition observer (call it later).

        @return: whether this began the close: false when the connection is
            already closing for good or CLOSED.
        """
        return self._inputs.close(Cause("drain"))

    def stop(self, reason: CloseReason = "stopped") -> Deferred[None]:
        """
        Close for good, from any state: an ESTABLISHED connection drains
        (bounded by C{drain_timeout}), an attempt in flight is cancelled, a
        scheduled retry is dropped.

        @param reason: recorded as the transition's reason: C{"stopped"},
            C{"removed"} or C{"drain"}.
        @return: fires when the connection is CLOSED.
        """
        if self._core.visible == "CLOSED":
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        if self._core.waiters is None:
            self._core.waiters = []
        self._core.waiters.append(waiter)
        self._inputs.close(Cause(reason))
        return waiter

    @property
    def started(self) -> bool:
        """
        Whether L{start} (or L{stop}) was called.
        """
        return self._core.current is not NOT_STARTED

    def __repr__(self) -> str:
        return f"<SupervisedConnection {self.name} {self.state}>"


# Readers of one property of many connections at once, for the columns of a
# scrape: map(stateOf, connections) gives what each connection's property
# gives, read in C (operator.attrgetter), without a Python call for each.
stateOf: Final[Callable[[SupervisedConnection], State]] = attrgetter("_core.visible")
"""L{SupervisedConnection.state}, for many connections."""
rttOf: Final[Callable[[SupervisedConnection], float | None]] = attrgetter("_core.lastRtt")
"""L{SupervisedConnection.rtt}, for many connections."""
_operationsOf: Final[Callable[[SupervisedConnection], Operations]] = attrgetter("_core.operations")


def queueDepthsOf(connections: Iterable[SupervisedConnection]) -> list[int]:
    """
    L{SupervisedConnection.queueDepth} of each of C{connections}, in order.
    """
    return Operations.depthsOf(map(_operationsOf, connections))
