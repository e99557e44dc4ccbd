"""
The admin site against hostile clients, connection by connection, on a fake
clock and a transport that behaves as a socket does for its producer: bytes
written stay unsent until the test sends them, and reading can be paused.

Pipelining, never reading, trickling, idling, huge and many headers, huge
request lines and query strings, large and chunked bodies, too many clients,
and foreign C{Host} names.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer

from supervisor.admin import AdminSite, adminService, adminSite
from supervisor.admin.channel import (
    ANSWER_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_BODY,
    REQUEST_TIMEOUT,
    AdminChannel,
)
from supervisor.admin.listener import ListeningWatcher, loopbackByDefault, onListening
from supervisor.admin.site import isLoopbackAddress, isLoopbackHost
from supervisor.config import AdminSpec
from tests.logs import isWarning, loggedMessages, observing
from tests.test_admin import TOKEN
from tests.test_metrics import Fleet, spec

HOST = IPv4Address("TCP", "127.0.0.1", 9100)
PEER = IPv4Address("TCP", "127.0.0.1", 40000)
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:9100\r\n\r\n"


class SocketLike(StringTransport):
    """
    A transport that keeps what is written unsent until L{send}, and then,
    as a socket's transport does, tells a pull producer that everything is
    sent.
    """

    def __init__(self) -> None:
        super().__init__(hostAddress=HOST, peerAddress=PEER)
        self.received = b""
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()

    def send(self) -> bytes:
        """
        Hand every unsent byte to the client (returned).
        """
        data = self.value()
        self.clear()
        self.received += data
        if self.producer is not None and not self.streaming:
            self.producer.resumeProducing()
        return data

    @property
    def reading(self) -> bool:
        return self.producerState == "producing"


def answers(data: bytes) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """
    The HTTP/1.1 answers in C{data}: status, headers (lower-case names), body.
    """
    found = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        statusLine, *lines = head.split(b"\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        found.append((int(statusLine.split()[1]), headers, rest[:length]))
        data = rest[length:]
    return found


class Client:
    """
    One client connection to an admin site.
    """

    def __init__(self, site: AdminSite) -> None:
        channel = site.buildProtocol(PEER)
        assert channel is not None
        self.channel = channel
        self.transport = SocketLike()
        channel.makeConnection(self.transport)

    def write(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def close(self) -> None:
        self.channel.connectionLost(Failure(ConnectionDone()))

    def codes(self) -> list[int]:
        """
        The status codes of every answer, once the client has read all it is
        sent (at most 10,000 sends).
        """
        for _ in range(10_000):
            if not self.transport.send():
                break
        return [code for code, _, _ in answers(self.transport.received)]


class World:
    def __init__(self, **admin: Any) -> None:
        self.fleet = Fleet(spec("a"), **admin)
        self.clock = Clock()
        self.site = adminSite(self.fleet.supervisor, self.fleet.metrics, self.clock)

    def client(self) -> Client:
        return Client(self.site)


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    yield w
    assert w.clock.getDelayedCalls() == [], "a connection's timer outlived it"


# Pipelining and never reading -----------------------------------------------


def test_pipelinedRequestsAreAnsweredOneAtATime(world: World) -> None:
    client = world.client()
    client.write(HEALTHZ * 1000)
    assert len(answers(client.transport.value())) == 1
    assert not client.transport.reading, "read on while an answer is unsent"
    for sent in range(2, 6):
        client.transport.send()
        assert len(answers(client.transport.received + client.transport.value())) == sent
    assert len(answers(client.transport.received)) == 4
    client.close()


def test_theNextPipelinedRequestWaitsForTheWholeAnswer(world: World) -> None:
    client = world.client()
    client.write(b"GET /connections?transitions=50 HTTP/1.1\r\nHost: localhost\r\n\r\n" + HEALTHZ)
    [(code, _, _)] = answers(client.transport.value())
    assert code == 200 and not client.transport.reading
    # Nothing sent yet: the client is not read, the next request not parsed.
    world.clock.advance(ANSWER_TIMEOUT / 2)
    assert len(answers(client.transport.value())) == 1
    assert client.codes() == [200, 200]
    assert client.transport.reading
    client.close()


def test_aClientThatNeverReadsIsAbortedAfterTheAnswerTimeout(world: World) -> None:
    client = world.client()
    client.write(HEALTHZ * 50)
    world.clock.advance(ANSWER_TIMEOUT - 0.1)
    assert not client.transport.disconnecting
    world.clock.advance(0.1)
    assert client.transport.aborted
    assert len(answers(client.transport.value())) == 1
    client.close()


def test_aClientThatReadsKeepsItsConnection(world: World) -> None:
    client = world.client()
    for _ in range(5):
        client.write(HEALTHZ)
        world.clock.advance(IDLE_TIMEOUT - 1)
        client.transport.send()
    assert client.codes() == [200] * 5
    assert not client.transport.disconnecting
    client.close()


# Slow and idle clients ------------------------------------------------------


def test_aTrickledRequestIsAbortedAtTheRequestTimeout(world: World) -> None:
    client = world.client()
    started = world.clock.seconds()
    for byte in HEALTHZ[:-4]:
        client.write(bytes([byte]))
        world.clock.advance(1.0)
        if client.transport.aborted:
            break
    assert client.transport.aborted
    assert world.clock.seconds() - started == pytest.approx(REQUEST_TIMEOUT)
    assert client.codes() == []
    client.close()


def test_aHalfRequestIsAbortedAtTheRequestTimeout(world: World) -> None:
    client = world.client()
    client.write(b"POST /connections/a/drain HTTP/1.1\r\nContent-Length: 10\r\n\r\nhalf")
    world.clock.advance(REQUEST_TIMEOUT)
    assert client.transport.aborted
    client.close()


def test_anIdleConnectionIsClosed(world: World) -> None:
    client = world.client()
    world.clock.advance(IDLE_TIMEOUT - 0.1)
    assert not client.transport.disconnecting
    world.clock.advance(0.1)
    assert client.transport.disconnecting and not client.transport.aborted
    client.close()


def test_anIdleKeepAliveIsClosedAfterItsAnswerIsSent(world: World) -> None:
    client = world.client()
    client.write(HEALTHZ)
    world.clock.advance(ANSWER_TIMEOUT / 2)
    client.transport.send()
    world.clock.advance(IDLE_TIMEOUT - 0.1)
    assert not client.transport.disconnecting
    world.clock.advance(0.1)
    assert client.transport.disconnecting and not client.transport.aborted
    assert client.codes() == [200]
    client.close()


# Bodies ---------------------------------------------------------------------


def test_aLargeBodyIsRefusedBeforeItIsRead(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spooled: list[object] = []
    real = tempfile.TemporaryFile

    def spool(*args: Any, **kwargs: Any) -> Any:
        spooled.append(args)
        return real(dir=tmp_path)

    monkeypatch.setattr(tempfile, "TemporaryFile", spool)
    fleet = Fleet(spec("a"), token_file=str(tmp_path / "missing")).start()
    fleet.accept("a")
    site = adminSite(fleet.supervisor, fleet.metrics, world.clock)
    client = Client(site)
    client.write(
        b"POST /connections/a/drain HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Length: 1073741824\r\n\r\n"
    )
    [(code, headers, body)] = answers(client.transport.value())
    assert code == 413
    assert headers[b"content-type"] == b"application/json; charset=utf-8"
    assert headers[b"connection"] == b"close"
    assert body == b'{"error": "a request body may have at most 1024 bytes"}\n'
    assert client.transport.disconnecting
    client.write(b"x" * 65536)
    assert spooled == []
    assert fleet.state("a") == "ESTABLISHED"
    client.transport.send()
    client.close()
    fleet.stop()


def test_anExpectContinueBodyIsRefusedWithoutA100(world: World) -> None:
    client = world.client()
    client.write(
        b"POST /connections/a/drain HTTP/1.1\r\nContent-Length: 2000\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    assert client.codes() == [413]
    client.close()


def test_aChunkedBodyIsRefusedPastTheLimit(world: World) -> None:
    client = world.client()
    client.write(b"POST /connections/a/drain HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (512, b"x" * 512)
    client.write(chunk * 2)
    assert client.codes() == []
    client.write(chunk + b"0\r\n\r\n" + HEALTHZ)
    assert client.codes() == [413]
    assert client.transport.disconnecting
    client.close()


@pytest.mark.parametrize(
    "request_",
    [
        b"POST /connections/a/drain HTTP/1.1\r\n\r\n",
        b"POST /connections/a/drain HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        b"POST /connections/a/drain HTTP/1.1\r\nContent-Length: 1024\r\n\r\n" + b"x" * 1024,
        b"POST /connections/a/drain HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"400\r\n" + b"x" * 1024 + b"\r\n0\r\n\r\n",
    ],
)
def test_aPostNeedsNoBodyAndMayHaveASmallOne(world: World, request_: bytes) -> None:
    client = world.client()
    client.write(request_)
    # Answered (the actions are disabled without a token file), not refused.
    assert client.codes() == [403]
    assert not client.transport.disconnecting
    client.close()


# Heads ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nX: %s\r\nY: %s\r\n\r\n" % (b"a" * 8000, b"b" * 9000),
        b"GET /healthz HTTP/1.1\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n",
        b"GET /connections?" + b"transitions=1&" * 2000 + b" HTTP/1.1\r\n\r\n",
        b"GET /" + b"a/" * 9000 + b" HTTP/1.1\r\n\r\n",
    ],
    ids=["hugeHeader", "hugeHead", "manyHeaders", "hugeQuery", "hugePath"],
)
def test_anOversizedHeadIsRefusedAndClosed(world: World, head: bytes) -> None:
    client = world.client()
    client.write(head)
    assert client.codes() in ([], [400])
    assert client.transport.disconnecting
    client.close()


@pytest.mark.parametrize(
    ("query", "code"),
    [
        (b"transitions=" + b"9" * 1000, 400),
        (b"transitions=5&transitions=5", 400),
        (b"transitions[a][b][c]=5", 200),
        (b"&".join(b"x%d=%d" % (i, i) for i in range(1000)), 200),
    ],
    ids=["longValue", "twice", "nested", "manyParameters"],
)
def test_queryStringsWithinTheLineLimitAreAnswered(world: World, query: bytes, code: int) -> None:
    client = world.client()
    client.write(b"GET /connections?" + query + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert client.codes() == [code]
    client.close()


# Clients --------------------------------------------------------------------


def test_clientsPastMaxClientsAreClosedAtOnce() -> None:
    world = World(max_clients=3)
    messages: list[tuple[LogLevel, str]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "netsupervisor.admin":
            messages.append((event["log_level"], formatEvent(event)))

    with observing(observe):
        clients = [world.client() for _ in range(3)]
        for _ in range(5):
            assert world.site.buildProtocol(PEER) is None
        clients[0].close()
        clients[0] = world.client()
        assert world.site.buildProtocol(PEER) is None
    assert world.site.clients == 3 and world.site.turnedAway == 6
    assert messages == [
        (
            LogLevel.warn,
            "admin.max_clients (3) admin connections are open: closing new ones at once "
            "until one ends",
        ),
        (LogLevel.info, "admin connections below admin.max_clients again; 5 were turned away"),
        (
            LogLevel.warn,
            "admin.max_clients (3) admin connections are open: closing new ones at once "
            "until one ends",
        ),
    ]
    for client in clients:
        client.close()
    assert world.site.clients == 0
    assert world.clock.getDelayedCalls() == []


def test_maxClientsDefaultsTo64AndFollowsAReload() -> None:
    world = World()
    clients = [world.client() for _ in range(64)]
    assert world.site.buildProtocol(PEER) is None
    supervisor = world.fleet.supervisor
    supervisor.reload(attrs.evolve(supervisor.config, admin=AdminSpec(max_clients=65)))
    clients.append(world.client())
    assert world.site.buildProtocol(PEER) is None
    for client in clients:
        client.close()


# Host -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        (b"localhost", True),
        (b"LOCALHOST:9100", True),
        (b"localhost.", True),
        (b"status.localhost:9100", True),
        (b"127.0.0.1", True),
        (b"127.0.0.1:9100", True),
        (b"127.1.2.3:80", True),
        (b"[::1]", True),
        (b"[::1]:9100", True),
        (b"[::ffff:127.0.0.1]:9100", True),
        (b"evil.example", False),
        (b"evil.example:9100", False),
        (b"localhost.evil.example", False),
        (b"127.0.0.1.evil.example", False),
        (b"10.0.0.1:9100", False),
        (b"[::2]:9100", False),
        (b"[::1]x", False),
        (b"[::1", False),
        (b"localhost:port", False),
        (b"", False),
        (b"\xff\xfe", False),
    ],
)
def test_isLoopbackHost(host: bytes, loopback: bool) -> None:
    assert isLoopbackHost(host) is loopback


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        (IPv4Address("TCP", "127.0.0.1", 1), True),
        (IPv6Address("TCP", "::1", 1), True),
        (IPv4Address("TCP", "0.0.0.0", 1), False),
        (IPv4Address("TCP", "192.0.2.1", 1), False),
        (IPv6Address("TCP", "::", 1), False),
        (UNIXAddress(b"/run/admin.sock"), False),
    ],
)
def test_isLoopbackAddress(address: Any, loopback: bool) -> None:
    assert isLoopbackAddress(address) is loopback


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        (b"Host: 127.0.0.1:9100\r\n", 200),
        (b"Host: localhost\r\n", 200),
        (b"", 200),
        (b"Host: rebind.evil.example:9100\r\n", 421),
        (b"Host: localhost\r\nHost: evil.example\r\n", 421),
    ],
)
def test_aLoopbackListenerAnswersOnlyLoopbackHosts(world: World, headers: bytes, code: int) -> None:
    world.site.checkHost = True
    for path in (b"/connections", b"/healthz", b"/connections/a/drain", b"/nope", b"/"):
        client = world.client()
        client.write(b"GET " + path + b" HTTP/1.1\r\n" + headers + b"\r\n")
        [(answered, headersOut, body)] = answers(client.transport.send())
        if code == 421:
            assert answered == 421, path
            assert b"loopback host" in body
            assert headersOut[b"content-type"] == b"application/json; charset=utf-8"
        else:
            assert answered != 421, path
        client.close()


def test_anotherListenerAnswersAnyHost(world: World) -> None:
    client = world.client()
    client.write(b"GET /healthz HTTP/1.1\r\nHost: admin.example:9100\r\n\r\n")
    assert client.codes() == [200]
    client.close()


# Listening ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "bound"),
    [
        ("9100", "tcp:9100:interface=127.0.0.1"),
        (" 9100 ", "tcp:9100:interface=127.0.0.1"),
        ("tcp:9100", "tcp:9100:interface=127.0.0.1"),
        ("tcp:port=9100", "tcp:port=9100:interface=127.0.0.1"),
        ("tcp:9100:backlog=5", "tcp:9100:backlog=5:interface=127.0.0.1"),
        ("tcp:9100:interface=0.0.0.0", "tcp:9100:interface=0.0.0.0"),
        ("tcp:9100:192.0.2.1", "tcp:9100:192.0.2.1"),
        ("tcp:9100:interface=\\:\\:1", "tcp:9100:interface=\\:\\:1"),
        ("tcp6:9100", "tcp6:9100"),
        ("unix:/run/netsupervisor.sock", "unix:/run/netsupervisor.sock"),
        ("nonsense:1", "nonsense:1"),
    ],
)
def test_loopbackByDefault(listen: str, bound: str) -> None:
    assert loopbackByDefault(listen) == bound


@implementer(IListeningPort)
class Port:
    def __init__(self, address: Any) -> None:
        self.address = address

    def getHost(self) -> Any:
        return self.address

    def startListening(self) -> None:
        pass

    def stopListening(self) -> None:
        pass


class Endpoint:
    def __init__(self, address: Any) -> None:
        self.address = address

    def listen(self, factory: object) -> Any:
        return succeed(Port(self.address))


@pytest.mark.parametrize(
    ("address", "tokenFile", "checkHost", "warned"),
    [
        (IPv4Address("TCP", "127.0.0.1", 9100), "", True, False),
        (IPv6Address("TCP", "::1", 9100), "", True, False),
        (IPv4Address("TCP", "0.0.0.0", 9100), "", False, True),
        (IPv4Address("TCP", "192.0.2.1", 9100), "", False, True),
        (IPv4Address("TCP", "0.0.0.0", 9100), "/etc/token", False, False),
        (UNIXAddress(b"/run/admin.sock"), "", False, False),
    ],
)
def test_whatTheListenerAddressDecides(
    world: World, address: Any, tokenFile: str, checkHost: bool, warned: bool
) -> None:
    with loggedMessages(isWarning) as warnings:
        watcher = ListeningWatcher(Endpoint(address), onListening(world.site, lambda: tokenFile))
        watcher.listen(world.site)
    assert world.site.checkHost is checkHost
    if warned:
        [warning] = warnings
        assert "not a loopback address" in warning and "admin.token_file is not set" in warning
        assert f"port {address.port}" in warning
    else:
        assert warnings == []


def listenedOn(listen: str) -> tuple[int, object, int, str]:
    """
    What the admin service, started and stopped with C{listen} as its
    endpoint, asked a memory reactor to listen on: (port, factory, backlog,
    interface).
    """
    reactor = MemoryReactorClock()
    fleet = Fleet(spec("a"))
    service = adminService(fleet.supervisor, fleet.metrics, listen, reactor)
    service.startService()
    service.stopService()
    [listened] = reactor.tcpServers
    return listened


def test_adminServiceChecksHostOnALoopbackListener() -> None:
    _, site, _, interface = listenedOn("tcp:9100:interface=\\:\\:1")
    assert interface == "::1"
    assert isinstance(site, AdminSite) and site.checkHost


def test_adminServiceBindsLoopbackForABareTcpPort() -> None:
    port, _, _, interface = listenedOn("tcp:9100")
    assert (port, interface) == (9100, "127.0.0.1")


def test_theChannelIsTheSitesProtocol(world: World) -> None:
    client = world.client()
    assert isinstance(client.channel, AdminChannel)
    assert client.transport.producer is client.channel and not client.transport.streaming
    client.close()


def test_theTokenIsNeverReadForARefusedBody(world: World, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    client = world.client()
    client.write(
        b"POST /connections/a/drain HTTP/1.1\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1,)
    )
    assert client.codes() == [413]
    assert world.fleet.state("a") == "IDLE"
    client.close()
