"""
The C{mqtt} plugin against a real mosquitto broker (Debian's package) on a
free loopback port: CONNECT with credentials from a password file made by
C{mosquitto_passwd}, the keep-alive the broker sees, RTT, a killed and
restarted broker, and the DISCONNECT of a drain in the broker's log. A
frozen broker and bad credentials: test_real_servers.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from plugins.mqtt import keepAliveFor
from tests.integration.conftest import holdsFor, waitFor
from tests.integration.scenarios import (
    HEARTBEAT,
    Recorder,
    connectionTo,
    establishWithRtt,
    killAndRestart,
    secretFile,
    stopAtLast,
    stopGracefully,
)
from tests.integration.servers import ServerLauncher, ServerProcess

pytestmark = pytest.mark.integration


USER = "probe"
PASSWORD = "mqtt-password-7"


def brokerLog(server: ServerProcess) -> list[str]:
    path = server.directory / "mosquitto.log"
    return path.read_text(errors="replace").splitlines() if path.exists() else []


@pytest_twisted.inlineCallbacks
def test_handshakeRttKillRestartAndDisconnect(
    servers: ServerLauncher, tmp_path: Path
) -> Generator[Deferred[Any], Any, None]:
    """
    ESTABLISHED after CONNECT/CONNACK with a user and password, with the
    keep-alive derived from the heartbeat; killed: IDLE ("lost"); restarted
    on the same port: ESTABLISHED again; stop: the broker logs our
    DISCONNECT ("disconnected", not "closed its connection").
    """
    server = yield servers.mosquitto(users={USER: PASSWORD})
    connection = connectionTo(
        "mqtt",
        "mqtt-main",
        server.port,
        username=USER,
        password_file=secretFile(tmp_path, PASSWORD),
    )
    seen = Recorder(connection)
    try:
        yield establishWithRtt(connection, seen)
        keepAlive = keepAliveFor(HEARTBEAT)
        greeting = f"as mqtt-main (p2, c1, k{keepAlive}, u'{USER}')."
        yield waitFor(
            lambda: any(line.endswith(greeting) for line in brokerLog(server)), 2.0, greeting
        )
        assert any(line.endswith("Received PINGREQ from mqtt-main") for line in brokerLog(server))

        yield killAndRestart(server, connection, seen)
        # The keep-alive holds: longer than 1.5 keep-alives, the broker keeps us.
        settled = len(seen.transitions)
        yield holdsFor(lambda: len(seen.transitions) == settled, 1.5 * keepAlive + 0.5, "up")

        yield stopGracefully(connection)
        yield waitFor(
            lambda: any(
                line.endswith("Client mqtt-main disconnected.") for line in brokerLog(server)
            ),
            2.0,
            "the broker to log our DISCONNECT",
        )
        log = brokerLog(server)
        assert any(line.endswith("Received DISCONNECT from mqtt-main") for line in log)
        assert not any("mqtt-main closed its connection" in line for line in log), log
        assert not any("exceeded timeout" in line for line in log), log
        assert PASSWORD not in str(seen)
    finally:
        yield stopAtLast(connection)
