"""
What one connection keeps in memory (issue 17: no more per ESTABLISHED
connection than stock Twisted's C{ClientService}): what nobody uses is not
built, what is done with is let go, what every connection has alike is
shared, and the objects every connection has are slotted.

These pin the layout without timing or measuring: a regression shows as a
structure built where none should be.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from supervisor.operations import ConnectionLost, Operations, QueueTimeout
from supervisor.spec import HeartbeatSpec, QueueSpec
from tests.harness import World
from tests.test_operations import errorOf, outcome
from tests.test_pool import pooled, startedPool

HEARTBEATS = HeartbeatSpec(interval=1.0, timeout=0.5, misses=2)


def built(operations: Operations) -> set[str]:
    """
    Which of the lazy structures of C{operations} exist (empty or not).
    """
    names = ("_queue", "_inFlight", "_lost", "_pending", "_settling")
    return {name for name in names if getattr(operations, name) is not None}


def test_anEstablishedConnectionNobodySubmitsToBuildsNoQueue() -> None:
    w = World(heartbeat=HEARTBEATS)
    w.connection.start()
    protocol, _ = w.accept()
    for _ in range(5):
        w.advance(1.0)
        protocol.answer()
    assert w.state == "ESTABLISHED"
    assert built(w.connection.operations) == set()


def test_theQueueIsLetGoOnceItEmpties() -> None:
    w = World(heartbeat=HeartbeatSpec(interval=0))
    w.connection.start()
    ran: list[int] = []
    for i in range(3):
        w.connection.submit(lambda p, i=i: ran.append(i))
    assert built(w.connection.operations) == {"_queue"}
    w.accept()
    w.advance(0)
    assert ran == [0, 1, 2]
    assert built(w.connection.operations) == set()


def test_theQueueIsLetGoWhenItsLastEntryTimesOutOrIsCancelled() -> None:
    w = World(heartbeat=HeartbeatSpec(interval=0), queue=QueueSpec(max=5, timeout=2.0))
    w.connection.start()
    expiring = w.connection.submit(lambda p: None)
    w.advance(2.0)
    assert errorOf(expiring) is QueueTimeout
    assert built(w.connection.operations) == set()
    cancelled = w.connection.submit(lambda p: None)
    cancelled.cancel()
    outcome(cancelled)
    assert built(w.connection.operations) == set()


def test_whatWasLostInFlightIsLetGoOnTheNextTurn() -> None:
    w = World(heartbeat=HeartbeatSpec(interval=0))
    w.connection.start()
    protocol, _ = w.accept()
    inner: Deferred[None] = Deferred()
    result = w.connection.submit(lambda p: inner)
    assert built(w.connection.operations) == {"_inFlight"}
    w.lose(protocol)
    assert built(w.connection.operations) == {"_lost"}
    w.advance(0)
    assert errorOf(result) is ConnectionLost
    assert built(w.connection.operations) == set()


def test_aPoolLetsItsQueueGoOnceEmptied() -> None:
    fleet, pool = startedPool(pooled(2))
    assert pool._queue is None
    waiting = pool.submit(lambda p: None)
    assert pool._queue is not None
    fleet.accept("p.0")
    fleet.reactor.advance(0)
    assert waiting.called
    assert pool._queue is None
    fleet.finish()
