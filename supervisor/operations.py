"""
Using a supervised connection: operations submitted to it run on its
ESTABLISHED protocol, or wait for it, in order, in a bounded queue.

An operation is a callable that takes the plugin's protocol and uses it
(writes a line, sends a command); it may return a L{Deferred} (or a
coroutine) for its result. L{Operations.submit} returns a L{Deferred} that
fires exactly once, with one of six endings (L{Result}):

    ok        the operation's result
    error     the operation's own error (it raised, or its Deferred failed)
    full      L{QueueFull}: the queue was full; at once
    timeout   L{QueueTimeout}: it waited C{queue.timeout} without running
    closed    L{ConnectionClosed}: the connection is closing for good or CLOSED
    lost      L{ConnectionLost}: the connection went away while it was in
              flight (it may or may not have taken effect; it is never run
              again by itself)

The connection machine drives it by explicit calls from the states' data
factories (L{Operations.established}, L{Operations.disconnected},
L{Operations.closing}, L{Operations.closed}); whether an operation may run,
must wait or is refused is read from the machine's current state
(L{supervisor.states.core.StateData.takesOperations}), never kept here;
only its consequence for C{submit}'s fast path (the protocol an operation
runs on at once, if any) is, recomputed whenever the machine enters a
state (L{Operations.stateChanged}), the transport's writability changes,
or the queue empties.
What a change of state ends (a lost operation, a refused queue) and the
queue's flush on entering ESTABLISHED happen on the next turn of the
reactor, never from inside the machine: a callback may call C{stop()} or
C{reconnect()}.

Backpressure: while the transport's outbound buffer is past its size
(L{supervisor.attempt.Attempt.writeBlocked}), submitted operations wait in
the queue, whose bound holds, instead of being written without limit.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterable
from inspect import iscoroutine
from operator import attrgetter
from typing import Any, Final, Literal, Protocol, TypeVar, cast, get_args, overload

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from supervisor.attempt import Attempt
from supervisor.policy import failureOf
from supervisor.scheduler import Scheduler, Timer
from supervisor.spec import ConnectionSpec, QueueSpec
from supervisor.states.records import State

__all__ = [
    "RESULTS",
    "ConnectionClosed",
    "ConnectionLost",
    "OperationError",
    "Operations",
    "QueueFull",
    "QueueTimeout",
    "Result",
    "Submitter",
    "WaitingLine",
]

T = TypeVar("T")

log = Logger(namespace="netsupervisor.operations")

Result = Literal["ok", "error", "full", "timeout", "closed", "lost"]
"""How an operation ended; the C{result} label of C{operations_total}."""

RESULTS: Final[tuple[Result, ...]] = get_args(Result)


class Counts(Counter[str]):
    """
    Operations ended, by L{Result}: a result not counted yet reads 0 and is
    not listed (most connections never count any; six zeros each would be a
    dict of 270 bytes).

    A L{Counter} whose items are stored as a L{dict}'s: C{Counter} defines
    C{__delitem__} in Python, which makes every C{counts[result] += 1} call
    C{dict.__setitem__} through a wrapper (about 0.06 µs, a tenth of a line
    written on a socket); with both C{__setitem__} and C{__delitem__}
    C{dict}'s own, Python stores at C speed. The one difference: C{del} of a
    result never counted raises L{KeyError}, as for a C{dict}.
    """

    __slots__ = ()
    __setitem__ = dict.__setitem__
    __delitem__ = dict.__delitem__  # type: ignore[assignment]


Mode = Literal["run", "wait", "refuse"]
"""What a state does with a submitted operation: run it now, queue it, or
refuse it (L{ConnectionClosed})."""


class _StateOf(Protocol):
    """
    What operations read of the connection's state.
    """

    @property
    def state(self) -> State: ...

    @property
    def takesOperations(self) -> Mode: ...


class Host(Protocol):
    """
    What L{Operations} reads of its connection (the machine's core).
    """

    @property
    def scheduler(self) -> Scheduler: ...

    @property
    def spec(self) -> ConnectionSpec: ...

    @property
    def current(self) -> _StateOf: ...

    @property
    def attempt(self) -> Attempt | None: ...


def newCounts() -> Counts:
    """
    Nothing counted yet: every L{Result} reads 0.
    """
    # Made without Counter's __init__, which takes three Python calls to
    # count nothing: one of these per connection.
    return Counts.__new__(Counts)


class OperationError(Exception):
    """
    An operation ended without running to its end, for a reason of the
    connection's, not its own.

    @ivar connection: the name of the connection (or pool) it was submitted to.
    """

    result: Result

    def __init__(self, connection: str, message: str) -> None:
        super().__init__(f"{connection}: {message}")
        self.connection = connection


class QueueFull(OperationError):
    """
    The operation could not wait: C{queue.max} operations wait already.
    """

    result = "full"


class QueueTimeout(OperationError):
    """
    The operation waited C{queue.timeout} seconds and did not run.
    """

    result = "timeout"


class ConnectionClosed(OperationError):
    """
    The connection is closing for good (a drain, a stop, a removal) or
    CLOSED: the operation did not run.
    """

    result = "closed"


class ConnectionLost(OperationError):
    """
    The connection went away while the operation was in flight: it was
    sent, and may or may not have taken effect. It is not run again.

    A plugin's protocol fails the Deferreds of its requests in flight with
    this error when its transport goes away.
    """

    result = "lost"


class Submitter(Protocol):
    """
    Anything operations can be submitted to: a L{SupervisedConnection} or
    a L{supervisor.pool.Pool}. Helpers built on C{submit} take one.
    """

    def submit(self, operation: Callable[[Any], object]) -> Deferred[Any]:
        "Run C{operation(protocol)} on an ESTABLISHED protocol; fire with its ending."


_UNDECIDED = object()


class Submitted:
    """
    One submitted operation that did not end at once.

    @ivar since: when it was queued (on the connection's clock).
    @ivar inner: what the operation returned, while it is in flight.
    @ivar done: it has ended (its Deferred has fired, or is about to).
    """

    __slots__ = ("cancel", "decided", "deferred", "done", "inner", "operation", "since")

    def __init__(
        self, operation: Callable[[Any], object], since: float, cancel: Callable[[Submitted], None]
    ) -> None:
        self.operation = operation
        self.since = since
        self.cancel = cancel
        self.inner: Deferred[Any] | None = None
        self.done = False
        self.decided: object = _UNDECIDED
        self.deferred: Deferred[Any] | None = Deferred(self._cancelled)

    def _cancelled(self, deferred: Deferred[Any]) -> None:
        self.cancel(self)

    def fire(self, outcome: object) -> None:
        """
        Fire its Deferred with C{outcome} (a L{Failure} errbacks), unless
        it has fired already; then forget it (its canceller refers to this
        entry: no reference cycle is left for the garbage collector).
        """
        self.decided = _UNDECIDED
        deferred, self.deferred = self.deferred, None
        if deferred is None or deferred.called:
            return
        if isinstance(outcome, Failure):
            deferred.errback(outcome)
        else:
            deferred.callback(outcome)


_queueOf: Final[Callable[[WaitingLine], deque[Submitted] | None]] = attrgetter("_queue")


class WaitingLine:
    """
    Operations waiting, in order: at most C{queue.max}, each at most
    C{queue.timeout} (one timer, for the oldest), and the counts of how
    operations ended. The base of a connection's L{Operations} and of a
    L{supervisor.pool.Pool}.

    @ivar counts: operations ended, by L{Result} (shared with whatever
        replaces this one after a reload, so that counts go on).
    """

    __slots__ = ("_queue", "_scheduler", "_timer", "counts")

    def __init__(self, scheduler: Scheduler, counts: Counts | None) -> None:
        self._scheduler = scheduler
        # No deque while nothing waits (most of the time, on most of ten
        # thousand connections): an empty one is some 800 bytes.
        self._queue: deque[Submitted] | None = None
        self._timer: Timer | None = None
        self.counts = counts if counts is not None else newCounts()

    # What the subclass knows.

    @property
    def name(self) -> str:
        "The name errors carry."
        raise NotImplementedError()

    def _queueSpec(self) -> QueueSpec:
        raise NotImplementedError()

    def _whereabouts(self) -> str:
        "Why operations wait, in a few words (for messages)."
        raise NotImplementedError()

    def _queueShrank(self) -> None:
        """
        Operations left the queue: an empty one is let go (no deque while
        nothing waits, see C{__init__}); a subclass may then run operations
        at once.
        """
        if not self._queue:
            self._queue = None

    # Reading.

    @property
    def depth(self) -> int:
        """
        How many operations wait.
        """
        queue = self._queue
        return 0 if queue is None else len(queue)

    @staticmethod
    def depthsOf(lines: Iterable[WaitingLine]) -> list[int]:
        """
        The L{depth} of each of C{lines}, in order: for a scrape of many
        connections, with no Python call for each while none has a queue.
        """
        queues = list(map(_queueOf, lines))
        if queues.count(None) == len(queues):
            return [0] * len(queues)
        return [0 if queue is None else len(queue) for queue in queues]

    # Ending.

    def _refused(self, error: OperationError) -> Deferred[Any]:
        self.counts[error.result] += 1
        return fail(error)

    def _end(self, entry: Submitted, result: Result, outcome: object) -> None:
        entry.done = True
        self.counts[result] += 1
        entry.fire(outcome)

    # Waiting.

    def _wait(self, operation: Callable[[Any], object]) -> Deferred[Any]:
        """
        Queue C{operation}, or refuse it (L{QueueFull}) when the queue is full.
        """
        spec = self._queueSpec()
        if self.depth >= spec.max:
            return self._refused(QueueFull(self.name, f"{spec.max} operations wait already"))
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        entry = Submitted(operation, self._scheduler.now(), self._cancel)
        queue.append(entry)
        if self._timer is None:
            self._arm()
        assert entry.deferred is not None
        return entry.deferred

    def _cancel(self, entry: Submitted) -> None:
        # The caller cancelled the Deferred of submit: a waiting operation
        # leaves the queue and ends in an error (CancelledError); one that
        # runs has its own Deferred cancelled, and ends as that says. One
        # whose ending is decided, to be told on the next turn, is told it
        # now.
        inner = entry.inner
        if inner is not None:
            inner.cancel()
            return
        if entry.done:
            if entry.decided is not _UNDECIDED:
                entry.fire(entry.decided)
            return
        assert self._queue is not None, "a waiting entry is in the queue"
        self._queue.remove(entry)
        if not self._queue:
            self._disarm()
            self._queueShrank()
        self._end(entry, "error", failureOf(CancelledError()))

    def _relay(self, outcome: object, entry: Submitted) -> None:
        """
        The operation of C{entry}, which waited and then ran, ended with
        C{outcome} (counted where it ran): tell its submitter.
        """
        entry.inner = None
        entry.fire(outcome)

    def _arm(self) -> None:
        if self._queue:
            when = self._queue[0].since + self._queueSpec().timeout
            self._timer = self._scheduler.callAt(when, self._expire)

    def _disarm(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _expire(self) -> None:
        self._timer = None
        now = self._scheduler.now()
        timeout = self._queueSpec().timeout
        queue = self._queue
        while queue and queue[0].since + timeout <= now:
            message = f"waited {timeout:g}s; {self._whereabouts()}"
            self._end(queue.popleft(), "timeout", failureOf(QueueTimeout(self.name, message)))
        self._queueShrank()
        self._arm()

    def retuned(self) -> None:
        """
        The C{queue} settings may have changed: the oldest operation's
        deadline follows the new timeout.
        """
        self._disarm()
        self._arm()

    def _takeQueue(self) -> Iterable[Submitted]:
        queue, self._queue = self._queue, None
        self._disarm()
        self._queueShrank()
        return () if queue is None else queue


class Operations(WaitingLine):
    """
    The operations of one connection: those waiting, those in flight, and
    how many ended in each way.

    An operation that runs and returns a Deferred is in flight until that
    Deferred fires; submit returns that very Deferred, with a first
    callback that counts its ending. When the connection is lost with it
    in flight, it is counted C{lost} at once and, unless the protocol fails
    it first (the bundled ones do, with L{ConnectionLost}), cancelled on the
    next turn: its submitter then sees L{ConnectionLost} whatever it failed
    with.

    @ivar watcher: called on the turn after the connection could take more
        operations or stopped taking any (a pool watches its members).
    """

    __slots__ = (
        "_clock",
        "_core",
        "_flights",
        "_inFlight",
        "_lost",
        "_pending",
        "_runOn",
        "_settling",
        "_turn",
        "watcher",
    )

    def __init__(self, core: Host, clock: IReactorTime, counts: Counts | None = None) -> None:
        super().__init__(core.scheduler, counts)
        self._core = core
        self._clock = clock
        # What runs, by a number of its own (one Deferred may be returned by
        # two operations): its Deferred. Like the queue, none of these
        # exists until it has something to hold.
        self._inFlight: dict[int, Deferred[Any]] | None = None
        self._lost: dict[int, Deferred[Any]] | None = None
        self._flights = 0
        self._pending: list[Submitted] | None = None
        self._settling: list[Deferred[None]] | None = None
        self._turn: IDelayedCall | None = None
        self.watcher: Callable[[], object] | None = None
        # The protocol an operation submitted now runs on at once, else
        # None: kept current on every change of the machine's state, of the
        # transport's writability and of the queue (L{_recheck}).
        self._runOn: Any = None

    @property
    def name(self) -> str:
        return self._core.spec.name

    def _queueSpec(self) -> QueueSpec:
        return self._core.spec.queue

    def _whereabouts(self) -> str:
        return f"the connection is {self._core.current.state}"

    # Reading.

    @property
    def inFlight(self) -> int:
        """
        How many operations ran and wait for their result.
        """
        inFlight = self._inFlight
        return 0 if inFlight is None else len(inFlight)

    @property
    def runsNow(self) -> bool:
        """
        Whether an operation submitted now would run at once.
        """
        return self._runOn is not None

    @property
    def refuses(self) -> bool:
        """
        Whether the connection takes no more operations (closing for good
        or CLOSED).
        """
        return self._mode() == "refuse"

    def _mode(self) -> Mode:
        return self._core.current.takesOperations

    def _writable(self) -> bool:
        attempt = self._core.attempt
        return attempt is not None and attempt.transport is not None and not attempt.writeBlocked

    def _recheck(self) -> None:
        # Whether operations run at once changed, or may have.
        if not self._queue and self._core.current.takesOperations == "run" and self._writable():
            attempt = self._core.attempt
            assert attempt is not None
            self._runOn = attempt.protocol
        else:
            self._runOn = None

    def _queueShrank(self) -> None:
        super()._queueShrank()
        self._recheck()

    # Submitting.

    @overload
    def submit(self, operation: Callable[[Any], Deferred[T]]) -> Deferred[T]: ...

    @overload
    def submit(self, operation: Callable[[Any], Coroutine[Any, Any, T]]) -> Deferred[T]: ...

    @overload
    def submit(self, operation: Callable[[Any], T]) -> Deferred[T]: ...

    def submit(self, operation: Callable[[Any], object]) -> Deferred[Any]:
        """
        Run C{operation(protocol)} on the ESTABLISHED protocol now, or queue
        it; see the module's docstring for how the result fires.
        """
        # The fast path, one test: it is the cost of every operation on a
        # busy connection.
        protocol = self._runOn
        if protocol is None:
            return self._submitLater(operation)
        try:
            result = operation(protocol)
        except Exception:
            self.counts["error"] += 1
            return fail()
        if result is None:
            self.counts["ok"] += 1
            return succeed(None)
        if isinstance(result, Deferred):
            # In flight, as L{_fly} does, inline (a command and its reply).
            flight = self._flights = self._flights + 1
            inFlight = self._inFlight
            if inFlight is None:
                inFlight = self._inFlight = {}
            inFlight[flight] = result
            return result.addBoth(_answered, self, flight)
        if iscoroutine(result):
            return self._fly(result)
        self.counts["ok"] += 1
        return succeed(result)

    def _submitLater(self, operation: Callable[[Any], object]) -> Deferred[Any]:
        # The connection does not run operations at once now: queue the
        # operation, or refuse it.
        if self._mode() == "refuse":
            return self._refused(ConnectionClosed(self.name, self._whereabouts()))
        return self._wait(operation)

    def _run(self, entry: Submitted) -> None:
        attempt = self._core.attempt
        assert attempt is not None
        try:
            result = entry.operation(attempt.protocol)
        except Exception:
            self._end(entry, "error", Failure())  # type: ignore[no-untyped-call]
            return
        if result is None or not (isinstance(result, Deferred) or iscoroutine(result)):
            self._end(entry, "ok", result)
            return
        # It ends as its own Deferred says, counted there.
        entry.done = True
        inner = entry.inner = self._fly(result)
        inner.addBoth(self._relay, entry)

    def _fly(self, result: object) -> Deferred[Any]:
        """
        C{result} (a Deferred, or a coroutine), in flight from now on: its
        first callback counts how it ends.
        """
        if isinstance(result, Deferred):
            deferred: Deferred[Any] = result
        else:
            deferred = Deferred.fromCoroutine(cast(Coroutine[Any, Any, Any], result))
        flight = self._flights = self._flights + 1
        inFlight = self._inFlight
        if inFlight is None:
            inFlight = self._inFlight = {}
        inFlight[flight] = deferred
        deferred.addBoth(_answered, self, flight)
        return deferred

    # Told by the machine.

    def stateChanged(self) -> None:
        """
        The machine entered a state: operations may run at once now, or no
        longer.
        """
        self._recheck()

    def established(self) -> None:
        """
        The connection entered ESTABLISHED: run what waits, in order, on the
        next turn; and from now on, when the transport's outbound buffer
        empties after it was full.
        """
        attempt = self._core.attempt
        assert attempt is not None
        # Itself, not a bound method: one object fewer per connection.
        attempt.writer = self
        self._kickIfNeeded()

    def disconnected(self) -> None:
        """
        The connection's transport is gone (the machine entered IDLE): what
        was in flight ends with L{ConnectionLost}; what waits goes on waiting.
        """
        self._loseInFlight()

    def closing(self) -> None:
        """
        The connection is closing for good: what waits ends with
        L{ConnectionClosed}; what is in flight has until the drain deadline.
        """
        self._refuseQueue()

    def closed(self) -> None:
        """
        The connection is CLOSED: what waits ends with L{ConnectionClosed},
        what is still in flight with L{ConnectionLost}.
        """
        self._refuseQueue()
        self._loseInFlight()

    def whenSettled(self) -> Deferred[None]:
        """
        Fires once no operation is in flight (at once if none is).
        """
        if not self._inFlight:
            return succeed(None)
        settling = self._settling
        if settling is None:
            settling = self._settling = []
        waiter: Deferred[None] = Deferred(settling.remove)
        settling.append(waiter)
        return waiter

    def _settled(self) -> None:
        waiters, self._settling = self._settling, None
        for waiter in waiters or ():
            waiter.callback(None)

    def _refuseQueue(self) -> None:
        queue = self._takeQueue()
        for entry in queue:
            error = ConnectionClosed(self.name, f"closing for good; {self._whereabouts()}")
            self._endSoon(entry, "closed", failureOf(error))
        self._kickIfNeeded()

    def _loseInFlight(self) -> None:
        if not self._inFlight:
            return
        # Counted lost now; the protocol may still fail them itself (with
        # the transport gone): those left are cancelled on the next turn.
        inFlight, self._inFlight = self._inFlight, None
        self.counts["lost"] += len(inFlight)
        if self._lost is None:
            self._lost = inFlight
        else:
            self._lost.update(inFlight)
        self._kick()
        # No settle waiter fires: the drain that waits is over (it is
        # being left, and cancels its waiter).

    def _endSoon(self, entry: Submitted, result: Result, outcome: object) -> None:
        # Ended now (and counted), told on the next turn: outside the machine.
        entry.done = True
        entry.decided = outcome
        self.counts[result] += 1
        if self._pending is None:
            self._pending = []
        self._pending.append(entry)
        self._kick()

    # The next turn.

    def _kick(self) -> None:
        if self._turn is None:
            self._turn = self._clock.callLater(0, self._next)

    def writable(self) -> None:
        """
        Whether the transport takes writes changed (L{supervisor.attempt.Writer}):
        its outbound buffer filled or emptied, or the transport is gone. Once
        it takes writes again, what waits goes on.
        """
        self._recheck()
        if self._writable():
            self._kickIfNeeded()

    def _kickIfNeeded(self) -> None:
        # A connection nobody submits to schedules nothing.
        if self._pending or self._queue or self._lost or self.watcher is not None:
            self._kick()

    def _next(self) -> None:
        self._turn = None
        pending, self._pending = self._pending, None
        for entry in pending or ():
            if entry.decided is not _UNDECIDED:
                entry.fire(entry.decided)
        lost, self._lost = self._lost, None
        for deferred in lost.values() if lost else ():
            deferred.cancel()  # its first callback makes it ConnectionLost
        queue = self._queue
        while queue and self._mode() == "run" and self._writable():
            self._run(queue.popleft())
        if not queue:
            self._disarm()
            self._queueShrank()
        watcher = self.watcher
        if watcher is not None:
            try:
                watcher()
            except Exception:
                log.failure("operations watcher {watcher!r} failed", watcher=watcher)


def _answered(outcome: object, operations: Operations, flight: int) -> object:
    """
    The first callback of an operation's Deferred: count its ending and
    pass it on. One counted lost already ends lost.

    A function, not a method: C{addBoth(_answered, operations, flight)}
    makes no bound method for each operation; each object made for an
    operation and kept while it is in flight brings the garbage
    collector's next collection closer (docs/library.md, "What it costs").
    """
    inFlight = operations._inFlight
    if inFlight is None or inFlight.pop(flight, None) is None:
        lost = operations._lost
        if lost is not None:
            lost.pop(flight, None)
        if isinstance(outcome, Failure) and isinstance(outcome.value, ConnectionLost):
            return outcome
        return failureOf(ConnectionLost(operations.name, "lost with the operation in flight"))
    if isinstance(outcome, Failure):
        operations.counts["lost" if isinstance(outcome.value, ConnectionLost) else "error"] += 1
    else:
        operations.counts["ok"] += 1
    if not inFlight and operations._settling:
        operations._settled()
    return outcome
