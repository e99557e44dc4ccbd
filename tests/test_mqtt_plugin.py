"""
The bundled C{mqtt} plugin on a fake clock and an in-memory transport:
packet framing, CONNECT and the keep-alive, CONNACK return codes, the FIFO
of ping tokens, DISCONNECT on drain, and a password that never shows.
"""

from __future__ import annotations

from pathlib import Path
from random import Random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from plugins.mqtt import (
    Incomplete,
    MalformedPacket,
    connectPacket,
    encodeLength,
    keepAliveFor,
    packet,
    parsePacket,
)
from supervisor import BackoffSpec, ConnectionSpec, HeartbeatSpec, SupervisedConnection, findPlugin

SECRET = "mqtt-s3cr3t"
PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"
DISCONNECT = b"\xe0\x00"


def connack(code: int) -> bytes:
    return b"\x20\x02\x00" + bytes([code])


class World:
    """
    One mqtt connection on a memory reactor; the test plays the broker.
    """

    def __init__(self, heartbeat: HeartbeatSpec | None = None, **options: Any) -> None:
        self.reactor = MemoryReactorClock()
        spec = ConnectionSpec(
            name="broker-1",
            endpoint="tcp:host=127.0.0.1:port=1883",
            protocol="mqtt",
            options=options,
            heartbeat=heartbeat or HeartbeatSpec(interval=1.0, timeout=0.5, misses=2),
            backoff=BackoffSpec(initial=60.0),
            drain_timeout=2.0,
        )
        self.connection = SupervisedConnection(
            spec,
            TCP4ClientEndpoint(self.reactor, "127.0.0.1", 1883),
            findPlugin("mqtt"),
            self.reactor,
            rng=Random(0),
        )
        self.connection.start()
        self.transport = StringTransport()
        factory = self.reactor.tcpClients[-1][2]
        self.link: IProtocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1883))
        self.link.makeConnection(self.transport)

    def sent(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def broker(self, data: bytes) -> None:
        self.link.dataReceived(data)

    @property
    def state(self) -> str:
        return self.connection.state

    def last(self) -> tuple[str, str, str]:
        t = self.connection.history[-1]
        return (t.from_, t.to, t.reason)

    def establish(self) -> None:
        self.sent()
        self.broker(connack(0))
        assert self.state == "ESTABLISHED"

    def finish(self) -> None:
        if self.state != "CLOSED":
            self.connection.stop()
            self.link.connectionLost(Failure(ConnectionDone()))
        assert self.state == "CLOSED"
        assert self.reactor.getDelayedCalls() == []


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
    with pytest.raises(MalformedPacket):
        parsePacket(b"\x30\xff\xff\xff\xff\x01", 1 << 30)
    with pytest.raises(MalformedPacket):
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
    world = World(heartbeat=HeartbeatSpec(interval=60.0, timeout=10.0, misses=3))
    assert world.sent() == connectPacket(b"broker-1", 190, None, None)
    world.finish()


def test_anExplicitKeepAliveWins() -> None:
    world = World(keep_alive=7)
    assert world.sent() == connectPacket(b"broker-1", 7, None, None)
    world.finish()


# Handshake.


def test_connectWithClientIdUsernameAndPasswordFromAFile(tmp_path: Path) -> None:
    world = World(client_id="probe-7", username="app", password_file=passwordFile(tmp_path))
    assert world.sent() == connectPacket(b"probe-7", 3, b"app", SECRET.encode())
    assert world.state == "CONNECTING"
    world.broker(connack(0))
    assert world.state == "ESTABLISHED"
    world.finish()


def test_aConnackSplitAnywhereIsReassembled() -> None:
    world = World()
    world.sent()
    for byte in connack(0):
        world.broker(bytes([byte]))
    assert world.state == "ESTABLISHED"
    world.finish()


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
    world = World(username="app", password_file=passwordFile(tmp_path))
    world.broker(connack(code))
    assert world.last() == ("CONNECTING", "CLOSED" if permanent else "IDLE", "handshake")
    error = world.connection.lastError or ""
    assert error.endswith(f"CONNACK refused: {code} ({meaning})")
    assert SECRET not in repr(world.connection.history)
    world.connection.stop()
    assert world.reactor.getDelayedCalls() == []


def test_somethingElseThanConnackIsTransient() -> None:
    world = World()
    world.broker(PINGRESP)
    assert world.last() == ("CONNECTING", "IDLE", "handshake")
    world.connection.stop()


def test_aMalformedPacketIsTransient() -> None:
    world = World()
    world.broker(b"\x20\xff\xff\xff\xff\x01")
    assert world.last() == ("CONNECTING", "IDLE", "handshake")
    world.connection.stop()


def test_anUnreadablePasswordFileIsTransientAndNothingIsSent(tmp_path: Path) -> None:
    world = World(username="app", password_file=str(tmp_path / "missing"))
    assert world.sent() == b""
    assert world.last() == ("CONNECTING", "IDLE", "handshake")
    assert "cannot read password_file" in (world.connection.lastError or "")
    world.connection.stop()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"keep_alive": 70000}, "keep_alive must be"),
        ({"keep_alive": "soon"}, "bad option"),
        ({"password_file": "x"}, "needs a username"),
    ],
)
def test_badOptionsArePermanent(tmp_path: Path, options: dict[str, object], message: str) -> None:
    if "password_file" in options:
        options = {"password_file": passwordFile(tmp_path)}
    else:
        options = {**options, "username": "u", "password_file": passwordFile(tmp_path)}
    world = World(**options)
    assert world.sent() == b"", "nothing is sent with a bad option"
    assert world.last() == ("CONNECTING", "CLOSED", "handshake")
    assert message in (world.connection.lastError or "")


# Heartbeat.


def test_pingreqPingrespWithRtt() -> None:
    world = World()
    world.establish()
    world.reactor.advance(1.0)
    assert world.sent() == PINGREQ
    world.reactor.advance(0.25)
    world.broker(PINGRESP)
    assert world.connection.rtt == 0.25
    world.finish()


def test_aLatePingrespIsMatchedToTheMissedPing() -> None:
    world = World()
    world.establish()
    world.reactor.advance(1.0)
    world.reactor.advance(0.5)
    assert world.sent() == PINGREQ * 2
    world.broker(PINGRESP)  # the first ping's: stale
    world.reactor.advance(0.5)
    assert world.last() == ("ESTABLISHED", "IDLE", "heartbeat")
    world.connection.stop()
    assert world.reactor.getDelayedCalls() == []


def test_otherPacketsAreIgnoredAndAreNoProofOfLife() -> None:
    world = World()
    world.establish()
    world.reactor.advance(1.0)
    world.broker(packet(3, 0, b"\x00\x01tpayload"))  # a PUBLISH
    world.reactor.advance(0.5)
    world.reactor.advance(0.5)
    assert world.last() == ("ESTABLISHED", "IDLE", "heartbeat")
    world.connection.stop()


def test_aSecondConnackDropsTheConnection() -> None:
    world = World()
    world.establish()
    world.broker(connack(0))
    assert world.last() == ("ESTABLISHED", "IDLE", "lost")
    world.connection.stop()


# Drain.


def test_drainSendsDisconnectThenCloses() -> None:
    world = World()
    world.establish()
    stopped = world.connection.stop()
    assert world.sent() == DISCONNECT
    assert world.transport.disconnecting
    world.link.connectionLost(Failure(ConnectionDone()))
    assert stopped.called
    assert world.last() == ("CLOSING", "CLOSED", "closed")
    assert world.reactor.getDelayedCalls() == []


def test_theMqttPluginIsFoundByName() -> None:
    assert findPlugin("mqtt").name == "mqtt"
