"""
deploy/systemd: the template unit passes C{systemd-analyze verify}, its stop
and reload settings match the drain of the configuration it runs, and
render-shards writes one valid file per shard from one common file.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from supervisor.config import parseConfig
from supervisor.shard import Shard
from tests.programs import requireProgram

ROOT = Path(__file__).resolve().parents[1]
SYSTEMD = ROOT / "deploy" / "systemd"
UNIT = SYSTEMD / "netsupervisor@.service"
COMMON = SYSTEMD / "common.toml"
RENDER = SYSTEMD / "render-shards"


def unitKeys(text: str) -> dict[str, dict[str, list[str]]]:
    """
    The keys of a unit file by section; a key set twice has two values.
    """
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        header = re.fullmatch(r"\[(\w+)\]", line)
        if header:
            current = sections.setdefault(header.group(1), {})
            continue
        assert current is not None, f"a key before any section: {line!r}"
        assert not line.endswith("\\"), "no continuation lines"
        key, equals, value = line.partition("=")
        assert equals, f"not a key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(section: dict[str, list[str]], key: str) -> str:
    [value] = section[key]
    return value


def largestDrain() -> float:
    config = parseConfig(COMMON.read_text(), str(COMMON))
    return max(c.drain_timeout for c in config.connections)


def seconds(value: str) -> float:
    found = re.fullmatch(r"(\d+)(s|min)?", value)
    assert found, f"a plain number of seconds or minutes: {value!r}"
    return float(found.group(1)) * (60 if found.group(2) == "min" else 1)


def verify(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    """
    C{systemd-analyze verify} on an instance of the template C{text}, whose
    ExecStart is made to name this environment's twistd (verify checks that
    it is executable).
    """
    analyze = requireProgram("systemd-analyze")
    twistd = Path(sys.executable).parent / "twistd"
    assert "/opt/netsupervisor/bin/twistd " in text
    (tmp_path / UNIT.name).write_text(text.replace("/opt/netsupervisor/bin/twistd", str(twistd)))
    return subprocess.run(
        [analyze, "verify", str(tmp_path / "netsupervisor@0.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_theUnitVerifies(tmp_path: Path) -> None:
    """
    Any warning of C{systemd-analyze verify} fails.
    """
    done = verify(tmp_path, UNIT.read_text())
    assert (done.returncode, done.stderr, done.stdout) == (0, "", "")


def test_verifyWouldCatchAMisspeltKey(tmp_path: Path) -> None:
    done = verify(tmp_path, UNIT.read_text().replace("TimeoutStopSec=", "TimeoutStopSecs="))
    assert "Unknown key" in done.stderr


def test_stopAndReloadMatchTheDrain() -> None:
    service = unitKeys(UNIT.read_text())["Service"]
    assert one(service, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(service, "KillSignal") == "SIGTERM"
    # The drain may last the largest drain_timeout, and SPEC allows a second
    # past it; systemd's SIGKILL must come later still.
    assert seconds(one(service, "TimeoutStopSec")) >= largestDrain() + 5
    assert one(service, "KillMode") in ("mixed", "control-group")
    assert "SendSIGKILL" not in service and "FinalKillSignal" not in service
    assert "TimeoutSec" not in service, "it would override TimeoutStopSec"


def test_theInstanceIsTheShardIndexAndTheFileSaysTheRest() -> None:
    """
    C{%i} is the shard index; N is in the file (so that a reload can change
    it), hence no --shard flag, which would win over the file.
    """
    service = unitKeys(UNIT.read_text())["Service"]
    argv = one(service, "ExecStart").split()
    assert argv[argv.index("--config") + 1] == "/etc/netsupervisor/shard-%i.toml"
    assert "--shard" not in argv
    assert "--nodaemon" in argv and "--pidfile=" in argv
    assert one(service, "Type") in ("exec", "simple")
    assert int(one(service, "LimitNOFILE")) >= 10_000


def render(count: str, directory: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(RENDER), count, str(COMMON), str(directory)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/bin:/bin", **env},
    )


def test_renderShardsWritesOneFilePerShard(tmp_path: Path) -> None:
    done = render("3", tmp_path, ADMIN_PORT="9200")
    assert (done.returncode, done.stderr) == (0, "")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"shard-{i}.toml" for i in range(3)]
    common = tomllib.loads(COMMON.read_text())
    for index in range(3):
        document = tomllib.loads((tmp_path / f"shard-{index}.toml").read_text())
        assert document["supervisor"] == {"shard": f"{index}/3"}
        assert document["admin"]["listen"] == f"tcp:{9200 + index}:interface=127.0.0.1"
        assert document["admin"]["token_file"] == "/etc/netsupervisor/token"
        assert document["defaults"] == common["defaults"]
        assert document["connection"] == common["connection"]
        path = tmp_path / f"shard-{index}.toml"
        config = parseConfig(path.read_text(), str(path))
        assert config.shard == Shard(index, 3)
        assert len(config.connections) == len(common["connection"])


def test_renderShardsNamesWhatIsLeftOver(tmp_path: Path) -> None:
    assert render("4", tmp_path).returncode == 0
    done = render("2", tmp_path)
    assert done.returncode == 0
    assert done.stderr.splitlines() == [
        f"render-shards: {tmp_path}/shard-{i}.toml is beyond 2 shards: "
        f"stop netsupervisor@{i}, then remove it"
        for i in (2, 3)
    ]
    assert tomllib.loads((tmp_path / "shard-0.toml").read_text())["supervisor"]["shard"] == "0/2"


@pytest.mark.parametrize("count", ["0", "-1", "a", "1025", ""])
def test_renderShardsRefusesABadCount(tmp_path: Path, count: str) -> None:
    done = render(count, tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("usage: render-shards N")
    assert list(tmp_path.iterdir()) == []
