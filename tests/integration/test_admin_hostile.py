"""
Hostile admin clients against a real C{twistd netsupervisor} and a real
line peer: monitoring traffic must never take down supervised connections.

The clients are those of issue 12: connections that each pipeline thousands
of C{GET /connections?transitions=50} per write and never read an answer;
many slow clients that send half a request; a POST with a 1 GB body; and a
page that a DNS-rebinding attack points at the admin port.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.daemon import HOST, Daemon, poll
from tests.integration.test_daemon import World, allIn, world

pytestmark = pytest.mark.integration

__all__ = ["world"]

NAMES = [f"c{i}" for i in range(40)]
PIPELINED = b"GET /connections?transitions=50 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 2000
HOSTILE_CONNECTIONS = 8
DURATION = 8.0
HEALTHZ_BOUND = 1.0
"""Seconds: C{/healthz} answers in about a millisecond; this is slack, not a target."""
RSS_GROWTH_BOUND = 64 * 1024 * 1024
"""Bytes: without the bound, the daemon grew by hundreds of MB within seconds."""


def rss(pid: int) -> int:
    """
    The resident set size of process C{pid}, in bytes.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class NeverReading:
    """
    Connections to the admin port that pipeline requests and never read.
    """

    def __init__(self, port: int, count: int) -> None:
        self.sockets: list[socket.socket] = []
        for _ in range(count):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect((HOST, port))
            s.setblocking(False)
            self.sockets.append(s)
        self.sent = 0

    def push(self) -> None:
        """
        One write of C{PIPELINED} on each connection, as much as the kernel takes.
        """
        for s in self.sockets:
            with contextlib.suppress(BlockingIOError, ConnectionError):
                self.sent += s.send(PIPELINED)

    def close(self) -> None:
        for s in self.sockets:
            s.close()


def timedHealthz(daemon: Daemon) -> float:
    """
    How long C{GET /healthz} took, in seconds; infinite if it failed.
    """
    started = time.monotonic()
    try:
        status, _ = daemon.get("/healthz")
    except OSError:
        return math.inf
    return time.monotonic() - started if status == 200 else math.inf


def test_aPipeliningClientThatNeverReadsTakesNothingDown(world: World) -> None:
    world.peer()
    daemon = world.daemon(NAMES)
    poll(lambda: allIn(daemon, "ESTABLISHED", NAMES), 20, "every connection ESTABLISHED")
    # Some history, so that every answer is large.
    poll(
        lambda: all(c["rtt_seconds"] is not None for c in daemon.connections().values()),
        10,
        "an RTT on every connection",
    )
    before = {name: c["since"] for name, c in daemon.connections().items()}
    rssBefore = rss(daemon.pid)

    hostile = NeverReading(daemon.admin, HOSTILE_CONNECTIONS)
    latencies: list[float] = []
    peak = rssBefore
    try:
        deadline = time.monotonic() + DURATION
        while time.monotonic() < deadline and len(latencies) < 1000:
            hostile.push()
            latencies.append(timedHealthz(daemon))
            peak = max(peak, rss(daemon.pid))
            time.sleep(0.05)
    finally:
        hostile.close()

    assert hostile.sent >= len(PIPELINED), "the hostile client could not even send"
    assert max(latencies) <= HEALTHZ_BOUND, sorted(latencies)[-5:]
    after = daemon.connections()
    left = {name for name in NAMES if after[name]["since"] != before[name]}
    assert not left, f"left ESTABLISHED: {sorted(left)}"
    assert allIn(daemon, "ESTABLISHED", NAMES)
    assert daemon.sample("netsupervisor_heartbeat_misses_total", connection="c0") == 0
    assert peak - rssBefore <= RSS_GROWTH_BOUND, (rssBefore, peak)


def descriptors(pid: int) -> list[str]:
    """
    What the open descriptors of process C{pid} point at.
    """
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            found.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return found


SLOW_CLIENTS = 150
MAX_CLIENTS = 64


def test_slowClientsHoldAtMostMaxClientsDescriptors(world: World) -> None:
    world.peer()
    names = NAMES[:10]
    daemon = world.daemon(names)
    poll(lambda: allIn(daemon, "ESTABLISHED", names), 20, "every connection ESTABLISHED")
    before = {name: c["since"] for name, c in daemon.connections().items()}
    baseline = len(descriptors(daemon.pid))

    slow: list[socket.socket] = []
    try:
        for _ in range(SLOW_CLIENTS):
            s = socket.create_connection((HOST, daemon.admin), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHo")
            slow.append(s)

        def closedByTheDaemon() -> list[socket.socket]:
            closed = []
            for s in slow:
                s.settimeout(0.01)
                try:
                    if s.recv(1) == b"":
                        closed.append(s)
                except TimeoutError:
                    pass
                except ConnectionError:
                    closed.append(s)
            return closed

        closed = poll(
            lambda: len(closedByTheDaemon()) >= SLOW_CLIENTS - MAX_CLIENTS and closedByTheDaemon(),
            10,
            "the clients past admin.max_clients to be closed",
        )
        held = [s for s in slow if s not in closed]
        assert len(held) == MAX_CLIENTS
        assert len(descriptors(daemon.pid)) <= baseline + MAX_CLIENTS
        # The ones held trickle on; the others are gone for good.
        for _ in range(3):
            for s in held:
                s.sendall(b"s")
            time.sleep(1.0)
        assert len(descriptors(daemon.pid)) <= baseline + MAX_CLIENTS
    finally:
        for s in slow:
            s.close()
    poll(lambda: daemon.get("/healthz")[0] == 200, 5, "/healthz once the slow clients left")
    after = daemon.connections()
    assert {name: after[name]["since"] for name in names} == before
    assert "admin.max_clients (64) admin connections are open" in daemon.output()


def test_aGigabyteBodyIsRefusedBeforeItIsRead(world: World) -> None:
    world.peer()
    daemon = world.daemon(["c0"])
    poll(lambda: allIn(daemon, "ESTABLISHED", ["c0"]), 20, "c0 ESTABLISHED")
    rssBefore = rss(daemon.pid)
    with socket.create_connection((HOST, daemon.admin), timeout=5) as s:
        s.sendall(
            b"POST /connections/c0/drain HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Length: 1073741824\r\n\r\n"
        )
        s.settimeout(2.0)
        answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413 "), answer
        assert answer.endswith(b'{"error": "a request body may have at most 1024 bytes"}\n')
        sent = 0
        with contextlib.suppress(OSError):
            for _ in range(64):
                sent += s.send(b"x" * 65536)
        try:
            rest = s.recv(4096)
        except ConnectionResetError:
            rest = b""
        assert rest == b"", "the connection stayed open after a 413"
    assert not [d for d in descriptors(daemon.pid) if "(deleted)" in d], "a body was spooled"
    assert rss(daemon.pid) - rssBefore <= 16 * 1024 * 1024
    assert daemon.connections()["c0"]["state"] == "ESTABLISHED"


def test_aRebindingPageGets421(world: World) -> None:
    world.peer()
    daemon = world.daemon(["c0"])
    url = f"http://{HOST}:{daemon.admin}/connections"
    request = urllib.request.Request(url, headers={"Host": f"rebind.example:{daemon.admin}"})
    try:
        urllib.request.urlopen(request, timeout=5)
    except urllib.error.HTTPError as e:
        assert e.code == 421
        assert b"c0" not in e.read()
    else:
        raise AssertionError("a foreign Host was answered")
    status, body = daemon.get("/connections")
    assert status == 200 and b"c0" in body
