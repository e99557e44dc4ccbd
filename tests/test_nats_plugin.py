# mypy: disallow-untyped-calls=False, disallow-untyped-decorators=False
"""
The bundled C{nats} plugin, driven through the real machine with the plugin
test kit (L{supervisor.testing}) on a fake clock and in-memory transports:
the INFO/CONNECT/PING handshake, server pings, the FIFO of ping tokens, the
error mapping, the flush on drain, and secrets that never show.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plugins.nats import MAX_INFO_DEPTH, Options, nestedWithin
from supervisor import BackoffSpec, HeartbeatSpec, findPlugin
from supervisor.testing import FakePeer, PluginHarness, Step, scenarios

SECRET = "n4ts-s3cr3t"
INFO = b'INFO {"server_id":"X","version":"2.9.10","auth_required":true,"max_payload":1048576} \r\n'

HEARTBEAT = HeartbeatSpec(interval=1.0, timeout=0.5, misses=2)


def harness(greeting: bytes = b"", /, **options: object) -> PluginHarness:
    """
    One nats connection named C{bus-1}; the test plays the server (which
    speaks first: pass C{INFO} as C{greeting} to have every accepted peer send it).
    """
    return PluginHarness(
        findPlugin("nats"),
        options,
        heartbeat=HEARTBEAT,
        backoff=BackoffSpec(initial=60.0),
        drain_timeout=2.0,
        name="bus-1",
        greeting=greeting,
    )


def start(**options: object) -> tuple[PluginHarness, FakePeer]:
    """
    Start a connection and accept its attempt with a silent peer.
    """
    h = harness(**options)
    h.start()
    return h, h.accept()


def last(h: PluginHarness) -> Step:
    return h.transitions[-1]


def connect(peer: FakePeer) -> dict[str, object]:
    """
    The CONNECT the plugin sends after INFO (and check the PING that follows).
    """
    peer.send(INFO)
    lines = peer.take().split(b"\r\n")
    assert lines[0].startswith(b"CONNECT ")
    assert lines[1:] == [b"PING", b""]
    options = json.loads(lines[0][len(b"CONNECT ") :])
    assert isinstance(options, dict)
    return options


def establish(h: PluginHarness, peer: FakePeer) -> None:
    connect(peer)
    peer.send(b"PONG\r\n")
    h.assertState("ESTABLISHED", "ready")


def established(**options: object) -> tuple[PluginHarness, FakePeer]:
    h, peer = start(**options)
    establish(h, peer)
    return h, peer


def answer(data: bytes) -> bytes | None:
    """
    A well-behaved nats server (after its INFO): C{PONG} to every C{PING}.
    """
    pings = [line for line in data.split(b"\r\n") if line == b"PING"]
    return b"PONG\r\n" * len(pings) or None


def secretFile(tmp_path: Path, name: str, text: str = SECRET + "\n") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# Handshake.


def test_nothingIsSentBeforeInfo() -> None:
    h, peer = start()
    assert peer.take() == b""
    h.assertState("CONNECTING")
    scenarios.finish(h)


def test_connectIsQuietAndNamed() -> None:
    h, peer = start()
    options = connect(peer)
    assert options["verbose"] is False
    assert options["pedantic"] is False
    assert options["name"] == "bus-1"
    assert "user" not in options and "pass" not in options and "auth_token" not in options
    assert h.state == "CONNECTING", "ready only after the server's PONG"
    peer.send(b"PONG\r\n")
    h.assertState("ESTABLISHED", "ready")
    scenarios.finish(h)


def test_userAndPasswordFromAFile(tmp_path: Path) -> None:
    h, peer = start(user="app", pass_file=secretFile(tmp_path, "pass"), client_name="x")
    options = connect(peer)
    assert (options["user"], options["pass"], options["name"]) == ("app", SECRET, "x")
    scenarios.finish(h)


def test_tokenFromAFile(tmp_path: Path) -> None:
    h, peer = start(token_file=secretFile(tmp_path, "token", SECRET + "\r\n"))
    assert connect(peer)["auth_token"] == SECRET
    scenarios.finish(h)


def test_authorizationViolationIsPermanent(tmp_path: Path) -> None:
    h, peer = start(user="app", pass_file=secretFile(tmp_path, "pass"))
    connect(peer)
    peer.send(b"-ERR 'Authorization Violation'\r\n")
    assert last(h) == ("CONNECTING", "CLOSED", "handshake")
    assert "Authorization Violation" in (h.lastError or "")
    assert peer.closedBy == "abort"
    h.advance(3600)
    assert h.connection.attempts == 1
    h.assertQuiet()


def test_otherErrorsDuringTheHandshakeAreTransient() -> None:
    h, peer = start()
    connect(peer)
    peer.send(b"-ERR 'Authentication Timeout'\r\n")
    assert last(h) == ("CONNECTING", "IDLE", "handshake")
    scenarios.finish(h)


def test_secretsNeverAppearInMessages(tmp_path: Path) -> None:
    h, peer = start(user="app", pass_file=secretFile(tmp_path, "pass"))
    connect(peer)
    peer.send(b"-ERR 'Unknown Protocol Operation " + SECRET.encode() + b"'\r\n")
    error = h.lastError or ""
    assert "Unknown Protocol Operation" in error
    assert SECRET not in error
    assert SECRET not in repr(h.history)
    scenarios.finish(h)
    assert SECRET not in repr(h.history)


def test_anUnreadableSecretFileIsTransient(tmp_path: Path) -> None:
    h, peer = start(user="app", pass_file=str(tmp_path / "missing"))
    peer.send(INFO)
    assert peer.take() == b""
    assert last(h) == ("CONNECTING", "IDLE", "handshake")
    assert "cannot read pass_file " in (h.lastError or "")
    scenarios.finish(h)


def test_aSecretThatIsNotUtf8IsTransient(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(b"\xff\xfe")
    h, peer = start(token_file=str(path))
    peer.send(INFO)
    assert peer.take() == b""
    assert last(h) == ("CONNECTING", "IDLE", "handshake")
    assert "token_file" in (h.lastError or "") and "not UTF-8" in (h.lastError or "")
    scenarios.finish(h)


def test_aServerThatRequiresTlsIsRefusedOnPlainTcp() -> None:
    h, peer = start()
    peer.send(b'INFO {"tls_required":true}\r\n')
    assert last(h) == ("CONNECTING", "CLOSED", "handshake")
    assert "TLS" in (h.lastError or "")
    h.assertQuiet()


@pytest.mark.parametrize("info", [b"INFO nope\r\n", b"INFO [1]\r\n", b"HTTP/1.1 200 OK\r\n"])
def test_aBadGreetingIsTransient(info: bytes) -> None:
    h, peer = start()
    peer.send(info)
    assert last(h) == ("CONNECTING", "IDLE", "handshake")
    scenarios.finish(h)


def test_aBadGreetingScenario() -> None:
    scenarios.garbage(harness(), b"HTTP/1.1 200 OK\r\n", duringHandshake=True)


def test_optionsParsed() -> None:
    assert findPlugin("nats").parseOptions({}) == Options()  # type: ignore[attr-defined]
    assert Options.fromMapping({"client_name": ""}).client_name == ""


@pytest.mark.parametrize(
    "document, depth",
    [
        (b"{}", 1),
        (b'{"a":[1,{"b":"]]]"}]}', 3),
        (b'"\\"[[[["', 0),
        (b"[[[]]]", 3),
        (b"[][][]", 1),
        (b'{"x":"\\\\"}', 1),
        (b"{[{[]}]}", 4),
        (b"[{}]", 2),
    ],
)
def test_nestedWithinMeasuresTheDepthOutsideStrings(document: bytes, depth: int) -> None:
    assert nestedWithin(document, depth)
    assert depth == 0 or not nestedWithin(document, depth - 1)


def test_unbalancedBracketsAreNotWithinAnyDepth() -> None:
    assert not nestedWithin(b"[}", 10)
    assert not nestedWithin(b"[" * 10, 100)


def test_aDeeplyNestedInfoIsRefusedCleanly() -> None:
    """
    An C{INFO [[[...} of a megabyte is refused before the JSON parser sees
    it: a transient failure with one message, no C{RecursionError}.
    """
    h, peer = start()
    peer.send(b"INFO " + b"[" * ((1 << 20) - 100) + b"\r\n")
    assert last(h) == ("CONNECTING", "IDLE", "handshake")
    assert h.lastError == (
        f"handshake: the server's INFO is unbalanced or nested deeper than {MAX_INFO_DEPTH}"
    )
    assert peer.closedBy == "abort"
    scenarios.finish(h)


def test_anOverlongLineIsTransient() -> None:
    h, peer = start(max_line_length=32)
    peer.send(b"INFO " + b"x" * 100 + b"\r\n")
    assert last(h) == ("CONNECTING", "IDLE", "handshake")
    scenarios.finish(h)


def test_aServerSilentAfterAcceptingTimesTheHandshakeOut() -> None:
    scenarios.peerSilentInHandshake(harness())


def test_theServerClosesMidHandshake() -> None:
    """
    After INFO, the plugin writes CONNECT and PING; the server hangs up
    before its PONG.
    """
    peer = scenarios.peerClosesMidHandshake(harness(INFO), afterWrites=2)
    assert peer.writes[0].startswith(b"CONNECT ") and peer.writes[1] == b"PING\r\n"


# Server pings, heartbeat.


def test_aHealthyServer() -> None:
    peer = scenarios.peerAnswers(harness(INFO), answer, pings=3)
    assert peer.writes[0].startswith(b"CONNECT ")
    assert peer.writes[1:5] == [b"PING\r\n"] * 4  # the handshake's, then 3 heartbeats
    assert peer.writes[-1] == b"PING\r\n", "the flush"
    assert peer.closedBy == "plugin"


def test_aSilentServerIsDroppedForHeartbeat() -> None:
    took = scenarios.peerSilent(harness(INFO), answer)
    assert took <= HEARTBEAT.detectionBound + 0.05


@pytest.mark.parametrize("delay", [0.3, 0.6], ids=["under-the-timeout", "over-the-timeout"])
def test_aSlowPongIsMeasuredUnderTheTimeoutAndAMissOverIt(delay: float) -> None:
    scenarios.slowPong(harness(INFO), answer, delay=delay)


def test_serverPingsAreAnsweredAtOnce() -> None:
    h, peer = start()
    peer.send(b"PING\r\n")
    assert peer.take() == b"PONG\r\n"
    establish(h, peer)
    peer.send(b"PING\r\n")
    assert peer.take() == b"PONG\r\n"
    scenarios.finish(h)


def test_serverPingsCountAsLiveness() -> None:
    h, peer = established()
    for _ in range(8):
        h.advance(0.5)
        peer.send(b"PING\r\n")
    assert peer.take() == b"PONG\r\n" * 8, "a server that pings us needs no pings"
    h.assertState("ESTABLISHED")
    scenarios.finish(h)


def test_pingsArePongedFifoWithRtt() -> None:
    h, peer = established()
    assert h.untilWritten(peer) <= HEARTBEAT.interval
    assert peer.take() == b"PING\r\n"
    h.advance(0.25)
    peer.send(b"PONG\r\n")
    assert h.rtt == pytest.approx(0.25, abs=1e-9)  # float sums of clock times
    scenarios.finish(h)


def test_aLatePongIsMatchedToTheMissedPing() -> None:
    h, peer = established()
    assert h.untilWritten(peer) <= HEARTBEAT.interval
    h.advance(0.5)  # miss: the second PING goes out at once
    assert peer.take() == b"PING\r\n" * 2
    peer.send(b"PONG\r\n")  # answers the first: stale
    h.advance(0.5)
    assert last(h) == ("ESTABLISHED", "IDLE", "heartbeat")
    scenarios.finish(h)


def test_aLaterInfoAndPermissionErrorsAreHarmless() -> None:
    h, peer = established()
    peer.send(b'INFO {"connect_urls":["10.0.0.2:4222"]}\r\n')
    peer.send(b"-ERR 'Permissions Violation for Publish to \"x\"'\r\n")
    peer.send(b"PONG\r\n")  # answers nothing: ignored
    h.assertState("ESTABLISHED")
    scenarios.finish(h)


def test_anErrorOnceEstablishedDropsTheConnection() -> None:
    h, peer = established()
    peer.send(b"-ERR 'Stale Connection'\r\n")
    assert last(h) == ("ESTABLISHED", "IDLE", "lost")
    scenarios.finish(h)


def test_unknownLinesAreProtocolErrors() -> None:
    h, peer = established()
    peer.send(b"WHAT\r\n")
    assert last(h) == ("ESTABLISHED", "IDLE", "lost")
    scenarios.finish(h)


def test_unknownLinesScenario() -> None:
    scenarios.garbage(harness(INFO), b"WHAT\r\n", respond=answer)


# Drain.


def test_drainFlushesThenCloses() -> None:
    h, peer = established()
    assert h.untilWritten(peer) <= HEARTBEAT.interval
    assert peer.take() == b"PING\r\n"
    stopped = h.stop()
    assert peer.take() == b"PING\r\n", "the flush"
    peer.send(b"PONG\r\n")  # the heartbeat's
    assert not peer.transport.disconnecting
    assert peer.connected
    peer.send(b"PONG\r\n")  # the flush's
    assert peer.transport.disconnecting
    assert peer.closedBy == "plugin"
    assert stopped.called
    assert last(h) == ("CLOSING", "CLOSED", "closed")
    h.assertQuiet()


def test_drainIsBoundedByTheDrainTimeout() -> None:
    h, peer = established()
    h.stop()
    h.advance(2.0)
    assert peer.closedBy == "abort"
    h.assertState("CLOSED")
    h.assertQuiet()


def test_theNatsPluginIsFoundByName() -> None:
    assert findPlugin("nats").name == "nats"
