"""
Real processes for the daemon's integration tests: C{twistd -n netsupervisor}
from the installed package, and line peers, on 127.0.0.1. Synchronous, with
bounded polls; every process is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

HOST = "127.0.0.1"
BIN = Path(sys.executable).parent


def peerCommand(port: int, backlog: int = 50) -> list[str]:
    """
    The command line of a line peer (C{python -m supervisor.peer}) on
    C{HOST}:C{port} with a listen queue of C{backlog}.
    """
    return [
        sys.executable,
        "-m",
        "supervisor.peer",
        "--host",
        HOST,
        "--port",
        str(port),
        "--backlog",
        str(backlog),
    ]


def freePort() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def poll(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    """
    Call C{predicate} until it returns something true (returned), for at
    most C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, ValueError, KeyError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")


class Process:
    """
    A started process, its output in a file, stopped by PID.
    """

    def __init__(
        self, argv: list[str], cwd: Path, logPath: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.logPath = logPath
        self._log = logPath.open("wb")
        self.popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.popen.pid

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.pid, signum)

    def output(self) -> str:
        self._log.flush()
        return self.logPath.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def stop(self) -> None:
        """
        Make sure it is gone: SIGCONT (if frozen), SIGKILL, reap.
        """
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(10)
        self._log.close()


class Peer(Process):
    """
    C{python -m supervisor.peer} on a given port.
    """

    def __init__(
        self, port: int, directory: Path, n: int, backlog: int = 50, wait: bool = True
    ) -> None:
        """
        @param backlog: its listen queue (a storm of reconnects needs a long one).
        @param wait: wait (bounded) until it listens; else see L{listening}.
        """
        super().__init__(
            peerCommand(port, backlog),
            directory,
            directory / f"peer-{port}-{n}.log",
        )
        self.port = port
        if wait:
            self.listening()

    def listening(self) -> None:
        """
        Wait (bounded) until it listens.
        """
        poll(lambda: "listening on" in self.output(), 15, f"peer on {self.port} to listen")


class Stoppable(Protocol):
    def stop(self) -> None: ...


S = TypeVar("S", bound=Stoppable)
P = TypeVar("P", bound=Process)


def stoppedAtEnd(thing: S) -> Iterator[S]:
    """
    C{thing}, for a fixture to yield (C{yield from stoppedAtEnd(...)}), and
    stopped when the test is over, whatever happened.
    """
    try:
        yield thing
    finally:
        thing.stop()


class Processes:
    """
    The processes of one test, started in C{directory}; L{stop} stops every
    one by its PID (the last started first).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: list[Process] = []

    def started(self, process: P) -> P:
        """
        C{process}, kept to be stopped at the end.
        """
        self.processes.append(process)
        return process

    def peer(self, port: int | None = None, backlog: int = 50, wait: bool = True) -> Peer:
        """
        A line peer on C{port} (by default a free one); see L{Peer}.
        """
        port = freePort() if port is None else port
        return self.started(Peer(port, self.directory, len(self.processes), backlog, wait))

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def twistdCommand(
    config: Path,
    admin: str,
    *extra: str,
    options: tuple[str, ...] = (),
    twistd: Path = BIN / "twistd",
) -> list[str]:
    """
    The command line of C{twistd -n netsupervisor} with C{config} and the
    admin API on the server endpoint C{admin}; C{extra} are twistd's own
    options, C{options} more of the subcommand's.
    """
    return [
        str(twistd),
        "-n",
        "--pidfile=",
        *extra,
        "netsupervisor",
        "--config",
        str(config),
        "--admin",
        admin,
        *options,
    ]


class Daemon(Process):
    """
    C{twistd -n netsupervisor} with the given config, admin on a free port.
    """

    def __init__(
        self,
        config: Path,
        directory: Path,
        *extra: str,
        options: tuple[str, ...] = (),
        twistd: Path = BIN / "twistd",
        env: Mapping[str, str] | None = None,
    ) -> None:
        """
        @param extra: twistd's own options (before the subcommand).
        @param options: more options of the subcommand (after it).
        @param twistd: the program (by default this environment's).
        @param env: its environment (by default this process's).
        """
        self.admin = freePort()
        self.config = config
        super().__init__(
            twistdCommand(
                config, f"tcp:{self.admin}:interface={HOST}", *extra, options=options, twistd=twistd
            ),
            directory,
            directory / "twistd.log",
            env,
        )
        poll(self._healthy, 20, "the admin port to answer /healthz")

    def _healthy(self) -> bool:
        if self.popen.poll() is not None:
            raise AssertionError(f"twistd exited with {self.popen.returncode}:\n{self.output()}")
        return self.get("/healthz")[0] == 200

    def get(self, path: str, method: str = "GET", token: str | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://{HOST}:{self.admin}{path}", method=method)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, (path, status, body)
        return json.loads(body)

    def connections(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in self.json("/connections")}

    def metrics(self) -> str:
        status, body = self.get("/metrics")
        assert status == 200
        return body.decode()

    def sample(self, name: str, **labels: str) -> float | None:
        """
        The value of one sample of C{/metrics}, or None.
        """
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.metrics()):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return None
