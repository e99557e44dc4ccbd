"""
A kernel-level blackhole: C{twistd -n netsupervisor} in one network
namespace, a line peer in another, joined by a veth pair; nftables rules in
the peer's namespace then drop every packet of the connection. No proxy, no
close, no reset: the path is dead, and only the heartbeats can tell. They
must, within C{interval + timeout * misses} (plus slack); new attempts time
out (their SYNs are dropped); once the rules are gone the connection is
ESTABLISHED again.

Needs root (skips without it, fails under C{CI=true}); the namespaces are
deleted at teardown whatever happened.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.conftest import Figures
from tests.chaos.netns import PEER_ADDRESS, Namespaces, requireRoot
from tests.integration.daemon import poll, twistdCommand

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PEER_PORT = 7000
ADMIN_PORT = 9100
INTERVAL, TIMEOUT, MISSES = 0.25, 0.25, 2
BOUND = INTERVAL + TIMEOUT * MISSES
SLACK = 1.0
CONNECT_TIMEOUT = 1.0
BACKOFF_MAX = 0.5
NAME = "through-netns"

FETCH = """
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
    sys.stdout.write(r.read().decode())
"""


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    """
    The two namespaces, deleted at teardown even when the test failed;
    teardown checks that they are gone.
    """
    requireRoot()
    made = Namespaces()
    try:
        made.create()
        yield made
    finally:
        made.destroy()
        assert made.exists() == set(), "the namespaces are deleted"


class Admin:
    """
    The daemon's admin API, on the loopback of its namespace.
    """

    def __init__(self, namespaces: Namespaces) -> None:
        self.namespaces = namespaces

    def get(self, path: str) -> str:
        return self.namespaces.python(
            self.namespaces.supervisorSide, FETCH, f"http://127.0.0.1:{ADMIN_PORT}{path}"
        )

    def connection(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.get(f"/connections/{NAME}"))
        return value

    def metric(self, line: str) -> float:
        for text in self.get("/metrics").splitlines():
            if text.startswith(line + " "):
                return float(text.split()[-1])
        return 0.0


def configText() -> str:
    return (
        '[defaults]\nprotocol = "line"\n'
        f"connect_timeout = {CONNECT_TIMEOUT}\ndrain_timeout = 1.0\n"
        f'backoff = {{ initial = 0.05, max = {BACKOFF_MAX}, jitter = "full", reset_after = 1.0 }}\n'
        f"heartbeat = {{ interval = {INTERVAL}, timeout = {TIMEOUT}, misses = {MISSES} }}\n"
        f'[[connection]]\nname = "{NAME}"\n'
        f'endpoint = "tcp:host={PEER_ADDRESS}:port={PEER_PORT}"\n'
    )


def test_droppedPathIsDetectedByHeartbeats(
    namespaces: Namespaces, tmp_path: Path, figures: Figures
) -> None:
    """
    nftables drops every packet: ESTABLISHED -> IDLE ("heartbeat") within
    the bound, the kernel counted the drops, attempts time out; rules
    removed: ESTABLISHED again.
    """
    peer = namespaces.start(
        namespaces.peerSide,
        [
            sys.executable,
            "-m",
            "supervisor.peer",
            "--host",
            PEER_ADDRESS,
            "--port",
            str(PEER_PORT),
        ],
        tmp_path / "peer.log",
    )
    poll(lambda: "listening on" in (tmp_path / "peer.log").read_text(), 15, "the peer")
    config = tmp_path / "netsupervisor.toml"
    config.write_text(configText())
    daemon = namespaces.start(
        namespaces.supervisorSide,
        twistdCommand(config, f"tcp:{ADMIN_PORT}:interface=127.0.0.1"),
        tmp_path / "twistd.log",
    )
    admin = Admin(namespaces)

    def established() -> bool:
        c = admin.connection()
        return c["state"] == "ESTABLISHED" and c["rtt_seconds"] is not None

    poll(established, 20, "ESTABLISHED across the veth pair")

    droppedAt = time.time()
    namespaces.dropPeerPort(PEER_PORT)
    poll(lambda: admin.connection()["state"] != "ESTABLISHED", BOUND + SLACK + 2, "the drop")
    transitions = admin.connection()["transitions"]
    drop = next(t for t in transitions if t["time"] >= droppedAt and t["from"] == "ESTABLISHED")
    detected = drop["time"] - droppedAt
    assert (drop["to"], drop["reason"]) == ("IDLE", "heartbeat"), transitions
    assert detected <= BOUND + SLACK, transitions
    assert namespaces.droppedPackets() > 0, "the kernel dropped the pings"

    # New attempts: the SYNs are dropped, each attempt times out.
    poll(
        lambda: (
            admin.metric(
                f'netsupervisor_connect_failures_total{{connection="{NAME}",reason="timeout"}}'
            )
            >= 1
        ),
        CONNECT_TIMEOUT + BACKOFF_MAX + SLACK + 2,
        "an attempt to time out",
    )
    assert (
        admin.metric(f'netsupervisor_disconnects_total{{connection="{NAME}",reason="heartbeat"}}')
        == 1
    )
    assert admin.metric(f'netsupervisor_heartbeat_misses_total{{connection="{NAME}"}}') >= MISSES

    dropped = namespaces.droppedPackets()
    namespaces.undrop()
    undroppedAt = time.time()
    poll(established, CONNECT_TIMEOUT + BACKOFF_MAX + BOUND + SLACK + 2, "ESTABLISHED again")
    recovered = [t for t in admin.connection()["transitions"] if t["to"] == "ESTABLISHED"][-1][
        "time"
    ] - undroppedAt

    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(10) in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
    assert "Traceback" not in (tmp_path / "twistd.log").read_text()
    assert peer.poll() is None
    figures.record(
        "netns/line/nftables-drop",
        kind="netns",
        protocol="line",
        fault="nftables drop",
        what="every packet dropped by the kernel between two network namespaces",
        expected="IDLE (heartbeat)",
        outcome=f"{drop['to']} ({drop['reason']})",
        detect_seconds=detected,
        bound_seconds=BOUND + SLACK,
        dropped_packets=dropped,
        recovery_seconds=recovered,
    )
