"""
Mutual TLS against real servers: Debian's redis-server (built with TLS:
C{tls-port}) and mosquitto (C{listener} with C{cafile}/C{certfile}/
C{keyfile} and C{require_certificate}), each requiring a client certificate
from the suite's CA. The right certificate: ESTABLISHED through the plugin's
own handshake, with an answered heartbeat; none: CLOSED with C{tls} after one
attempt.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from supervisor import SupervisedConnection, findPlugin
from supervisor.config import parseConfig
from supervisor.transport import clientEndpoints
from tests.integration.conftest import theReactor, waitFor
from tests.integration.scenarios import Recorder, answeredAtFirstAttempt, stopAtLast
from tests.integration.servers import ServerLauncher, TLSListener
from tests.tlsca import Authority, Issued

pytestmark = pytest.mark.integration


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority(tmp_path / "pki")


def listener(ca: Authority) -> TLSListener:
    server = ca.issue("server")
    return TLSListener(ca.path, server.certPath, server.keyPath)


def connection(
    protocol: str, port: int, ca: Authority, client: Issued | None
) -> SupervisedConnection:
    files = f'ca = "{ca.path}"'
    if client is not None:
        files += f', cert = "{client.certPath}", key = "{client.keyPath}"'
    text = (
        f'[[connection]]\nname = "{protocol}-tls"\nprotocol = "{protocol}"\n'
        f'endpoint = "tcp:host=localhost:port={port}"\n'
        "connect_timeout = 5.0\nbackoff = { initial = 0.1, max = 0.5 }\n"
        "heartbeat = { interval = 0.3, timeout = 1.0 }\n"
        f"tls = {{ enabled = true, {files} }}\n"
    )
    spec = parseConfig(text, "tls.toml").connections[0]
    reactor = theReactor()
    return SupervisedConnection(spec, clientEndpoints(reactor, spec), findPlugin(protocol), reactor)


@pytest_twisted.inlineCallbacks
def establishesThenRefusesWithoutACertificate(
    protocol: str, port: int, ca: Authority
) -> Generator[Deferred[Any], Any, None]:
    right = connection(protocol, port, ca, ca.issue("client-1", client=True))
    try:
        yield answeredAtFirstAttempt(right, "a heartbeat over TLS")
    finally:
        yield stopAtLast(right)

    anonymous = connection(protocol, port, ca, None)
    seen = Recorder(anonymous)
    anonymous.start()
    try:
        yield waitFor(lambda: anonymous.state == "CLOSED", 10, f"CLOSED\n{seen}")
        # The plugin waits for the server's answer: the server's refusal
        # comes first, even under TLS 1.3.
        assert [(t.from_, t.to, t.reason) for t in seen.transitions] == [
            ("IDLE", "CONNECTING", "start"),
            ("CONNECTING", "CLOSED", "tls"),
        ], str(seen)
        assert anonymous.attempts == 1
    finally:
        yield stopAtLast(anonymous)


@pytest.mark.parametrize(("server", "protocol"), [("redis", "redis"), ("mosquitto", "mqtt")])
@pytest_twisted.inlineCallbacks
def test_overMutualTLS(
    servers: ServerLauncher, ca: Authority, server: str, protocol: str
) -> Generator[Deferred[Any], Any, None]:
    started = yield getattr(servers, server)(tls=listener(ca))
    yield establishesThenRefusesWithoutACertificate(protocol, started.port + 1, ca)
