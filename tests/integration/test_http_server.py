# mypy: disallow-untyped-calls=False, disallow-untyped-decorators=False
"""
A supervised C{http} connection against a real twisted.web server on
127.0.0.1, on the real reactor: 200 (ESTABLISHED, heartbeats answered),
then 503 (dropped, transient: IDLE and retried), then 401 (CLOSED for good).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint, clientFromString
from twisted.internet.interfaces import IListeningPort
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from supervisor import BackoffSpec, ConnectionSpec, HeartbeatSpec, SupervisedConnection, findPlugin
from tests.integration.conftest import HOST, holdsFor, theReactor, waitFor
from tests.integration.scenarios import Recorder

pytestmark = pytest.mark.integration

HEARTBEAT = HeartbeatSpec(interval=0.2, timeout=0.5, misses=2)
BACKOFF = BackoffSpec(initial=0.1, max=0.3, jitter="none", reset_after=10.0)
WAIT = 10.0
"""A bound on every wait, generous for a loaded machine."""


class Health(Resource):
    """
    Answers every request with the status the test sets, counting them.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.status = 200
        self.requests = 0
        self.peers: set[int] = set()

    def render(self, request: Request) -> bytes:
        self.requests += 1
        self.peers.add(request.getClientAddress().port)
        request.setResponseCode(self.status)
        return b"health\n"


def listen(health: Health) -> Deferred[IListeningPort]:
    """
    Serve C{health} on a free loopback port.
    """
    return TCP4ServerEndpoint(theReactor(), 0, interface=HOST).listen(Site(health))


def healthConnection(name: str, listening: IListeningPort, **spec: Any) -> SupervisedConnection:
    """
    An C{http} connection, with the heartbeats of these tests, to the
    server C{listening}.
    """
    reactor = theReactor()
    port = listening.getHost().port  # type: ignore[attr-defined]
    endpoint = f"tcp:host={HOST}:port={port}"
    return SupervisedConnection(
        ConnectionSpec(name, endpoint, protocol="http", heartbeat=HEARTBEAT, **spec),
        clientFromString(reactor, endpoint),
        findPlugin("http"),
        reactor,
    )


def stateOf(connection: SupervisedConnection) -> str:
    """
    The state read afresh (a plain C{str}: no narrowing between readings).
    """
    return connection.state


@pytest_twisted.inlineCallbacks
def test_200Then503Then401() -> Generator[Deferred[Any], Any, None]:
    health = Health()
    listening = yield listen(health)
    connection = healthConnection(
        "http-1",
        listening,
        connect_timeout=2.0,
        drain_timeout=2.0,
        backoff=BACKOFF,
        options={"path": "/healthz"},
    )
    seen = Recorder(connection)
    transitions = seen.transitions
    try:
        connection.start()
        yield waitFor(lambda: connection.state == "ESTABLISHED", WAIT, "ESTABLISHED")
        yield waitFor(lambda: len(seen.heartbeats) >= 3, WAIT, "three answered heartbeats")
        assert None not in [rtt for _, rtt in seen.heartbeats]
        assert connection.state == "ESTABLISHED"
        assert len(health.peers) == 1, "every heartbeat on the one supervised connection"

        health.status = 503
        yield waitFor(lambda: connection.state != "ESTABLISHED", WAIT, "the 503 drop")
        drop = transitions[-1]
        assert (drop.from_, drop.to, drop.reason) == ("ESTABLISHED", "IDLE", "lost")
        assert "HTTP status 503" in drop.detail
        yield waitFor(
            lambda: [t.reason for t in transitions].count("retry") >= 2,
            WAIT,
            "retries while the server answers 503",
        )
        assert stateOf(connection) != "CLOSED"
        assert ("CONNECTING", "IDLE", "handshake") in [
            (t.from_, t.to, t.reason) for t in transitions
        ]

        health.status = 401
        yield waitFor(lambda: connection.state == "CLOSED", WAIT, "CLOSED after 401")
        last = transitions[-1]
        assert (last.from_, last.to, last.reason) == ("CONNECTING", "CLOSED", "handshake")
        assert connection.lastError == "handshake: HTTP status 401"
        attempts = connection.attempts
        yield holdsFor(
            lambda: connection.attempts == attempts, 0.5, "no retry after a permanent failure"
        )
    finally:
        yield connection.stop()
        yield maybeDeferred(listening.stopListening)


@pytest_twisted.inlineCallbacks
def test_drainOnARealServer() -> Generator[Deferred[Any], Any, None]:
    listening = yield listen(Health())
    connection = healthConnection("http-2", listening)
    try:
        connection.start()
        yield waitFor(lambda: connection.state == "ESTABLISHED", WAIT, "ESTABLISHED")
        stopping = connection.stop()
        yield waitFor(lambda: stopping.called, WAIT, "the drain")
        assert [t.to for t in connection.history][-2:] == ["CLOSING", "CLOSED"]
        assert connection.history[-1].reason == "closed"
    finally:
        yield connection.stop()
        yield maybeDeferred(listening.stopListening)
