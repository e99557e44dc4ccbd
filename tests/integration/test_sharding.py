"""
One configuration of 2,000 connections over real C{twistd -n netsupervisor}
processes and a real line peer: 4 shards own every connection exactly once;
a fifth shard takes about a fifth of them, and the reload of the other four
(SIGHUP, as a systemd host rebalances) drains only those; netsupervisor-ctl
merges the fleet, reconnects on the right shard, and reports a dead shard
without a traceback.

Going to 5 shards is done the way deploy/systemd does it: each process has
its own file (render-shards' head + the common connections) whose
C{[supervisor] shard} changes, and a SIGHUP applies it. Restarting each
process with a new C{--shard} would drain and reconnect every connection of
every old shard, which is what this test shows does not happen.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.peer import raiseFileLimit
from supervisor.shard import owner
from tests.integration.daemon import BIN, HOST, Daemon, Processes, freePort, poll, stoppedAtEnd
from tests.programs import requireProgram

pytestmark = pytest.mark.integration

COUNT = 2000
NAMES = [f"dev-{k:04d}" for k in range(COUNT)]
TOKEN = "shard-test-token"
# Slow heartbeats and long timeouts: five processes start on two cores while
# 2,000 connections establish, and a missed heartbeat would be a state change.
COMMON = (
    '[defaults]\nprotocol = "line"\ndrain_timeout = 3.0\nconnect_timeout = 10.0\n'
    'backoff = { initial = 0.2, max = 2.0, jitter = "full", reset_after = 1.0 }\n'
    "heartbeat = { interval = 5.0, timeout = 10.0, misses = 3 }\n\n"
)


class Fleet(Processes):
    """
    A line peer and the shard processes, each in a directory of its own;
    every process is stopped by its PID at the end.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.shards: list[Daemon] = []
        self.port = freePort()
        self.token = directory / "token"
        self.token.write_text(TOKEN + "\n")
        self.token.chmod(0o600)
        self.peer(self.port)
        self.connections = "".join(
            f'[[connection]]\nname = "{n}"\nendpoint = "tcp:host={HOST}:port={self.port}"\n'
            for n in NAMES
        )

    def write(self, index: int, count: int) -> Path:
        """
        Shard C{index}'s file, as render-shards writes it: written aside,
        then renamed.
        """
        path = self.directory / f"shard-{index}.toml"
        aside = path.with_suffix(".new")
        aside.write_text(
            f'[supervisor]\nshard = "{index}/{count}"\n\n'
            f'[admin]\ntoken_file = "{self.token}"\n\n{COMMON}{self.connections}'
        )
        aside.replace(path)
        return path

    def start(self, index: int, count: int) -> Daemon:
        home = self.directory / f"shard-{index}"
        home.mkdir()
        daemon = self.started(Daemon(self.write(index, count), home))
        self.shards.append(daemon)
        return daemon

    def urls(self) -> list[str]:
        return [f"http://{HOST}:{d.admin}" for d in self.shards]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    raiseFileLimit()  # inherited by the peer and the daemons
    yield from stoppedAtEnd(Fleet(tmp_path))


def snapshot(daemon: Daemon) -> dict[str, dict[str, Any]]:
    """
    Every connection of a shard with its last transitions.
    """
    return {c["name"]: c for c in daemon.json("/connections?transitions=50")}


def lifecycle(connection: dict[str, Any]) -> tuple[Any, ...]:
    """
    What a reload must not change for a connection it leaves alone (the RTT
    moves with every heartbeat).
    """
    keys = ("state", "since", "attempts", "consecutive_failures", "transitions", "endpoint")
    return tuple(connection[k] for k in keys)


def allEstablished(daemon: Daemon, names: set[str]) -> bool:
    connections = daemon.connections()
    return set(connections) == names and all(
        c["state"] == "ESTABLISHED" for c in connections.values()
    )


def ctl(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "netsupervisor-ctl"), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_shardsOwnEveryConnectionOnceAndRebalanceByReload(fleet: Fleet) -> None:
    started = time.monotonic()
    for index in range(4):
        fleet.start(index, 4)
    shares = [{n for n in NAMES if owner(n, 4) == i} for i in range(4)]
    for daemon, share in zip(fleet.shards, shares, strict=True):
        poll(lambda d=daemon, s=share: allEstablished(d, s), 45, "a shard ESTABLISHED")

    # Every connection is owned by exactly one process.
    seen = [set(d.connections()) for d in fleet.shards]
    assert sorted(n for names in seen for n in names) == NAMES, "the union, without overlap"
    for index, daemon in enumerate(fleet.shards):
        assert daemon.sample("netsupervisor_shard_info", shard=str(index), shards="4") == 1
        assert daemon.json("/readyz")["total"] == len(shares[index])
    before = [snapshot(d) for d in fleet.shards]

    # Grow to 5: the new shard takes its share at once, then each old shard
    # reloads its rewritten file and drains what moved.
    new = fleet.start(4, 5)
    moved = {n for n in NAMES if owner(n, 5) == 4}
    poll(lambda: allEstablished(new, moved), 30, "the new shard ESTABLISHED")
    assert set(new.connections()) == moved
    assert abs(len(moved) / COUNT - 1 / 5) <= 0.03, len(moved)
    for index, daemon in enumerate(fleet.shards[:4]):
        fleet.write(index, 5)
        daemon.signal(signal.SIGHUP)
    for index, daemon in enumerate(fleet.shards[:4]):
        keep = shares[index] - moved
        poll(lambda d=daemon, k=keep: set(d.connections()) == k, 15, "the reload to apply")
        poll(
            lambda d=daemon: d.sample("netsupervisor_config_reloads_total", result="success") == 1,
            10,
            "the reload to be counted",
        )
        assert daemon.sample("netsupervisor_shard_info", shard=str(index), shards="5") == 1

    # Only the moved connections changed: every other one has the same
    # state, since, attempts and transitions as before the reload.
    after = [snapshot(d) for d in fleet.shards[:4]]
    for index in range(4):
        kept = set(after[index])
        assert kept == shares[index] - moved
        for name in kept:
            assert lifecycle(after[index][name]) == lifecycle(before[index][name]), name
        assert {n for n in before[index] if n not in kept} == shares[index] & moved
    seen = [set(d.connections()) for d in fleet.shards]
    assert sorted(n for names in seen for n in names) == NAMES
    for daemon in fleet.shards:
        log = daemon.output()
        assert "Traceback" not in log and "Unhandled" not in log, log[-3000:]

    # The fleet in one table, from the real console script.
    urls = fleet.urls()
    done = ctl("--shard-urls", ",".join(urls), "status", "--json")
    assert (done.returncode, done.stderr) == (0, ""), done.stdout[-2000:]
    merged = json.loads(done.stdout)
    assert [s["reported_shard"] for s in merged["shards"]] == [f"{i}/5" for i in range(5)]
    assert merged["states"] == {"ESTABLISHED": COUNT}
    assert sorted(c["name"] for c in merged["connections"]) == NAMES
    assert all(c["shard"] == owner(c["name"], 5) for c in merged["connections"])
    done = ctl("--shard-urls", ",".join(urls), "status")
    assert done.returncode == 0
    assert f"fleet: 5 shards; {COUNT} connections: {COUNT} ESTABLISHED" in done.stdout

    # reconnect reaches the owning shard.
    name = sorted(moved)[0]
    history = len(new.json(f"/connections/{name}")["transitions"])
    args = [a for u in urls for a in ("--url", u)]
    done = ctl(*args, "--token-file", str(fleet.token), "reconnect", name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"reconnect {name}: accepted by shard 4 ({urls[4]}); now ")
    poll(
        lambda: (
            len(new.json(f"/connections/{name}")["transitions"]) > history
            and new.json(f"/connections/{name}")["state"] == "ESTABLISHED"
        ),
        15,
        "the reconnect to happen on shard 4, and the connection to come back",
    )

    # A shard that is down is reported, not a traceback.
    dead = 2
    fleet.shards[dead].stop()
    done = ctl("--shard-urls", ",".join(urls), "status")
    assert done.returncode == 3 and done.stderr == ""
    line = done.stdout.splitlines()[1 + dead]
    assert line.split()[:2] == [str(dead), urls[dead]]
    assert line.endswith("unreachable: connection refused")
    victim = next(n for n in NAMES if owner(n, 5) == dead)
    done = ctl("--shard-urls", ",".join(urls), "--token-file", str(fleet.token), "drain", victim)
    assert (done.returncode, done.stderr) == (3, "")
    assert "unreachable: connection refused" in done.stdout
    assert time.monotonic() - started < 90


def test_theFlagRunsOneShardAndThePageSaysWhich(fleet: Fleet) -> None:
    """
    C{--shard 1/3} on the real command line, over a file that says 0/3: the
    flag wins; the status page, in a real Chromium, shows the shard.
    """
    requireProgram("chromium")
    requireProgram("chromedriver")
    from tests.integration.browser import Browser

    names = NAMES[:60]
    fleet.connections = "".join(
        f'[[connection]]\nname = "{n}"\nendpoint = "tcp:host={HOST}:port={fleet.port}"\n'
        for n in names
    )
    home = fleet.directory / "home"
    home.mkdir()
    daemon = Daemon(fleet.write(0, 3), home, options=("--shard", "1/3"))
    fleet.processes.append(daemon)
    mine = {n for n in names if owner(n, 3) == 1}
    poll(lambda: allEstablished(daemon, mine), 20, "shard 1/3 ESTABLISHED")
    assert daemon.sample("netsupervisor_shard_info", shard="1", shards="3") == 1
    browser = Browser(fleet.directory)
    try:
        browser.open(f"http://{HOST}:{daemon.admin}/")
        shown = poll(
            lambda: browser.run(
                'const s = document.getElementById("shard");return s.hidden ? null : s.textContent;'
            ),
            10,
            "the page to show the shard",
        )
        assert shown == "· shard 1/3"
        assert browser.consoleErrors() == []
    finally:
        browser.stop()


def test_aBadShardIsAUsageErrorSayingWhy(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("")
    done = subprocess.run(
        [
            str(BIN / "twistd"),
            "-n",
            "--pidfile=",
            "netsupervisor",
            "--config",
            str(config),
            "--shard",
            "4/4",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 1
    output = (done.stdout + done.stderr).strip()
    assert output.splitlines()[-1].endswith(
        '--shard: expected a shard index I from 0 to 3 in I/N (shards count from 0), got "4/4"'
    )
    assert "Traceback" not in done.stdout + done.stderr
