"""
What one connection keeps in memory (issue 17: no more per ESTABLISHED
connection than stock Twisted's C{ClientService}): what nobody uses is not
built, what is done with is let go, what every connection has alike is
shared, and the objects every connection has are slotted.

These pin the layout without timing or measuring: a regression shows as a
structure built where none should be.
"""

from __future__ import annotations

import gc
import weakref
from types import MappingProxyType
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from supervisor.config import parseConfig
from supervisor.metrics import SupervisorMetrics
from supervisor.operations import ConnectionLost, Operations, QueueTimeout
from supervisor.scheduler import Scheduler
from supervisor.spec import HeartbeatSpec, QueueSpec
from tests.harness import World
from tests.test_operations import errorOf, outcome
from tests.test_pool import pooled, startedPool
from tests.test_service import Fleet, config, spec

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


def test_theCountsOfAConnectionHoldOnlyWhatWasCounted() -> None:
    w = World(heartbeat=HeartbeatSpec(interval=0))
    w.connection.start()
    w.accept()
    counts = w.connection.operations.counts
    assert len(counts) == 0 and counts["ok"] == 0
    w.connection.submit(lambda p: None)
    assert counts == {"ok": 1}


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


def test_aCancelledTimerLetsItsCallbackGo() -> None:
    """
    A cancelled timer waits in the heap until its time; what its callback
    holds (a connect timeout's closure holds the machine) does not.
    """

    class Holder:
        def call(self) -> None:
            pass

    clock = Clock()
    scheduler = Scheduler(clock)
    live = scheduler.callLater(20, lambda: None)
    holder = Holder()
    held = weakref.ref(holder)
    timer = scheduler.callLater(10, holder.call)
    del holder
    gc.collect()
    assert held() is not None
    timer.cancel()
    assert held() is None, "freed by reference counting, at once"
    clock.advance(20)
    assert not live.active and len(scheduler) == 0


def test_theConnectionsOfASupervisorShareWhatTheyHaveAlike() -> None:
    fleet = Fleet(config(spec("a"), spec("b")))
    fleet.supervisor.startService()
    a, b = (fleet.supervisor.connection(name)._core for name in ("a", "b"))
    assert a.observers and a.observers is b.observers
    assert a.heartbeatObservers and a.heartbeatObservers is b.heartbeatObservers
    assert a.attempt is not None and b.attempt is not None
    assert a.attempt._clock is b.attempt._clock
    metrics = SupervisorMetrics(fleet.supervisor)
    metrics._refreshGroups()
    assert metrics._info["a"] is metrics._info["b"]


def test_theObjectsOfAConnectionAreSlotted() -> None:
    w = World(heartbeat=HEARTBEATS)
    w.connection.start()
    protocol, _ = w.accept()
    w.advance(1.0)
    core: Any = w.connection._core
    current = core.current
    objects = {
        "connection": w.connection,
        "core": core,
        "operations": core.operations,
        "attempt": core.attempt,
        "state": current,
        "heartbeat": current.heartbeat,
        "heartbeat timer": current.heartbeat._timer,
        "policy": core.policy,
        "backoff": core.policy.backoff,
        "gate": core.gate,
        "endpoints": core.endpoints,
        "history": core.history[-1],
    }
    assert all(o is not None for o in objects.values())
    withDict = [name for name, o in objects.items() if hasattr(o, "__dict__")]
    assert withDict == []
    protocol.answer()
    w.lose(protocol, ConnectionError("gone"))
    assert core.current.state == "IDLE"
    assert not hasattr(core.current, "__dict__")


def test_theEntriesOfAFileShareTheTablesTheyLeaveToDefaults() -> None:
    text = (
        '[defaults]\nprotocol = "line"\nheartbeat = { interval = 2.0 }\n'
        "backoff = { initial = 0.5 }\n"
        + "".join(
            f'[[connection]]\nname = "{name}"\nendpoint = "tcp:host=127.0.0.1:port=7"\n{own}'
            for name, own in (("a", ""), ("b", ""), ("c", "heartbeat = { timeout = 1.0 }\n"))
        )
    )
    a, b, c = parseConfig(text, "f.toml", protocols=("line",)).connections
    assert a.heartbeat is b.heartbeat and a.backoff is b.backoff
    assert a.heartbeat.interval == 2.0 and a.backoff.initial == 0.5
    assert c.heartbeat is not a.heartbeat and c.backoff is a.backoff
    assert (c.heartbeat.interval, c.heartbeat.timeout) == (2.0, 1.0)


def test_connectionsWithTheSameLabelsShareThem() -> None:
    a, b = (spec(name, labels={"group": "g", "zone": "z"}) for name in ("a", "b"))
    assert a.labels == (("group", "g"), ("zone", "z"))
    assert a.labels is b.labels
    # Only text is shared: 1 and True are equal, not the same label value.
    assert spec("c", labels={"n": 1}).labels[0][1] == 1
    assert spec("d", labels={"n": True}).labels[0][1] is True


def test_labelsAreTheSamePairsHoweverGiven() -> None:
    """
    Labels given as a dict, as another mapping or as pairs, in any order,
    become the same sorted pairs (text keys); text-only ones are shared.
    """
    expected = (("group", "g"), ("zone", "z"))
    given = [
        {"zone": "z", "group": "g"},
        MappingProxyType({"zone": "z", "group": "g"}),
        (("zone", "z"), ("group", "g")),
    ]
    made = [spec(f"s{i}", labels=labels).labels for i, labels in enumerate(given)]
    assert made == [expected] * 3
    assert made[0] is made[1] is made[2]
    assert spec("k", labels={1: "x"}).labels == (("1", "x"),)
    assert spec("o").labels == () and spec("o").options == ()
    assert spec("p", options={"b": 2, "a": 1}).options == (("a", 1), ("b", 2))
