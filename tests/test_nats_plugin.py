"""
The bundled C{nats} plugin on a fake clock and an in-memory transport: the
INFO/CONNECT/PING handshake, server pings, the FIFO of ping tokens, the
error mapping, the flush on drain, and secrets that never show.
"""

from __future__ import annotations

import json
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

from plugins.nats import redact
from supervisor import BackoffSpec, ConnectionSpec, HeartbeatSpec, SupervisedConnection, findPlugin

SECRET = "n4ts-s3cr3t"
INFO = b'INFO {"server_id":"X","version":"2.9.10","auth_required":true,"max_payload":1048576} \r\n'


class World:
    """
    One nats connection on a memory reactor; the test plays the server.
    """

    def __init__(self, **options: Any) -> None:
        self.reactor = MemoryReactorClock()
        spec = ConnectionSpec(
            name="bus-1",
            endpoint="tcp:host=127.0.0.1:port=4222",
            protocol="nats",
            options=options,
            heartbeat=HeartbeatSpec(interval=1.0, timeout=0.5, misses=2),
            backoff=BackoffSpec(initial=60.0),
            drain_timeout=2.0,
        )
        self.connection = SupervisedConnection(
            spec,
            TCP4ClientEndpoint(self.reactor, "127.0.0.1", 4222),
            findPlugin("nats"),
            self.reactor,
            rng=Random(0),
        )
        self.connection.start()
        self.transport = StringTransport()
        factory = self.reactor.tcpClients[-1][2]
        self.link: IProtocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4222))
        self.link.makeConnection(self.transport)

    def sent(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def server(self, data: bytes) -> None:
        self.link.dataReceived(data)

    @property
    def state(self) -> str:
        return self.connection.state

    def last(self) -> tuple[str, str, str]:
        t = self.connection.history[-1]
        return (t.from_, t.to, t.reason)

    def connect(self) -> dict[str, object]:
        """
        The CONNECT we sent after INFO (and check the PING that follows).
        """
        self.server(INFO)
        lines = self.sent().split(b"\r\n")
        assert lines[0].startswith(b"CONNECT ")
        assert lines[1:] == [b"PING", b""]
        options = json.loads(lines[0][len(b"CONNECT ") :])
        assert isinstance(options, dict)
        return options

    def establish(self) -> None:
        self.connect()
        self.server(b"PONG\r\n")
        assert self.state == "ESTABLISHED"

    def finish(self) -> None:
        if self.state != "CLOSED":
            self.connection.stop()
            self.link.connectionLost(Failure(ConnectionDone()))
        assert self.state == "CLOSED"
        assert self.reactor.getDelayedCalls() == []


def secretFile(tmp_path: Path, name: str, text: str = SECRET + "\n") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# Handshake.


def test_nothingIsSentBeforeInfo() -> None:
    world = World()
    assert world.sent() == b""
    assert world.state == "CONNECTING"
    world.finish()


def test_connectIsQuietAndNamed() -> None:
    world = World()
    options = world.connect()
    assert options["verbose"] is False
    assert options["pedantic"] is False
    assert options["name"] == "bus-1"
    assert "user" not in options and "pass" not in options and "auth_token" not in options
    assert world.state == "CONNECTING", "ready only after the server's PONG"
    world.server(b"PONG\r\n")
    assert world.state == "ESTABLISHED"
    world.finish()


def test_userAndPasswordFromAFile(tmp_path: Path) -> None:
    world = World(user="app", pass_file=secretFile(tmp_path, "pass"), client_name="x")
    options = world.connect()
    assert (options["user"], options["pass"], options["name"]) == ("app", SECRET, "x")
    world.finish()


def test_tokenFromAFile(tmp_path: Path) -> None:
    world = World(token_file=secretFile(tmp_path, "token", SECRET + "\r\n"))
    assert world.connect()["auth_token"] == SECRET
    world.finish()


def test_authorizationViolationIsPermanent(tmp_path: Path) -> None:
    world = World(user="app", pass_file=secretFile(tmp_path, "pass"))
    world.connect()
    world.server(b"-ERR 'Authorization Violation'\r\n")
    assert world.last() == ("CONNECTING", "CLOSED", "handshake")
    assert "Authorization Violation" in (world.connection.lastError or "")
    assert world.reactor.getDelayedCalls() == []


def test_otherErrorsDuringTheHandshakeAreTransient() -> None:
    world = World()
    world.connect()
    world.server(b"-ERR 'Authentication Timeout'\r\n")
    assert world.last() == ("CONNECTING", "IDLE", "handshake")
    world.connection.stop()
    assert world.reactor.getDelayedCalls() == []


def test_secretsNeverAppearInMessages(tmp_path: Path) -> None:
    world = World(user="app", pass_file=secretFile(tmp_path, "pass"))
    world.connect()
    world.server(b"-ERR 'Unknown Protocol Operation " + SECRET.encode() + b"'\r\n")
    error = world.connection.lastError or ""
    assert "Unknown Protocol Operation" in error
    assert SECRET not in error
    assert SECRET not in repr(world.connection.history)
    world.connection.stop()


def test_redact() -> None:
    assert redact("a pw b", ["pw", ""]) == "a *** b"
    assert len(redact("x" * 300, [])) == 200


def test_anUnreadableSecretFileIsTransient(tmp_path: Path) -> None:
    world = World(user="app", pass_file=str(tmp_path / "missing"))
    world.server(INFO)
    assert world.sent() == b""
    assert world.last() == ("CONNECTING", "IDLE", "handshake")
    assert "cannot read a secret file" in (world.connection.lastError or "")
    world.connection.stop()


def test_aServerThatRequiresTlsIsRefusedOnPlainTcp() -> None:
    world = World()
    world.server(b'INFO {"tls_required":true}\r\n')
    assert world.last() == ("CONNECTING", "CLOSED", "handshake")
    assert "TLS" in (world.connection.lastError or "")


@pytest.mark.parametrize("info", [b"INFO nope\r\n", b"INFO [1]\r\n", b"HTTP/1.1 200 OK\r\n"])
def test_aBadGreetingIsTransient(info: bytes) -> None:
    world = World()
    world.server(info)
    assert world.last() == ("CONNECTING", "IDLE", "handshake")
    world.connection.stop()


def test_aBadOptionIsPermanent() -> None:
    world = World(max_line_length="lots")
    world.server(INFO)
    assert world.last() == ("CONNECTING", "CLOSED", "handshake")


def test_anOverlongLineIsTransient() -> None:
    world = World(max_line_length=32)
    world.server(b"INFO " + b"x" * 100 + b"\r\n")
    assert world.last() == ("CONNECTING", "IDLE", "handshake")
    world.connection.stop()


# Server pings, heartbeat.


def test_serverPingsAreAnsweredAtOnce() -> None:
    world = World()
    world.server(b"PING\r\n")
    assert world.sent() == b"PONG\r\n"
    world.establish()
    world.server(b"PING\r\n")
    assert world.sent() == b"PONG\r\n"
    world.finish()


def test_serverPingsCountAsLiveness() -> None:
    world = World()
    world.establish()
    for _ in range(8):
        world.reactor.advance(0.5)
        world.server(b"PING\r\n")
    assert world.sent() == b"PONG\r\n" * 8, "a server that pings us needs no pings"
    assert world.state == "ESTABLISHED"
    world.finish()


def test_pingsArePongedFifoWithRtt() -> None:
    world = World()
    world.establish()
    world.reactor.advance(1.0)
    assert world.sent() == b"PING\r\n"
    world.reactor.advance(0.25)
    world.server(b"PONG\r\n")
    assert world.connection.rtt == 0.25
    world.finish()


def test_aLatePongIsMatchedToTheMissedPing() -> None:
    world = World()
    world.establish()
    world.reactor.advance(1.0)
    world.reactor.advance(0.5)  # miss: the second PING goes out at once
    assert world.sent() == b"PING\r\n" * 2
    world.server(b"PONG\r\n")  # answers the first: stale
    world.reactor.advance(0.5)
    assert world.last() == ("ESTABLISHED", "IDLE", "heartbeat")
    world.connection.stop()
    assert world.reactor.getDelayedCalls() == []


def test_aLaterInfoAndPermissionErrorsAreHarmless() -> None:
    world = World()
    world.establish()
    world.server(b'INFO {"connect_urls":["10.0.0.2:4222"]}\r\n')
    world.server(b"-ERR 'Permissions Violation for Publish to \"x\"'\r\n")
    world.server(b"PONG\r\n")  # answers nothing: ignored
    assert world.state == "ESTABLISHED"
    world.finish()


def test_anErrorOnceEstablishedDropsTheConnection() -> None:
    world = World()
    world.establish()
    world.server(b"-ERR 'Stale Connection'\r\n")
    assert world.last() == ("ESTABLISHED", "IDLE", "lost")
    world.connection.stop()


def test_unknownLinesAreProtocolErrors() -> None:
    world = World()
    world.establish()
    world.server(b"WHAT\r\n")
    assert world.last() == ("ESTABLISHED", "IDLE", "lost")
    world.connection.stop()


# Drain.


def test_drainFlushesThenCloses() -> None:
    world = World()
    world.establish()
    world.reactor.advance(1.0)
    assert world.sent() == b"PING\r\n"
    stopped = world.connection.stop()
    assert world.sent() == b"PING\r\n", "the flush"
    world.server(b"PONG\r\n")  # the heartbeat's
    assert not world.transport.disconnecting
    world.server(b"PONG\r\n")  # the flush's
    assert world.transport.disconnecting
    world.link.connectionLost(Failure(ConnectionDone()))
    assert stopped.called
    assert world.last() == ("CLOSING", "CLOSED", "closed")
    assert world.reactor.getDelayedCalls() == []


def test_drainIsBoundedByTheDrainTimeout() -> None:
    world = World()
    world.establish()
    world.connection.stop()
    world.reactor.advance(2.0)
    world.link.connectionLost(Failure(ConnectionDone()))
    assert world.state == "CLOSED"
    assert world.reactor.getDelayedCalls() == []


def test_theNatsPluginIsFoundByName() -> None:
    assert findPlugin("nats").name == "nats"
