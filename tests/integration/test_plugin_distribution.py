"""
A third-party plugin as its users get it: the example distribution
C{examples/netsupervisor-memcached} built and installed with pip, next to
netsupervisor built from this tree, into a fresh virtual environment; then
C{twistd -n netsupervisor} from that environment, with no drop-in folder
and no C{PYTHONPATH}, finds the plugin by its entry point and supervises a
real memcached (Debian's package) through a kill, a restart and a freeze.

The same environment's daemon refuses to start when a folder on
C{PYTHONPATH} would hide the bundled plugins.

pip reaches the package index (or its cache) for netsupervisor's
dependencies and the build backend.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from tests.integration.conftest import ROOT, waitFor
from tests.integration.daemon import Daemon
from tests.integration.servers import ServerLauncher, ServerProcess

pytestmark = pytest.mark.integration

EXAMPLE = ROOT / "examples" / "netsupervisor-memcached"
INSTALL_TIMEOUT = 300.0
INTERVAL, TIMEOUT, MISSES = 0.3, 0.3, 2
DETECTION = INTERVAL + TIMEOUT * MISSES
SLACK = 1.0
"""Honest slack for a loaded machine: process scheduling, the reactor's turn."""

IGNORED = shutil.ignore_patterns(
    "__pycache__", "*.pyc", "dropin.cache", "build", "*.egg-info", ".*_cache"
)


def cleanEnvironment() -> dict[str, str]:
    """
    This process's environment without anything that would add to the new
    environment's C{sys.path}.
    """
    drop = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH"}
    return {k: v for k, v in os.environ.items() if k not in drop}


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    A fresh virtual environment with netsupervisor (from a copy of this
    tree's sources) and the example plugin distribution installed by pip,
    as a user would install them.
    """
    directory = tmp_path_factory.mktemp("distribution")
    source = directory / "netsupervisor"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("supervisor", "plugins", "twisted"):
        shutil.copytree(ROOT / name, source / name, ignore=IGNORED)
    example = shutil.copytree(EXAMPLE, directory / "netsupervisor-memcached", ignore=IGNORED)
    environment = directory / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", str(environment)], check=True, timeout=INSTALL_TIMEOUT
    )
    installed = subprocess.run(
        [
            str(environment / "bin" / "python"),
            *("-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
            str(source),
            str(example),
        ],
        cwd=directory,
        env=cleanEnvironment(),
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return environment


def configText(port: int) -> str:
    return (
        "[defaults]\n"
        "connect_timeout = 1.0\n"
        "drain_timeout = 2.0\n"
        'backoff = { initial = 0.1, max = 0.5, jitter = "full", reset_after = 1.0 }\n'
        f"heartbeat = {{ interval = {INTERVAL}, timeout = {TIMEOUT}, misses = {MISSES} }}\n\n"
        "[[connection]]\n"
        'name = "cache-1"\n'
        f'endpoint = "tcp:host=127.0.0.1:port={port}"\n'
        'protocol = "memcached"\n'
        'labels = { group = "cache" }\n'
        'options = { min_version = "1.4" }\n'
    )


class Watch:
    """
    What the daemon's admin API says of the one connection.
    """

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def state(self) -> str:
        return str(self.daemon.connections()["cache-1"]["state"])

    def transitions(self) -> list[tuple[float, str, str, str]]:
        detail = self.daemon.json("/connections/cache-1")
        return [(t["time"], t["from"], t["to"], t["reason"]) for t in detail["transitions"]]

    def answered(self) -> float:
        """
        How many heartbeats were answered so far.
        """
        count = self.daemon.sample("netsupervisor_heartbeat_rtt_seconds_count", group="cache")
        return count or 0.0

    def since(self, when: float) -> list[tuple[float, str, str, str]]:
        return [t for t in self.transitions() if t[0] >= when]

    def establishedAndAnsweredSince(self, when: float, answered: float) -> bool:
        return (
            self.state() == "ESTABLISHED"
            and any(t[2] == "ESTABLISHED" for t in self.since(when))
            and self.answered() > answered
        )


def test_theInstalledPluginIsFoundByItsEntryPoint(venv: Path, tmp_path: Path) -> None:
    """
    In the new environment, from a directory with no drop-in folder and
    with no C{PYTHONPATH}, the plugin comes from the distribution's entry
    point, and it and netsupervisor are the copies installed there.
    """
    found = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import supervisor, netsupervisor_memcached;"
            " from supervisor.plugin import availablePlugins; p = availablePlugins();"
            " print(sorted(p)); print(p.origins['memcached']);"
            " print(supervisor.__file__); print(netsupervisor_memcached.__file__)",
        ],
        cwd=tmp_path,
        env=cleanEnvironment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 0, found.stderr
    names, origin, *files = found.stdout.splitlines()
    assert names == str(["http", "int32", "line", "memcached", "mqtt", "nats", "redis"])
    assert origin == (
        "the entry point memcached = netsupervisor_memcached:memcachedPlugin"
        " of the distribution netsupervisor-memcached 0.1.0"
    )
    for file in files:
        assert Path(file).is_relative_to(venv / "lib"), file


@pytest_twisted.inlineCallbacks
def test_theInstalledPluginSupervisesARealMemcached(
    venv: Path, servers: ServerLauncher, tmp_path: Path
) -> Generator[Deferred[Any], Any, None]:
    """
    ESTABLISHED with answered heartbeats; memcached killed: ESTABLISHED ->
    IDLE (lost); restarted on its port: ESTABLISHED again; frozen
    (SIGSTOP): dropped for C{heartbeat} within the detection bound, never
    ESTABLISHED while frozen; thawed (SIGCONT): ESTABLISHED again.
    """
    server: ServerProcess = yield servers.memcached()
    config = tmp_path / "netsupervisor.toml"
    config.write_text(configText(server.port))
    assert not (tmp_path / "plugins").exists()
    daemon = Daemon(config, tmp_path, twistd=venv / "bin" / "twistd", env=cleanEnvironment())
    watch = Watch(daemon)
    try:
        yield waitFor(
            lambda: watch.state() == "ESTABLISHED" and watch.answered() > 0,
            5.0,
            "ESTABLISHED with an answered heartbeat",
        )
        assert [t[1:] for t in watch.transitions()] == [
            ("IDLE", "CONNECTING", "start"),
            ("CONNECTING", "ESTABLISHED", "ready"),
        ]

        # Killed: lost; attempts fail while it is down; back on its port.
        killedAt = time.time()
        server.signal(signal.SIGKILL)
        yield server.waitForExit()
        yield waitFor(lambda: watch.since(killedAt), 2.0, "the loss")
        assert watch.since(killedAt)[0][1:] == ("ESTABLISHED", "IDLE", "lost")
        yield waitFor(
            lambda: any(t[3] == "refused" for t in watch.since(killedAt)),
            3.0,
            "a refused attempt while memcached is down",
        )
        restartedAt, answered = time.time(), watch.answered()
        yield server.start()
        yield waitFor(
            lambda: watch.establishedAndAnsweredSince(restartedAt, answered),
            5.0,
            "ESTABLISHED with an answered heartbeat after the restart",
        )

        # Frozen: dropped for a heartbeat, within the bound.
        frozenAt = time.time()
        server.signal(signal.SIGSTOP)
        bound = DETECTION + SLACK
        yield waitFor(lambda: watch.since(frozenAt), bound + 1.0, "the drop")
        dropAt, *drop = watch.since(frozenAt)[0]
        assert tuple(drop) == ("ESTABLISHED", "IDLE", "heartbeat")
        assert dropAt - frozenAt <= bound
        yield waitFor(
            lambda: any(t[3] == "timeout" for t in watch.since(frozenAt)),
            5.0,
            "an attempt timed out while memcached is frozen",
        )
        thawedAt, answered = time.time(), watch.answered()
        assert "ESTABLISHED" not in {t[2] for t in watch.since(frozenAt)}
        assert watch.state() != "ESTABLISHED"

        # Thawed: back.
        server.signal(signal.SIGCONT)
        yield waitFor(
            lambda: watch.establishedAndAnsweredSince(thawedAt, answered),
            1.0 + 0.5 + DETECTION + SLACK + 1.0,
            "ESTABLISHED with an answered heartbeat after SIGCONT",
        )
    finally:
        server.signal(signal.SIGCONT)
        daemon.stop()


def test_theInstalledDaemonRefusesAFolderHidingTheBundledPlugins(
    venv: Path, tmp_path: Path
) -> None:
    """
    A drop-in folder made with an C{__init__.py}, on C{PYTHONPATH}, would
    be imported as the package C{plugins}: twistd says so in one line,
    naming the folder, and exits 1.
    """
    shadow = tmp_path / "extra" / "plugins"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    config = tmp_path / "netsupervisor.toml"
    config.write_text(configText(1))
    env = cleanEnvironment()
    env["PYTHONPATH"] = str(shadow.parent)
    ran = subprocess.run(
        [
            str(venv / "bin" / "twistd"),
            "-n",
            "--pidfile=",
            "netsupervisor",
            "--config",
            str(config),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 1
    [line] = ran.stderr.splitlines()
    assert line.startswith(
        f"netsupervisor: the folder {shadow} hides netsupervisor's bundled plugins ("
    )
    assert f"Delete {shadow / '__init__.py'} to make it a drop-in folder" in line
