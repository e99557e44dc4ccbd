"""
TCP keepalive, read back from the live client socket of a real loopback
connection: set as configured over TCP (an address and a name) and over TLS
(on the TCP socket under it); C{idle = 0} leaves the socket's defaults.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from supervisor import SupervisedConnection, findPlugin
from supervisor.config import parseConfig
from supervisor.transport import clientEndpoints
from tests.integration.conftest import theReactor, waitFor
from tests.integration.pong import PongServer
from tests.integration.scenarios import stopAtLast
from tests.integration.test_tls_mutual import serverOptions
from tests.tlsca import Authority

pytestmark = pytest.mark.integration

OPTIONS = {
    "SO_KEEPALIVE": (socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    "TCP_KEEPIDLE": (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
    "TCP_KEEPINTVL": (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
    "TCP_KEEPCNT": (socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
}


def readBack(sock: socket.socket) -> dict[str, int]:
    return {name: sock.getsockopt(*option) for name, option in OPTIONS.items()}


def defaults() -> dict[str, int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as fresh:
        return readBack(fresh)


def clientSocket(connection: SupervisedConnection, tls: bool) -> socket.socket:
    """
    The client's socket, found through Twisted's transports: the plugin's
    transport is the TCP one, or over TLS the TLS protocol whose own
    transport is.
    """
    transport: Any = connection.protocol.transport  # type: ignore[union-attr]
    if tls:
        transport = transport.transport
    sock = transport.getHandle()
    assert isinstance(sock, socket.socket)
    return sock


@pytest_twisted.inlineCallbacks
def established(text: str) -> Generator[Deferred[Any], Any, SupervisedConnection]:
    spec = parseConfig(text, "keepalive.toml").connections[0]
    reactor = theReactor()
    connection = SupervisedConnection(
        spec, clientEndpoints(reactor, spec), findPlugin("line"), reactor
    )
    connection.start()
    try:
        yield waitFor(lambda: connection.state == "ESTABLISHED", 10, "ESTABLISHED")
    except BaseException:
        yield stopAtLast(connection)
        raise
    return connection


def config(port: int, host: str, keepalive: str, tls: str = "") -> str:
    return (
        f'[[connection]]\nname = "ka"\nendpoint = "tcp:host={host}:port={port}"\n'
        f"heartbeat.interval = 0\nkeepalive = {keepalive}\n{tls}"
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
@pytest_twisted.inlineCallbacks
def test_keepaliveIsSetOnTheSocket(
    host: str, pongs: Callable[..., PongServer]
) -> Generator[Deferred[Any], Any, None]:
    server = pongs()
    c = yield established(config(server.port, host, "{ idle = 7, interval = 2.5, count = 4 }"))
    try:
        assert readBack(clientSocket(c, tls=False)) == {
            "SO_KEEPALIVE": 1,
            "TCP_KEEPIDLE": 7,
            "TCP_KEEPINTVL": 3,  # whole seconds, rounded up
            "TCP_KEEPCNT": 4,
        }
    finally:
        yield stopAtLast(c)


@pytest_twisted.inlineCallbacks
def test_keepaliveIsSetOnTheTCPSocketUnderTLS(
    tmp_path: Path, pongs: Callable[..., PongServer]
) -> Generator[Deferred[Any], Any, None]:
    ca = Authority(tmp_path / "pki")
    client = ca.issue("client-1", client=True)
    server = pongs(tls=serverOptions(ca, ca.issue("server")))
    tls = (
        f'tls = {{ enabled = true, ca = "{ca.path}", cert = "{client.certPath}", '
        f'key = "{client.keyPath}" }}\n'
    )
    c = yield established(config(server.port, "localhost", "{ idle = 30, count = 5 }", tls))
    try:
        assert c.protocol is not None
        assert readBack(clientSocket(c, tls=True)) == {
            **defaults(),
            "SO_KEEPALIVE": 1,
            "TCP_KEEPIDLE": 30,
            "TCP_KEEPCNT": 5,
        }, "interval = 0 keeps the system's default"
    finally:
        yield stopAtLast(c)


@pytest_twisted.inlineCallbacks
def test_idleZeroLeavesTheSocketAsItIs(
    pongs: Callable[..., PongServer],
) -> Generator[Deferred[Any], Any, None]:
    server = pongs()
    c = yield established(config(server.port, "127.0.0.1", "{ idle = 0, interval = 5, count = 3 }"))
    try:
        assert readBack(clientSocket(c, tls=False)) == defaults()
        assert defaults()["SO_KEEPALIVE"] == 0
    finally:
        yield stopAtLast(c)
