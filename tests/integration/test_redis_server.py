"""
The C{redis} plugin against a real redis-server (Debian's package) on a
free loopback port: the real handshake, RTT, a killed and restarted server,
the QUIT of a drain seen by the server, and a least-privilege ACL user.
A frozen server and bad credentials: test_real_servers.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, inlineCallbacks

from tests.integration.conftest import HOST, waitFor
from tests.integration.scenarios import (
    Recorder,
    connectionTo,
    establishWithRtt,
    killAndRestart,
    stopAtLast,
    stopGracefully,
)
from tests.integration.servers import (
    ServerLauncher,
    ServerProcess,
    findProgram,
    runProgram,
)

pytestmark = pytest.mark.integration


PASSWORD = "correct-horse-battery"


@inlineCallbacks
def cli(server: ServerProcess, *args: str, password: str | None = None) -> Generator[Any, Any, str]:
    argv = [findProgram("redis-cli"), "-h", HOST, "-p", str(server.port)]
    if password is not None:
        argv += ["--no-auth-warning", "-a", password]
    out, err, code = yield runProgram([*argv, *args])
    assert code == 0, err
    return str(out.decode())


def quitCalls(info: str) -> int:
    for line in info.splitlines():
        if line.startswith("cmdstat_quit:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


@pytest_twisted.inlineCallbacks
def test_handshakeRttKillRestartAndQuit(
    servers: ServerLauncher, tmp_path: Path
) -> Generator[Deferred[Any], Any, None]:
    """
    ESTABLISHED after AUTH and PING on a server that requires a password,
    with a measured RTT and the client's name in CLIENT LIST; killed: IDLE
    ("lost"); restarted on the same port: ESTABLISHED again; stop: the
    server counts a QUIT and the client is gone.
    """
    server = yield servers.redis(requirepass=PASSWORD)
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    connection = connectionTo("redis", "redis-main", server.port, password_file=str(secret))
    seen = Recorder(connection)
    try:
        yield establishWithRtt(connection, seen)
        clients = yield cli(server, "CLIENT", "LIST", password=PASSWORD)
        assert "name=redis-main" in clients

        yield killAndRestart(server, connection, seen)

        before = yield cli(server, "INFO", "commandstats", password=PASSWORD)
        assert quitCalls(before) == 0
        yield stopGracefully(connection)
        after = yield cli(server, "INFO", "commandstats", password=PASSWORD)
        assert quitCalls(after) == 1, after
        clients = yield cli(server, "CLIENT", "LIST", password=PASSWORD)
        assert "name=redis-main" not in clients
        assert PASSWORD not in str(seen)
    finally:
        yield stopAtLast(connection)


@pytest_twisted.inlineCallbacks
def test_aLeastPrivilegeAclUserWithHello3(
    servers: ServerLauncher, tmp_path: Path
) -> Generator[Deferred[Any], Any, None]:
    """
    The ACL user that docs/plugins/redis.md recommends is enough for the
    whole life of a connection over RESP3: HELLO 3 with AUTH and SETNAME,
    heartbeats, and QUIT.
    """
    acl = "user monitor on >acl-password +ping +client|setname +quit +hello +auth"
    server = yield servers.redis(requirepass=PASSWORD, extra=(acl,))
    secret = tmp_path / "password"
    secret.write_text("acl-password\n")
    connection = connectionTo(
        "redis", "redis-acl", server.port, username="monitor", password_file=str(secret), hello=3
    )
    try:
        connection.start()
        yield waitFor(lambda: connection.rtt is not None, 5.0, "a heartbeat RTT")
        clients = yield cli(server, "CLIENT", "LIST", password=PASSWORD)
        ours = [line for line in clients.splitlines() if "name=redis-acl" in line]
        assert len(ours) == 1, clients
        assert "user=monitor" in ours[0] and "resp=3" in ours[0], ours
        yield stopGracefully(connection)
        after = yield cli(server, "INFO", "commandstats", password=PASSWORD)
        assert quitCalls(after) == 1, after
    finally:
        yield stopAtLast(connection)
