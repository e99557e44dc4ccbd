"""
L{Pool}: the members of one C{[[pool]]} (C{NAME.0} ... C{NAME.<size-1>},
each a L{SupervisedConnection} of its own) as one place to submit
operations.

An operation runs on the member that can take it now (ESTABLISHED, nothing
waiting in its own queue, its peer reading) with the fewest operations in
flight; ties go round the members in turn. When no member can, it waits in
the pool's own queue (C{queue} of the pool: bounded, each at most
C{queue.timeout}), and runs, in order, as soon as one can. Once it runs on
a member, it ends as that member's operations do (a member lost with it in
flight: L{supervisor.operations.ConnectionLost}); the pool does not
preserve order across members.

Members reconnect and rotate on their own. A member whose lifetime is over
does not rotate while it is the only ESTABLISHED member of a pool of more
than one (on this process): it waits until another is ESTABLISHED
(L{Pool.lastEstablished}).

The pool outlives reloads: the supervisor attaches the connection of each
member name (a replaced member's new connection included) and detaches
removed ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred

from supervisor.operations import ConnectionClosed, Counts, Submitted, WaitingLine
from supervisor.policy import failureOf
from supervisor.scheduler import Scheduler
from supervisor.spec import PoolSpec, QueueSpec

if TYPE_CHECKING:
    from supervisor.connection import SupervisedConnection

__all__ = ["Pool"]


class Pool(WaitingLine):
    """
    One C{[[pool]]}: submit operations to whichever member can take them.

    @ivar spec: the pool's settings now.
    """

    __slots__ = ("_closed", "_members", "_next", "_replacing", "spec")

    def __init__(
        self,
        spec: PoolSpec,
        scheduler: Scheduler,
        counts: Counts | None = None,
        replacing: Callable[[str], bool] = lambda name: False,
    ) -> None:
        """
        @param scheduler: the clock of its queue's deadlines.
        @param counts: where to count the endings of the operations that
            did not reach a member (full, timeout, closed, cancelled).
        @param replacing: whether the member of a name, closing, will be
            followed by a new connection (a reload changed it).
        """
        super().__init__(scheduler, counts)
        self.spec = spec
        self._members: dict[str, SupervisedConnection] = {}
        self._next = 0
        self._closed = False
        self._replacing = replacing

    @property
    def name(self) -> str:
        return self.spec.name

    def _queueSpec(self) -> QueueSpec:
        return self.spec.queue

    def _whereabouts(self) -> str:
        states = sorted({member.state for member in self._members.values()})
        return f"no member of pool {self.name} took it ({', '.join(states) or 'none'})"

    @property
    def members(self) -> list[SupervisedConnection]:
        """
        Its members on this process, in order of their names' index.
        """
        order = {name: index for index, name in enumerate(self.spec.members)}
        return sorted(self._members.values(), key=lambda m: order.get(m.name, len(order)))

    def __repr__(self) -> str:
        return f"<Pool {self.name} size={self.spec.size} waiting={self.depth}>"

    # The supervisor's.

    def attach(self, connection: SupervisedConnection) -> None:
        """
        C{connection} is the member of its name from now on.
        """
        previous = self._members.get(connection.name)
        if previous is not None and previous is not connection:
            previous.operations.watcher = None
            previous.holdRotationWhile(None)
        self._members[connection.name] = connection
        connection.operations.watcher = self._memberChanged
        name = connection.name
        connection.holdRotationWhile(lambda: self.lastEstablished(name))

    def detach(self, connection: SupervisedConnection) -> None:
        """
        C{connection} is no longer a member.
        """
        if self._members.get(connection.name) is connection:
            del self._members[connection.name]
        connection.operations.watcher = None
        connection.holdRotationWhile(None)
        self._memberChanged()

    def retune(self, spec: PoolSpec) -> None:
        """
        Take on C{spec} (same name; its size or queue changed).
        """
        self.spec = spec
        self.retuned()

    def close(self) -> None:
        """
        The pool is gone (removed from the configuration, or the process
        drains): what waits ends with L{ConnectionClosed}, and so does
        whatever is submitted from now on.
        """
        self._closed = True
        for entry in self._takeQueue():
            self._end(entry, "closed", failureOf(ConnectionClosed(self.name, "the pool is closed")))

    # Rotation.

    def lastEstablished(self, name: str) -> bool:
        """
        Whether the member called C{name} is the only ESTABLISHED member of
        a pool of more than one on this process (so it must not rotate now;
        the only member a shard has rotates as a single connection does).
        """
        if len(self._members) <= 1:
            return False
        members = self._members
        return not any(m.state == "ESTABLISHED" for n, m in members.items() if n != name)

    # Submitting.

    def submit(self, operation: Callable[[Any], object]) -> Deferred[Any]:
        """
        Run C{operation(protocol)} on the ESTABLISHED member with the fewest
        operations in flight, or queue it until a member can take it.

        The Deferred returned fires exactly once, as the members'
        (L{SupervisedConnection.submit}) do; before it reaches a member it
        may end with L{supervisor.operations.QueueFull},
        L{supervisor.operations.QueueTimeout} or
        L{supervisor.operations.ConnectionClosed} (the pool is closed, or
        every member is closing for good or CLOSED).
        """
        if self._closed:
            return self._refused(ConnectionClosed(self.name, "the pool is closed"))
        if not self._queue:
            member = self._pick()
            if member is not None:
                return member.submit(operation)
        if self._hopeless():
            return self._refused(ConnectionClosed(self.name, self._whereabouts()))
        return self._wait(operation)

    def _pick(self) -> SupervisedConnection | None:
        """
        The member that runs an operation now with the fewest in flight;
        ties go round in turn.
        """
        members = list(self._members.values())
        count = len(members)
        best: SupervisedConnection | None = None
        bestIndex = fewest = 0
        for step in range(count):
            index = (self._next + step) % count
            operations = members[index].operations
            if operations.runsNow and (best is None or operations.inFlight < fewest):
                best, bestIndex, fewest = members[index], index, operations.inFlight
                if fewest == 0:
                    break
        if best is not None:
            self._next = bestIndex + 1
        return best

    def _hopeless(self) -> bool:
        """
        Whether no member will take an operation again: each is closing
        for good or CLOSED, and none is to be replaced.
        """
        return all(
            member.operations.refuses and not self._replacing(name)
            for name, member in self._members.items()
        )

    def _memberChanged(self) -> None:
        # A member's turn: it may take operations now, or none ever again.
        queue = self._queue
        while queue:
            member = self._pick()
            if member is None:
                break
            entry = queue.popleft()
            inner = entry.inner = member.submit(entry.operation)
            inner.addBoth(self._ran, entry)
        if not queue:
            self._disarm()
            self._queueShrank()
        elif self._hopeless():
            error = ConnectionClosed(self.name, self._whereabouts())
            for entry in self._takeQueue():
                self._end(entry, "closed", failureOf(error))

    def _ran(self, outcome: object, entry: Submitted) -> None:
        # The member counted its ending; the pool passes it on.
        if entry.done:
            return
        entry.done = True
        entry.inner = None
        entry.fire(outcome)
