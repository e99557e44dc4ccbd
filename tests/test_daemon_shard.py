"""
C{twistd netsupervisor --shard I/N}: parsed strictly, and the supervisor it
builds keeps only its shard's connections, on reload too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent
from twisted.python import usage

from supervisor.config import ConfigError, loadConfig
from supervisor.daemon import Daemon, Options
from supervisor.service import Supervisor
from supervisor.shard import Shard, owner

NAMES = [f"c{k}" for k in range(20)]


def configFile(tmp_path: Path, names: list[str], head: str = "") -> Path:
    path = tmp_path / "netsupervisor.toml"
    entries = "".join(
        f'[[connection]]\nname = "{n}"\nendpoint = "tcp:host=127.0.0.1:port=9"\n' for n in names
    )
    path.write_text(f'{head}[defaults]\nprotocol = "line"\n\n{entries}')
    return path


def options(*argv: str) -> Options:
    o = Options()
    o.parseOptions(list(argv))
    return o


def test_theFlagIsParsedIntoAShard() -> None:
    assert options("--config", "x.toml", "--shard", "2/4")["shard"] == Shard(2, 4)
    assert options("--config", "x.toml", "-s", "0/1")["shard"] == Shard(0, 1)
    assert options("--config", "x.toml")["shard"] is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "4/4",
            '--shard: expected a shard index I from 0 to 3 in I/N (shards count from 0), got "4/4"',
        ),
        ("0/0", '--shard: expected a shard count N from 1 to 1024 in I/N, got "0/0"'),
        ("-1/3", "--shard: expected a shard index I from 0 to 2"),
        ("a/b", "--shard: expected I/N, a shard index and a shard count as whole numbers"),
    ],
)
def test_aBadShardIsAUsageError(value: str, message: str) -> None:
    with pytest.raises(usage.UsageError) as caught:
        options("--config", "x.toml", "--shard", value)
    assert str(caught.value).startswith(message)


def build(tmp_path: Path, *argv: str) -> tuple[Daemon, Supervisor]:
    daemon = Daemon(options(*argv), MemoryReactorClock())
    supervisor = daemon.makeService()
    assert isinstance(supervisor, Supervisor)
    return daemon, supervisor


def test_theSupervisorKeepsItsShard(tmp_path: Path) -> None:
    path = configFile(tmp_path, NAMES)
    _, supervisor = build(tmp_path, "--config", str(path), "--shard", "1/3")
    assert supervisor.shard == Shard(1, 3)
    assert set(supervisor.connections) == {n for n in NAMES if owner(n, 3) == 1}


def test_aReloadKeepsTheFlagsShard(tmp_path: Path) -> None:
    path = configFile(tmp_path, NAMES)
    daemon, supervisor = build(tmp_path, "--config", str(path), "--shard", "0/2")
    more = [*NAMES, "extra-1", "extra-2", "extra-3"]
    configFile(tmp_path, more)
    daemon.reload()
    assert supervisor.shard == Shard(0, 2)
    assert set(supervisor.connections) == {n for n in more if owner(n, 2) == 0}


def test_withoutTheFlagEverythingIsKept(tmp_path: Path) -> None:
    path = configFile(tmp_path, NAMES)
    _, supervisor = build(tmp_path, "--config", str(path))
    assert supervisor.shard == Shard(0, 1)
    assert set(supervisor.connections) == set(NAMES)


# [supervisor] shard ----------------------------------------------------------


def test_theFileCanSayWhichShard(tmp_path: Path) -> None:
    path = configFile(tmp_path, NAMES, '[supervisor]\nshard = "2/3"\n\n')
    assert loadConfig(str(path)).shard == Shard(2, 3)
    _, supervisor = build(tmp_path, "--config", str(path))
    assert supervisor.shard == Shard(2, 3)
    assert set(supervisor.connections) == {n for n in NAMES if owner(n, 3) == 2}


def test_theFlagWinsOverTheFile(tmp_path: Path) -> None:
    path = configFile(tmp_path, NAMES, '[supervisor]\nshard = "2/3"\n\n')
    daemon, supervisor = build(tmp_path, "--config", str(path), "--shard", "0/2")
    assert supervisor.shard == Shard(0, 2)
    configFile(tmp_path, NAMES, '[supervisor]\nshard = "1/5"\n\n')
    daemon.reload()
    assert supervisor.shard == Shard(0, 2)


def test_aReloadOfTheFileCanChangeTheShard(tmp_path: Path) -> None:
    path = configFile(tmp_path, NAMES, '[supervisor]\nshard = "0/3"\n\n')
    daemon, supervisor = build(tmp_path, "--config", str(path))
    supervisor.startService()
    configFile(tmp_path, NAMES, '[supervisor]\nshard = "0/4"\n\n')
    daemon.reload()
    assert supervisor.shard == Shard(0, 4)
    assert set(supervisor.connections) == {n for n in NAMES if owner(n, 4) == 0}
    configFile(tmp_path, NAMES)
    daemon.reload()
    assert supervisor.shard == Shard(0, 1), "without the key, the process keeps everything"
    assert set(supervisor.connections) == set(NAMES)
    supervisor.stopService()


@pytest.mark.parametrize(
    ("head", "keyPath", "problem"),
    [
        (
            '[supervisor]\nshard = "4/4"\n',
            "supervisor.shard",
            'expected a shard index I from 0 to 3 in I/N (shards count from 0), got "4/4"',
        ),
        (
            '[supervisor]\nshard = "a/b"\n',
            "supervisor.shard",
            "expected I/N, a shard index and a shard count as whole numbers",
        ),
        (
            "[supervisor]\nshard = 3\n",
            "supervisor.shard",
            'expected a string I/N (like "0/4"), got the integer 3',
        ),
        (
            "[supervisor]\nshards = 3\n",
            "supervisor.shards",
            "expected one of shard, connect_rate, connect_burst, got an unknown key "
            '(did you mean "shard"?)',
        ),
        ("supervisor = 1\n", "supervisor", "expected a table, got the integer 1"),
    ],
)
def test_aBadShardKeyIsRefusedWithItsPath(
    tmp_path: Path, head: str, keyPath: str, problem: str
) -> None:
    path = configFile(tmp_path, NAMES, head + "\n")
    with pytest.raises(ConfigError) as caught:
        loadConfig(str(path))
    assert caught.value.keyPath == keyPath
    assert caught.value.problem.startswith(problem), str(caught.value)


def test_aRefusedShardOnReloadKeepsTheRunningOne(
    tmp_path: Path, noLoggedErrors: list[dict[str, object]]
) -> None:
    path = configFile(tmp_path, NAMES, '[supervisor]\nshard = "1/3"\n\n')
    daemon, supervisor = build(tmp_path, "--config", str(path))
    before = set(supervisor.connections)
    configFile(tmp_path, NAMES, '[supervisor]\nshard = "3/3"\n\n')
    daemon.reload()
    assert supervisor.shard == Shard(1, 3) and set(supervisor.connections) == before
    assert supervisor.reloads["failure"] == 1
    [refused] = [formatEvent(e) for e in noLoggedErrors]
    noLoggedErrors.clear()
    assert refused.startswith("reload refused, keeping the running config: ")
    assert "supervisor.shard" in refused
