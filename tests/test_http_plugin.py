# mypy: disallow-untyped-calls=False, disallow-untyped-decorators=False
"""
The bundled C{http} plugin, driven through the real machine with the plugin
test kit: the peer is a scripted HTTP/1.1 server or a real twisted.web
C{Site} over in-memory transports, on a fake clock.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from plugins.http import MAX_HEAD_LENGTH, Options
from supervisor import HeartbeatSpec, findPlugin
from supervisor.testing import FakePeer, PluginHarness, scenarios

HEARTBEAT = HeartbeatSpec(interval=1.0, timeout=0.5, misses=2)

PHRASES = {200: b"OK", 204: b"No Content", 401: b"Unauthorized", 403: b"Forbidden"}


def response(status: int, body: bytes = b"ok", close: bool = False) -> bytes:
    phrase = PHRASES.get(status, b"Whatever")
    head = b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n" % (status, phrase, len(body))
    if close:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + body


def server(*statuses: int) -> Callable[[bytes], bytes]:
    """
    A responder answering each request with the next status (the last one repeats).
    """
    script = list(statuses)

    def respond(request: bytes) -> bytes:
        assert request.endswith(b"\r\n\r\n"), request
        status = script.pop(0) if len(script) > 1 else script[0]
        return response(status)

    return respond


def harness(**options: object) -> PluginHarness:
    return PluginHarness(findPlugin("http"), options, heartbeat=HEARTBEAT, drain_timeout=2.0)


def requestLines(peer: FakePeer) -> list[bytes]:
    return [w.split(b"\r\n", 1)[0] for w in peer.writes]


def test_theHttpPluginIsFoundByName() -> None:
    assert findPlugin("http").name == "http"


def test_aHealthyServer() -> None:
    """
    The first request is the handshake; each heartbeat is another GET on
    the same connection, answered with an RTT.
    """
    peer = scenarios.peerAnswers(harness(), server(200), pings=3)
    assert requestLines(peer)[:4] == [b"GET / HTTP/1.1"] * 4
    first = peer.writes[0].lower()
    assert b"host: 127.0.0.1:4321\r\n" in first
    assert b"user-agent: netsupervisor\r\n" in first
    assert b"connection: close" not in first


def test_methodPathHostAndAuthorization(tmp_path: Path) -> None:
    secret = tmp_path / "auth"
    secret.write_text("Bearer s3cret\n")
    h = harness(
        method="head", path="/healthz?deep=1", host="api.example", authorization_file=str(secret)
    )
    peer = scenarios.establish(h, lambda _: b"HTTP/1.1 204 No Content\r\n\r\n")
    request = peer.writes[0].lower()
    assert request.startswith(b"head /healthz?deep=1 http/1.1\r\n")
    assert b"host: api.example\r\n" in request
    assert b"authorization: bearer s3cret\r\n" in request
    scenarios.finish(h)


def test_readyAtConnectWithoutACheck() -> None:
    h = harness(check_on_connect=False)
    h.start()
    peer = h.accept(server(200))
    h.assertState("ESTABLISHED", "ready")
    assert peer.writes == []
    h.advance(1.0)
    assert requestLines(peer) == [b"GET / HTTP/1.1"]
    assert h.rtt == 0.0
    scenarios.finish(h)


def test_5xxOnAHeartbeatDropsTheConnection() -> None:
    h = harness()
    peer = scenarios.establish(h, server(200, 503))
    h.runUntil(lambda: h.state != "ESTABLISHED", limit=2.0)
    h.assertState("IDLE", "lost")
    assert h.lastError == "lost: HTTP status 503"
    assert peer.closedBy == "abort"
    h.advance(1.0)
    h.assertState("CONNECTING", "retry")
    h.accept(server(200))
    h.assertState("ESTABLISHED", "ready")
    scenarios.finish(h)


def test_5xxDuringTheHandshakeIsTransient() -> None:
    h = harness()
    h.start()
    h.accept(server(503))
    h.assertTransitions(("IDLE", "CONNECTING", "start"), ("CONNECTING", "IDLE", "handshake"))
    assert h.lastError == "handshake: HTTP status 503"
    scenarios.finish(h)


def test_401And403ArePermanent() -> None:
    for status in (401, 403):
        h = harness()
        h.start()
        h.accept(server(status))
        h.assertTransitions(("IDLE", "CONNECTING", "start"), ("CONNECTING", "CLOSED", "handshake"))
        assert h.lastError == f"handshake: HTTP status {status}"
        h.advance(3600)
        assert h.connection.attempts == 1
        h.assertQuiet()


def test_401OnAHeartbeatClosesAtTheNextAttempt() -> None:
    """
    An established connection can only be dropped (and retried); the retry's
    own check then meets the 401 during its handshake and closes for good.
    """
    h = harness()
    scenarios.establish(h, server(200, 401))
    h.runUntil(lambda: h.state != "ESTABLISHED", limit=2.0)
    h.assertState("IDLE", "lost")
    h.advance(1.0)
    h.accept(server(401))
    h.assertState("CLOSED", "handshake")
    h.assertQuiet()


def test_permanentStatusesAreConfigurable() -> None:
    h = harness(permanent_status="")
    h.start()
    h.accept(server(401))
    h.assertState("IDLE", "handshake")
    scenarios.finish(h)
    h = harness(expected_status="200-299,404", permanent_status="500")
    h.start()
    h.accept(server(404))
    h.assertState("ESTABLISHED", "ready")
    scenarios.finish(h)
    h = harness(permanent_status="500")
    h.start()
    h.accept(server(500))
    h.assertState("CLOSED", "handshake")


@pytest.mark.parametrize("delay", [0.3, 0.7], ids=["under-the-timeout", "over-the-timeout"])
def test_aSlowAnswerIsMeasuredUnderTheTimeoutAndAMissOverIt(delay: float) -> None:
    scenarios.slowPong(harness(), server(200), delay=delay)


def test_aLateAnswerDoesNotCountButTheNextRequestFollows() -> None:
    """
    HTTP/1.1 answers in order: a ping due while a request is in flight waits
    for it, and is sent (and can be answered) once the slow answer is in.
    """
    h = PluginHarness(
        findPlugin("http"), heartbeat=HeartbeatSpec(interval=1.0, timeout=0.5, misses=3)
    )
    peer = scenarios.establish(h, server(200))
    peer.respond(server(200), delay=0.7)
    h.runUntil(lambda: None in h.heartbeats, limit=2.0)
    missedAt = h.now()
    assert len(peer.writes) == 2, "the second ping waits for the first answer"
    h.advance(0.3)  # the late answer is in: the queued request goes out
    assert len(peer.writes) == 3
    peer.respond(server(200))
    h.advance(0.8)
    assert h.heartbeats[-1] is not None and h.heartbeats[-1] > 0.2
    assert h.now() - missedAt < 1.2
    h.assertState("ESTABLISHED")
    scenarios.finish(h)


def test_aSilentServerIsDroppedForHeartbeat() -> None:
    scenarios.peerSilent(harness(), server(200))


def test_aSilentServerTimesTheHandshakeOut() -> None:
    scenarios.peerSilentInHandshake(harness())


def test_theServerClosesMidHandshake() -> None:
    scenarios.peerClosesMidHandshake(harness())


def test_garbageAnswers() -> None:
    scenarios.garbage(harness(), b"SSH-2.0-OpenSSH\r\n\r\n", duringHandshake=True)
    h = harness()
    peer = scenarios.establish(h, server(200))
    peer.silence()
    h.runUntil(lambda: len(peer.writes) == 2, limit=2.0)
    peer.send(b"\x00\x01 not http\r\n\r\n")
    h.assertState("IDLE", "lost")
    assert "HTTP request failed" in (h.lastError or "")
    scenarios.finish(h)


def test_aBodyOverTheLimitIsRejected() -> None:
    h = harness(max_body_length=10)
    h.start()
    h.accept(lambda _: response(200, b"x" * 11))
    h.assertState("IDLE", "handshake")
    assert "longer than max_body_length 10" in (h.lastError or "")
    scenarios.finish(h)


def test_connectionCloseAfterAnAnswerDropsTheConnection() -> None:
    """
    The supervised connection is the HTTP connection: a server that closes
    it after answering ends it (documented: use keep-alive servers).
    """
    h = harness()
    h.start()
    peer = h.accept(lambda _: response(200, close=True))
    assert peer.closedBy == "plugin"
    h.assertTransitions(
        ("IDLE", "CONNECTING", "start"),
        ("CONNECTING", "ESTABLISHED", "ready"),
        ("ESTABLISHED", "IDLE", "lost"),
    )
    scenarios.finish(h)


def test_drainWaitsForTheRequestInFlight() -> None:
    h = harness()
    peer = scenarios.establish(h, server(200))
    peer.silence()
    h.runUntil(lambda: len(peer.writes) == 2, limit=2.0)
    stopped = h.stop()
    h.assertState("CLOSING")
    assert not peer.transport.disconnecting
    peer.send(response(200))
    h.assertState("CLOSED", "closed")
    assert peer.closedBy == "plugin"
    assert stopped.called
    h.advance(5)
    h.assertQuiet()


class Health(Resource):
    """
    A twisted.web resource answering with a status the test sets.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.status = 200
        self.requests = 0

    def render_GET(self, request: Request) -> bytes:
        self.requests += 1
        request.setResponseCode(self.status)
        return b"status"


def test_servedByARealTwistedWebSite() -> None:
    h = harness()
    health = Health()
    site = Site(health, timeout=None, reactor=h.reactor)
    h.start()
    peer = h.accept()
    peer.serve(site.buildProtocol(None))
    h.assertState("ESTABLISHED", "ready")
    h.advance(3.0)
    assert health.requests >= 3
    assert h.rtt == 0.0
    health.status = 503
    h.runUntil(lambda: h.state != "ESTABLISHED", limit=2.0)
    h.assertState("IDLE", "lost")
    h.advance(1.0)
    health.status = 401
    h.accept().serve(site.buildProtocol(None))
    h.assertState("CLOSED", "handshake")
    h.advance(5)
    h.assertQuiet()


def test_optionsParsing() -> None:
    parsed = Options.fromMapping({"expected_status": "200, 204, 300-302", "method": "post"})
    assert parsed.expected_status == {200, 204, 300, 301, 302}
    assert parsed.method == b"POST"
    assert Options.fromMapping({"expected_status": 204}).expected_status == {204}
    assert Options.fromMapping({"permanent_status": ""}).permanent_status == frozenset()
    assert Options.fromMapping({"host": "b\u00fccher.example"}).host == b"xn--bcher-kva.example"
    assert findPlugin("http").parseOptions({}) == Options()  # type: ignore[attr-defined]


def test_theAuthorizationFileIsReadAtEachAttempt(tmp_path: Path) -> None:
    """
    Parsing the options reads no file; an unreadable one fails the attempt
    (transient, nothing sent), and the next attempt reads it again.
    """
    secret = tmp_path / "auth"
    h = harness(authorization_file=str(secret))
    h.start()
    peer = h.accept()
    assert peer.writes == []
    h.assertState("IDLE", "handshake")
    assert f"cannot read authorization_file {secret}" in (h.lastError or "")
    secret.write_text("Bearer s3cret\n")
    h.advance(1.0)
    peer = h.accept(server(200))
    h.assertState("ESTABLISHED", "ready")
    assert b"Authorization: Bearer s3cret\r\n" in peer.writes[0]
    scenarios.finish(h)


def test_anEndlessResponseHeadIsRefused() -> None:
    """
    A server that sends headers for ever is rejected once the head passes
    L{MAX_HEAD_LENGTH}: the headers are not all kept.
    """
    h = harness()
    h.start()
    peer = h.accept()
    peer.send(b"HTTP/1.1 200 OK\r\n")
    for _ in range(MAX_HEAD_LENGTH // 1000 + 1):
        peer.send(b"X-Filler: " + b"x" * 988 + b"\r\n")
    h.assertState("IDLE", "handshake")
    assert h.lastError == f"handshake: response head longer than {MAX_HEAD_LENGTH} bytes"
    assert peer.closedBy == "abort"
    scenarios.finish(h)
