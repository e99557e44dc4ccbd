"""
Fixtures for integration tests: real peer processes on 127.0.0.1 and bounded
waits that poll on the running (global) reactor.

Nothing here sleeps in the reactor thread: every wait is a poll loop built on
C{deferLater}, and fails with a message once its timeout has passed.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, cast

import pytest
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from supervisor.spec import ConnectionSpec
from tests.integration.daemon import peerCommand

if TYPE_CHECKING:
    from tests.integration.pong import PongServer
    from tests.integration.servers import ServerLauncher

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
POLL_INTERVAL = 0.01
STARTUP_TIMEOUT = 15.0
EXIT_TIMEOUT = 5.0


def theReactor() -> IReactorTime:
    """
    The global reactor, which pytest-twisted runs (imported late, on purpose).
    """
    from twisted.internet import reactor

    return cast(IReactorTime, reactor)


@inlineCallbacks
def waitFor(
    predicate: Callable[[], object], timeout: float, what: str = "a condition"
) -> Generator[Deferred[None], object, None]:
    """
    Poll C{predicate} on the reactor until it is true.

    @raise AssertionError: if it is still false after C{timeout} seconds.
    """
    clock = theReactor()
    deadline = clock.seconds() + timeout
    while not predicate():
        if clock.seconds() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        yield deferLater(clock, POLL_INTERVAL, lambda: None)


@inlineCallbacks
def holdsFor(
    predicate: Callable[[], object], duration: float, what: str = "a condition"
) -> Generator[Deferred[None], object, None]:
    """
    Poll C{predicate} on the reactor for C{duration} seconds.

    @raise AssertionError: as soon as it is false.
    """
    clock = theReactor()
    deadline = clock.seconds() + duration
    while clock.seconds() < deadline:
        if not predicate():
            raise AssertionError(f"{what} stopped holding")
        yield deferLater(clock, POLL_INTERVAL, lambda: None)
    if not predicate():
        raise AssertionError(f"{what} stopped holding")


class PeerProcess:
    """
    One C{python -m supervisor.peer} process.

    @ivar port: the port it listens on, once L{PeerLauncher.launch} has fired.
    """

    def __init__(self, requestedPort: int, logPath: Path, backlog: int = 50) -> None:
        self.logPath = logPath
        self._log: IO[bytes] = logPath.open("wb")
        self.process = subprocess.Popen(
            peerCommand(requestedPort, backlog),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self.process.stdout is not None
        self._stdout = self.process.stdout
        os.set_blocking(self._stdout.fileno(), False)
        self._buffer = b""
        self.port = -1

    @property
    def pid(self) -> int:
        """
        The process id.
        """
        return self.process.pid

    @property
    def alive(self) -> bool:
        """
        Whether the process has not exited yet (a stopped process is alive).
        """
        return self.process.poll() is None

    @property
    def endpoint(self) -> str:
        """
        The client endpoint description of its port.
        """
        return f"tcp:host={HOST}:port={self.port}"

    def specs(self, count: int, **settings: Any) -> tuple[ConnectionSpec, ...]:
        """
        C{count} connections to it, named C{c0}, C{c1}..., each with
        C{settings} (L{ConnectionSpec}'s).
        """
        return tuple(ConnectionSpec(f"c{i}", self.endpoint, **settings) for i in range(count))

    def stderr(self) -> str:
        """
        What the process wrote to stderr so far.
        """
        self._log.flush()
        return self.logPath.read_text(errors="replace")

    def _announced(self) -> bool:
        try:
            chunk = os.read(self._stdout.fileno(), 4096)
        except BlockingIOError:
            chunk = b""
        self._buffer += chunk
        if b"\n" in self._buffer:
            return True
        if not chunk and not self.alive:
            raise AssertionError(
                f"peer exited with {self.process.returncode} before listening:\n{self.stderr()}"
            )
        return False

    @inlineCallbacks
    def waitUntilListening(self) -> Generator[Deferred[None], object, None]:
        """
        Read the C{listening on HOST:PORT} line (bounded) and set L{port}.
        """
        yield waitFor(self._announced, STARTUP_TIMEOUT, f"peer {self.pid} to listen")
        line = self._buffer.split(b"\n", 1)[0].decode()
        prefix = f"listening on {HOST}:"
        assert line.startswith(prefix), f"unexpected first line {line!r}"
        self.port = int(line[len(prefix) :])

    def signal(self, signum: int) -> None:
        """
        Send C{signum} to this process, by its PID, if it is still alive.
        """
        if self.alive:
            os.kill(self.pid, signum)

    def isStopped(self) -> bool:
        """
        Whether the process is stopped (SIGSTOP), according to C{/proc}.
        """
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")

    def waitForExit(self, timeout: float = EXIT_TIMEOUT) -> Deferred[None]:
        """
        Poll, on the reactor, until the process has exited and been reaped.
        """
        return waitFor(lambda: not self.alive, timeout, f"peer {self.pid} to exit")

    def reap(self) -> None:
        """
        Kill (SIGKILL, by PID) and wait for the process; close its pipes.
        Blocking, for teardown only, outside the reactor's turn.
        """
        try:
            if self.alive:
                os.kill(self.pid, signal.SIGKILL)
            self.process.wait(EXIT_TIMEOUT)
        finally:
            self._stdout.close()
            self._log.close()


def ephemeralPortRange() -> tuple[int, int]:
    """
    The kernel's range for C{bind(0)} and outgoing source ports.
    """
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def portIsFree(port: int) -> bool:
    """
    Whether C{port} on L{HOST} can be bound right now (racy: a hint only).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


class Reapable(Protocol):
    """
    A process a test started, that it kills and waits for by its PID.
    """

    def reap(self) -> None: ...


def reapEach(processes: Iterable[Reapable]) -> None:
    """
    Reap every one of C{processes}, even when reaping one fails; then raise
    the first failure, if any.
    """
    errors: list[BaseException] = []
    for process in processes:
        try:
            process.reap()
        except BaseException as e:
            errors.append(e)
    if errors:
        raise errors[0]


class PeerLauncher:
    """
    Starts peer processes and remembers them all, so that the fixture's
    teardown kills and reaps every one, whatever the test did.
    """

    def __init__(self, logDirectory: Path) -> None:
        self._logDirectory = logDirectory
        self.started: list[PeerProcess] = []

    @inlineCallbacks
    def launch(
        self, port: int = 0, backlog: int = 50
    ) -> Generator[Deferred[Any], object, PeerProcess]:
        """
        Start a peer on C{port} (0: any free port) and wait until it listens,
        with a listen queue of C{backlog}.
        """
        peer = PeerProcess(port, self._logDirectory / f"peer-{len(self.started)}.log", backlog)
        self.started.append(peer)
        yield peer.waitUntilListening()
        return peer

    @inlineCallbacks
    def launchOutsideEphemeralRange(
        self, tries: int = 10, backlog: int = 50
    ) -> Generator[Deferred[Any], object, PeerProcess]:
        """
        Start a peer on a free port below the kernel's ephemeral port range.

        For a test that kills a peer and restarts it on the same port: while
        the port is free, any C{bind(0)} on the machine (another test suite,
        say) may be given a port from the ephemeral range, and a client would
        then connect to a stranger. Below that range, only an explicit bind
        can take the port.
        """
        low = ephemeralPortRange()[0]
        rng = random.Random()
        failures: list[str] = []
        for _ in range(tries):
            port = rng.randrange(max(1024, low // 2), low)
            if not portIsFree(port):
                continue
            try:
                peer = yield self.launch(port, backlog)
            except AssertionError as e:  # lost a race for the port: try another
                failures.append(str(e))
                continue
            return cast(PeerProcess, peer)
        raise AssertionError(f"no free port below {low} in {tries} tries: {failures}")

    def reapAll(self) -> None:
        """
        Kill and wait for every process started.
        """
        reapEach(self.started)


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[PeerLauncher]:
    """
    A launcher of C{supervisor.peer} processes; all are killed and reaped
    at teardown, even when the test failed.
    """
    launcher = PeerLauncher(tmp_path)
    try:
        yield launcher
    finally:
        launcher.reapAll()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[ServerLauncher]:
    """
    A launcher of real servers (redis-server, nats-server, mosquitto); all
    are killed and reaped at teardown, even when the test failed.
    """
    # Imported here: tests.integration.servers imports this module.
    from tests.integration.servers import ServerLauncher

    launcher = ServerLauncher(tmp_path)
    try:
        yield launcher
    finally:
        launcher.reapAll()


@pytest.fixture
def pongs() -> Iterator[Callable[..., PongServer]]:
    """
    Starts L{tests.integration.pong.PongServer}s (its arguments, by name);
    every one is stopped at teardown, even when the test failed.
    """
    # Imported here: tests.integration.pong imports this module.
    from tests.integration.pong import PongServer

    started: list[PongServer] = []

    def start(**arguments: Any) -> PongServer:
        server = PongServer(**arguments)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
