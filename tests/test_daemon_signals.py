"""
The daemon's signal handlers, on a fake reactor.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent

from supervisor.config import ConfigError
from supervisor.daemon import Daemon, Options
from tests.logs import loggedMessages


class FakeReactor:
    def __init__(self) -> None:
        self.running = True
        self.stops: list[tuple[str, int]] = []
        self.fromThread: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []

    def sigTerm(self, number: int, frame: object = None) -> None:
        self.stops.append(("sigTerm", number))

    def sigInt(self, number: int, frame: object = None) -> None:
        self.stops.append(("sigInt", number))

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        self.fromThread.append((f, args, kwargs))
        f(*args, **kwargs)


@pytest.fixture
def restoredSignals() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)


def daemon() -> tuple[Daemon, FakeReactor]:
    options = Options()
    options.parseOptions(["--config", "unused.toml"])
    reactor = FakeReactor()
    return Daemon(options, reactor), reactor


def test_theFirstStopSignalStopsTheReactorOnce() -> None:
    d, reactor = daemon()
    with loggedMessages() as messages:
        d.onStop(signal.SIGTERM, None)
        d.onStop(signal.SIGTERM, None)
        d.onStop(signal.SIGINT, None)
    assert reactor.stops == [("sigTerm", signal.SIGTERM)]
    assert "SIGTERM received while draining; still draining" in messages
    assert "SIGINT received while draining; still draining" in messages


def test_sigintFirstIsASigintStop() -> None:
    d, reactor = daemon()
    d.onStop(signal.SIGINT, None)
    d.onStop(signal.SIGTERM, None)
    assert reactor.stops == [("sigInt", signal.SIGINT)]


def test_hangupReloadsInTheReactorThread() -> None:
    d, reactor = daemon()
    reloads: list[None] = []
    d.reload = lambda: reloads.append(None)  # type: ignore[method-assign]
    d.onHangup(signal.SIGHUP, None)
    assert reloads == [None] and reactor.fromThread


def test_aHangupBeforeTheReactorRunsReloadsOnceItRuns(restoredSignals: None) -> None:
    d, reactor = daemon()
    reactor.running = False
    reloads: list[None] = []
    d.reload = lambda: reloads.append(None)  # type: ignore[method-assign]
    d.onHangup(signal.SIGHUP, None)
    d.onHangup(signal.SIGHUP, None)
    assert reloads == [] and reactor.fromThread == []
    reactor.running = True
    d._installSignals()
    assert reloads == [None]


CONFIG = """
[admin]
listen = "tcp:0:interface=127.0.0.1"
{admin}
[[connection]]
name = "a"
endpoint = "tcp:host=127.0.0.1:port=1"
"""


def daemonFor(path: Path, reactor: Any) -> Daemon:
    options = Options()
    options.parseOptions(["--config", str(path)])
    return Daemon(options, reactor)


def daemonWithTokenFile(directory: Path, mode: int) -> tuple[Daemon, Path]:
    """
    A daemon on a memory reactor whose config names a token file of C{mode}.
    """
    token = directory / "admin.token"
    token.write_text("s3cr3t\n")
    token.chmod(mode)
    path = directory / "netsupervisor.toml"
    path.write_text(CONFIG.format(admin=f'token_file = "{token}"'))
    return daemonFor(path, MemoryReactorClock()), token


def test_theHangupHandlerIsInstalledWithTheService(tmp_path: Path, restoredSignals: None) -> None:
    path = tmp_path / "netsupervisor.toml"
    path.write_text(CONFIG.format(admin=""))
    reactor = MemoryReactorClock()
    d = daemonFor(path, reactor)
    d.makeService()
    assert signal.getsignal(signal.SIGHUP) == d.onHangup
    path.write_text(CONFIG.format(admin="") + '[[connection]]\nname = "b"\nendpoint = "unix:/x"\n')
    os.kill(os.getpid(), signal.SIGHUP)  # before the reactor runs: the handler runs now
    assert set(d.supervisor.connections) == {"a"}
    reactor.run()  # runs the callWhenRunning hooks, then stops
    assert set(d.supervisor.connections) == {"a", "b"}
    assert d.supervisor.reloads == {"success": 1, "failure": 0}


@pytest.mark.parametrize(
    ("mode", "exposed"),
    [
        (0o644, "readable by group and others"),
        (0o640, "readable by group"),
        (0o604, "readable by others"),
        (0o620, "writable by group"),
        (0o666, "readable by group and others and writable by group and others"),
    ],
)
def test_aTokenFileOthersMayReadIsRefusedAtStartAndOnReload(
    tmp_path: Path, mode: int, exposed: str, restoredSignals: None, noLoggedErrors: list[Any]
) -> None:
    d, token = daemonWithTokenFile(tmp_path, 0o600)
    d.makeService()
    token.chmod(mode)
    d.reload()
    assert d.supervisor.reloads == {"success": 0, "failure": 1}
    [refused] = [formatEvent(e) for e in noLoggedErrors]
    noLoggedErrors.clear()
    assert (
        f"admin.token_file: expected a file only its owner can read, got {token}, "
        f"which is {exposed} (mode {mode:04o}; chmod 600 it)"
    ) in refused
    with pytest.raises(ConfigError) as raised:
        d.load()
    assert raised.value.keyPath == "admin.token_file"
    assert "s3cr3t" not in str(raised.value)


def test_aTokenFileOthersMayReadStopsTheStart(tmp_path: Path) -> None:
    d, _ = daemonWithTokenFile(tmp_path, 0o644)
    with pytest.raises(SystemExit) as exited:
        d.makeService()
    assert exited.value.code == 1


def test_aSighupWhileDrainingIsIgnoredAndSaysSo(tmp_path: Any) -> None:
    from twisted.internet.testing import MemoryReactorClock

    from supervisor import Supervisor
    from supervisor.config import loadConfig

    path = tmp_path / "netsupervisor.toml"
    path.write_text('[[connection]]\nname = "a"\nendpoint = "tcp:host=127.0.0.1:port=1"\n')
    options = Options()
    options.parseOptions(["--config", str(path)])
    d = Daemon(options, FakeReactor())
    d.supervisor = Supervisor(loadConfig(str(path)), MemoryReactorClock())
    d.supervisor.draining = True
    path.write_text('[[connection]]\nname = "b"\nendpoint = "tcp:host=127.0.0.1:port=1"\n')
    with loggedMessages() as messages:
        d.reload()
    assert "SIGHUP received while draining; the configuration is not reloaded" in messages
    assert d.supervisor.reloads == {"success": 0, "failure": 0}
    assert list(d.supervisor.connections) == ["a"]
