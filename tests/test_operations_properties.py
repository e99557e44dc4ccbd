"""
Random operations against a supervisor whose connections and pool are
lost, reconnected, drained, reloaded and rotated while the clock runs:

- every submitted operation's Deferred fires exactly once, and
  C{submitted == ok + error + full + timeout + closed + lost}, both as the
  caller saw the endings and as the connections and the pool counted them;
- no operation ran on a protocol whose connection was not ESTABLISHED (or
  whose transport was gone);
- operations submitted to one connection ran in the order they were
  submitted.
"""

from __future__ import annotations

from collections.abc import Callable
from random import Random
from typing import Any, ClassVar

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from supervisor.config import AdminSpec, Config
from supervisor.connection import SupervisedConnection
from supervisor.operations import RESULTS, OperationError
from supervisor.service import Supervisor
from supervisor.spec import BackoffSpec, ConnectionSpec, HeartbeatSpec, PoolSpec, QueueSpec
from tests.harness import ADDRESS, ScriptedPlugin, ScriptedProtocol
from tests.test_reload_sequences import Attempt, ReloadWorld

QUEUE = QueueSpec(max=3, timeout=2.0)
NAMES = ("a", "b")
POOL = "p"


def spec(name: str, variant: int) -> ConnectionSpec:
    return ConnectionSpec(
        name,
        endpoint="tcp:host=127.0.0.1:port=7",
        connect_timeout=3.0 + variant,
        drain_timeout=4.0,
        heartbeat=HeartbeatSpec(interval=0),
        backoff=BackoffSpec(initial=0.5, multiplier=2, max=4, jitter="full"),
        max_lifetime=0.0 if variant % 2 == 0 else 7.0,
        queue=QUEUE,
    )


Layout = tuple[int | None, int | None, int]
"""The variant of a and b (None: absent), and the size of the pool (0: none)."""


def config(layout: Layout) -> Config:
    variants = zip(NAMES, layout[:2], strict=True)
    connections = [spec(name, v) for name, v in variants if v is not None]
    pools: tuple[PoolSpec, ...] = ()
    if layout[2]:
        pool = PoolSpec(POOL, layout[2], QUEUE)
        pools = (pool,)
        connections += [spec(member, 0) for member in pool.members]
    return Config("ops.toml", AdminSpec(), tuple(connections), pools=pools)


class Submitted:
    """
    One operation: where it was submitted, what it does, how it ended.
    """

    def __init__(self, index: int, target: str, connection: SupervisedConnection | None) -> None:
        self.index = index
        self.target = target
        self.connection = connection
        self.ran: list[Any] = []
        self.endings: list[object] = []
        self.inner: Deferred[object] | None = None


class OperationsLife(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.reactor = MemoryReactorClock()
        self.plugin = ScriptedPlugin(drainAtOnce=False)
        self.attempts: list[Attempt] = []
        self.refused: set[int] = set()
        self.layout: Layout = (0, 0, 2)
        self.supervisor = Supervisor(
            config(self.layout),
            self.reactor,
            plugins=lambda name: self.plugin,
            endpoints=self._endpoint,
            rng=Random(0),
        )
        self.supervisor.startService()
        self.pool = self.supervisor.pool(POOL)
        self.submitted: list[Submitted] = []
        self.inFlight: list[Submitted] = []
        self.violations: list[str] = []
        # Every connection and pool ever made, and their counts.
        self.known: dict[int, SupervisedConnection] = {}
        self.counts: dict[int, dict[str, int]] = {id(self.pool.counts): self.pool.counts}
        self.pools = [self.pool]
        self.ranBy: dict[int, list[int]] = {}
        self.stopped = False
        self._learn()

    # The endpoints record their attempts as the reload sequences' do.
    _endpoint = ReloadWorld._endpoint

    def _learn(self) -> None:
        for connection in [*self.supervisor.connections.values(), *self.supervisor._retiring]:
            if id(connection) not in self.known:
                self.known[id(connection)] = connection
                counts = connection.operations.counts
                self.counts[id(counts)] = counts
        for pool in self.supervisor.pools.values():
            if pool not in self.pools:
                self.pools.append(pool)
                self.counts[id(pool.counts)] = pool.counts

    def _ownerOf(self, protocol: ScriptedProtocol) -> SupervisedConnection | None:
        self._learn()
        for connection in self.known.values():
            if connection._core.attempt is protocol.handle:
                return connection
        return None

    # The operations.

    def _operation(self, item: Submitted, kind: str) -> Callable[[Any], object]:
        def run(protocol: ScriptedProtocol) -> object:
            item.ran.append(protocol)
            owner = self._ownerOf(protocol)
            if owner is None:
                self.violations.append(f"op {item.index} ran on a protocol no connection has")
            elif owner.internalState != "ESTABLISHED" or owner.state != "ESTABLISHED":
                self.violations.append(f"op {item.index} ran on {owner!r}")
            elif protocol.handle.transport is None:  # type: ignore[attr-defined]
                self.violations.append(f"op {item.index} ran on a lost transport")
            if owner is not None:
                self.ranBy.setdefault(id(owner), []).append(item.index)
            if item.connection is not None and owner is not item.connection:
                self.violations.append(f"op {item.index} ran on another connection")
            if kind == "raise":
                raise ValueError(item.index)
            if kind == "async":
                inner: Deferred[object] = Deferred()
                item.inner = inner
                self.inFlight.append(item)
                return inner
            return item.index

        return run

    def submit(self, target: str, kind: str) -> None:
        if self.stopped and target != "stale-pool":
            target = "stale-pool"
        connection: SupervisedConnection | None = None
        if target == POOL:
            try:
                submitter: Any = self.supervisor.pool(POOL)
            except KeyError:
                return
        elif target == "stale-pool":
            submitter = self.pool
        else:
            try:
                connection = submitter = self.supervisor.connection(target)
            except KeyError:
                return
        item = Submitted(len(self.submitted), target, connection)
        self.submitted.append(item)
        d = submitter.submit(self._operation(item, kind))
        d.addBoth(item.endings.append)
        item.deferred = d  # type: ignore[attr-defined]
        self._learn()

    def answer(self, data: st.DataObject, succeed: bool) -> None:
        waiting = [i for i in self.inFlight if i.inner is not None and not i.inner.called]
        if not waiting:
            return
        item = data.draw(st.sampled_from(waiting[:4]), label="answered")
        assert item.inner is not None
        if succeed:
            item.inner.callback(item.index)
        else:
            item.inner.errback(KeyError(item.index))

    def cancel(self, data: st.DataObject) -> None:
        open_ = [i for i in self.submitted if not i.endings]
        if open_:
            item = data.draw(st.sampled_from(open_[-4:]), label="cancelled")
            item.deferred.cancel()  # type: ignore[attr-defined]

    # The network and the operator.

    def _live(self, name: str) -> list[Attempt]:
        return [a for a in self.attempts if a.name == name]

    def _pending(self, attempt: Attempt) -> bool:
        return attempt.transport is None and attempt.live and id(attempt) not in self.refused

    @staticmethod
    def _up(attempt: Attempt) -> bool:
        return attempt.transport is not None and not attempt.lost

    def accept(self, name: str) -> None:
        for attempt in self._live(name):
            if self._pending(attempt):
                attempt.protocol = attempt.factory.buildProtocol(ADDRESS)
                attempt.transport = StringTransport()
                attempt.protocol.makeConnection(attempt.transport)
                attempt.scripted = self.plugin.built[-1]
                return

    def refuse(self, name: str) -> None:
        for attempt in self._live(name):
            if self._pending(attempt):
                self.refused.add(id(attempt))
                attempt.factory.clientConnectionFailed(
                    attempt.connector, Failure(ConnectionRefusedError())
                )
                return

    def lose(self, name: str) -> None:
        for attempt in self._live(name):
            if self._up(attempt):
                attempt.lost = True
                attempt.protocol.connectionLost(Failure(ConnectionLost()))
                return

    def backpressure(self, name: str, blocked: bool) -> None:
        for attempt in self._live(name):
            if self._up(attempt) and attempt.scripted is not None:
                handle: Any = attempt.scripted.handle
                if blocked:
                    handle.pauseProducing()
                else:
                    handle.resumeProducing()

    def operator(self, name: str, how: str) -> None:
        connection = self.supervisor.connections.get(name)
        if connection is not None:
            connection.drain() if how == "drain" else connection.reconnect()

    def drainsFinish(self) -> None:
        for attempt in self.attempts:
            if attempt.scripted is not None:
                for d in attempt.scripted.drains:
                    if not d.called:
                        d.callback(None)
        self._closeClosing()

    def _closeClosing(self) -> None:
        for attempt in self.attempts:
            transport = attempt.transport
            if transport is not None and not attempt.lost and transport.disconnecting:
                attempt.lost = True
                attempt.protocol.connectionLost(Failure(ConnectionDone()))

    def reload(self, a: int | None, b: int, size: int) -> None:
        if self.stopped:
            return
        self.layout = (a, b, size)
        self.supervisor.reload(config(self.layout))
        self._learn()

    def advance(self, seconds: float) -> None:
        self.reactor.advance(seconds)
        self._closeClosing()
        self._learn()

    def stopService(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.supervisor.stopService()
            self._learn()

    @rule(data=st.data())
    def act(self, data: st.DataObject) -> None:
        """
        One step, picked by weight so that runs live long enough to use
        their connections; the arguments are drawn as the step needs them.
        """
        step = data.draw(st.sampled_from(self.steps), label="step")
        name = data.draw(st.sampled_from([*NAMES, "p.0", "p.1", "p.2"]), label="name")
        if step == "submit":
            target = data.draw(st.sampled_from([*NAMES, POOL, POOL, "stale-pool"]), label="to")
            kind = data.draw(st.sampled_from(["sync", "raise", "async", "async"]), label="kind")
            self.submit(target, kind)
        elif step == "answer":
            self.answer(data, data.draw(st.booleans(), label="succeeds"))
        elif step == "cancel":
            self.cancel(data)
        elif step == "accept":
            self.accept(name)
        elif step == "refuse":
            self.refuse(name)
        elif step == "lose":
            self.lose(name)
        elif step == "backpressure":
            self.backpressure(name, data.draw(st.booleans(), label="blocked"))
        elif step in ("drain", "reconnect"):
            self.operator(name, step)
        elif step == "drainsFinish":
            self.drainsFinish()
        elif step == "reload":
            a = data.draw(st.sampled_from([None, 0, 1, 2]), label="a")
            b = data.draw(st.sampled_from([0, 1]), label="b")
            size = data.draw(st.sampled_from([0, 1, 2, 3]), label="size")
            self.reload(a, b, size)
        elif step == "advance":
            self.advance(data.draw(st.sampled_from([0.0, 0.0, 0.3, 1.0, 2.5, 8.0]), label="s"))
        elif step == "stopService":
            self.stopService()

    steps: ClassVar[list[str]] = [
        step
        for step, weight in (
            ("submit", 14),
            ("answer", 5),
            ("cancel", 1),
            ("accept", 8),
            ("refuse", 1),
            ("lose", 2),
            ("backpressure", 2),
            ("drain", 1),
            ("reconnect", 1),
            ("drainsFinish", 2),
            ("reload", 1),
            ("advance", 6),
            ("stopService", 1),
        )
        for _ in range(weight)
    ]

    # What must hold.

    @invariant()
    def nothingRanWhereItShouldNot(self) -> None:
        assert self.violations == []

    @invariant()
    def eachEndedAtMostOnceAndRanAtMostOnce(self) -> None:
        for item in self.submitted:
            assert len(item.endings) <= 1, (item.index, item.endings)
            assert len(item.ran) <= 1, (item.index, item.ran)

    @invariant()
    def orderPerConnection(self) -> None:
        direct = {i.index: i for i in self.submitted if i.connection is not None}
        for ran in self.ranBy.values():
            mine = [index for index in ran if index in direct]
            assert mine == sorted(mine), mine

    @invariant()
    def runsAtOnceExactlyWhenItMay(self) -> None:
        # What the fast path of submit keeps, updated as things change,
        # agrees with the connection's state, transport and queue now.
        self._learn()
        for connection in self.known.values():
            core = connection._core
            attempt = core.attempt
            may = (
                connection.queueDepth == 0
                and core.current.takesOperations == "run"
                and attempt is not None
                and attempt.transport is not None
                and not attempt.writeBlocked
            )
            assert connection.operations.runsNow == may, (connection, core.current)
            if may:
                assert attempt is not None
                assert connection.operations._runOn is attempt.protocol

    @invariant()
    def countedAsSeen(self) -> None:
        counted = {result: 0 for result in RESULTS}
        for counts in self.counts.values():
            for result, n in counts.items():
                counted[result] += n
        seen = {result: 0 for result in RESULTS}
        for item in self.submitted:
            if item.endings:
                seen[ending(item.endings[0])] += 1
        # Endings decided but told on the next turn are counted already.
        for result in RESULTS:
            assert counted[result] >= seen[result], (result, counted, seen)
        assert sum(counted.values()) <= len(self.submitted)

    def teardown(self) -> None:
        if not self.stopped:
            self.stopService()
        for _ in range(6):
            self.drainsFinish()
            self.advance(5.0)
        self.drainsFinish()
        self.reactor.advance(0)
        assert all(c.state == "CLOSED" for c in self.known.values())
        for item in self.submitted:
            assert len(item.endings) == 1, (item.index, item.target, item.endings)
        seen = {result: 0 for result in RESULTS}
        for item in self.submitted:
            seen[ending(item.endings[0])] += 1
        counted = {result: sum(c[result] for c in self.counts.values()) for result in RESULTS}
        assert seen == counted
        for result, n in seen.items():
            if n:
                event(f"some ended {result}")
        if any(item.connection is None and item.ran for item in self.submitted):
            event("a pool's operation ran")
        assert len(self.submitted) == sum(seen.values())
        assert self.violations == []
        assert self.reactor.getDelayedCalls() == []


def ending(outcome: object) -> str:
    """
    The ending, as the caller tells it from what fired.
    """
    if not isinstance(outcome, Failure):
        return "ok"
    if isinstance(outcome.value, OperationError):
        return outcome.value.result
    assert isinstance(outcome.value, ValueError | KeyError | CancelledError), outcome
    return "error"


OperationsLife.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestOperationsLife = OperationsLife.TestCase
