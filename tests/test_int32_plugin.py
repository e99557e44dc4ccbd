# mypy: disallow-untyped-calls=False, disallow-untyped-decorators=False
"""
The bundled C{int32} plugin, driven through the real machine with the
plugin test kit (L{supervisor.testing}): deterministic, no sockets.
"""

from __future__ import annotations

import struct

import pytest
from twisted.protocols.basic import Int32StringReceiver

from plugins.int32 import Options
from supervisor import HeartbeatSpec, findPlugin
from supervisor.testing import PluginHarness, scenarios

HEARTBEAT = HeartbeatSpec(interval=1.0, timeout=0.5, misses=2)


def frame(payload: bytes) -> bytes:
    return struct.pack("!I", len(payload)) + payload


def frames(data: bytes) -> list[bytes]:
    """
    Split what the plugin wrote into frame payloads.
    """
    out = []
    while data:
        (length,) = struct.unpack("!I", data[:4])
        out.append(data[4 : 4 + length])
        data = data[4 + length :]
    return out


def echoPongs(data: bytes) -> bytes | None:
    """
    A peer answering C{PING x} frames with C{PONG x}.
    """
    replies = [b"PONG " + f[5:] for f in frames(data) if f.startswith(b"PING ")]
    return b"".join(frame(r) for r in replies) or None


def harness(**options: object) -> PluginHarness:
    return PluginHarness(findPlugin("int32"), options, heartbeat=HEARTBEAT, drain_timeout=2.0)


class Server(Int32StringReceiver):
    """
    A real int32 peer: answers pings, records frames, greets if told to.
    """

    def __init__(self, greeting: bytes = b"") -> None:
        self.greeting = greeting
        self.received: list[bytes] = []

    def connectionMade(self) -> None:
        if self.greeting:
            self.sendString(self.greeting)

    def stringReceived(self, data: bytes) -> None:
        self.received.append(data)
        if data.startswith(b"PING "):
            self.sendString(b"PONG " + data[5:])


def test_theInt32PluginIsFoundByName() -> None:
    assert findPlugin("int32").name == "int32"


def test_readyOnConnectPingPongWithRtt() -> None:
    """
    Ready at connect; pings are C{PING <token>} frames, pongs measured.
    """
    peer = scenarios.peerAnswers(harness(), echoPongs, pings=3)
    assert frames(peer.received)[:3] == [b"PING 1", b"PING 2", b"PING 3"]


def test_servedByARealInt32Receiver() -> None:
    h = harness()
    h.start()
    server = Server()
    h.accept().serve(server)
    h.assertState("ESTABLISHED", "ready")
    h.advance(3.0)
    assert server.received[:2] == [b"PING 1", b"PING 2"]
    assert h.rtt == 0.0
    h.assertState("ESTABLISHED")
    scenarios.finish(h)


def test_aSilentPeerIsDroppedForHeartbeat() -> None:
    took = scenarios.peerSilent(harness())
    assert took <= HEARTBEAT.detectionBound + 0.05


@pytest.mark.parametrize("delay", [0.3, 0.6], ids=["under-the-timeout", "over-the-timeout"])
def test_aSlowPongIsMeasuredUnderTheTimeoutAndAMissOverIt(delay: float) -> None:
    scenarios.slowPong(harness(), echoPongs, delay=delay)


def test_customPingAndPongPrefixes() -> None:
    def answer(data: bytes) -> bytes | None:
        (payload,) = frames(data)
        assert payload.startswith(b"\x01hb:")
        return frame(b"\x02hb:" + payload[4:])

    peer = scenarios.peerAnswers(harness(ping="\u0001hb:", pong="\u0002hb:"), answer, pings=2)
    assert frames(peer.received)[0] == b"\x01hb:1"


def test_peerPingsAreAnswered() -> None:
    h = harness()
    peer = scenarios.establish(h)
    peer.send(frame(b"PING abc") + frame(b"PING "))
    assert frames(peer.received) == [b"PONG abc", b"PONG "]
    scenarios.finish(h)


def test_peerPingsAreNotAnsweredWhenTurnedOff() -> None:
    h = harness(answer_pings=False)
    peer = scenarios.establish(h)
    peer.send(frame(b"PING abc"))
    assert peer.received == b""
    scenarios.finish(h)


def test_otherFramesCountAsLiveness() -> None:
    h = harness()
    peer = scenarios.establish(h)
    for _ in range(20):
        peer.send(frame(b"event"))
        h.advance(0.25)
    h.assertState("ESTABLISHED")
    assert peer.received == b"", "a busy connection needs no pings"
    scenarios.finish(h)


def test_livenessFromFramesCanBeTurnedOff() -> None:
    h = harness(frames_are_liveness=False)
    peer = scenarios.establish(h)
    for _ in range(12):
        peer.send(frame(b"event"))
        h.advance(0.25)
        if h.state != "ESTABLISHED":
            break
    h.assertState("IDLE", "heartbeat")
    scenarios.finish(h)


def test_anOversizedFrameIsRejectedFromItsPrefix() -> None:
    """
    Only the length prefix of an oversized frame is needed: the connection
    is dropped at once, nothing of the body is waited for or buffered.
    """
    h = harness(max_frame_length=64)
    peer = scenarios.establish(h, echoPongs)
    peer.send(struct.pack("!I", 65) + b"x" * 10)
    h.assertState("IDLE", "lost")
    assert "65 bytes is longer than max_frame_length 64" in (h.lastError or "")
    assert peer.closedBy == "abort"
    protocol = h.connection.protocol
    assert protocol is None  # the link is gone with its attempt
    scenarios.finish(h)


def test_aFrameOfExactlyTheMaximumIsFine() -> None:
    h = harness(max_frame_length=64)
    peer = scenarios.establish(h)
    peer.send(frame(b"y" * 64))
    h.assertState("ESTABLISHED")
    scenarios.finish(h)


def test_oversizedFrameDuringTheHandshakeIsTransient() -> None:
    scenarios.garbage(
        harness(ready_on_connect=False, max_frame_length=16),
        struct.pack("!I", 1_000_000),
        duringHandshake=True,
    )


def test_helloWelcomeHandshake() -> None:
    h = harness(hello="HELLO v1", welcome="WELCOME", ready_on_connect=False)
    h.start()
    server = Server(greeting=b"WELCOME to the peer")
    peer = h.accept()
    assert frames(peer.received) == [b"HELLO v1"]
    h.assertState("CONNECTING")
    peer.serve(server)
    h.assertState("ESTABLISHED", "ready")
    scenarios.finish(h)


def test_unexpectedFirstFrameIsATransientHandshakeError() -> None:
    h = harness(welcome="WELCOME", ready_on_connect=False)
    h.start()
    peer = h.accept()
    peer.send(frame(b"GO AWAY"))
    h.assertState("IDLE", "handshake")
    assert "unexpected first frame" in (h.lastError or "")
    h.advance(1.0)
    h.assertState("CONNECTING", "retry")
    scenarios.finish(h)


def test_deniedIsPermanent() -> None:
    h = harness(welcome="WELCOME", denied="DENIED", ready_on_connect=False)
    h.start()
    h.accept().send(frame(b"DENIED bad token"))
    h.assertTransitions(("IDLE", "CONNECTING", "start"), ("CONNECTING", "CLOSED", "handshake"))
    h.advance(3600)
    assert h.connection.attempts == 1
    h.assertQuiet()


def test_silentDuringTheHandshakeTimesOut() -> None:
    scenarios.peerSilentInHandshake(harness(ready_on_connect=False))


def test_peerClosesMidHandshake() -> None:
    scenarios.peerClosesMidHandshake(harness(hello="HELLO", ready_on_connect=False))


def test_drainSendsGoodbye() -> None:
    h = harness(goodbye="BYE")
    peer = scenarios.establish(h)
    steps = scenarios.finish(h)
    assert steps[-2:] == [("ESTABLISHED", "CLOSING", "stopped"), ("CLOSING", "CLOSED", "closed")]
    assert frames(peer.received) == [b"BYE"]
    assert peer.closedBy == "plugin"


def test_optionsParsing() -> None:
    parsed = Options.fromMapping(
        {"ping": "p", "pong": "q", "ready_on_connect": False, "max_frame_length": 10}
    )
    assert (parsed.ping, parsed.pong, parsed.ready_on_connect, parsed.max_frame_length) == (
        b"p",
        b"q",
        False,
        10,
    )
    assert Options.fromMapping({"hello": "\u0001h\u00e9"}).hello == b"\x01h\xe9"
    assert Options.fromMapping({"hello": "h\u00e9\u20ac"}).hello == "h\u00e9\u20ac".encode()
    assert findPlugin("int32").parseOptions({}) == Options()  # type: ignore[attr-defined]
