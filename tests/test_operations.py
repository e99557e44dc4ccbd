"""
Operations submitted to one connection (L{SupervisedConnection.submit}):
they run on the ESTABLISHED protocol, or wait in order in a bounded queue,
and each ends exactly once, in one of six ways.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from supervisor.operations import (
    ConnectionClosed,
    ConnectionLost,
    QueueFull,
    QueueTimeout,
    newCounts,
)
from supervisor.spec import BackoffSpec, HeartbeatSpec, QueueSpec
from tests.harness import ScriptedPlugin, ScriptedProtocol, World

QUIET = HeartbeatSpec(interval=0)
NO_JITTER = BackoffSpec(initial=1.0, multiplier=2, max=60, jitter="none")


def world(**spec: Any) -> World:
    spec.setdefault("heartbeat", QUIET)
    spec.setdefault("backoff", NO_JITTER)
    return World(**spec)


def established(**spec: Any) -> tuple[World, ScriptedProtocol, StringTransport]:
    """
    A L{world} whose connection is started and ESTABLISHED: it, and the
    protocol and transport of its attempt.
    """
    w = world(**spec)
    w.connection.start()
    protocol, transport = w.accept()
    return w, protocol, transport


class Recorder:
    """
    An operation that records the protocol it ran on and returns what the
    test says.
    """

    def __init__(self, world: World, label: object = None, result: object = None) -> None:
        self.world = world
        self.label = label
        self.result = result
        self.ranOn: list[tuple[Any, str]] = []

    def __call__(self, protocol: Any) -> object:
        self.ranOn.append((protocol, self.world.state))
        return self.result


def outcome(d: Deferred[Any]) -> object:
    """
    What C{d} fired with (a L{Failure} for an error); fails if it has not.
    """
    fired: list[object] = []
    d.addBoth(fired.append)
    assert fired, "the Deferred has not fired"
    return fired[0]


def errorOf(d: Deferred[Any]) -> type[BaseException]:
    result = outcome(d)
    assert isinstance(result, Failure), result
    return type(result.value)


def pending(d: Deferred[Any]) -> bool:
    return not d.called


def finish(w: World) -> None:
    """
    Stop the connection, let its transport close, and check that nothing
    is left scheduled.
    """
    done = w.stop()
    built = w.plugin.built
    if built and built[-1].lostReason is None and w.transports[-1].disconnecting:
        w.lose(built[-1])
    w.advance(0)
    assert done.called
    w.assertQuiet()


def test_anOperationOnAnEstablishedConnectionRunsAtOnce() -> None:
    w, protocol, _ = established()
    op = Recorder(w, result=42)
    assert outcome(w.connection.submit(op)) == 42
    assert op.ranOn == [(protocol, "ESTABLISHED")]
    assert w.connection.operations.counts["ok"] == 1
    finish(w)


def test_operationsWaitInOrderUntilEstablished() -> None:
    w = world()
    w.connection.start()
    ran: list[int] = []
    results = [w.connection.submit(lambda p, i=i: ran.append(i) or i) for i in range(5)]
    assert w.connection.queueDepth == 5 and all(map(pending, results))
    w.accept()
    assert ran == [], "not from inside the machine"
    w.advance(0)
    assert ran == [0, 1, 2, 3, 4]
    assert [outcome(d) for d in results] == [0, 1, 2, 3, 4]
    assert w.connection.queueDepth == 0
    # A submit while the queue is being flushed goes after it.
    finish(w)


def test_aSubmitWhileTheFlushIsDueGoesBehindTheQueue() -> None:
    w = world()
    w.connection.start()
    ran: list[str] = []
    w.connection.submit(lambda p: ran.append("queued"))
    w.accept()
    w.connection.submit(lambda p: ran.append("later"))
    w.advance(0)
    assert ran == ["queued", "later"]
    finish(w)


def test_aFullQueueRefusesAtOnce() -> None:
    w = world(queue=QueueSpec(max=2, timeout=5))
    w.connection.start()
    first, second = w.connection.submit(Recorder(w)), w.connection.submit(Recorder(w))
    third = w.connection.submit(Recorder(w))
    assert errorOf(third) is QueueFull
    assert pending(first) and pending(second)
    assert w.connection.operations.counts["full"] == 1
    w.stop()
    assert pending(first), "told on the next turn, outside the machine"
    w.advance(0)
    assert errorOf(first) is ConnectionClosed and errorOf(second) is ConnectionClosed
    w.assertQuiet()


def test_noQueueAtAll() -> None:
    w = world(queue=QueueSpec(max=0, timeout=5))
    w.connection.start()
    assert errorOf(w.connection.submit(Recorder(w))) is QueueFull
    w.accept()
    assert outcome(w.connection.submit(Recorder(w, result="x"))) == "x"
    finish(w)


def test_anOperationWaitsAtMostTheQueueTimeout() -> None:
    w = world(queue=QueueSpec(max=10, timeout=2.0))
    w.connection.start()
    early = w.connection.submit(Recorder(w))
    w.advance(1.0)
    late = w.connection.submit(Recorder(w))
    w.advance(0.99)
    assert pending(early)
    w.advance(0.02)
    assert errorOf(early) is QueueTimeout and pending(late)
    w.advance(1.0)
    assert errorOf(late) is QueueTimeout
    assert w.connection.operations.counts["timeout"] == 2
    assert w.connection.queueDepth == 0
    w.stop()
    w.assertQuiet()


def test_aShorterTimeoutAppliesToWhatWaits() -> None:
    w = world(queue=QueueSpec(max=10, timeout=30.0))
    w.connection.start()
    waiting = w.connection.submit(Recorder(w))
    w.advance(2)
    import attrs

    w.connection.retune(attrs.evolve(w.connection.spec, queue=QueueSpec(max=10, timeout=3.0)))
    w.advance(1.02)
    assert errorOf(waiting) is QueueTimeout
    w.stop()
    w.assertQuiet()


def test_anOperationInFlightWhenTheConnectionIsLostEndsLostAndIsNotRunAgain() -> None:
    w, protocol, _ = established()
    answer: Deferred[str] = Deferred()
    calls: list[Any] = []

    def op(p: Any) -> Deferred[str]:
        calls.append(p)
        return answer

    d = w.connection.submit(op)
    assert w.connection.operations.inFlight == 1
    w.lose(protocol)
    assert pending(d)
    w.advance(0)
    assert errorOf(d) is ConnectionLost
    assert w.connection.operations.counts == {**newCounts(), "lost": 1}
    answer.errback(RuntimeError("too late"))  # consumed, not unhandled
    w.advance(1)
    w.accept()
    w.advance(0)
    assert calls == [protocol]
    finish(w)


def test_aProtocolThatFailsItsRequestsWithConnectionLostCountsThemLost() -> None:
    w, _, _ = established()
    answer: Deferred[str] = Deferred()
    d = w.connection.submit(lambda p: answer)
    answer.errback(ConnectionLost("c1", "the transport went away"))
    assert errorOf(d) is ConnectionLost
    assert w.connection.operations.counts["lost"] == 1
    finish(w)


def test_theOperationsOwnErrors() -> None:
    w, _, _ = established()

    def raises(p: Any) -> None:
        raise ValueError("mine")

    assert errorOf(w.connection.submit(raises)) is ValueError
    answer: Deferred[None] = Deferred()
    d = w.connection.submit(lambda p: answer)
    answer.errback(KeyError("also mine"))
    assert errorOf(d) is KeyError
    assert w.connection.operations.counts["error"] == 2
    finish(w)


def test_aCoroutineOperation() -> None:
    w, _, _ = established()
    answer: Deferred[int] = Deferred()

    async def op(p: Any) -> int:
        return (await answer) + 1

    d = w.connection.submit(op)
    assert pending(d) and w.connection.operations.inFlight == 1
    answer.callback(1)
    assert outcome(d) == 2
    finish(w)


def test_aSubmitToAClosedConnectionIsRefusedAtOnce() -> None:
    w = world()
    w.connection.start()
    w.stop()
    assert errorOf(w.connection.submit(Recorder(w))) is ConnectionClosed
    assert w.connection.operations.counts["closed"] == 1
    w.assertQuiet()


def test_aDrainRefusesWhatWaitsAndLetsWhatIsInFlightFinish() -> None:
    plugin = ScriptedPlugin(drainAtOnce=False)
    w, protocol, transport = established(plugin=plugin, drain_timeout=10.0)
    answer: Deferred[str] = Deferred()
    inFlight = w.connection.submit(lambda p: answer)
    transport.writeBlocked = True
    protocol.handle.pauseProducing()  # type: ignore[attr-defined]
    queued = w.connection.submit(Recorder(w))
    assert w.connection.queueDepth == 1
    assert w.connection.drain()
    assert w.state == "CLOSING"
    assert errorOf(w.connection.submit(Recorder(w))) is ConnectionClosed
    w.advance(0)
    assert errorOf(queued) is ConnectionClosed
    # The plugin is asked to drain only once what is in flight is done.
    assert protocol.drains == []
    answer.callback("done")
    assert outcome(inFlight) == "done"
    assert len(protocol.drains) == 1
    protocol.drains[0].callback(None)
    assert transport.disconnecting
    w.lose(protocol)
    assert w.state == "CLOSED"
    w.assertQuiet()


def test_whatIsInFlightAtTheDrainDeadlineIsLost() -> None:
    w, _, transport = established(drain_timeout=5.0)
    d = w.connection.submit(lambda p: Deferred())
    w.connection.drain()
    w.advance(4.9)
    assert pending(d) and not transport.disconnecting
    w.advance(0.2)
    assert w.state == "CLOSED"
    w.advance(0)
    assert errorOf(d) is ConnectionLost
    w.assertQuiet()


def test_duringARotationOperationsWaitForTheNextConnection() -> None:
    w, first, _ = established(max_lifetime=10.0, lifetime_jitter=0.0)
    w.advance(10)
    assert w.path()[-1] == ("ESTABLISHED", "CLOSING", "rotation")
    op = Recorder(w, result="x")
    d = w.connection.submit(op)
    w.advance(0)
    assert pending(d)
    w.lose(first)
    w.advance(0.01)
    second, _ = w.accept()
    w.advance(0)
    assert outcome(d) == "x"
    assert op.ranOn == [(second, "ESTABLISHED")]
    finish(w)


def test_aCallbackMayStopTheConnection() -> None:
    """
    Endings a change of state causes come on the next turn, outside the
    machine: an errback may stop or reconnect the connection.
    """
    w, protocol, _ = established()
    d = w.connection.submit(lambda p: Deferred())
    stops: list[Deferred[None]] = []
    d.addErrback(lambda f: stops.append(w.connection.stop()))
    w.lose(protocol)
    w.advance(0)
    assert len(stops) == 1 and stops[0].called
    assert w.state == "CLOSED"
    w.assertQuiet()


def test_cancellingAWaitingOperationTakesItOutOfTheQueue() -> None:
    w = world()
    w.connection.start()
    op = Recorder(w)
    d = w.connection.submit(op)
    kept = w.connection.submit(Recorder(w, result="kept"))
    d.cancel()
    assert errorOf(d) is CancelledError
    assert w.connection.queueDepth == 1
    w.accept()
    w.advance(0)
    assert op.ranOn == [] and outcome(kept) == "kept"
    assert w.connection.operations.counts["error"] == 1
    finish(w)


def test_cancellingAnOperationInFlightCancelsItsDeferred() -> None:
    w, _, _ = established()
    cancelled: list[object] = []
    answer: Deferred[None] = Deferred(cancelled.append)
    d = w.connection.submit(lambda p: answer)
    d.cancel()
    assert cancelled == [answer]
    assert errorOf(d) is CancelledError
    assert w.connection.operations.inFlight == 0
    finish(w)


def test_backpressure() -> None:
    """
    While the transport's buffer is past its size, submitted operations
    wait (the bound holds) instead of being written; they go on, in order,
    once the peer read what it was sent.
    """
    w = world(queue=QueueSpec(max=3, timeout=5))
    w.connection.start()
    protocol, _ = w.accept()
    ran: list[int] = []
    assert outcome(w.connection.submit(lambda p: ran.append(0))) is None
    protocol.handle.pauseProducing()  # type: ignore[attr-defined]
    waiting = [w.connection.submit(lambda p, i=i: ran.append(i)) for i in (1, 2, 3)]
    assert errorOf(w.connection.submit(lambda p: ran.append(4))) is QueueFull
    w.advance(0)
    assert ran == [0] and w.connection.queueDepth == 3
    protocol.handle.resumeProducing()  # type: ignore[attr-defined]
    assert ran == [0]
    w.advance(0)
    assert ran == [0, 1, 2, 3] and all(d.called for d in waiting)
    finish(w)


def test_theFlushStopsWhenThePeerStopsReading() -> None:
    w, protocol, _ = established()
    ran: list[int] = []

    def op(i: int) -> Any:
        def run(p: ScriptedProtocol) -> None:
            ran.append(i)
            if i == 1:
                p.handle.pauseProducing()  # type: ignore[attr-defined]

        return run

    for i in range(4):
        w.connection.submit(op(i))
    assert ran == [0, 1]
    assert w.connection.queueDepth == 2
    protocol.handle.resumeProducing()  # type: ignore[attr-defined]
    w.advance(0)
    assert ran == [0, 1, 2, 3]
    finish(w)


def test_aTransportGoneBeforeTheMachineKnowsRunsNothing() -> None:
    """
    The protocol hears of a lost transport before the machine does: an
    operation submitted then (from the protocol's own errbacks, say) waits
    for the next connection.
    """
    w, protocol, _ = established()
    answer: Deferred[None] = Deferred()
    resubmitted: list[Deferred[Any]] = []
    op = Recorder(w, result="again")

    def lostInFlight(f: Failure) -> None:
        resubmitted.append(w.connection.submit(op))

    w.connection.submit(lambda p: answer).addErrback(lostInFlight)
    original = protocol.connectionLost

    def connectionLost(reason: Failure) -> None:
        original(reason)
        answer.errback(ConnectionLost("c1", "gone"))

    protocol.connectionLost = connectionLost  # type: ignore[method-assign]
    w.lose(protocol)
    assert len(resubmitted) == 1 and pending(resubmitted[0])
    assert op.ranOn == []
    w.advance(1)
    second, _ = w.accept()
    w.advance(0)
    assert outcome(resubmitted[0]) == "again" and op.ranOn == [(second, "ESTABLISHED")]
    finish(w)


def test_aRejectedAttemptRunsNothing() -> None:
    w = world(plugin=ScriptedPlugin(readyOnConnect=False))
    w.connection.start()
    d = w.connection.submit(Recorder(w))
    protocol, _ = w.accept()
    w.advance(0)
    assert pending(d), "CONNECTING: it waits"
    protocol.handle.reject("no", permanent=True)
    assert w.state == "CLOSED"
    w.advance(0)
    assert errorOf(d) is ConnectionClosed
    w.assertQuiet()


@pytest.mark.parametrize("result", [None, succeed("fired")])
def test_aSubmitFromATransitionObserverRunsOnTheEstablishedProtocol(result: object) -> None:
    w = world()
    ran: list[str] = []

    def observer(t: Any) -> None:
        if t.to == "ESTABLISHED":
            w.connection.submit(lambda p: ran.append(w.state) or result)

    w.connection.addObserver(observer)
    w.connection.start()
    w.accept()
    assert ran == ["ESTABLISHED"]
    finish(w)


def test_twoOperationsMayReturnOneDeferred() -> None:
    w, protocol, _ = established()
    shared: Deferred[str] = Deferred()
    first = w.connection.submit(lambda p: shared)
    second = w.connection.submit(lambda p: shared)
    assert first is second is shared
    assert w.connection.operations.inFlight == 2
    shared.callback("both")
    assert outcome(shared) == "both"
    assert w.connection.operations.counts["ok"] == 2
    assert w.connection.operations.inFlight == 0
    again: Deferred[str] = Deferred()
    lost = [w.connection.submit(lambda p: again) for _ in range(2)]
    w.lose(protocol)
    w.advance(0)
    assert lost[0] is lost[1] is again
    assert errorOf(again) is ConnectionLost
    assert w.connection.operations.counts["lost"] == 2
    finish(w)


def test_theDeferredOfARunningOperationIsItsOwn() -> None:
    """
    An operation that runs at once and returns a Deferred: submit returns
    that Deferred (counted by its first callback), no other.
    """
    w, _, _ = established()
    answer: Deferred[str] = Deferred()
    assert w.connection.submit(lambda p: answer) is answer
    answer.callback("x")
    assert outcome(answer) == "x"
    finish(w)


def keptPerCall(call: Callable[[], object], times: int = 200) -> float:
    """
    How many objects the garbage collector counts (C{gc.get_count()[0]}:
    made, less those freed) one C{call()} leaves alive, on average, once a
    first call has made what is made once (a table, a cache).
    """
    call()
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        for _ in range(times):
            call()
        return (gc.get_count()[0] - before) / times
    finally:
        gc.enable()


def test_anOperationInFlightKeepsNoMoreThanOneCallbackDoes() -> None:
    """
    What C{submit} adds to an operation's Deferred while it is in flight is
    no more than one C{addBoth} with two arguments: no bound method, no
    closure. Each object kept while in flight brings the collector's next
    collection closer, and over real TCP those collections were most of
    what C{submit} added to a command and its reply (docs/library.md, "What
    it costs").
    """
    w, _, _ = established()
    kept: list[Deferred[object]] = []

    def command(protocol: object) -> Deferred[object]:
        reply: Deferred[object] = Deferred()
        kept.append(reply)
        return reply

    def relay(outcome: object, first: object, second: object) -> object:
        return outcome

    def written() -> None:
        command(None).addBoth(relay, w, 1)

    def submitted() -> None:
        w.connection.submit(command)

    assert keptPerCall(submitted) <= keptPerCall(written)
    assert w.connection.operations.inFlight == len(kept) // 2
    for reply in kept:
        reply.callback(None)
    assert w.connection.operations.counts["ok"] == len(kept) // 2
    assert w.connection.operations.inFlight == 0
    finish(w)


def test_theCountsAreACounterWhoseItemsAreStoredAsADicts() -> None:
    """
    The counts of a connection's endings read 0 for a result not counted
    yet, which is not listed, and have a L{Counter}'s methods; their items
    are stored as a L{dict}'s (so C{del} of a result never counted raises).
    """
    counts = newCounts()
    assert isinstance(counts, Counter)
    assert counts["lost"] == 0
    assert "lost" not in counts and counts == {}
    counts["ok"] += 1
    counts["ok"] += 1
    counts["error"] += 1
    assert counts == {"ok": 2, "error": 1}
    assert counts.total() == 3
    assert counts.most_common(1) == [("ok", 2)]
    assert counts + Counter(ok=1) == {"ok": 3, "error": 1}
    with pytest.raises(KeyError):
        del counts["never"]
    del counts["error"]
    assert counts == {"ok": 2}
