"""
Pools: C{[[pool]]} in the configuration makes members C{NAME.0}...;
L{Supervisor.pool} submits to the ESTABLISHED member with the fewest
operations in flight, or queues; members rotate without leaving the pool
empty; the pool outlives reloads.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from supervisor.config import AdminSpec, Config, ConfigError, parseConfig
from supervisor.operations import ConnectionClosed, QueueFull, QueueTimeout
from supervisor.pool import Pool
from supervisor.shard import Shard, owner
from supervisor.spec import HeartbeatSpec, PoolSpec, QueueSpec
from tests.test_operations import errorOf
from tests.test_operations import outcome as fired
from tests.test_service import Fleet, spec

QUEUE = QueueSpec(max=3, timeout=5.0)


def pooled(size: int = 2, queue: QueueSpec = QUEUE, **member: Any) -> Config:
    pool = PoolSpec("p", size, queue)
    members = tuple(spec(name, queue=queue, **member) for name in pool.members)
    return Config("pool.toml", AdminSpec(), members, pools=(pool,))


class PoolFleet(Fleet):
    def protocolOf(self, name: str) -> Any:
        connection = self.supervisor.connection(name)
        return connection.protocol

    def lose(self, name: str) -> None:
        self.loseConnection(self.supervisor.connection(name))

    def loseConnection(self, connection: Any) -> None:
        from twisted.internet.error import ConnectionLost

        attempt = connection._core.attempt
        if attempt is not None and attempt.transport is not None:
            attempt.connectionLost(Failure(ConnectionLost()))

    def finish(self) -> None:
        """
        Stop; the transports close as asked; whatever is still in flight
        has until the drain deadline.
        """
        done = self.supervisor.stopService()
        everyone = [*self.supervisor.connections.values(), *self.supervisor._retiring]
        for connection in everyone:
            attempt = connection._core.attempt
            transport: Any = None if attempt is None else attempt.transport
            if transport is not None and transport.disconnecting:
                self.loseConnection(connection)
        self.reactor.advance(5.01)
        self.reactor.advance(0)
        assert done.called
        assert self.reactor.getDelayedCalls() == []


def startedPool(config: Config, *established: str) -> tuple[PoolFleet, Pool]:
    """
    A started fleet of C{config} whose members named in C{established} are
    ESTABLISHED; and its pool C{p}.
    """
    fleet = PoolFleet(config)
    fleet.supervisor.startService()
    for name in established:
        fleet.accept(name)
    return fleet, fleet.supervisor.pool("p")


# The configuration.

POOL = '[[pool]]\nname = "cache"\nsize = 3\nendpoint = "tcp:host=127.0.0.1:port=1"\n'


def test_aPoolMakesMembersFromTheKeysOfAConnection() -> None:
    config = parseConfig(
        "[defaults]\nheartbeat = { interval = 3.0 }\nqueue = { timeout = 2.0 }\n"
        + POOL
        + 'protocol = "redis"\nlabels = { group = "cache" }\nqueue = { max = 7 }\n',
        "f.toml",
        protocols=("line", "redis"),
    )
    assert [s.name for s in config.connections] == ["cache.0", "cache.1", "cache.2"]
    for member in config.connections:
        assert member.protocol == "redis" and member.group == "cache"
        assert member.heartbeat.interval == 3.0
        assert member.queue == QueueSpec(max=7, timeout=2.0)
    assert config.pools == (PoolSpec("cache", 3, QueueSpec(max=7, timeout=2.0)),)
    assert config.pools[0].members == ("cache.0", "cache.1", "cache.2")


def test_aPoolIsOfOneByDefault() -> None:
    text = '[[pool]]\nname = "one"\nendpoint = "tcp:host=127.0.0.1:port=1"\n'
    config = parseConfig(text, "f.toml", protocols=("line",))
    assert [s.name for s in config.connections] == ["one.0"]


@pytest.mark.parametrize(
    ("text", "keyPath", "problem"),
    [
        (POOL + "size = 0\n", "", ""),  # replaced below: a duplicate key is TOML's error
        (
            '[[pool]]\nname = "p"\nsize = 0\nendpoint = "tcp:host=127.0.0.1:port=1"\n',
            "pool[0].size",
            "expected an integer from 1 to 1024, got 0",
        ),
        (
            '[[pool]]\nname = "p"\nsize = 5000\nendpoint = "tcp:host=127.0.0.1:port=1"\n',
            "pool[0].size",
            "expected an integer from 1 to 1024, got 5000",
        ),
        (
            '[[pool]]\nsize = 2\nendpoint = "tcp:host=127.0.0.1:port=1"\n',
            "pool[0].name",
            "got nothing (missing)",
        ),
        ('[[pool]]\nname = "p"\n', "pool[0].endpoint", "got nothing (missing)"),
        (
            POOL + "heartbeat = { timeout = -1 }\n",
            "pool[0].heartbeat.timeout",
            "expected a number > 0, got -1",
        ),
        (POOL + "nope = 1\n", "pool[0].nope", "expected one of name, size, endpoint"),
        (POOL + "queue = { max = -1 }\n", "pool[0].queue.max", "expected an integer from 0"),
        (
            '[[connection]]\nname = "cache.1"\nendpoint = "tcp:host=127.0.0.1:port=1"\n' + POOL,
            "pool[0].name",
            'connection[0] is called "cache.1"',
        ),
        (POOL + POOL.replace("size = 3", "size = 1"), "pool[1].name", "a unique pool name"),
        ('pool = { name = "x" }\n', "pool", "expected an array of tables ([[pool]])"),
        ('[[pool]]\nname = ".."\nendpoint = "tcp:host=127.0.0.1:port=1"\n', "pool[0].name", ""),
    ],
)
def test_badPoolsAreRefusedWithTheirKeyPath(text: str, keyPath: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parseConfig(text, "f.toml", protocols=("line",))
    if keyPath:
        assert info.value.keyPath == keyPath, str(info.value)
    assert problem in info.value.problem, str(info.value)


def test_theQueueOfAConnection() -> None:
    config = parseConfig(
        '[defaults]\nqueue = { max = 5 }\n[[connection]]\nname = "c"\n'
        'endpoint = "tcp:host=127.0.0.1:port=1"\nqueue = { timeout = 0.5 }\n',
        "f.toml",
        protocols=("line",),
    )
    assert config.connections[0].queue == QueueSpec(max=5, timeout=0.5)
    with pytest.raises(ConfigError) as info:
        parseConfig("[defaults]\nqueue = { timeout = 0 }\n", "f.toml", protocols=("line",))
    assert info.value.keyPath == "defaults.queue.timeout"
    with pytest.raises(ConfigError) as info:
        parseConfig("[defaults]\nqueue = { max = 2000000 }\n", "f.toml", protocols=("line",))
    assert info.value.keyPath == "defaults.queue.max"


def test_aChangedQueueAppliesInPlace() -> None:
    fleet = Fleet(Config("f.toml", AdminSpec(), (spec("c", queue=QUEUE),)))
    fleet.supervisor.startService()
    fleet.accept("c")
    before = fleet.supervisor.connection("c")
    report = fleet.supervisor.reload(
        Config("f.toml", AdminSpec(), (spec("c", queue=QueueSpec(max=9, timeout=1)),))
    )
    assert report.retuned == ("c",)
    assert fleet.supervisor.connection("c") is before
    assert before.spec.queue.max == 9


# The supervisor.


def test_poolsAndConnectionsByName() -> None:
    fleet = PoolFleet(pooled(2))
    supervisor = fleet.supervisor
    pool = supervisor.pool("p")
    assert [m.name for m in pool.members] == ["p.0", "p.1"]
    assert supervisor.connection("p.1") is pool.members[1]
    with pytest.raises(KeyError):
        supervisor.pool("nope")
    with pytest.raises(KeyError):
        supervisor.connection("p")
    assert set(supervisor.pools) == {"p"}


def test_theMemberWithTheFewestInFlightTakesTheOperation() -> None:
    fleet, pool = startedPool(pooled(3), "p.0", "p.1", "p.2")
    ranOn: list[str] = []
    answers: list[Deferred[None]] = []

    def slow(protocol: Any) -> Deferred[None]:
        ranOn.append(protocol.handle.name)
        d: Deferred[None] = Deferred()
        answers.append(d)
        return d

    results = [pool.submit(slow) for _ in range(3)]
    assert sorted(ranOn) == ["p.0", "p.1", "p.2"], "one each"
    answers[1].callback(None)  # p.1 is free again
    results.append(pool.submit(slow))
    assert ranOn[-1] == ranOn[1]
    for answer in answers:
        if not answer.called:
            answer.callback(None)
    assert all(fired(d) is None for d in results)
    fleet.finish()


def test_tiesGoRoundTheMembers() -> None:
    fleet, pool = startedPool(pooled(3), "p.0", "p.1", "p.2")
    ranOn = [fired(pool.submit(lambda p: p.handle.name)) for _ in range(6)]
    assert ranOn == ["p.0", "p.1", "p.2", "p.0", "p.1", "p.2"]
    fleet.finish()


def test_thePoolQueuesUntilAMemberIsEstablished() -> None:
    fleet, pool = startedPool(pooled(2))
    ran: list[tuple[int, str]] = []
    results = [pool.submit(lambda p, i=i: ran.append((i, p.handle.name))) for i in range(3)]
    assert pool.depth == 3
    assert errorOf(pool.submit(lambda p: None)) is QueueFull
    assert fleet.supervisor.operationCounts["p"]["full"] == 1
    fleet.accept("p.1")
    fleet.reactor.advance(0)
    assert ran == [(0, "p.1"), (1, "p.1"), (2, "p.1")]
    assert all(d.called for d in results) and pool.depth == 0
    assert fleet.supervisor.operationCounts["p.1"]["ok"] == 3
    fleet.finish()


def test_thePoolQueueTimesOut() -> None:
    fleet, pool = startedPool(pooled(2))
    d = pool.submit(lambda p: None)
    fleet.reactor.advance(5.01)
    failure = fired(d)
    assert isinstance(failure, Failure) and failure.check(QueueTimeout)
    assert "no member of pool p took it" in str(failure.value)
    fleet.finish()


def test_aPoolWhoseMembersAreAllClosedRefuses() -> None:
    fleet, pool = startedPool(pooled(2))
    waiting = pool.submit(lambda p: None)
    fleet.supervisor.connection("p.0").drain()
    fleet.reactor.advance(0)
    assert not waiting.called, "p.1 may still come"
    fleet.supervisor.connection("p.1").drain()
    fleet.reactor.advance(0)
    assert errorOf(waiting) is ConnectionClosed
    assert errorOf(pool.submit(lambda p: None)) is ConnectionClosed
    fleet.finish()


def test_stoppingClosesThePool() -> None:
    fleet, pool = startedPool(pooled(2))
    waiting = pool.submit(lambda p: None)
    fleet.finish()
    assert errorOf(waiting) is ConnectionClosed
    assert errorOf(pool.submit(lambda p: None)) is ConnectionClosed


def test_anOperationOnAMemberLostInFlightIsLost() -> None:
    from supervisor.operations import ConnectionLost

    fleet, pool = startedPool(pooled(2), "p.0")
    d = pool.submit(lambda p: Deferred())
    fleet.lose("p.0")
    fleet.reactor.advance(0)
    assert errorOf(d) is ConnectionLost
    assert fleet.supervisor.operationCounts["p.0"]["lost"] == 1
    fleet.finish()


def test_cancellingAPoolOperation() -> None:
    from twisted.internet.defer import CancelledError

    fleet, pool = startedPool(pooled(2))
    queued = pool.submit(lambda p: None)
    queued.cancel()
    assert errorOf(queued) is CancelledError and pool.depth == 0
    fleet.accept("p.0")
    cancelled: list[object] = []
    answer: Deferred[None] = Deferred(cancelled.append)
    inFlight = pool.submit(lambda p: answer)
    inFlight.cancel()
    assert cancelled == [answer] and errorOf(inFlight) is CancelledError
    fleet.finish()


# Rotation.


def rotating(size: int) -> Config:
    """
    A pool of C{size} whose members' lifetime is exactly 10 s, with no
    heartbeats.
    """
    return pooled(size, max_lifetime=10.0, lifetime_jitter=0.0, heartbeat=HeartbeatSpec(interval=0))


def test_theLastEstablishedMemberDoesNotRotateUntilAnotherIs() -> None:
    fleet, _ = startedPool(rotating(2), "p.0")
    fleet.reactor.advance(5)
    fleet.accept("p.1")
    fleet.reactor.advance(5)
    # p.0's lifetime is over, and p.1 is ESTABLISHED: p.0 rotates.
    assert fleet.state("p.0") == "CLOSING"
    fleet.lose("p.0")
    fleet.reactor.advance(0.01)
    assert fleet.state("p.0") == "CONNECTING"
    # p.1's lifetime ends while p.0 reconnects: p.1 waits.
    fleet.reactor.advance(5)
    assert fleet.state("p.1") == "ESTABLISHED"
    assert fleet.supervisor.connection("p.1").lifetimeLeft == pytest.approx(1.0, abs=0.02)
    fleet.reactor.advance(3)
    assert fleet.state("p.1") == "ESTABLISHED", "still the only one"
    fleet.accept("p.0")
    fleet.reactor.advance(1.01)
    assert fleet.state("p.1") == "CLOSING", "p.0 is back: p.1 rotates"
    assert fleet.state("p.0") == "ESTABLISHED"
    fleet.finish()


def test_aPoolOfOneRotatesAnyway() -> None:
    fleet, _ = startedPool(rotating(1), "p.0")
    fleet.reactor.advance(10)
    assert fleet.state("p.0") == "CLOSING"
    fleet.finish()


# Reloads.


def test_thePoolOutlivesReloadsThatResizeIt() -> None:
    fleet, pool = startedPool(pooled(2))
    supervisor = fleet.supervisor
    report = supervisor.reload(pooled(3))
    assert report.added == ("p.2",)
    assert supervisor.pool("p") is pool
    assert [m.name for m in pool.members] == ["p.0", "p.1", "p.2"]
    fleet.accept("p.2")
    assert fired(pool.submit(lambda p: p.handle.name)) == "p.2"
    supervisor.reload(pooled(1))
    assert [m.name for m in pool.members] == ["p.0"]
    waiting = pool.submit(lambda p: p.handle.name)
    assert not waiting.called, "p.2 is draining; p.0 not ESTABLISHED yet"
    fleet.accept("p.0")
    fleet.reactor.advance(0)
    assert fired(waiting) == "p.0"
    fleet.finish()


def test_aReplacedMemberIsAttachedAgain() -> None:
    fleet, pool = startedPool(pooled(1), "p.0")
    supervisor = fleet.supervisor
    old = supervisor.connection("p.0")
    supervisor.reload(pooled(1, connect_timeout=3.0))
    waiting = pool.submit(lambda p: p.handle)
    assert not waiting.called
    fleet.lose("p.0")  # the old one's drain closed its transport
    new = supervisor.connection("p.0")
    assert new is not old and new in pool.members
    fleet.accept("p.0")
    fleet.reactor.advance(0)
    assert fired(waiting) is new._core.attempt
    fleet.finish()


def test_aRemovedPoolIsClosed() -> None:
    fleet, pool = startedPool(pooled(2))
    supervisor = fleet.supervisor
    waiting = pool.submit(lambda p: None)
    supervisor.reload(Config("f.toml", AdminSpec(), ()))
    assert errorOf(waiting) is ConnectionClosed
    with pytest.raises(KeyError):
        supervisor.pool("p")
    assert "p" not in supervisor.operationCounts
    fleet.finish()


def test_poolMembersAreShardedByMemberName() -> None:
    size = 16
    config = pooled(size)
    fleet = Fleet(config, shard=Shard(1, 3))
    pool = fleet.supervisor.pool("p")
    mine = [name for name in config.pools[0].members if owner(name, 3) == 1]
    assert 0 < len(mine) < size
    assert [m.name for m in pool.members] == mine


def test_theOnlyMemberOnAShardRotates() -> None:
    """
    A shard with one member of a pool of several: it is no last member to
    hold, it rotates as a single connection does.
    """
    config = pooled(8, max_lifetime=10.0, lifetime_jitter=0.0, heartbeat=HeartbeatSpec(interval=0))
    shards = next(
        (index, count)
        for count in range(2, 9)
        for index in range(count)
        if sum(owner(name, count) == index for name in config.pools[0].members) == 1
    )
    fleet = PoolFleet(config, shard=Shard(*shards))
    [member] = fleet.supervisor.pool("p").members
    fleet.supervisor.startService()
    fleet.accept(member.name)
    fleet.reactor.advance(10)
    assert member.state == "CLOSING"
    fleet.finish()
