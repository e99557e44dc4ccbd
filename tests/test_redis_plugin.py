"""
The bundled C{redis} plugin on a fake clock and an in-memory transport:
RESP framing, the pipelined handshake, the FIFO of ping tokens, the error
mapping, the drain, and the password that never shows.
"""

from __future__ import annotations

from pathlib import Path
from random import Random
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from plugins.redis import Incomplete, ProtocolError, Reply, command, parseReply, redact
from supervisor import BackoffSpec, ConnectionSpec, HeartbeatSpec, SupervisedConnection, findPlugin

SECRET = "s3cr3t-Pa55"


class World:
    """
    One redis connection on a memory reactor; the test plays the server.
    """

    def __init__(self, **options: Any) -> None:
        self.reactor = MemoryReactorClock()
        spec = ConnectionSpec(
            name="cache-1",
            endpoint="tcp:host=127.0.0.1:port=6379",
            protocol="redis",
            options=options,
            heartbeat=HeartbeatSpec(interval=1.0, timeout=0.5, misses=2),
            backoff=BackoffSpec(initial=60.0),
            drain_timeout=2.0,
        )
        self.connection = SupervisedConnection(
            spec,
            TCP4ClientEndpoint(self.reactor, "127.0.0.1", 6379),
            findPlugin("redis"),
            self.reactor,
            rng=Random(0),
        )
        self.connection.start()
        self.transport = StringTransport()
        factory = self.reactor.tcpClients[-1][2]
        self.link: IProtocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 6379))
        self.link.makeConnection(self.transport)

    def sent(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def reply(self, data: bytes) -> None:
        self.link.dataReceived(data)

    @property
    def state(self) -> str:
        return self.connection.state

    def last(self) -> tuple[str, str, str]:
        t = self.connection.history[-1]
        return (t.from_, t.to, t.reason)

    def finish(self) -> None:
        if self.state != "CLOSED":
            self.connection.stop()
            if not self.transport.disconnecting:
                pass
            self.link.connectionLost(Failure(ConnectionDone()))
        assert self.state == "CLOSED"
        assert self.reactor.getDelayedCalls() == []


def passwordFile(tmp_path: Path, text: str = SECRET + "\n") -> str:
    path = tmp_path / "redis-password"
    path.write_text(text)
    return str(path)


# Framing.


def test_commandsAreRespArraysOfBulkStrings() -> None:
    assert command(b"PING") == b"*1\r\n$4\r\nPING\r\n"
    assert command(b"AUTH", b"u", b"p w") == b"*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$3\r\np w\r\n"


@pytest.mark.parametrize(
    "data, text, error",
    [
        (b"+PONG\r\n", b"PONG", False),
        (b"-ERR nope\r\n", b"ERR nope", True),
        (b":42\r\n", b"42", False),
        (b"$3\r\nfoo\r\n", b"foo", False),
        (b"$-1\r\n", b"", False),
        (b"*2\r\n$1\r\na\r\n:1\r\n", b"", False),
        (b"%1\r\n+server\r\n+redis\r\n", b"", False),
        (b"!9\r\nERR b\r\nad\r\n", b"ERR b\r\nad", True),
        (b"|1\r\n+key\r\n+value\r\n+OK\r\n", b"OK", False),
    ],
)
def test_parseOneReply(data: bytes, text: bytes, error: bool) -> None:
    reply, end = parseReply(data + b"+next\r\n")
    assert reply is not None
    assert (reply.text, reply.error, end) == (text, error, len(data))


def test_aPushIsNoReply() -> None:
    assert parseReply(b">2\r\n+message\r\n+x\r\n") == (None, 18)


@pytest.mark.parametrize("data", [b"", b"+PON", b"$5\r\nabc", b"*2\r\n+a\r\n", b"%1\r\n+a\r\n"])
def test_partialRepliesNeedMoreBytes(data: bytes) -> None:
    with pytest.raises(Incomplete):
        parseReply(data)


@pytest.mark.parametrize("data", [b"$x\r\n", b"?what\r\n"])
def test_garbageIsAProtocolError(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parseReply(data)


def test_repliesSplitAnywhereAreReassembled() -> None:
    world = World(client_name="")
    assert world.sent() == command(b"PING")
    for byte in b"+PONG\r\n":
        world.reply(bytes([byte]))
    assert world.state == "ESTABLISHED"
    world.finish()


# Handshake.


def test_withoutOptionsTheHandshakeNamesTheClientAndPings() -> None:
    world = World()
    assert world.sent() == command(b"CLIENT", b"SETNAME", b"cache-1") + command(b"PING")
    world.reply(b"+OK\r\n")
    assert world.state == "CONNECTING", "ready only when every handshake reply is in"
    world.reply(b"+PONG\r\n")
    assert world.state == "ESTABLISHED"
    world.finish()


def test_authWithUsernameAndPasswordFromAFile(tmp_path: Path) -> None:
    world = World(username="app", password_file=passwordFile(tmp_path), client_name="")
    assert world.sent() == command(b"AUTH", b"app", SECRET.encode()) + command(b"PING")
    world.reply(b"+OK\r\n+PONG\r\n")
    assert world.state == "ESTABLISHED"
    world.finish()


def test_passwordWithoutUsernameAndCrlfInTheFile(tmp_path: Path) -> None:
    path = passwordFile(tmp_path, SECRET + "\r\n")
    world = World(password_file=path, client_name="")
    assert world.sent() == command(b"AUTH", SECRET.encode()) + command(b"PING")
    world.finish()


def test_helloCarriesAuthAndName(tmp_path: Path) -> None:
    world = World(hello=3, password_file=passwordFile(tmp_path))
    assert world.sent() == command(
        b"HELLO", b"3", b"AUTH", b"default", SECRET.encode(), b"SETNAME", b"cache-1"
    ) + command(b"PING")
    world.reply(b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n+PONG\r\n")
    assert world.state == "ESTABLISHED"
    world.finish()


@pytest.mark.parametrize(
    "error",
    [
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
        b"-NOAUTH Authentication required.\r\n",
        b"-NOPERM this user has no permissions to run the 'ping' command\r\n",
    ],
)
def test_authErrorsArePermanent(tmp_path: Path, error: bytes) -> None:
    world = World(password_file=passwordFile(tmp_path), client_name="")
    world.reply(error)
    assert world.last() == ("CONNECTING", "CLOSED", "handshake")
    assert world.connection.lastError is not None
    assert error[1:].split()[0].decode() in world.connection.lastError
    assert world.transport.disconnecting or world.transport.disconnected  # type: ignore[attr-defined]
    assert world.reactor.getDelayedCalls() == []


def test_otherHandshakeErrorsAreTransient() -> None:
    world = World(client_name="")
    world.reply(b"-LOADING Redis is loading the dataset in memory\r\n")
    assert world.last() == ("CONNECTING", "IDLE", "handshake")
    assert "LOADING" in (world.connection.lastError or "")
    world.connection.stop()
    assert world.state == "CLOSED"
    assert world.reactor.getDelayedCalls() == []


def test_thePasswordNeverAppearsInMessages(tmp_path: Path) -> None:
    # An old server echoes the arguments of a command it does not know.
    world = World(hello=2, password_file=passwordFile(tmp_path))
    world.reply(
        b"-ERR unknown command 'HELLO', with args beginning with: '2' 'AUTH' 'default' '"
        + SECRET.encode()
        + b"'\r\n"
    )
    assert world.last() == ("CONNECTING", "IDLE", "handshake")
    error = world.connection.lastError or ""
    assert "unknown command" in error
    assert SECRET not in error
    assert SECRET not in repr(world.connection.history)
    world.connection.stop()


def test_redactRemovesEverySecret() -> None:
    assert redact(b"a pw b pw", [b"pw", b""]) == "a *** b ***"
    assert len(redact(b"x" * 500, [])) == 200


def test_anUnreadablePasswordFileIsTransientAndSendsNothing(tmp_path: Path) -> None:
    world = World(password_file=str(tmp_path / "missing"))
    assert world.sent() == b""
    assert world.last() == ("CONNECTING", "IDLE", "handshake")
    assert "cannot read password_file" in (world.connection.lastError or "")
    world.connection.stop()


def test_aBadHelloOptionIsPermanent() -> None:
    world = World(hello=4)
    assert world.sent() == b""
    assert world.last() == ("CONNECTING", "CLOSED", "handshake")
    assert "hello" in (world.connection.lastError or "")


def test_garbageDuringTheHandshakeIsTransient() -> None:
    world = World(client_name="")
    world.reply(b"HTTP/1.1 400 Bad Request\r\n")
    assert world.last() == ("CONNECTING", "IDLE", "handshake")
    world.connection.stop()


# Heartbeat.


def established(**options: Any) -> World:
    world = World(client_name="", **options)
    world.sent()
    world.reply(b"+PONG\r\n")
    assert world.state == "ESTABLISHED"
    return world


def test_pingsArePongedFifoWithRtt() -> None:
    world = established()
    world.reactor.advance(1.0)
    assert world.sent() == command(b"PING")
    world.reactor.advance(0.125)
    world.reply(b"+PONG\r\n")
    assert world.connection.rtt == 0.125
    world.finish()


def test_aLatePongAnswersTheStaleTokenNotTheNewPing() -> None:
    world = established()
    world.reactor.advance(1.0)  # PING 1
    world.reactor.advance(0.5)  # missed: PING 2 at once
    assert world.sent() == command(b"PING") * 2
    world.reply(b"+PONG\r\n")  # the answer to PING 1: stale
    world.reactor.advance(0.5)  # PING 2 unanswered: second miss
    assert world.last() == ("ESTABLISHED", "IDLE", "heartbeat")
    world.connection.stop()
    assert world.reactor.getDelayedCalls() == []


def test_bothPongsInOrderKeepTheConnection() -> None:
    world = established()
    world.reactor.advance(1.0)
    world.reactor.advance(0.5)
    world.reactor.advance(0.25)
    world.reply(b"+PONG\r\n+PONG\r\n")
    assert world.connection.rtt == 0.25
    assert world.state == "ESTABLISHED"
    world.finish()


def test_anErrorToAPingDropsTheConnection() -> None:
    world = established()
    world.reactor.advance(1.0)
    world.reply(b"-NOAUTH Authentication required.\r\n")
    assert world.last() == ("ESTABLISHED", "IDLE", "lost")
    world.connection.stop()


def test_anUnexpectedReplyDropsTheConnection() -> None:
    world = established()
    world.reply(b"+SURPRISE\r\n")
    assert world.last() == ("ESTABLISHED", "IDLE", "lost")
    assert "unexpected reply" in (world.connection.lastError or "")
    world.connection.stop()


def test_anOverlongReplyDropsTheConnection() -> None:
    world = established(max_reply_length=16)
    world.reactor.advance(1.0)
    world.reply(b"$100\r\n" + b"x" * 20)
    assert world.last() == ("ESTABLISHED", "IDLE", "lost")
    world.connection.stop()


# Drain.


def test_drainSendsQuitAndWaitsForOk() -> None:
    world = established()
    world.reactor.advance(1.0)
    world.sent()
    stopped = world.connection.stop()
    assert world.state == "CLOSING"
    assert world.sent() == command(b"QUIT")
    world.reply(b"+PONG\r\n")  # the ping in flight comes first
    assert not world.transport.disconnecting
    world.reply(b"+OK\r\n")
    assert world.transport.disconnecting
    world.link.connectionLost(Failure(ConnectionDone()))
    assert stopped.called
    assert world.last() == ("CLOSING", "CLOSED", "closed")
    assert world.reactor.getDelayedCalls() == []


def test_drainEndsWhenTheServerClosesFirst() -> None:
    world = established()
    world.connection.stop()
    world.link.connectionLost(Failure(ConnectionDone()))
    assert world.state == "CLOSED"
    assert world.reactor.getDelayedCalls() == []


def test_drainIsBoundedByTheDrainTimeout() -> None:
    world = established()
    world.connection.stop()
    world.reactor.advance(2.0)
    assert world.transport.disconnected  # type: ignore[attr-defined]
    world.link.connectionLost(Failure(ConnectionDone()))
    assert world.state == "CLOSED"
    assert world.reactor.getDelayedCalls() == []


def test_replyObject() -> None:
    assert repr(Reply(b"OK")) == "Reply(b'OK', error=False)"


def test_theRedisPluginIsFoundByName() -> None:
    assert findPlugin("redis").name == "redis"
