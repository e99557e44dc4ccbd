"""
The C{nats} plugin against a real nats-server (Debian's package) on a free
loopback port: the real INFO/CONNECT/PING handshake with credentials, RTT,
a killed and restarted server, and the flush of a drain seen by the
server (its monitoring port and its trace log). A frozen server and bad
credentials: test_real_servers.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater

from tests.integration.conftest import HOST, theReactor
from tests.integration.scenarios import (
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


USER = "watcher"
PASSWORD = "nats-password-42"


@inlineCallbacks
def connz(server: ServerProcess, state: str = "open") -> Generator[Any, Any, list[dict[str, Any]]]:
    """
    The server's connections (C{/connz} on its monitoring port).
    """
    url = f"http://{HOST}:{server.port + 1}/connz?state={state}"
    response = yield treq.get(url, reactor=theReactor()).addTimeout(5.0, theReactor())
    body = yield treq.content(response)
    connections: list[dict[str, Any]] = json.loads(body).get("connections") or []
    return connections


@pytest_twisted.inlineCallbacks
def test_handshakeRttKillRestartAndFlush(
    servers: ServerLauncher, tmp_path: Path
) -> Generator[Deferred[Any], Any, None]:
    """
    ESTABLISHED after CONNECT with user and password and a PONG, named in
    /connz; killed: IDLE ("lost"); restarted on the same port: ESTABLISHED
    again; stop: the server sees the flushing PING, answers it, and records
    a "Client Closed" connection.
    """
    server = yield servers.nats(user=USER, password=PASSWORD)
    connection = connectionTo(
        "nats", "nats-main", server.port, user=USER, pass_file=secretFile(tmp_path, PASSWORD)
    )
    seen = Recorder(connection)
    try:
        yield establishWithRtt(connection, seen)
        open_ = yield connz(server)
        assert [c.get("name") for c in open_] == ["nats-main"]

        yield killAndRestart(server, connection, seen)

        yield stopGracefully(connection)
        closed: list[dict[str, Any]] = []
        for _ in range(50):  # bounded: 5 s
            closed = yield connz(server, "closed")
            if any(c.get("name") == "nats-main" for c in closed):
                break
            yield deferLater(theReactor(), 0.1, lambda: None)
        ours = [c for c in closed if c.get("name") == "nats-main"]
        assert [c.get("reason") for c in ours] == ["Client Closed"], ours
        # The trace log (-DV): the last thing the server read from us is the
        # flushing PING, which it answered, then our close.
        log = (server.directory / "nats.log").read_text().splitlines()
        cid = ours[0]["cid"]
        ourLines = [line for line in log if f" - cid:{cid} - " in line]
        assert ourLines[-3].endswith("<<- [PING]"), ourLines[-3:]
        assert ourLines[-2].endswith("->> [PONG]"), ourLines[-3:]
        assert ourLines[-1].endswith("Client connection closed: Client Closed"), ourLines[-3:]
        assert PASSWORD not in str(seen)
    finally:
        yield stopAtLast(connection)
