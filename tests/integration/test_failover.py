"""
Several endpoints per connection over real loopback sockets: C{[refused,
live]} establishes on the second; killing the live peer moves the
connection to the next; C{round_robin} spreads attempts over every
endpoint; a name with two addresses (IPv4 and IPv6, from a hosts table the
test controls) where one is dead establishes on the other in one attempt;
a name that resolves to nothing is the transient reason C{dns}.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Generator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from supervisor import SupervisedConnection, findPlugin
from supervisor.admin.views import connectionDetail
from supervisor.spec import BackoffSpec, BreakerSpec, ConnectionSpec, HeartbeatSpec
from supervisor.transport import clientEndpoints
from tests.hosts import HostsResolver, ResolvingReactor
from tests.integration.conftest import HOST, PeerLauncher, theReactor, waitFor
from tests.integration.pong import PongServer
from tests.integration.scenarios import Recorder, answeredAtFirstAttempt, stopAtLast
from tests.integration.servers import freePort

pytestmark = pytest.mark.integration

TIMINGS: dict[str, Any] = {
    "connect_timeout": 5.0,
    "backoff": BackoffSpec(initial=0.05, max=0.2, jitter="none"),
    "heartbeat": HeartbeatSpec(interval=0.3, timeout=1.0),
    "breaker": BreakerSpec(scope="off"),
}


def connection(
    *endpoints: str, resolver: HostsResolver | None = None, **spec: Any
) -> SupervisedConnection:
    reactor: Any = theReactor()
    if resolver is not None:
        reactor = ResolvingReactor(reactor, resolver)
    made = ConnectionSpec("failover", endpoints=endpoints, **{**TIMINGS, **spec})
    return SupervisedConnection(
        made, clientEndpoints(reactor, made), findPlugin("line"), theReactor()
    )


def tcp(port: int, host: str = HOST) -> str:
    return f"tcp:host={host}:port={port}"


@pytest_twisted.inlineCallbacks
def test_refusedThenLiveEstablishesOnTheSecond(
    peers: PeerLauncher,
) -> Generator[Deferred[Any], Any, None]:
    live = yield peers.launch()
    refused = tcp(freePort())
    c = connection(refused, tcp(live.port))
    seen = Recorder(c)
    c.start()
    try:
        yield waitFor(lambda: c.rtt is not None, 10, f"ESTABLISHED with a heartbeat\n{seen}")
        assert [(t.from_, t.to, t.reason) for t in seen.transitions] == [
            ("IDLE", "CONNECTING", "start"),
            ("CONNECTING", "IDLE", "refused"),
            ("IDLE", "CONNECTING", "retry"),
            ("CONNECTING", "ESTABLISHED", "ready"),
        ], str(seen)
        assert c.endpoint == tcp(live.port)
        detail = connectionDetail(c)
        assert detail["endpoint"] == tcp(live.port)
        assert detail["endpoints"] == [refused, tcp(live.port)]
        assert detail["endpoint_attempts"] == [
            {"endpoint": refused, "attempts": 1, "failures": 1},
            {"endpoint": tcp(live.port), "attempts": 1, "failures": 0},
        ]
    finally:
        yield stopAtLast(c)


@pytest_twisted.inlineCallbacks
def test_killingTheLivePeerMovesToTheNext(
    peers: PeerLauncher,
) -> Generator[Deferred[Any], Any, None]:
    # Below the ephemeral range: nobody else gets the first port once it is free.
    first = yield peers.launchOutsideEphemeralRange()
    second = yield peers.launch()
    c = connection(tcp(first.port), tcp(second.port))
    seen = Recorder(c)
    c.start()
    try:
        yield waitFor(lambda: c.state == "ESTABLISHED", 10, f"ESTABLISHED\n{seen}")
        assert c.endpoint == tcp(first.port)
        before = len(seen.transitions)
        first.signal(signal.SIGKILL)
        yield first.waitForExit()
        yield waitFor(
            lambda: c.state == "ESTABLISHED" and c.endpoint == tcp(second.port),
            10,
            f"ESTABLISHED on the second\n{seen}",
        )
        assert [(t.from_, t.to, t.reason) for t in seen.transitions[before:]] == [
            ("ESTABLISHED", "IDLE", "lost"),
            ("IDLE", "CONNECTING", "retry"),
            ("CONNECTING", "IDLE", "refused"),
            ("IDLE", "CONNECTING", "retry"),
            ("CONNECTING", "ESTABLISHED", "ready"),
        ], str(seen)
        assert seen.links[-1][1].endswith(f"port={second.port})")
        movedAt = seen.transitions[-1].time
        yield waitFor(lambda: seen.answeredSince(movedAt), 5, "a heartbeat on the second")
    finally:
        yield stopAtLast(c)


@pytest_twisted.inlineCallbacks
def test_roundRobinSpreadsAttemptsOverEveryEndpoint(
    pongs: Callable[..., PongServer],
) -> Generator[Deferred[Any], Any, None]:
    servers = [pongs() for _ in range(3)]
    c = connection(*(tcp(s.port) for s in servers), failover="round_robin")
    used: list[str] = []
    c.addObserver(lambda t: used.append(c.endpoint) if t.to == "ESTABLISHED" else None)
    c.start()
    try:
        for round in range(9):
            yield waitFor(lambda: c.state == "ESTABLISHED", 10, f"ESTABLISHED ({round})")
            assert len(used) == round + 1
            if round < 8:
                assert c.reconnect()
                yield waitFor(lambda: c.state != "ESTABLISHED", 10, "the rotation")
        order = [tcp(s.port) for s in servers]
        start = order.index(used[0])
        assert used == [order[(start + i) % 3] for i in range(9)]
        assert [len(s.peers) for s in servers] == [3, 3, 3]
    finally:
        yield stopAtLast(c)


@pytest.mark.parametrize(
    ("live", "dead"), [(HOST, "::1"), ("::1", HOST)], ids=["IPv4-live", "IPv6-live"]
)
@pytest_twisted.inlineCallbacks
def test_aNameWithTwoAddressesOneDeadEstablishesOnTheOther(
    live: str, dead: str, pongs: Callable[..., PongServer]
) -> Generator[Deferred[Any], Any, None]:
    """
    The dead address comes first: refused, then the live one, within the
    same attempt (HostnameEndpoint's "happy eyeballs").
    """
    server = pongs(interface=live)
    resolver = HostsResolver({"svc.test": [dead, live]})
    c = connection(f"tcp:host=svc.test:port={server.port}", resolver=resolver)
    try:
        yield answeredAtFirstAttempt(c, "ESTABLISHED with a heartbeat")
        assert server.peers == [live]
        assert resolver.lookups == ["svc.test"]
        # Resolved again on the next attempt.
        assert c.reconnect()
        yield waitFor(lambda: len(server.peers) == 2 and c.state == "ESTABLISHED", 10, "again")
        assert resolver.lookups == ["svc.test", "svc.test"]
    finally:
        yield stopAtLast(c)


@pytest_twisted.inlineCallbacks
def test_aNameThatResolvesToNothingIsRetriedAsDns(
    pongs: Callable[..., PongServer],
) -> Generator[Deferred[Any], Any, None]:
    server = pongs()
    resolver = HostsResolver({})
    c = connection(f"tcp:host=later.test:port={server.port}", resolver=resolver)
    seen = Recorder(c)
    c.start()
    try:
        yield waitFor(lambda: c.attempts >= 3, 10, f"three attempts\n{seen}")
        failures = {t.reason for t in seen.transitions if t.from_ == "CONNECTING"}
        assert failures == {"dns"}, str(seen)
        assert c.state != "CLOSED"
        # The name appears: an attempt after that connects.
        resolver.hosts["later.test"] = [HOST]
        yield waitFor(lambda: c.rtt is not None, 10, f"ESTABLISHED with a heartbeat\n{seen}")
        assert server.peers == [HOST]
    finally:
        yield stopAtLast(c)
