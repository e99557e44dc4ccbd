"""
The admin HTTP API, through treq's in-memory client: every path, its status
codes and JSON shapes, the bearer token, and what must never be shown.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.web.server import Site

from supervisor.admin import AdminRoot, adminService, adminSite
from supervisor.admin.views import redact
from supervisor.metrics import SupervisorMetrics
from supervisor.service import Supervisor
from supervisor.spec import BreakerSpec, FlapSpec, SupervisorSpec
from tests.harness import ScriptedPlugin
from tests.logs import loggedMessages
from tests.test_metrics import Fleet, config, spec

T = TypeVar("T")

JSON = "application/json; charset=utf-8"
TOKEN = "s3cr3t-t0ken"
URL = "http://admin.invalid"


def result(d: Deferred[T]) -> T:
    """
    The result a Deferred already has.
    """
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]  # type: ignore[no-any-return]


class Answer:
    def __init__(self, code: int, headers: dict[str, list[str]], body: bytes) -> None:
        self.code = code
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[-1] if values else None

    def json(self) -> Any:
        assert self.header("content-type") == JSON
        return json.loads(self.body)


class Client:
    """
    An HTTP client on the admin root of a L{Fleet}, entirely in memory.
    """

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.site = adminSite(fleet.supervisor, fleet.metrics, fleet.reactor)
        self.stub = StubTreq(self.site.resource)

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> Answer:
        d = self.stub.request(method, URL + path, headers=headers or {})
        self.stub.flush()
        response = result(d)
        body = result(self.stub.content(response))
        self.stub.flush()
        raw = {
            k.decode().lower(): [v.decode() for v in vs]
            for k, vs in response.headers.getAllRawHeaders()
        }
        return Answer(response.code, raw, body)

    def get(self, path: str, **kw: Any) -> Answer:
        return self.request("GET", path, **kw)

    def post(self, path: str, token: str | None = None, header: str | None = None) -> Answer:
        headers = {}
        if header is not None:
            headers["Authorization"] = header
        elif token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.request("POST", path, headers=headers)


@pytest.fixture
def tokenFile(tmp_path: Path) -> Path:
    path = tmp_path / "admin.token"
    path.write_text(f"  {TOKEN}\n\n")
    path.chmod(0o600)
    return path


def fleetWith(*names: str, **admin: Any) -> Fleet:
    return Fleet(*(spec(n) for n in names), **admin)


def guarded(tokenFile: Path) -> tuple[Fleet, Any]:
    """
    A started fleet of one connection, C{a}, ESTABLISHED, whose actions
    need the token in C{tokenFile}; and C{a}'s protocol.
    """
    fleet = fleetWith("a", token_file=str(tokenFile)).start()
    return fleet, fleet.accept("a")


def stopUnchanged(fleet: Fleet) -> None:
    """
    Check that the refused actions left C{a} ESTABLISHED, and stop.
    """
    assert fleet.state("a") == "ESTABLISHED"
    fleet.stop()


# Health, readiness, metrics -------------------------------------------------


def test_healthz() -> None:
    fleet = fleetWith("a")
    answer = Client(fleet).get("/healthz")
    assert answer.code == 200
    assert answer.json() == {"status": "ok"}
    assert answer.header("cache-control") == "no-store"


def test_headAnswersWithoutABody() -> None:
    answer = Client(fleetWith("a")).request("HEAD", "/healthz")
    assert answer.code == 200 and answer.body == b""


def test_metrics() -> None:
    fleet = fleetWith("a", "b").start()
    fleet.refuse("a")
    answer = Client(fleet).get("/metrics")
    assert answer.code == 200
    assert answer.header("content-type") == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(answer.body.decode())}
    failures = families["netsupervisor_connect_failures"].samples
    assert [(s.labels, s.value) for s in failures] == [
        ({"connection": "a", "reason": "refused"}, 1.0)
    ]
    fleet.stop()


def test_readyzBeforeStart() -> None:
    answer = Client(fleetWith("a", "b")).get("/readyz")
    assert answer.code == 503
    assert answer.json() == {
        "ready": False,
        "reason": "not started",
        "established": 0,
        "total": 2,
        "not_established": ["a", "b"],
    }


def test_readyzFollowsReadyShare() -> None:
    fleet = fleetWith("a", "b", "c", "d", ready_share=0.5).start()
    client = Client(fleet)
    fleet.accept("a")
    answer = client.get("/readyz")
    assert answer.code == 503
    body = answer.json()
    assert body["ready"] is False
    assert body["established"] == 1 and body["total"] == 4
    assert body["not_established"] == ["b", "c", "d"]
    assert "ready_share" in body["reason"]
    fleet.accept("c")
    answer = client.get("/readyz")
    assert answer.code == 200
    assert answer.json() == {
        "ready": True,
        "reason": "",
        "established": 2,
        "total": 4,
        "not_established": ["b", "d"],
    }
    fleet.plugin.drainAtOnce = False
    stopped = fleet.supervisor.stopService()
    answer = client.get("/readyz")
    assert answer.code == 503
    assert answer.json()["reason"] == "draining"
    for protocol in fleet.plugin.built:
        protocol.drains[0].callback(None)
        fleet.lose(protocol)
    assert stopped.called
    assert client.get("/readyz").code == 503
    assert fleet.reactor.getDelayedCalls() == []


def test_readyzWithNoShareNeedsOnlyAStart() -> None:
    fleet = fleetWith("a").start()
    answer = Client(fleet).get("/readyz")
    assert answer.code == 200
    assert answer.json()["not_established"] == ["a"]
    fleet.stop()


# Connections ----------------------------------------------------------------

SUMMARY_KEYS = {
    "name",
    "endpoint",
    "endpoints",
    "protocol",
    "state",
    "since",
    "attempts",
    "consecutive_failures",
    "last_error",
    "rtt_seconds",
    "backoff_delay_seconds",
    "held",
    "breaker",
    "lifetime_left",
    "labels",
    "queue_depth",
    "operations_in_flight",
}


def test_connectionsList() -> None:
    fleet = Fleet(
        spec("a", "cache", endpoint="tcp:host=10.0.0.1:port=6379"),
        spec("b", endpoint="tcp:host=10.0.0.2:port=4222"),
    ).start()
    client = Client(fleet)
    pa = fleet.accept("a")
    fleet.refuse("b")
    while not pa.pings:
        fleet.reactor.advance(0.01)
    fleet.reactor.advance(0.02)
    pa.answer()
    answer = client.get("/connections")
    assert answer.code == 200
    body = answer.json()
    assert [c["name"] for c in body] == ["a", "b"]
    for c in body:
        assert set(c) == SUMMARY_KEYS
    a, b = body
    assert a["endpoint"] == "tcp:host=10.0.0.1:port=6379"
    assert a["endpoints"] == ["tcp:host=10.0.0.1:port=6379"]
    assert a["protocol"] == "scripted"
    assert a["state"] == "ESTABLISHED"
    assert a["since"] == 0.0
    assert a["attempts"] == 1
    assert a["consecutive_failures"] == 0
    assert a["last_error"] is None
    assert a["rtt_seconds"] == pytest.approx(0.02)
    assert a["backoff_delay_seconds"] == 0.0
    assert a["held"] is None
    assert a["breaker"] == "closed"
    assert a["labels"] == {"group": "cache"}
    # b was refused at 0, retried at 1 and is connecting since.
    assert b["state"] == "CONNECTING"
    assert b["since"] == pytest.approx(1.0)
    assert b["attempts"] == 2
    assert b["consecutive_failures"] == 1
    assert b["last_error"].startswith("refused: ")
    assert b["rtt_seconds"] is None
    assert b["held"] is None
    assert b["breaker"] == "closed"
    assert b["labels"] == {}
    assert client.get("/connections/").json() == body
    fleet.stop()


def test_oneConnectionWithItsTransitions() -> None:
    fleet = fleetWith("a", "b").start()
    client = Client(fleet)
    fleet.refuse("a")
    fleet.advance(1.0)
    pa = fleet.accept("a")
    fleet.lose(pa)
    answer = client.get("/connections/a")
    assert answer.code == 200
    body = answer.json()
    assert set(body) == SUMMARY_KEYS | {"endpoint_attempts", "transitions"}
    assert body["name"] == "a" and body["state"] == "IDLE"
    assert body["endpoint_attempts"] == [
        {"endpoint": body["endpoint"], "attempts": 2, "failures": 1}
    ]
    assert body["transitions"] == [
        {"time": 0.0, "from": "IDLE", "to": "CONNECTING", "reason": "start"},
        {"time": 0.0, "from": "CONNECTING", "to": "IDLE", "reason": "refused"},
        {"time": 1.0, "from": "IDLE", "to": "CONNECTING", "reason": "retry"},
        {"time": 1.0, "from": "CONNECTING", "to": "ESTABLISHED", "reason": "ready"},
        {"time": 1.0, "from": "ESTABLISHED", "to": "IDLE", "reason": "lost"},
    ]
    assert client.get("/connections/a/").json() == body
    fleet.stop()


def test_heldAndBreaker() -> None:
    """
    C{held} says what keeps an IDLE connection from its next attempt, and
    C{breaker} the state of its target's circuit breaker (null without one);
    the histories show the breaker's probe.
    """
    shared = "tcp:host=10.0.0.9:port=6379:password=hunter2"
    once = BreakerSpec(failures=1, probe_interval=0.5, probe_max=0.5)
    fleet = Fleet(
        spec("a1", endpoint=shared, breaker=once),
        spec("a2", endpoint=shared, breaker=once),
        spec("off", breaker=BreakerSpec(scope="off")),
        spec("flappy", flap=FlapSpec(max=1, within=60.0, hold=30.0)),
    ).start()
    client = Client(fleet)

    def shown(*fields: str) -> dict[str, tuple[Any, ...]]:
        return {c["name"]: tuple(c[f] for f in fields) for c in client.get("/connections").json()}

    assert shown("state", "held", "breaker") == {
        "a1": ("CONNECTING", None, "closed"),
        "a2": ("CONNECTING", None, "closed"),
        "off": ("CONNECTING", None, None),
        "flappy": ("CONNECTING", None, "closed"),
    }
    # One failure opens the breaker that a1 and a2 share.
    fleet.refuse("a1")
    fleet.refuse("a2")
    fleet.refuse("off")
    fleet.lose(fleet.accept("flappy"))
    assert shown("state", "held", "breaker") == {
        "a1": ("IDLE", "backoff", "open"),
        "a2": ("IDLE", "backoff", "open"),
        "off": ("IDLE", "backoff", None),
        "flappy": ("IDLE", "backoff", "closed"),
    }
    # Their retries are due together: one is the probe, the other is held.
    fleet.reactor.advance(1.0)
    states = shown("state", "held", "breaker")
    assert sorted([states["a1"], states["a2"]]) == [
        ("CONNECTING", None, "open"),
        ("IDLE", "breaker", "open"),
    ]
    probing = "a1" if states["a1"][0] == "CONNECTING" else "a2"
    held = "a2" if probing == "a1" else "a1"
    assert client.get(f"/connections/{held}").json()["held"] == "breaker"
    # flappy's second loss within a minute: the flap guard holds it.
    fleet.lose(fleet.accept("flappy"))
    assert shown("held")["flappy"] == ("flapping",)
    # The probe succeeds: the breaker half-opens and releases the other.
    fleet.accept(probing)
    fleet.reactor.advance(0.01)  # the shared scheduler's resolution
    assert shown("state", "breaker")[held] == ("CONNECTING", "half_open")
    reasons = [t["reason"] for t in client.get(f"/connections/{held}").json()["transitions"]]
    assert reasons[-1] == "release"
    fleet.accept(held)
    fleet.advance(1.0)
    assert shown("state", "held", "breaker")[held] == ("ESTABLISHED", None, "closed")
    fleet.stop()


def test_heldByTheConnectBudget() -> None:
    fleet = Fleet(
        spec("a"), spec("b"), recovery=SupervisorSpec(connect_rate=1.0, connect_burst=1)
    ).start()
    client = Client(fleet)
    body = {c["name"]: (c["state"], c["held"]) for c in client.get("/connections").json()}
    assert body == {"a": ("CONNECTING", None), "b": ("IDLE", "budget")}
    fleet.reactor.advance(1.0)
    assert client.get("/connections/b").json()["state"] == "CONNECTING"
    fleet.stop()


def test_breakers() -> None:
    """
    C{GET /breakers}: how many breakers in each state, and those not
    closed, by target (secrets redacted), with their members and how many
    of them are held.
    """
    shared = "tcp:host=10.0.0.9:port=6379:password=hunter2"
    once = BreakerSpec(failures=1)
    fleet = Fleet(
        spec("a1", endpoint=shared, breaker=once),
        spec("a2", endpoint=shared, breaker=once),
        spec("a3", endpoint=shared, breaker=once),
        spec("own", breaker=BreakerSpec(scope="connection", failures=1)),
        spec("fine"),
        spec("off", breaker=BreakerSpec(scope="off")),
    ).start()
    client = Client(fleet)
    answer = client.get("/breakers")
    assert answer.code == 200
    assert answer.json() == {"closed": 3, "open": 0, "half_open": 0, "not_closed": []}
    for name in ("a1", "a2", "a3", "own"):
        fleet.refuse(name)
    fleet.reactor.advance(1.0)  # the retries are due: one probe, the others held
    assert client.get("/breakers").json() == {
        "closed": 1,
        "open": 2,
        "half_open": 0,
        "not_closed": [
            {"target": "own", "scope": "connection", "state": "open", "members": 1, "held": 0},
            {
                "target": "tcp:host=10.0.0.9:port=6379:password=***",
                "scope": "endpoint",
                "state": "open",
                "members": 3,
                "held": 2,
            },
        ],
    }
    assert b"hunter2" not in client.get("/breakers").body
    assert client.get("/breakers/").body == client.get("/breakers").body
    assert client.get("/breakers/x").code == 404
    assert client.request("POST", "/breakers").code == 405
    fleet.stop()
    assert client.get("/breakers").json()["not_closed"] == []


def test_transitionsAreTheLastFiftyOldestFirst() -> None:
    fleet = fleetWith("a").start()
    client = Client(fleet)
    for _ in range(30):
        fleet.lose(fleet.accept("a"))
        while fleet.state("a") != "CONNECTING":
            fleet.reactor.advance(1.0)
    transitions = client.get("/connections/a").json()["transitions"]
    assert len(transitions) == 50
    times = [t["time"] for t in transitions]
    assert times == sorted(times)
    assert transitions[-1]["to"] == "CONNECTING"
    fleet.stop()


def test_unknownConnectionIs404() -> None:
    client = Client(fleetWith("a"))
    answer = client.get("/connections/nope")
    assert answer.code == 404
    assert answer.json() == {"error": "no connection 'nope'"}
    answer = client.get("/connections/a/nothing-here")
    assert answer.code == 404
    assert set(answer.json()) == {"error"}
    # A name that could not be a connection's is not echoed.
    answer = client.get("/connections/%3Cscript%3E")
    assert answer.code == 404
    assert "script" not in answer.json()["error"]


def test_unknownPathIs404() -> None:
    client = Client(fleetWith("a"))
    for path in ("/nope", "/metrics/x", "/healthz/x/y"):
        answer = client.get(path)
        assert answer.code == 404, path
        assert answer.json() == {"error": "not found"}


def test_index() -> None:
    answer = Client(fleetWith("a")).get("/")
    assert answer.code == 200
    assert "/metrics" in answer.json()["paths"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/healthz", "GET, HEAD"),
        ("PUT", "/metrics", "GET, HEAD"),
        ("DELETE", "/connections", "GET, HEAD"),
        ("POST", "/connections/a", "GET, HEAD"),
        ("POST", "/readyz", "GET, HEAD"),
        ("GET", "/connections/a/reconnect", "POST"),
        ("GET", "/connections/a/drain", "POST"),
        ("PUT", "/connections/nope/drain", "POST"),
    ],
)
def test_wrongMethodIs405(method: str, path: str, allow: str) -> None:
    answer = Client(fleetWith("a")).request(method, path)
    assert answer.code == 405
    assert answer.header("allow") == allow
    assert "error" in answer.json()


# Secrets --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("tcp:host=db:port=5432", "tcp:host=db:port=5432"),
        (
            "tls:host=h:port=443:privateKey=k.pem:passphrase=hunter2",
            "tls:host=h:port=443:privateKey=k.pem:passphrase=***",
        ),
        ("tls:host=h:port=1:PASSWORD=a\\:b:x=1", "tls:host=h:port=1:PASSWORD=***:x=1"),
        (
            "tcp:host=h:port=1:api_token=abc:secretKey=def",
            "tcp:host=h:port=1:api_token=***:secretKey=***",
        ),
        ("unix:path=/run/tokens/x.sock", "unix:path=/run/tokens/x.sock"),
        ("tcp:host=tokenserver:port=1", "tcp:host=tokenserver:port=1"),
        ("tls:host=h:port=1:passphrase=a=b\\:c", "tls:host=h:port=1:passphrase=***"),
        (
            "handshake: rejected password=hunter2 for user",
            "handshake: rejected password=*** for user",
        ),
        ("", ""),
    ],
)
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_noSecretInConnections() -> None:
    endpoint = "tls:host=10.0.0.1:port=6380:passphrase=hunter2:token=abc123"
    fleet = Fleet(spec("a", endpoint=endpoint)).start()
    fleet.refuse("a", ConnectionRefusedError("password=hunter2"))
    client = Client(fleet)
    for path in ("/connections", "/connections/a", "/metrics"):
        body = client.get(path).body
        assert b"hunter2" not in body and b"abc123" not in body, path
    detail = client.get("/connections/a").json()
    assert detail["endpoint"] == "tls:host=10.0.0.1:port=6380:passphrase=***:token=***"
    assert "password=***" in detail["last_error"]
    fleet.stop()


# Actions --------------------------------------------------------------------


def test_actionsAreDisabledWithoutATokenFile() -> None:
    fleet = fleetWith("a").start()
    fleet.accept("a")
    for action in ("reconnect", "drain"):
        answer = Client(fleet).post(f"/connections/a/{action}", token=TOKEN)
        assert answer.code == 403
        assert answer.json() == {"error": "admin actions are disabled: admin.token_file is not set"}
    stopUnchanged(fleet)


def test_missingOrMalformedAuthorizationIs401(tokenFile: Path) -> None:
    fleet, _ = guarded(tokenFile)
    client = Client(fleet)
    for header in (None, "Basic dXNlcjpwYXNz", "Bearer", "Bearer ", f"Bearer {TOKEN} extra", TOKEN):
        answer = client.post("/connections/a/reconnect", header=header)
        assert answer.code == 401, header
        challenge = answer.header("www-authenticate")
        assert challenge is not None and challenge.startswith("Bearer"), header
        assert set(answer.json()) == {"error"}
    stopUnchanged(fleet)


def test_wrongTokenIs403(tokenFile: Path) -> None:
    fleet, _ = guarded(tokenFile)
    client = Client(fleet)
    for token in ("wrong", TOKEN + "x", TOKEN[:-1]):
        answer = client.post("/connections/a/drain", token=token)
        assert answer.code == 403
        assert answer.json() == {"error": "invalid bearer token"}
        assert TOKEN.encode() not in answer.body
    stopUnchanged(fleet)


def test_reconnectWithTheToken(tokenFile: Path) -> None:
    fleet, protocol = guarded(tokenFile)
    client = Client(fleet)
    answer = client.post("/connections/a/reconnect", header=f"bearer  {TOKEN}")
    assert answer.code == 202
    assert answer.json() == {"name": "a", "action": "reconnect", "state": "CLOSING"}
    connection = fleet.supervisor.connection("a")
    assert connection is not None
    assert connection.history[-1].reason == "rotation"
    fleet.lose(protocol)
    fleet.reactor.advance(0)
    assert fleet.state("a") == "CONNECTING"
    fleet.stop()


def test_reconnectOfAnIdleConnectionRetriesNow(tokenFile: Path) -> None:
    fleet = fleetWith("a", token_file=str(tokenFile)).start()
    fleet.refuse("a")
    answer = Client(fleet).post("/connections/a/reconnect", token=TOKEN)
    assert answer.code == 202
    assert answer.json()["state"] == "CONNECTING"
    fleet.stop()


def test_drainWithTheToken(tokenFile: Path) -> None:
    fleet = fleetWith("a", "b", token_file=str(tokenFile)).start()
    pa = fleet.accept("a")
    client = Client(fleet)
    answer = client.post("/connections/a/drain", token=TOKEN)
    assert answer.code == 202
    assert answer.json() == {"name": "a", "action": "drain", "state": "CLOSING"}
    fleet.lose(pa)
    assert fleet.state("a") == "CLOSED"
    connection = fleet.supervisor.connection("a")
    assert connection is not None
    assert [(t.from_, t.to, t.reason) for t in connection.history[-2:]] == [
        ("ESTABLISHED", "CLOSING", "drain"),
        ("CLOSING", "CLOSED", "closed"),
    ]
    # Draining again is harmless; a closed connection does not reconnect.
    assert client.post("/connections/a/drain", token=TOKEN).code == 202
    answer = client.post("/connections/a/reconnect", token=TOKEN)
    assert answer.code == 409
    assert set(answer.json()) == {"error"}
    # A connection being attempted is drained at once.
    answer = client.post("/connections/b/drain", token=TOKEN)
    assert answer.json() == {"name": "b", "action": "drain", "state": "CLOSED"}
    fleet.stop()


def test_unknownNameWithTheTokenIs404(tokenFile: Path) -> None:
    client = Client(fleetWith("a", token_file=str(tokenFile)))
    for action in ("reconnect", "drain"):
        answer = client.post(f"/connections/nope/{action}", token=TOKEN)
        assert answer.code == 404
        assert answer.json() == {"error": "no connection 'nope'"}
    # Without the token, the caller does not learn whether the name exists.
    assert client.post("/connections/nope/drain").code == 401
    assert client.post("/connections/nope/drain", token="wrong").code == 403


def test_theTokenIsReadAtEveryRequest(tokenFile: Path) -> None:
    fleet = fleetWith("a", token_file=str(tokenFile)).start()
    client = Client(fleet)
    fleet.refuse("a")
    assert client.post("/connections/a/reconnect", token=TOKEN).code == 202
    tokenFile.write_text("rotated\n")
    assert client.post("/connections/a/reconnect", token=TOKEN).code == 403
    tokenFile.write_text("\n")
    answer = client.post("/connections/a/reconnect", token="")
    assert answer.code == 403
    assert answer.json() == {"error": "admin actions are disabled: admin.token_file is empty"}
    fleet.stop()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620])
def test_aTokenFileOthersMayUseIs500(
    tokenFile: Path, mode: int, noLoggedErrors: list[dict[str, object]]
) -> None:
    fleet, _ = guarded(tokenFile)
    tokenFile.chmod(mode)
    with loggedMessages() as warnings:
        answer = Client(fleet).post("/connections/a/drain", token=TOKEN)
    assert answer.code == 500
    assert answer.json() == {
        "error": "admin.token_file may be read or written by others than its owner"
    }
    assert fleet.state("a") == "ESTABLISHED"
    assert any(f"{tokenFile}, which is" in w and "chmod 600" in w for w in warnings)
    assert not any(TOKEN in w for w in warnings)
    fleet.stop()


def test_anUnreadableTokenFileIs500(tmp_path: Path) -> None:
    missing = tmp_path / "missing.token"
    client = Client(fleetWith("a", token_file=str(missing)))
    answer = client.post("/connections/a/drain", token=TOKEN)
    assert answer.code == 500
    assert answer.json() == {"error": "cannot read admin.token_file"}


def test_aBugAnswersJSON500AndIsLogged(noLoggedErrors: list[dict[str, object]]) -> None:
    fleet = fleetWith("a")

    def broken() -> None:
        raise RuntimeError("boom")

    fleet.supervisor.readiness = broken  # type: ignore[assignment,method-assign]
    answer = Client(fleet).get("/readyz")
    assert answer.code == 500
    assert answer.json() == {"error": "internal error"}
    assert b"boom" not in answer.body
    assert len(noLoggedErrors) == 1
    noLoggedErrors.clear()


# The site and the service ---------------------------------------------------


def test_adminSite() -> None:
    fleet = fleetWith("a")
    site = adminSite(fleet.supervisor, fleet.metrics, fleet.reactor)
    assert isinstance(site, Site)
    assert isinstance(site.resource, AdminRoot)
    assert not site.displayTracebacks


@pytest.mark.parametrize(
    ("listen", "port", "interface"),
    [
        ("tcp:9100:interface=127.0.0.1", 9100, "127.0.0.1"),
        ("9101", 9101, "127.0.0.1"),
        ("tcp:port=9102:interface=\\:\\:1", 9102, "::1"),
    ],
)
def test_adminServiceListensWhileRunning(listen: str, port: int, interface: str) -> None:
    reactor = MemoryReactorClock()
    fleet = fleetWith("a")
    service = adminService(fleet.supervisor, fleet.metrics, listen, reactor)
    assert reactor.tcpServers == []
    service.startService()
    [(boundPort, factory, _, boundInterface)] = reactor.tcpServers
    assert (boundPort, boundInterface) == (port, interface)
    assert isinstance(factory, Site)
    service.stopService()


def test_adminIsPartOfTheSupervisor() -> None:
    reactor = MemoryReactorClock()
    plugin = ScriptedPlugin()
    supervisor = Supervisor(
        config(spec("a")),
        reactor,
        plugins=lambda name: plugin,
        endpoints=lambda s: TCP4ClientEndpoint(reactor, "127.0.0.1", 1),
    )
    service = adminService(supervisor, SupervisorMetrics(supervisor), "tcp:0", reactor)
    service.setServiceParent(supervisor)
    supervisor.startService()
    assert len(reactor.tcpServers) == 1
    d = supervisor.stopService()
    assert d.called
    assert reactor.getDelayedCalls() == []


def test_noGlobalReactorAtImport() -> None:
    code = (
        "import sys\n"
        "import supervisor.admin, supervisor.metrics, supervisor.admin.resources\n"
        "assert 'twisted.internet.reactor' not in sys.modules, 'the reactor was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_lifetimeLeftCountsDownWhileEstablished() -> None:
    fleet = Fleet(spec("a", max_lifetime=100.0, lifetime_jitter=0.0), spec("b")).start()
    fleet.accept("a")
    fleet.accept("b")
    client = Client(fleet)
    fleet.reactor.advance(30)
    shown = {c["name"]: c["lifetime_left"] for c in client.get("/connections").json()}
    assert shown == {"a": 70.0, "b": None}
    assert client.get("/connections/a").json()["lifetime_left"] == 70.0
    fleet.stop()
