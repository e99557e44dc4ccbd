"""
Several endpoints per connection: which endpoint each attempt uses
(C{ordered} and C{round_robin} failover), names resolved on every attempt
with every address tried, what C{/connections} shows, the breaker they
share, and how the configuration states them.
"""

from __future__ import annotations

from random import Random
from typing import Any

import pytest
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from supervisor.admin.views import connectionDetail, connectionSummary
from supervisor.config import ConfigError, parseConfig
from supervisor.connection import SupervisedConnection
from supervisor.endpoints import EndpointRecord, Endpoints
from supervisor.fleet import breakerKey
from supervisor.spec import BackoffSpec, BreakerSpec, ConnectionSpec, HeartbeatSpec
from supervisor.transport import clientEndpoint, clientEndpoints
from tests.harness import ADDRESS, ScriptedPlugin, ScriptedProtocol
from tests.hosts import HostsResolver

NO_JITTER = BackoffSpec(initial=1.0, multiplier=2.0, max=60.0, jitter="none")
A, B, C = (f"tcp:host=127.0.0.1:port={port}" for port in (1001, 1002, 1003))
PORTS = {A: 1001, B: 1002, C: 1003}


class Several:
    """
    One connection with several endpoints on a memory reactor, built by the
    real endpoint builder; names resolve from a hosts table the test holds.
    """

    def __init__(
        self, *endpoints: str, hosts: dict[str, list[str]] | None = None, seed: int = 0, **spec: Any
    ) -> None:
        self.reactor = MemoryReactorClock()
        self.resolver = HostsResolver(hosts or {})
        self.reactor.installNameResolver(self.resolver)
        self.plugin = ScriptedPlugin()
        spec.setdefault("backoff", NO_JITTER)
        spec.setdefault("heartbeat", HeartbeatSpec(interval=0))
        spec.setdefault("breaker", BreakerSpec(scope="off"))
        self.spec = ConnectionSpec("several", endpoints=endpoints, **spec)
        self.connection = SupervisedConnection(
            self.spec,
            clientEndpoints(self.reactor, self.spec),
            self.plugin,
            self.reactor,
            rng=Random(seed),
        )
        self._answered = 0

    def pending(self) -> list[tuple[str, int]]:
        """
        The (host, port) of each connect not answered yet nor cancelled.
        """
        clients = self.reactor.tcpClients
        return [
            (host, port)
            for index, (host, port, *_) in enumerate(clients)
            if index >= self._answered and not self.reactor.connectors[index].stoppedConnecting
        ]

    def _take(self) -> tuple[Any, Any, int]:
        while self.reactor.connectors[self._answered].stoppedConnecting:
            self._answered += 1
        index = self._answered
        self._answered += 1
        return self.reactor.tcpClients[index][2], self.reactor.connectors[index], index

    def port(self) -> int:
        """
        The port of the connect the next accept or refuse answers.
        """
        (pending,) = self.pending()
        return pending[1]

    def refuse(self) -> int:
        factory, connector, index = self._take()
        factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
        return int(self.reactor.tcpClients[index][1])

    def accept(self) -> ScriptedProtocol:
        factory, _, _ = self._take()
        protocol = factory.buildProtocol(ADDRESS)
        protocol.makeConnection(StringTransport())
        return self.plugin.built[-1]

    def lose(self, protocol: ScriptedProtocol) -> None:
        protocol.handle.connectionLost(Failure(ConnectionRefusedError()))  # type: ignore[attr-defined]

    def retry(self) -> None:
        """
        Let the scheduled retry happen.
        """
        self.reactor.advance(self.connection.backoffDelay)
        assert self.connection.state == "CONNECTING"

    def path(self) -> list[tuple[str, str, str]]:
        return [(t.from_, t.to, t.reason) for t in self.connection.history]


# The failover object on its own.


def test_orderedStaysUntilAnAttemptFailsThenMovesOnAndWraps() -> None:
    endpoints = Endpoints("abc", [object(), object(), object()])  # type: ignore[list-item]
    seen = []
    for outcome in ("ok", "ok", "fail", "ok", "fail", "fail", "ok"):
        endpoints.pick()
        seen.append(endpoints.inUse)
        if outcome == "fail":
            endpoints.failed()
    assert seen == ["a", "a", "a", "b", "b", "c", "a"]
    assert endpoints.records() == (
        EndpointRecord("a", 4, 1),
        EndpointRecord("b", 2, 1),
        EndpointRecord("c", 1, 1),
    )


def test_roundRobinMovesOnEveryAttemptFromItsStart() -> None:
    endpoints = Endpoints("abc", [object()] * 3, "round_robin", start=1)  # type: ignore[list-item]
    assert endpoints.inUse == "b", "before any attempt: the first one's"
    seen = []
    for outcome in ("ok", "fail", "ok", "ok"):
        endpoints.pick()
        seen.append(endpoints.inUse)
        if outcome == "fail":
            endpoints.failed()
    assert seen == ["b", "c", "a", "b"]


def test_oneEndpointPerString() -> None:
    with pytest.raises(ValueError, match="one endpoint per endpoint string"):
        Endpoints("ab", [object()])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        Endpoints("", [])


# Through the connection machine.


def test_orderedFailsOverToTheNextAndStaysOnTheOneThatWorks() -> None:
    world = Several(A, B, C)
    world.connection.start()
    assert world.connection.endpoint == A
    assert world.refuse() == 1001
    assert world.connection.endpoint == A, "IDLE: the endpoint of the last attempt"
    world.retry()
    assert world.connection.endpoint == B
    protocol = world.accept()
    assert world.connection.state == "ESTABLISHED"
    assert world.connection.endpoint == B
    world.lose(protocol)
    world.retry()
    assert world.port() == 1002, "lost is not a failed attempt: the same endpoint first"
    assert world.refuse() == 1002
    world.retry()
    assert world.refuse() == 1003
    world.retry()
    assert world.port() == 1001, "after the last, the first"
    assert world.connection.endpointRecords == (
        EndpointRecord(A, 2, 1),
        EndpointRecord(B, 2, 1),
        EndpointRecord(C, 1, 1),
    )


def test_roundRobinUsesTheNextEndpointOnEveryAttempt() -> None:
    world = Several(A, B, C, failover="round_robin")
    world.connection.start()
    first = world.port()
    order = [first]
    protocol = world.accept()
    world.lose(protocol)
    for _ in range(4):
        world.retry()
        order.append(world.port())
        world.refuse()
    ports = [1001, 1002, 1003]
    start = ports.index(first)
    assert order == [ports[(start + i) % 3] for i in range(5)]


def test_roundRobinConnectionsDoNotAllStartOnTheFirst() -> None:
    firsts = set()
    for seed in range(30):
        world = Several(A, B, C, failover="round_robin", seed=seed)
        world.connection.start()
        firsts.add(world.port())
    assert firsts == {1001, 1002, 1003}


def test_orderedConnectionsAllStartOnTheFirst() -> None:
    for seed in range(10):
        world = Several(A, B, C, seed=seed)
        world.connection.start()
        assert world.port() == 1001


def test_aConnectTimeoutIsAFailureOfThatEndpoint() -> None:
    world = Several(A, B, connect_timeout=2.0)
    world.connection.start()
    world.reactor.advance(2.0)
    assert world.path()[-1] == ("CONNECTING", "IDLE", "timeout")
    world.retry()
    assert world.port() == 1002
    assert [r.failures for r in world.connection.endpointRecords] == [1, 0]


def test_aCancelledAttemptIsNoFailure() -> None:
    world = Several(A, B)
    world.connection.start()
    world.connection.stop()
    assert world.connection.state == "CLOSED"
    assert [(r.attempts, r.failures) for r in world.connection.endpointRecords] == [(1, 0), (0, 0)]


def test_connectionsShowsTheEndpointInUseTheListAndEachOnesFailures() -> None:
    world = Several(A, B)
    secretive = "tls:host=127.0.0.1:port=1002:passphrase=hunter2"
    spec = ConnectionSpec("shown", endpoints=[A, secretive], backoff=NO_JITTER)
    world.connection = SupervisedConnection(
        spec,
        [TCP4ClientEndpoint(world.reactor, "127.0.0.1", p) for p in (1001, 1002)],
        world.plugin,
        world.reactor,
    )
    world.connection.start()
    world.refuse()
    world.retry()
    world.accept()
    summary = connectionSummary(world.connection)
    secret = "tls:host=127.0.0.1:port=1002:passphrase=***"
    assert summary["endpoint"] == secret
    assert summary["endpoints"] == [A, secret]
    detail = connectionDetail(world.connection)
    assert detail["endpoint_attempts"] == [
        {"endpoint": A, "attempts": 1, "failures": 1},
        {"endpoint": secret, "attempts": 1, "failures": 0},
    ]
    assert list(detail)[-1] == "transitions"
    assert "hunter2" not in repr(summary) + repr(detail)


# Names: resolved on every attempt, every address tried.


def test_aNameIsResolvedOnEveryAttemptAndEveryAddressIsTried() -> None:
    world = Several(
        "tcp:host=db.test:port=5432", hosts={"db.test": ["10.0.0.1", "::1"]}, connect_timeout=30
    )
    world.connection.start()
    assert world.resolver.lookups == ["db.test"]
    assert world.pending() == [("10.0.0.1", 5432)]
    world.refuse()
    assert world.connection.state == "CONNECTING", "one address failed: the attempt goes on"
    world.reactor.advance(0.3)  # HostnameEndpoint's delay between addresses
    assert world.pending() == [("::1", 5432)]
    protocol = world.accept()
    assert world.connection.state == "ESTABLISHED"
    assert world.connection.attempts == 1
    world.resolver.hosts["db.test"] = ["10.0.0.2"]
    world.lose(protocol)
    world.retry()
    assert world.resolver.lookups == ["db.test", "db.test"]
    assert world.pending() == [("10.0.0.2", 5432)], "the new address, resolved again"


def test_everyAddressRefusedIsOneFailedAttempt() -> None:
    world = Several("tcp:host=db.test:port=5432", hosts={"db.test": ["10.0.0.1", "10.0.0.2"]})
    world.connection.start()
    world.refuse()
    world.reactor.advance(0.3)
    world.refuse()
    assert world.connection.state == "CONNECTING"
    world.reactor.advance(0.3)  # no address left: the attempt fails
    assert world.path() == [("IDLE", "CONNECTING", "start"), ("CONNECTING", "IDLE", "refused")]


def test_aNameThatResolvesToNothingIsTheTransientReasonDns() -> None:
    world = Several("tcp:host=nowhere.test:port=5432", "tcp:host=db.test:port=5432")
    world.connection.start()
    assert world.path()[-1] == ("CONNECTING", "IDLE", "dns")
    assert world.connection.lastError is not None
    assert world.connection.lastError.startswith("dns: ")
    world.resolver.hosts["db.test"] = ["10.0.0.1"]
    world.retry()
    assert world.pending() == [("10.0.0.1", 5432)], "failed over to the next endpoint"


def test_whatEachEndpointStringBecomes() -> None:
    reactor = MemoryReactorClock()
    tls = ConnectionSpec("x", "tcp:host=a:port=1").tls
    made = {
        "tcp:host=127.0.0.1:port=1": TCP4ClientEndpoint,
        "tcp:127.0.0.1:1": TCP4ClientEndpoint,
        r"tcp:host=\:\:1:port=1": TCP6ClientEndpoint,
        "tcp:host=db.internal:port=1:timeout=3": HostnameEndpoint,
        "tcp:db.internal:1": HostnameEndpoint,
    }
    for description, kind in made.items():
        assert type(clientEndpoint(reactor, tls, description)) is kind, description
    # Other types are Twisted's own.
    assert type(clientEndpoint(reactor, tls, "unix:path=/tmp/x")).__name__ == ("UNIXClientEndpoint")


# The breaker of a connection with several endpoints.


def test_oneBreakerForTheListAsAWholeInAnyOrder() -> None:
    def key(**kw: Any) -> str | None:
        return breakerKey(ConnectionSpec("x", **kw))

    assert key(endpoints=[A, B]) == key(endpoints=[B, A])
    assert key(endpoints=[A, B]) != key(endpoints=[A, C])
    assert key(endpoints=[A]) == key(endpoint=A), "one endpoint is the same target either way"
    assert key(endpoints=[A, B], breaker=BreakerSpec(scope="connection")) == "connection x"


# The configuration.


def parse(text: str) -> Any:
    return parseConfig(text, "f.toml", protocols=["line"])


def refusal(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value


CONN = '[[connection]]\nname = "c"\n'


def test_endpointsAndFailoverFromTheFile() -> None:
    spec = parse(
        '[defaults]\nfailover = "round_robin"\n'
        + CONN
        + f'endpoints = ["{A}", "tcp:host=db.internal:port=5432"]\n'
    ).connections[0]
    assert spec.endpoint == ""
    assert spec.targets == (A, "tcp:host=db.internal:port=5432")
    assert spec.failover == "round_robin"
    assert parse(CONN + f'endpoint = "{A}"\n').connections[0].targets == (A,)


@pytest.mark.parametrize(
    ("text", "keyPath", "problem"),
    [
        (
            "",
            "connection[0].endpoint",
            "expected a Twisted client endpoint string (tcp:, tls:, unix:), or endpoints, "
            "got nothing (missing)",
        ),
        (
            f'endpoint = "{A}"\nendpoints = ["{B}"]\n',
            "connection[0].endpoints",
            "expected no endpoints when endpoint is set (one or the other), got an array",
        ),
        (
            "endpoints = []\n",
            "connection[0].endpoints",
            "expected an array of 1 to 64 distinct Twisted client endpoint strings, "
            "got an array of 0",
        ),
        (
            f'endpoints = "{A}"\n',
            "connection[0].endpoints",
            "expected an array of 1 to 64 distinct Twisted client endpoint strings, "
            f'got the string "{A}"',
        ),
        (
            f'endpoints = ["{A}", "{B}", "{A}"]\n',
            "connection[0].endpoints[2]",
            "expected a distinct endpoint string, got the one connection[0].endpoints[0] "
            "already is",
        ),
        (
            f'endpoints = ["{A}", "nope:x=1"]\n',
            "connection[0].endpoints[1]",
            'expected a Twisted client endpoint string (tcp:, tls:, unix:), got "nope:...", '
            "an unknown client endpoint type",
        ),
        (
            f'endpoints = ["{A}", 7]\n',
            "connection[0].endpoints[1]",
            "expected a Twisted client endpoint string (tcp:, tls:, unix:), got the integer 7",
        ),
        (
            f'endpoints = ["{A}"]\nfailover = "random"\n',
            "connection[0].failover",
            'expected one of ordered, round_robin, got "random"',
        ),
    ],
)
def test_endpointsRefused(text: str, keyPath: str, problem: str) -> None:
    error = refusal(CONN + text)
    assert (error.keyPath, error.problem) == (keyPath, problem)


def test_tooManyEndpoints() -> None:
    many = ", ".join(f'"tcp:host=127.0.0.1:port={p}"' for p in range(1, 66))
    error = refusal(CONN + f"endpoints = [{many}]\n")
    assert error.keyPath == "connection[0].endpoints"
    assert error.problem.endswith("got an array of 65")


def test_endpointsArePerConnection() -> None:
    error = refusal(f'[defaults]\nendpoints = ["{A}"]\n')
    assert error.keyPath == "defaults.endpoints"
    assert "which is set per [[connection]], not in [defaults]" in error.problem


def test_aRefusedEndpointInTheListIsNotShown() -> None:
    error = refusal(CONN + f'endpoints = ["{A}", "tcp:host=h:port=x:password=hunter2"]\n')
    assert error.keyPath == "connection[0].endpoints[1]"
    assert "hunter2" not in str(error)


def test_aSpecBuiltInCodeStatesItsEndpointsAsTheFileDoes() -> None:
    with pytest.raises(ValueError, match="endpoints: expected a sequence of endpoint strings"):
        ConnectionSpec("x", endpoints=A)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"endpoint: expected .*, or endpoints, got nothing"):
        ConnectionSpec("x")
    with pytest.raises(ValueError, match="endpoints: expected no endpoints when endpoint is set"):
        ConnectionSpec("x", A, endpoints=[B])
    assert ConnectionSpec("x", endpoints=[A, B]).targets == (A, B)
