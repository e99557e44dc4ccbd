"""
C{twistd -n netsupervisor} as operators run it: a real process from the
installed package, real line peers, the admin HTTP port, and signals.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemon import Daemon, Peer, Processes, freePort, poll, stoppedAtEnd
from tests.programs import requireProgram

pytestmark = pytest.mark.integration

INTERVAL, TIMEOUT, MISSES = 0.5, 0.5, 2
DRAIN = 2.0


def configText(port: int, names: list[str], extra: str = "") -> str:
    connections = "".join(
        f'[[connection]]\nname = "{n}"\nendpoint = "tcp:host=127.0.0.1:port={port}"\n'
        f'labels = {{ group = "g" }}\n'
        for n in names
    )
    return (
        f'[defaults]\nprotocol = "line"\ndrain_timeout = {DRAIN}\nconnect_timeout = 2.0\n'
        f'backoff = {{ initial = 0.2, max = 1.0, jitter = "full", reset_after = 1.0 }}\n'
        f"heartbeat = {{ interval = {INTERVAL}, timeout = {TIMEOUT}, misses = {MISSES} }}\n"
        f"{extra}\n{connections}"
    )


class World(Processes):
    """
    Line peers, each on the one port of the test, and the daemon.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.port = freePort()
        self.config = directory / "netsupervisor.toml"

    def peer(self, port: int | None = None, backlog: int = 50, wait: bool = True) -> Peer:
        return super().peer(self.port if port is None else port, backlog, wait)

    def daemon(self, names: list[str], *extra: str) -> Daemon:
        self.config.write_text(configText(self.port, names))
        return self.started(Daemon(self.config, self.directory, *extra))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from stoppedAtEnd(World(tmp_path))


def allIn(daemon: Daemon, state: str, names: list[str]) -> bool:
    connections = daemon.connections()
    return all(connections[n]["state"] == state for n in names)


def test_connectionsEstablishAndFollowThePeer(world: World) -> None:
    peer = world.peer()
    daemon = world.daemon(["a", "b"])
    poll(lambda: allIn(daemon, "ESTABLISHED", ["a", "b"]), 10, "both ESTABLISHED")
    assert poll(lambda: daemon.connections()["a"]["rtt_seconds"] is not None, 5, "an RTT")
    status, body = daemon.get("/readyz")
    assert status == 200, body

    peer.stop()  # SIGKILL by PID
    poll(lambda: daemon.connections()["a"]["state"] in ("IDLE", "CONNECTING"), 5, "a lost")
    detail = daemon.json("/connections/a")
    assert ("ESTABLISHED", "IDLE", "lost") in [
        (t["from"], t["to"], t["reason"]) for t in detail["transitions"]
    ]
    poll(
        lambda: (daemon.sample("netsupervisor_backoff_delay_seconds", connection="a") or 0) > 0,
        5,
        "a backoff delay in the gauge",
    )
    attempts = daemon.sample("netsupervisor_connect_attempts_total", connection="a") or 0
    poll(
        lambda: (
            (daemon.sample("netsupervisor_connect_attempts_total", connection="a") or 0)
            >= attempts + 2
        ),
        10,
        "attempts to keep counting while the peer is down",
    )
    refused = daemon.sample(
        "netsupervisor_connect_failures_total", connection="a", reason="refused"
    )
    assert refused is not None and refused >= 1

    world.peer()  # back on the same port
    poll(lambda: allIn(daemon, "ESTABLISHED", ["a", "b"]), 10, "both ESTABLISHED again")


def test_runsOnTheBoundedEpollReactor(world: World) -> None:
    """
    Unless told otherwise, twistd netsupervisor runs on
    L{supervisor.reactor}; C{twistd --reactor} still chooses.
    """
    world.peer()
    daemon = world.daemon(["a"])
    poll(lambda: allIn(daemon, "ESTABLISHED", ["a"]), 10, "a ESTABLISHED")
    assert "reactor class: supervisor.reactor.BoundedEPollReactor." in daemon.output()
    daemon.stop()
    chosen = world.daemon(["a"], "--reactor=poll")
    poll(lambda: allIn(chosen, "ESTABLISHED", ["a"]), 10, "a ESTABLISHED")
    assert "reactor class: twisted.internet.pollreactor.PollReactor." in chosen.output()


def test_aFrozenPeerIsDroppedForHeartbeatWithinTheBound(world: World) -> None:
    peer = world.peer()
    daemon = world.daemon(["a"])
    poll(lambda: daemon.connections()["a"]["rtt_seconds"] is not None, 10, "an RTT")
    frozenAt = time.time()
    peer.signal(signal.SIGSTOP)
    try:
        drop = poll(
            lambda: [
                t
                for t in daemon.json("/connections/a")["transitions"]
                if t["reason"] == "heartbeat"
            ],
            10,
            "a heartbeat drop",
        )[0]
    finally:
        peer.signal(signal.SIGCONT)
    bound = INTERVAL + TIMEOUT * MISSES
    assert drop["from"] == "ESTABLISHED" and drop["to"] == "IDLE"
    assert drop["time"] - frozenAt <= bound + 1.0, (drop, frozenAt)
    assert (daemon.sample("netsupervisor_heartbeat_misses_total", connection="a") or 0) >= MISSES
    assert (
        daemon.sample("netsupervisor_disconnects_total", connection="a", reason="heartbeat") or 0
    ) >= 1
    poll(lambda: daemon.connections()["a"]["state"] == "ESTABLISHED", 10, "back after SIGCONT")


def test_sighupAddsRemovesAndLeavesUnchangedAlone(world: World) -> None:
    world.peer()
    daemon = world.daemon(["keep", "drop"])
    poll(lambda: allIn(daemon, "ESTABLISHED", ["keep", "drop"]), 10, "ESTABLISHED")
    keepBefore = daemon.json("/connections/keep")

    world.config.write_text(configText(world.port, ["keep", "new"]))
    daemon.signal(signal.SIGHUP)
    poll(lambda: set(daemon.connections()) == {"keep", "new"}, 10, "the new set of names")
    poll(lambda: daemon.connections()["new"]["state"] == "ESTABLISHED", 10, "new ESTABLISHED")
    keepAfter = daemon.json("/connections/keep")
    assert keepAfter["transitions"] == keepBefore["transitions"], "keep was touched"
    assert keepAfter["since"] == keepBefore["since"]
    assert keepAfter["state"] == "ESTABLISHED"
    assert daemon.sample("netsupervisor_config_reloads_total", result="success") == 1
    assert (
        daemon.sample("netsupervisor_disconnects_total", connection="drop", reason="removed")
        is None
    ), "a removed connection's series are dropped"


def test_aBrokenReloadKeepsTheRunningConfig(world: World) -> None:
    world.peer()
    daemon = world.daemon(["a"])
    poll(lambda: daemon.connections()["a"]["state"] == "ESTABLISHED", 10, "ESTABLISHED")
    before = daemon.json("/connections/a")
    world.config.write_text(configText(world.port, ["a", "a"]))
    daemon.signal(signal.SIGHUP)
    poll(
        lambda: daemon.sample("netsupervisor_config_reloads_total", result="failure") == 1,
        10,
        "the failed reload to be counted",
    )
    assert daemon.json("/connections/a")["transitions"] == before["transitions"]
    log = daemon.output()
    assert "reload refused" in log and "connection[1].name" in log
    assert "Traceback" not in log


def test_sigtermDrainsAndEndsLikeATwistdSignalledStop(world: World) -> None:
    world.peer()
    daemon = world.daemon(["a", "b"])
    poll(lambda: allIn(daemon, "ESTABLISHED", ["a", "b"]), 10, "ESTABLISHED")
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    # More while draining must be harmless (the drain may be over already).
    poll(lambda: "Received SIGTERM" in daemon.output(), 5, "the SIGTERM to be handled")
    for _ in range(3):
        daemon.signal(signal.SIGTERM)
    code = daemon.wait(DRAIN + 2)
    assert time.monotonic() - started <= DRAIN + 2
    assert code in (-signal.SIGTERM, 0), code
    log = daemon.output()
    assert "Traceback" not in log and "Unhandled" not in log, log
    assert "drain finished: 2 connections closed" in log


def test_metricsPassPromtool(world: World) -> None:
    promtool = requireProgram("promtool")
    world.peer()
    daemon = world.daemon(["a", "b"])
    poll(lambda: daemon.connections()["a"]["rtt_seconds"] is not None, 10, "an RTT")
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=daemon.metrics().encode(),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_jsonLogsGiveOneObjectPerLine(world: World) -> None:
    world.peer()
    daemon = world.daemon(["a"], "--logger=supervisor.logs.jsonLogObserver")
    poll(lambda: daemon.connections()["a"]["state"] == "ESTABLISHED", 10, "ESTABLISHED")
    daemon.signal(signal.SIGTERM)
    daemon.wait(DRAIN + 2)
    lines = [line for line in daemon.output().splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]
    transitions = [e for e in events if e.get("connection") == "a" and "to" in e]
    assert [(e["from_"], e["to"]) for e in transitions][:2] == [
        ("IDLE", "CONNECTING"),
        ("CONNECTING", "ESTABLISHED"),
    ]
    assert all("log_time" in e and "level" in e for e in events)


def twistd(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    from tests.integration.daemon import BIN

    return subprocess.run(
        [str(BIN / "twistd"), "-n", "--pidfile=", *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_helpDocumentsTheOptionsFromTheInstalledCopy(tmp_path: Path) -> None:
    result = twistd(tmp_path, "netsupervisor", "--help")
    assert result.returncode == 0, result.stderr
    assert "--config=" in result.stdout and "--admin=" in result.stdout
    listing = twistd(tmp_path, "--help")
    assert "netsupervisor" in listing.stdout


def test_aBadConfigStopsTheStartWithOneLine(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[connection]]\nname = "a"\nendpoint = "tcp:host=127.0.0.1:port=1"\nx = 1\n')
    result = twistd(tmp_path, "netsupervisor", "--config", str(bad))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"netsupervisor: {bad}: connection[0].x: ")
    assert "Traceback" not in result.stdout + result.stderr


def test_aMissingConfigOptionIsAUsageError(tmp_path: Path) -> None:
    result = twistd(tmp_path, "netsupervisor")
    assert result.returncode == 1
    assert "--config is required" in result.stdout + result.stderr
