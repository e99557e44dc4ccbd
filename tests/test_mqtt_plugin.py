# mypy: disallow-untyped-calls=False, disallow-untyped-decorators=False
"""
The bundled C{mqtt} plugin, driven through the real machine with the plugin
test kit (L{supervisor.testing}) on a fake clock and in-memory transports:
packet framing, CONNECT and the keep-alive, CONNACK return codes, the FIFO
of ping tokens, DISCONNECT on drain, and a password that never shows.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugins._support import ProtocolError
from plugins.mqtt import (
    Incomplete,
    Options,
    connectPacket,
    encodeLength,
    keepAliveFor,
    packet,
    parsePacket,
)
from supervisor import BackoffSpec, HeartbeatSpec, findPlugin
from supervisor.testing import FakePeer, PluginHarness, Step, scenarios

SECRET = "mqtt-s3cr3t"
PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"
DISCONNECT = b"\xe0\x00"

HEARTBEAT = HeartbeatSpec(interval=1.0, timeout=0.5, misses=2)


def connack(code: int) -> bytes:
    return b"\x20\x02\x00" + bytes([code])


def harness(heartbeat: HeartbeatSpec | None = None, /, **options: object) -> PluginHarness:
    """
    One mqtt connection named C{broker-1}; the test plays the broker.
    """
    return PluginHarness(
        findPlugin("mqtt"),
        options,
        heartbeat=heartbeat or HEARTBEAT,
        backoff=BackoffSpec(initial=60.0),
        drain_timeout=2.0,
        name="broker-1",
    )


def start(
    heartbeat: HeartbeatSpec | None = None, /, **options: object
) -> tuple[PluginHarness, FakePeer]:
    """
    Start a connection and accept its attempt with a silent peer.
    """
    h = harness(heartbeat, **options)
    h.start()
    return h, h.accept()


def last(h: PluginHarness) -> Step:
    return h.transitions[-1]


def established(**options: object) -> tuple[PluginHarness, FakePeer]:
    h, peer = start(**options)
    peer.take()
    peer.send(connack(0))
    h.assertState("ESTABLISHED", "ready")
    return h, peer


def broker(data: bytes) -> bytes | None:
    """
    A well-behaved broker: CONNACK 0 to CONNECT, PINGRESP to PINGREQ.
    """
    replies = []
    while data:
        kind, _, _, end = parsePacket(data, 1 << 20)
        if kind == 1:
            replies.append(connack(0))
        elif kind == 12:
            replies.append(PINGRESP)
        data = data[end:]
    return b"".join(replies) or None


def passwordFile(tmp_path: Path) -> str:
    path = tmp_path / "mqtt-password"
    path.write_text(SECRET + "\n")
    return str(path)


# Framing.


@pytest.mark.parametrize(
    "length, encoded",
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (268_435_455, b"\xff\xff\xff\x7f"),
    ],
)
def test_remainingLengthEncoding(length: int, encoded: bytes) -> None:
    assert encodeLength(length) == encoded


def test_remainingLengthOutOfRange() -> None:
    with pytest.raises(ValueError):
        encodeLength(268_435_456)


@given(st.binary(max_size=400), st.integers(0, 15), st.integers(0, 15))
def test_packetsRoundTrip(body: bytes, kind: int, flags: int) -> None:
    data = packet(kind, flags, body)
    assert parsePacket(data + b"\xc0", 1 << 20) == (kind, flags, body, len(data))
    for cut in range(len(data)):
        with pytest.raises(Incomplete):
            parsePacket(data[:cut], 1 << 20)


def test_malformedAndOversizedPackets() -> None:
    with pytest.raises(ProtocolError, match="remaining length longer than 4 bytes"):
        parsePacket(b"\x30\xff\xff\xff\xff\x01", 1 << 30)
    with pytest.raises(ProtocolError, match="packet longer than 100 bytes"):
        parsePacket(packet(3, 0, b"x" * 200), 100)


def test_connectPacketLayout() -> None:
    assert connectPacket(b"id", 25, b"u", b"pw") == (
        b"\x10\x15" + b"\x00\x04MQTT\x04\xc2\x00\x19" + b"\x00\x02id" + b"\x00\x01u" + b"\x00\x02pw"
    )
    assert connectPacket(b"id", 0, None, None) == b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x00\x00\x02id"


# Keep-alive.


@pytest.mark.parametrize(
    "heartbeat, seconds",
    [
        (HeartbeatSpec(), 25),  # 10 * 2 + 5
        (HeartbeatSpec(interval=0.3, timeout=0.3, misses=2), 1),
        (HeartbeatSpec(interval=1.0, timeout=0.5, misses=2), 3),
        (HeartbeatSpec(interval=60.0, timeout=10.0, misses=3), 190),
        (HeartbeatSpec(interval=0.0), 0),
        (HeartbeatSpec(interval=40000.0, timeout=5.0, misses=2), 65535),
    ],
)
def test_keepAliveFromTheHeartbeat(heartbeat: HeartbeatSpec, seconds: int) -> None:
    assert keepAliveFor(heartbeat) == seconds


def test_theConnectionsHeartbeatGivesTheKeepAlive() -> None:
    h, peer = start(HeartbeatSpec(interval=60.0, timeout=10.0, misses=3))
    assert peer.take() == connectPacket(b"broker-1", 190, None, None)
    scenarios.finish(h)


def test_anExplicitKeepAliveWins() -> None:
    h, peer = start(keep_alive=7)
    assert peer.take() == connectPacket(b"broker-1", 7, None, None)
    scenarios.finish(h)


# Handshake.


def test_connectWithClientIdUsernameAndPasswordFromAFile(tmp_path: Path) -> None:
    h, peer = start(client_id="probe-7", username="app", password_file=passwordFile(tmp_path))
    assert peer.take() == connectPacket(b"probe-7", 3, b"app", SECRET.encode())
    h.assertState("CONNECTING")
    peer.send(connack(0))
    h.assertState("ESTABLISHED", "ready")
    scenarios.finish(h)


def test_aConnackSplitAnywhereIsReassembled() -> None:
    h, peer = start()
    peer.take()
    for byte in connack(0):
        peer.send(bytes([byte]))
    h.assertState("ESTABLISHED", "ready")
    scenarios.finish(h)


@pytest.mark.parametrize(
    "code, permanent, meaning",
    [
        (1, True, "unacceptable protocol version"),
        (2, True, "identifier rejected"),
        (3, False, "server unavailable"),
        (4, True, "bad user name or password"),
        (5, True, "not authorised"),
        (9, False, "unknown return code"),
    ],
)
def test_connackReturnCodes(tmp_path: Path, code: int, permanent: bool, meaning: str) -> None:
    h, peer = start(username="app", password_file=passwordFile(tmp_path))
    peer.send(connack(code))
    assert last(h) == ("CONNECTING", "CLOSED" if permanent else "IDLE", "handshake")
    error = h.lastError or ""
    assert error.endswith(f"CONNACK refused: {code} ({meaning})")
    assert SECRET not in repr(h.history)
    assert peer.closedBy == "abort"
    scenarios.finish(h)
    assert SECRET not in repr(h.history)


def test_somethingElseThanConnackIsTransient() -> None:
    h, peer = start()
    peer.send(PINGRESP)
    assert last(h) == ("CONNECTING", "IDLE", "handshake")
    scenarios.finish(h)


def test_aMalformedPacketIsTransient() -> None:
    h, peer = start()
    peer.send(b"\x20\xff\xff\xff\xff\x01")
    assert last(h) == ("CONNECTING", "IDLE", "handshake")
    scenarios.finish(h)


def test_anUnreadablePasswordFileIsTransientAndNothingIsSent(tmp_path: Path) -> None:
    h, peer = start(username="app", password_file=str(tmp_path / "missing"))
    assert peer.take() == b""
    assert last(h) == ("CONNECTING", "IDLE", "handshake")
    assert "cannot read password_file" in (h.lastError or "")
    scenarios.finish(h)


def test_optionsParsed() -> None:
    assert findPlugin("mqtt").parseOptions({}) == Options()  # type: ignore[attr-defined]
    parsed = Options.fromMapping({"keep_alive": 0, "username": "u", "password_file": "p"})
    assert (parsed.keep_alive, parsed.username, parsed.password_file) == (0, "u", "p")


def test_aPasswordTooLongForCONNECTIsPermanent(tmp_path: Path) -> None:
    """
    A password is read from its file at connect time, where the options
    cannot check it: one too long for MQTT fails the attempt for good. (A
    connection's name, the default client identifier, cannot be too long:
    names are at most 4096 characters.)
    """
    secret = tmp_path / "password"
    secret.write_bytes(b"p" * 70000)
    h = PluginHarness(
        findPlugin("mqtt"),
        {"username": "u", "password_file": str(secret)},
        heartbeat=HEARTBEAT,
    )
    h.start()
    peer = h.accept()
    assert peer.take() == b""
    assert last(h) == ("CONNECTING", "CLOSED", "handshake")
    assert "field longer than 65535 bytes" in (h.lastError or "")
    h.assertQuiet()


# Heartbeat.


def test_pingreqPingrespWithRtt() -> None:
    h, peer = established()
    assert h.untilWritten(peer) <= HEARTBEAT.interval
    assert peer.take() == PINGREQ
    h.advance(0.25)
    peer.send(PINGRESP)
    assert h.rtt == pytest.approx(0.25, abs=1e-9)  # float sums of clock times
    scenarios.finish(h)


def test_aLatePingrespIsMatchedToTheMissedPing() -> None:
    h, peer = established()
    assert h.untilWritten(peer) <= HEARTBEAT.interval
    h.advance(0.5)
    assert peer.take() == PINGREQ * 2
    peer.send(PINGRESP)  # the first ping's: stale
    h.advance(0.5)
    assert last(h) == ("ESTABLISHED", "IDLE", "heartbeat")
    scenarios.finish(h)


def test_aLateAnswerIsCreditedToItsPingNotToTheNext() -> None:
    """
    PINGRESP carries no token. Ping 1 is missed, so ping 2 goes out at once;
    the late PINGRESP to ping 1 arrives 0.1 s after ping 2 was sent: it is
    credited to ping 1 (stale, ignored), not to ping 2 with a round trip of
    0.1 s. The next PINGRESP, 0.3 s after ping 2, is ping 2's.
    """
    h, peer = established()
    h.untilWritten(peer)
    assert peer.take() == PINGREQ  # ping 1
    h.untilWritten(peer)
    assert peer.take() == PINGREQ  # ping 2, at ping 1's timeout
    assert h.heartbeats == [None]
    h.advance(0.1)
    peer.send(PINGRESP)  # ping 1's, late
    assert h.heartbeats == [None]
    h.advance(0.2)
    peer.send(PINGRESP)  # ping 2's
    assert h.heartbeats == [None, pytest.approx(0.3, abs=1e-9)]
    h.assertState("ESTABLISHED")
    scenarios.finish(h)


def test_otherPacketsAreIgnoredAndAreNoProofOfLife() -> None:
    h, peer = established()
    assert h.untilWritten(peer) <= HEARTBEAT.interval
    peer.send(packet(3, 0, b"\x00\x01tpayload"))  # a PUBLISH
    h.advance(0.5)
    h.advance(0.5)
    assert last(h) == ("ESTABLISHED", "IDLE", "heartbeat")
    scenarios.finish(h)


def test_aSecondConnackDropsTheConnection() -> None:
    h, peer = established()
    peer.send(connack(0))
    assert last(h) == ("ESTABLISHED", "IDLE", "lost")
    scenarios.finish(h)


# Drain.


def test_drainSendsDisconnectThenCloses() -> None:
    h, peer = established()
    stopped = h.stop()
    assert peer.take() == DISCONNECT
    assert peer.transport.disconnecting
    assert peer.closedBy == "plugin"
    assert stopped.called
    assert last(h) == ("CLOSING", "CLOSED", "closed")
    h.assertQuiet()


def test_aHealthyBroker() -> None:
    peer = scenarios.peerAnswers(harness(), broker, pings=3)
    assert peer.writes[0] == connectPacket(b"broker-1", 3, None, None)
    assert peer.writes[1:4] == [PINGREQ] * 3
    assert peer.writes[-1] == DISCONNECT
    assert peer.closedBy == "plugin"


def test_aSilentBrokerIsDroppedForHeartbeat() -> None:
    took = scenarios.peerSilent(harness(), broker)
    assert took <= HEARTBEAT.detectionBound + 0.05


@pytest.mark.parametrize("delay", [0.3, 0.6], ids=["under-the-timeout", "over-the-timeout"])
def test_aSlowPingrespIsMeasuredUnderTheTimeoutAndAMissOverIt(delay: float) -> None:
    scenarios.slowPong(harness(), broker, delay=delay)


def test_aBrokerSilentAfterConnectTimesTheHandshakeOut() -> None:
    scenarios.peerSilentInHandshake(harness())


def test_theBrokerClosesBeforeConnack() -> None:
    peer = scenarios.peerClosesMidHandshake(harness())
    assert peer.writes == [connectPacket(b"broker-1", 3, None, None)]


def test_malformedPacketsAreRejectedAtOnce() -> None:
    scenarios.garbage(harness(), b"\x20\xff\xff\xff\xff\x01", duringHandshake=True)
    scenarios.garbage(harness(), b"\x30\xff\xff\xff\xff\x01", respond=broker)


def test_theMqttPluginIsFoundByName() -> None:
    assert findPlugin("mqtt").name == "mqtt"
