# mypy: disallow-untyped-calls=False
"""
The plugin test kit itself (L{supervisor.testing}): its harness drives the
real machine exactly, its scenarios pass for a good plugin and fail, with a
useful message, for a broken one.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs
import pytest
from twisted.internet.error import DNSLookupError
from twisted.internet.protocol import Protocol
from twisted.plugin import IPlugin
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from supervisor import BackoffSpec, HeartbeatSpec, findPlugin
from supervisor.interfaces import (
    IConnectionHandle,
    IProtocolPlugin,
    ISupervisedProtocol,
)
from supervisor.testing import PluginHarness, perFrame, perLine, scenarios

HEARTBEAT = HeartbeatSpec(interval=1.0, timeout=0.5, misses=2)


def pongs(data: bytes) -> bytes | None:
    """
    A line peer: answers C{PING x} with C{PONG x}.
    """
    if data.startswith(b"PING "):
        return b"PONG " + data[5:]
    return None


def line(**options: object) -> PluginHarness:
    return PluginHarness(findPlugin("line"), options, heartbeat=HEARTBEAT)


@implementer(ISupervisedProtocol)  # nothing to drain, nothing to classify
class Deaf(Protocol):
    """
    A broken plugin's protocol: pings, but never reports a pong, and
    ignores whatever it receives.
    """

    def __init__(self, handle: IConnectionHandle) -> None:
        self.handle = handle

    def connectionMade(self) -> None:
        self.handle.ready()

    def sendPing(self, token: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"PING " + token + b"\r\n")


@implementer(IPlugin, IProtocolPlugin)
@attrs.frozen
class Builds:
    """
    A plugin (for the kit's own tests) that builds C{protocol(handle)}.
    """

    name: str
    protocol: Callable[[IConnectionHandle], ISupervisedProtocol]

    def buildProtocol(
        self, handle: IConnectionHandle, options: Mapping[str, object]
    ) -> ISupervisedProtocol:
        return self.protocol(handle)


deafPlugin = Builds("deaf", Deaf)


def test_theKitImportsNoGlobalReactor() -> None:
    code = (
        "import sys, supervisor.testing, plugins.int32, plugins.http;"
        "assert 'twisted.internet.reactor' not in sys.modules, 'global reactor imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_startAcceptAndTransitions() -> None:
    h = line()
    assert h.state == "IDLE"
    h.start()
    h.assertState("CONNECTING", "start")
    assert h.pending()
    peer = h.accept()
    assert not h.pending()
    h.assertState("ESTABLISHED", "ready")
    assert h.transitions == [
        ("IDLE", "CONNECTING", "start"),
        ("CONNECTING", "ESTABLISHED", "ready"),
    ]
    assert h.peer is peer and h.peers == [peer]
    assert peer.connected and peer.closedBy is None
    assert h.protocol is not None
    scenarios.finish(h)


def test_refuseRetriesAtTheExactBackoff() -> None:
    """
    The default backoff has no jitter: 1 s, then 1.6 s.
    """
    h = line()
    h.start()
    h.refuse()
    h.assertState("IDLE", "refused")
    h.advance(0.99)
    h.assertState("IDLE")
    h.advance(0.01)
    h.assertState("CONNECTING", "retry")
    h.refuse(DNSLookupError("nowhere"))
    h.assertState("IDLE", "dns")
    h.advance(1.6)
    h.assertState("CONNECTING")
    assert h.connection.attempts == 3
    scenarios.finish(h)


def test_acceptWithoutAPendingAttemptSaysSo() -> None:
    h = line()
    with pytest.raises(AssertionError, match="no connect attempt is pending"):
        h.accept()


def test_advanceFiresEachTimerAtItsOwnTime() -> None:
    """
    One big advance still measures a delayed answer's RTT exactly.
    """
    h = line()
    h.start()
    h.accept(pongs, delay=0.25)
    h.advance(30.0)
    assert len(h.heartbeats) > 10
    assert h.heartbeats == [pytest.approx(0.25)] * len(h.heartbeats)
    h.assertState("ESTABLISHED")
    scenarios.finish(h)


def test_peerWritesReceivedSendAndClear() -> None:
    h = line()
    h.start()
    peer = h.accept()
    peer.send(b"PING hello\r\n")
    assert peer.received == b"PONG hello\r\n"
    assert peer.writes == [b"PONG hello\r\n"]
    peer.clear()
    assert peer.received == b"" and peer.writes == []
    peer.send(b"PING\n")
    assert peer.writes == [b"PONG\r\n"]
    assert peer.take() == b"PONG\r\n"
    assert peer.take() == b"" and peer.writes == []
    peer.send(b"PING x\n")
    assert peer.take() == b"PONG x\r\n"
    scenarios.finish(h)


def test_thePeerClosing() -> None:
    h = line(max_line_length=8)
    h.start()
    peer = h.accept()
    peer.close()
    assert peer.closedBy == "peer" and not peer.connected
    h.assertState("IDLE", "lost")
    peer.send(b"PING late\n")  # dropped: the connection is gone
    assert peer.writes == []
    h.advance(1.0)
    peer = h.accept()
    peer.lose()
    assert h.lastError is not None and "connection lost" in h.lastError
    h.advance(1.6)
    peer = h.accept()
    peer.send(b"X" * 20 + b"\n")
    assert peer.closedBy == "abort"
    scenarios.finish(h)


def test_stopClosesGracefullyAndTheCloseIsDelivered() -> None:
    h = line()
    h.start()
    peer = h.accept()
    stopped = h.stop()
    assert stopped.called
    assert peer.closedBy == "plugin"
    h.assertTransitions(
        ("IDLE", "CONNECTING", "start"),
        ("CONNECTING", "ESTABLISHED", "ready"),
        ("ESTABLISHED", "CLOSING", "stopped"),
        ("CLOSING", "CLOSED", "closed"),
    )
    h.assertQuiet()


def test_assertQuietSeesATimerLeft() -> None:
    h = line()
    h.start()
    with pytest.raises(AssertionError, match="timers left"):
        h.assertQuiet()
    scenarios.finish(h)


def test_runUntilIsBounded() -> None:
    h = line()
    h.start()
    h.accept(pongs)
    with pytest.raises(AssertionError, match="still not true after 2s"):
        h.runUntil(lambda: h.state == "IDLE", limit=2.0)
    scenarios.finish(h)


def test_untilWrittenStopsAtTheWrite() -> None:
    """
    C{untilWritten} stops at the moment the first ping is written (spread
    over [interval/2, interval]), so an answer after C{advance(d)} has an RTT
    of C{d} (to float rounding); it refuses bytes not taken, and is bounded.
    """
    h = line()
    h.start()
    peer = h.accept()
    sent = h.untilWritten(peer)
    assert HEARTBEAT.interval / 2 <= sent <= HEARTBEAT.interval
    assert h.now() == sent
    token = peer.take()
    assert token.startswith(b"PING ")
    h.advance(0.125)
    peer.send(b"PONG " + token[5:])
    assert h.rtt == pytest.approx(0.125, abs=1e-9)
    peer.send(b"PING unasked\r\n")
    with pytest.raises(AssertionError, match=r"take\(\) them first"):
        h.untilWritten(peer)
    peer.take()
    with pytest.raises(AssertionError, match=r"nothing written within 0\.1s"):
        h.untilWritten(peer, limit=0.1)
    scenarios.finish(h)


class LineServer(LineOnlyReceiver):
    delimiter = b"\n"

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.lost = False

    def connectionMade(self) -> None:
        self.sendLine(b"hello there")

    def lineReceived(self, data: bytes) -> None:
        self.lines.append(data.rstrip(b"\r"))
        if data.startswith(b"PING "):
            self.sendLine(b"PONG " + data[5:].rstrip(b"\r"))
        if data.startswith(b"QUIT"):
            assert self.transport is not None
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: B008
        self.lost = True


def test_servingARealPeerProtocol() -> None:
    h = line()
    h.start()
    server = LineServer()
    peer = h.accept().serve(server)
    h.advance(2.5)
    assert server.lines[:2] == [b"PING 1", b"PING 2"]
    assert h.rtt == 0.0
    server.transport.loseConnection()  # type: ignore[union-attr]
    h.flush()
    assert peer.closedBy == "peer" and server.lost
    h.assertState("IDLE", "lost")
    scenarios.finish(h)


def test_aServedPeerSeesTheCloseOfTheSupervisor() -> None:
    h = line()
    h.start()
    server = LineServer()
    h.accept().serve(server)
    scenarios.finish(h)
    assert server.lost


def test_scenariosPassForTheLinePlugin() -> None:
    scenarios.peerAnswers(line(), pongs)
    took = scenarios.peerSilent(line())
    assert 1.0 <= took <= HEARTBEAT.detectionBound + 0.05
    scenarios.slowPong(line(), pongs, delay=0.2)
    scenarios.slowPong(line(), pongs, delay=0.5)
    scenarios.garbage(line(max_line_length=16), b"\xff" * 40 + b"\n", respond=pongs)


def test_peerAnswersCatchesAPluginThatNeverPongs() -> None:
    with pytest.raises(AssertionError, match="heartbeat was missed"):
        scenarios.peerAnswers(PluginHarness(deafPlugin, heartbeat=HEARTBEAT), pongs)


def test_garbageCatchesAPluginThatIgnoresIt() -> None:
    with pytest.raises(AssertionError, match="state is ESTABLISHED, not IDLE"):
        scenarios.garbage(PluginHarness(deafPlugin, heartbeat=HEARTBEAT), b"\x00\x01\x02")


def test_handshakeScenariosForTheEchoExample() -> None:
    """
    The guide's echo plugin: greeting handshake, silent and closing peers.
    """
    from tests.test_docs_example import echo

    def greetAndEcho(data: bytes) -> bytes | None:
        return data if data.startswith(b"ECHO ") else None

    def harness() -> PluginHarness:
        return PluginHarness(echo.echoPlugin, heartbeat=HEARTBEAT, backoff=BackoffSpec(1.0))

    scenarios.peerSilentInHandshake(harness())
    scenarios.peerClosesMidHandshake(harness(), afterWrites=0)
    scenarios.garbage(harness(), b"WHO ARE YOU\n", duringHandshake=True)
    scenarios.garbage(harness(), b"DENIED no\n", duringHandshake=True, permanent=True)
    h = harness()
    h.start()
    h.accept(greetAndEcho).send(b"HELLO\n")
    h.assertState("ESTABLISHED", "ready")
    h.advance(5.0)
    assert h.heartbeats and None not in h.heartbeats
    scenarios.finish(h)


def test_aServedPeerSeesItsOwnEndClose() -> None:
    h = line()
    h.start()
    server = LineServer()
    peer = h.accept().serve(server)
    peer.close()
    assert server.lost
    h.assertState("IDLE", "lost")
    scenarios.finish(h)


def test_aGreetingIsSentFirstByEveryAcceptedPeer() -> None:
    """
    For protocols where the server speaks first, C{greeting} is what every
    accepted peer sends as soon as it is connected, before any answer: the
    scenarios that establish a connection then work as for any plugin.
    """
    from tests.test_docs_example import echo

    def greetAndEcho(data: bytes) -> bytes | None:
        return data if data.startswith(b"ECHO ") else None

    def harness() -> PluginHarness:
        return PluginHarness(
            echo.echoPlugin, heartbeat=HEARTBEAT, backoff=BackoffSpec(1.0), greeting=b"HELLO\n"
        )

    scenarios.peerAnswers(harness(), greetAndEcho)
    scenarios.peerSilent(harness(), greetAndEcho)
    scenarios.slowPong(harness(), greetAndEcho, delay=0.2)
    h = harness()
    h.start()
    first = h.accept(greetAndEcho)
    h.assertState("ESTABLISHED", "ready")
    first.lose()
    h.assertState("IDLE", "lost")
    h.advance(1.0)
    h.accept()  # silent, but it still greets
    h.assertState("ESTABLISHED", "ready")
    scenarios.finish(h)
    assert PluginHarness(echo.echoPlugin).greeting == b""


def test_perLineAnswersWholeLinesHoweverTheyWereWritten() -> None:
    """
    A line written in two writes is answered once, when whole; two lines in
    one write are answered one by one, their answers sent together.
    """
    seen: list[bytes] = []

    def answer(line: bytes) -> bytes | None:
        seen.append(line)
        return b"<" + line + b">" if line != b"quiet" else None

    respond = perLine(answer, b"\r\n")
    assert respond(b"PI") is None
    assert respond(b"NG 1\r") is None
    assert respond(b"\nquiet\r\nPING 2\r\nPI") == b"<PING 1><PING 2>"
    assert seen == [b"PING 1", b"quiet", b"PING 2"]
    assert respond(b"NG 3\r\n") == b"<PING 3>"


def test_perFrameCutsWithTheGivenLength() -> None:
    def int32Length(data: bytes) -> int | None:
        return 4 + int.from_bytes(data[:4], "big") if len(data) >= 4 else None

    respond = perFrame(lambda frame: frame[4:].upper(), int32Length)
    frames = b"\x00\x00\x00\x02ab\x00\x00\x00\x01c"
    assert [respond(frames[i : i + 1]) for i in range(len(frames))] == [None] * 5 + [b"AB"] + [
        None
    ] * 4 + [b"C"]
    assert respond(frames) == b"ABC"


@implementer(ISupervisedProtocol)
class TwoWrites(Protocol):
    """
    A plugin's protocol that writes each ping in two writes.
    """

    def __init__(self, handle: IConnectionHandle) -> None:
        self.handle = handle

    def connectionMade(self) -> None:
        self.handle.ready()

    def dataReceived(self, data: bytes) -> None:
        for line in data.split(b"\n")[:-1]:
            self.handle.pong(line.removeprefix(b"PONG "))

    def sendPing(self, token: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"PING ")
        self.transport.write(token + b"\n")


twoWritesPlugin = Builds("two-writes", TwoWrites)


def test_aTwoWriteCommandBreaksANaiveResponderNotAPerLineOne() -> None:
    def naive(data: bytes) -> bytes | None:
        return b"PONG " + data[5:] if data.startswith(b"PING ") else None

    with pytest.raises(AssertionError, match="heartbeat was missed"):
        scenarios.peerAnswers(PluginHarness(twoWritesPlugin, heartbeat=HEARTBEAT), naive)
    answer = perLine(lambda line: b"PONG " + line[5:] + b"\n")
    peer = scenarios.peerAnswers(PluginHarness(twoWritesPlugin, heartbeat=HEARTBEAT), answer)
    assert peer.writes[:2] == [b"PING ", b"1\n"]


def test_establishStartsOnlyAConnectionNotYetStarted() -> None:
    h = line()
    scenarios.establish(h)
    assert h.connection.attempts == 1
    scenarios.finish(h)
    h = line()
    h.start()
    scenarios.establish(h)  # does not start it twice
    assert h.connection.attempts == 1
    scenarios.finish(h)
