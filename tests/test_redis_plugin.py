# mypy: disallow-untyped-calls=False, disallow-untyped-decorators=False
"""
The bundled C{redis} plugin, driven through the real machine with the plugin
test kit (L{supervisor.testing}) on a fake clock and in-memory transports:
RESP framing, the pipelined handshake, the FIFO of ping tokens, the error
mapping, the drain, and the password that never shows.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from plugins._support import ProtocolError
from plugins.redis import MAX_DEPTH, Options, Reply, RespParser
from plugins.redis import encodeCommand as command
from supervisor import BackoffSpec, HeartbeatSpec, findPlugin
from supervisor.testing import FakePeer, PluginHarness, Step, scenarios

SECRET = "s3cr3t-Pa55"

HEARTBEAT = HeartbeatSpec(interval=1.0, timeout=0.5, misses=2)


def harness(**options: object) -> PluginHarness:
    """
    One redis connection named C{cache-1}; the test plays the server.
    """
    return PluginHarness(
        findPlugin("redis"),
        options,
        heartbeat=HEARTBEAT,
        backoff=BackoffSpec(initial=60.0),
        drain_timeout=2.0,
        name="cache-1",
    )


def last(h: PluginHarness) -> Step:
    return h.transitions[-1]


def commands(data: bytes) -> list[list[bytes]]:
    """
    Split what the plugin wrote into RESP commands (arrays of bulk strings).
    """
    out = []
    while data:
        head, data = data.split(b"\r\n", 1)
        assert head.startswith(b"*"), head
        words = []
        for _ in range(int(head[1:])):
            size, data = data.split(b"\r\n", 1)
            assert size.startswith(b"$"), size
            length = int(size[1:])
            assert data[length : length + 2] == b"\r\n"
            words.append(data[:length])
            data = data[length + 2 :]
        out.append(words)
    return out


def answer(data: bytes) -> bytes | None:
    """
    A well-behaved redis server: C{+PONG} to PING, a map to HELLO, C{+OK} to
    everything else (QUIT included).
    """
    replies = []
    for words in commands(data):
        if words[0] == b"PING":
            replies.append(b"+PONG\r\n")
        elif words[0] == b"HELLO":
            replies.append(b"%1\r\n$6\r\nserver\r\n$5\r\nredis\r\n")
        else:
            replies.append(b"+OK\r\n")
    return b"".join(replies) or None


def passwordFile(tmp_path: Path, text: str = SECRET + "\n") -> str:
    path = tmp_path / "redis-password"
    path.write_text(text)
    return str(path)


def connect(**options: object) -> tuple[PluginHarness, FakePeer]:
    """
    Start a connection and accept its attempt with a silent peer.
    """
    h = harness(**options)
    h.start()
    return h, h.accept()


# Framing.


def test_commandsAreRespArraysOfBulkStrings() -> None:
    assert command(b"PING") == b"*1\r\n$4\r\nPING\r\n"
    assert command(b"AUTH", b"u", b"p w") == b"*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$3\r\np w\r\n"


def parse(data: bytes, maxReplyLength: int = 1 << 20) -> list[Reply | None]:
    return list(RespParser(maxReplyLength).feed(data))


@pytest.mark.parametrize(
    "data, text, error",
    [
        (b"+PONG\r\n", b"PONG", False),
        (b"-ERR nope\r\n", b"ERR nope", True),
        (b":42\r\n", b"42", False),
        (b"$3\r\nfoo\r\n", b"foo", False),
        (b"$-1\r\n", b"", False),
        (b"*-1\r\n", b"", False),
        (b"*2\r\n$1\r\na\r\n:1\r\n", b"", False),
        (b"%1\r\n+server\r\n+redis\r\n", b"", False),
        (b"!9\r\nERR b\r\nad\r\n", b"ERR b\r\nad", True),
        (b"|1\r\n+key\r\n+value\r\n+OK\r\n", b"OK", False),
        (b"*2\r\n|1\r\n+k\r\n+v\r\n:1\r\n*0\r\n", b"", False),
    ],
)
def test_parseOneReply(data: bytes, text: bytes, error: bool) -> None:
    """
    Each reply, whole or one byte at a time, and the reply after it.
    """
    assert parse(data + b"+next\r\n") == [Reply(text, error), Reply(b"next")]
    parser = RespParser(1 << 20)
    replies = [reply for byte in data for reply in parser.feed(bytes([byte]))]
    assert replies == [Reply(text, error)]


def test_aPushIsNoReply() -> None:
    assert parse(b">2\r\n+message\r\n+x\r\n") == [None]


@pytest.mark.parametrize("data", [b"", b"+PON", b"$5\r\nabc", b"*2\r\n+a\r\n", b"%1\r\n+a\r\n"])
def test_partialRepliesNeedMoreBytes(data: bytes) -> None:
    assert parse(data) == []


@pytest.mark.parametrize(
    "data, message",
    [
        (b"$x\r\n", "bad length"),
        (b"*" + b"9" * 40 + b"\r\n", "bad length"),
        (b"?what\r\n", "unknown RESP type byte"),
        (b"$3\r\nfooXY", "does not end in CRLF"),
        (b"$2000\r\n", "reply longer than 1024 bytes"),
        (b"+" + b"x" * 1100, "reply longer than 1024 bytes"),
        (b"*3000\r\n" + b":1\r\n" * 300, "reply longer than 1024 bytes"),
    ],
)
def test_garbageIsAProtocolError(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse(data, maxReplyLength=1024)


def test_nestingIsBoundedWithoutRecursion() -> None:
    """
    C{*1\\r\\n} five thousand times is refused at L{MAX_DEPTH} levels, not
    with a C{RecursionError}; as deep as that is fine.
    """
    with pytest.raises(ProtocolError, match=f"nested deeper than {MAX_DEPTH} levels"):
        parse(b"*1\r\n" * 5000)
    assert parse(b"*1\r\n" * MAX_DEPTH + b":1\r\n") == [Reply(b"")]


def test_aNestedReplyDropsTheConnectionWithOneCleanMessage() -> None:
    h, peer = established()
    peer.send(b"*1\r\n" * 5000)
    assert last(h) == ("ESTABLISHED", "IDLE", "lost")
    assert h.lastError == f"lost: a reply nested deeper than {MAX_DEPTH} levels"
    assert peer.closedBy == "abort"
    scenarios.finish(h)


def test_repliesSplitAnywhereAreReassembled() -> None:
    h, peer = connect(client_name="")
    assert peer.take() == command(b"PING")
    for byte in b"+PONG\r\n":
        peer.send(bytes([byte]))
    h.assertState("ESTABLISHED", "ready")
    scenarios.finish(h)


# Handshake.


def test_withoutOptionsTheHandshakeNamesTheClientAndPings() -> None:
    h, peer = connect()
    assert peer.take() == command(b"CLIENT", b"SETNAME", b"cache-1") + command(b"PING")
    peer.send(b"+OK\r\n")
    assert h.state == "CONNECTING", "ready only when every handshake reply is in"
    peer.send(b"+PONG\r\n")
    h.assertState("ESTABLISHED", "ready")
    scenarios.finish(h)


def test_authWithUsernameAndPasswordFromAFile(tmp_path: Path) -> None:
    h, peer = connect(username="app", password_file=passwordFile(tmp_path), client_name="")
    assert peer.take() == command(b"AUTH", b"app", SECRET.encode()) + command(b"PING")
    peer.send(b"+OK\r\n+PONG\r\n")
    h.assertState("ESTABLISHED", "ready")
    scenarios.finish(h)


def test_passwordWithoutUsernameAndCrlfInTheFile(tmp_path: Path) -> None:
    path = passwordFile(tmp_path, SECRET + "\r\n")
    h, peer = connect(password_file=path, client_name="")
    assert peer.take() == command(b"AUTH", SECRET.encode()) + command(b"PING")
    scenarios.finish(h)


def test_helloCarriesAuthAndName(tmp_path: Path) -> None:
    h, peer = connect(hello=3, password_file=passwordFile(tmp_path))
    assert peer.take() == command(
        b"HELLO", b"3", b"AUTH", b"default", SECRET.encode(), b"SETNAME", b"cache-1"
    ) + command(b"PING")
    peer.send(b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n+PONG\r\n")
    h.assertState("ESTABLISHED", "ready")
    scenarios.finish(h)


@pytest.mark.parametrize(
    "error",
    [
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
        b"-NOAUTH Authentication required.\r\n",
        b"-NOPERM this user has no permissions to run the 'ping' command\r\n",
    ],
)
def test_authErrorsArePermanent(tmp_path: Path, error: bytes) -> None:
    h, peer = connect(password_file=passwordFile(tmp_path), client_name="")
    peer.send(error)
    assert last(h) == ("CONNECTING", "CLOSED", "handshake")
    assert h.lastError is not None
    assert error[1:].split()[0].decode() in h.lastError
    assert peer.closedBy == "abort"
    h.advance(3600)
    assert h.connection.attempts == 1
    h.assertQuiet()


def test_otherHandshakeErrorsAreTransient() -> None:
    h, peer = connect(client_name="")
    peer.send(b"-LOADING Redis is loading the dataset in memory\r\n")
    assert last(h) == ("CONNECTING", "IDLE", "handshake")
    assert "LOADING" in (h.lastError or "")
    assert peer.closedBy == "abort"
    scenarios.finish(h)


def test_thePasswordNeverAppearsInMessages(tmp_path: Path) -> None:
    # An old server echoes the arguments of a command it does not know.
    h, peer = connect(hello=2, password_file=passwordFile(tmp_path))
    peer.send(
        b"-ERR unknown command 'HELLO', with args beginning with: '2' 'AUTH' 'default' '"
        + SECRET.encode()
        + b"'\r\n"
    )
    assert last(h) == ("CONNECTING", "IDLE", "handshake")
    error = h.lastError or ""
    assert "unknown command" in error
    assert SECRET not in error
    assert SECRET not in repr(h.history)
    scenarios.finish(h)
    assert SECRET not in repr(h.history)


def test_anUnreadablePasswordFileIsTransientAndSendsNothing(tmp_path: Path) -> None:
    h, peer = connect(password_file=str(tmp_path / "missing"))
    assert peer.take() == b""
    assert last(h) == ("CONNECTING", "IDLE", "handshake")
    assert "cannot read password_file" in (h.lastError or "")
    scenarios.finish(h)


def test_optionsParsed() -> None:
    assert findPlugin("redis").parseOptions({}) == Options()  # type: ignore[attr-defined]
    parsed = Options.fromMapping({"hello": 3, "client_name": "", "username": "u"})
    assert (parsed.hello, parsed.client_name, parsed.username) == (3, "", "u")


def test_garbageDuringTheHandshakeIsTransient() -> None:
    h, peer = connect(client_name="")
    peer.send(b"HTTP/1.1 400 Bad Request\r\n")
    assert last(h) == ("CONNECTING", "IDLE", "handshake")
    scenarios.finish(h)


def test_garbageDuringTheHandshakeScenario() -> None:
    peer = scenarios.garbage(harness(), b"HTTP/1.1 400 Bad Request\r\n", duringHandshake=True)
    assert commands(peer.writes[0]) == [[b"CLIENT", b"SETNAME", b"cache-1"], [b"PING"]]


def test_aSilentServerTimesTheHandshakeOut() -> None:
    scenarios.peerSilentInHandshake(harness())


def test_theServerClosesMidHandshake() -> None:
    scenarios.peerClosesMidHandshake(harness())


# Heartbeat.


def established(**options: object) -> tuple[PluginHarness, FakePeer]:
    h, peer = connect(client_name="", **options)
    peer.take()
    peer.send(b"+PONG\r\n")
    h.assertState("ESTABLISHED", "ready")
    return h, peer


def test_aHealthyServer() -> None:
    """
    The handshake is one pipelined write; each heartbeat is a PING; the
    drain is a QUIT answered with C{+OK}, after which the plugin closes.
    """
    peer = scenarios.peerAnswers(harness(), answer, pings=3)
    assert [commands(w) for w in peer.writes[:4]] == [
        [[b"CLIENT", b"SETNAME", b"cache-1"], [b"PING"]],
        [[b"PING"]],
        [[b"PING"]],
        [[b"PING"]],
    ]
    assert commands(peer.writes[-1]) == [[b"QUIT"]]
    assert peer.closedBy == "plugin"


def test_aSilentServerIsDroppedForHeartbeat() -> None:
    took = scenarios.peerSilent(harness(), answer)
    assert took <= HEARTBEAT.detectionBound + 0.05


@pytest.mark.parametrize("delay", [0.3, 0.6], ids=["under-the-timeout", "over-the-timeout"])
def test_aSlowPongIsMeasuredUnderTheTimeoutAndAMissOverIt(delay: float) -> None:
    scenarios.slowPong(harness(), answer, delay=delay)


def test_pingsArePongedFifoWithRtt() -> None:
    h, peer = established()
    assert h.untilWritten(peer) <= HEARTBEAT.interval
    assert peer.take() == command(b"PING")
    h.advance(0.125)
    peer.send(b"+PONG\r\n")
    assert h.rtt == pytest.approx(0.125, abs=1e-9)  # float sums of clock times
    scenarios.finish(h)


def test_aLatePongAnswersTheStaleTokenNotTheNewPing() -> None:
    h, peer = established()
    assert h.untilWritten(peer) <= HEARTBEAT.interval  # PING 1
    h.advance(0.5)  # missed: PING 2 at once
    assert peer.take() == command(b"PING") * 2
    peer.send(b"+PONG\r\n")  # the answer to PING 1: stale
    h.advance(0.5)  # PING 2 unanswered: second miss
    assert last(h) == ("ESTABLISHED", "IDLE", "heartbeat")
    scenarios.finish(h)


def test_bothPongsInOrderKeepTheConnection() -> None:
    h, peer = established()
    assert h.untilWritten(peer) <= HEARTBEAT.interval
    h.advance(0.5)
    assert peer.take() == command(b"PING") * 2
    h.advance(0.25)
    peer.send(b"+PONG\r\n+PONG\r\n")
    assert h.rtt == pytest.approx(0.25, abs=1e-9)
    h.assertState("ESTABLISHED")
    scenarios.finish(h)


def test_anErrorToAPingDropsTheConnection() -> None:
    h, peer = established()
    assert h.untilWritten(peer) <= HEARTBEAT.interval
    peer.send(b"-NOAUTH Authentication required.\r\n")
    assert last(h) == ("ESTABLISHED", "IDLE", "lost")
    scenarios.finish(h)


def test_anUnexpectedReplyDropsTheConnection() -> None:
    h, peer = established()
    peer.send(b"+SURPRISE\r\n")
    assert last(h) == ("ESTABLISHED", "IDLE", "lost")
    assert "unexpected reply" in (h.lastError or "")
    scenarios.finish(h)


def test_anOverlongReplyDropsTheConnection() -> None:
    h, peer = established(max_reply_length=16)
    assert h.untilWritten(peer) <= HEARTBEAT.interval
    peer.send(b"$100\r\n" + b"x" * 20)
    assert last(h) == ("ESTABLISHED", "IDLE", "lost")
    scenarios.finish(h)


def test_garbageOnceEstablishedDropsTheConnection() -> None:
    scenarios.garbage(harness(), b"?what\r\n", respond=answer)


# Drain.


def test_drainSendsQuitAndWaitsForOk() -> None:
    h, peer = established()
    assert h.untilWritten(peer) <= HEARTBEAT.interval
    peer.take()
    stopped = h.stop()
    h.assertState("CLOSING")
    assert peer.take() == command(b"QUIT")
    peer.send(b"+PONG\r\n")  # the ping in flight comes first
    assert not peer.transport.disconnecting
    assert peer.connected
    peer.send(b"+OK\r\n")
    assert peer.transport.disconnecting
    assert peer.closedBy == "plugin"
    assert stopped.called
    assert last(h) == ("CLOSING", "CLOSED", "closed")
    h.assertQuiet()


def test_drainEndsWhenTheServerClosesFirst() -> None:
    h, peer = established()
    h.stop()
    peer.close()
    h.assertState("CLOSED")
    h.assertQuiet()


def test_drainIsBoundedByTheDrainTimeout() -> None:
    h, peer = established()
    h.stop()
    h.advance(2.0)
    assert peer.transport.disconnected
    assert peer.closedBy == "abort"
    h.assertState("CLOSED")
    h.assertQuiet()


def test_replyObject() -> None:
    assert repr(Reply(b"OK")) == "Reply(b'OK', error=False)"


def test_theRedisPluginIsFoundByName() -> None:
    assert findPlugin("redis").name == "redis"
