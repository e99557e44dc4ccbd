"""
Real servers from Debian's packages (redis-server, nats-server, mosquitto,
memcached) for integration tests: each on a free 127.0.0.1 port below the kernel's
ephemeral range (so that it can be killed and restarted on the same port),
with its own configuration and log files in the test's tmp directory, and
killed by PID at teardown whatever the test did.

Every wait is bounded and polls on the running reactor.
"""

from __future__ import annotations

import getpass
import os
import random
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Generator
from pathlib import Path
from typing import IO, Any

import attrs
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue

from tests.integration.conftest import (
    EXIT_TIMEOUT,
    HOST,
    STARTUP_TIMEOUT,
    ephemeralPortRange,
    portIsFree,
    reapEach,
    theReactor,
    waitFor,
)
from tests.programs import requireProgram


def findProgram(name: str) -> str:
    """
    C{name}'s path, also looking in the C{sbin} directories that a non-root
    C{PATH} may lack (Debian installs C{mosquitto} and C{nats-server} there).
    Skips, or fails under C{CI=true}, when it is not installed.
    """
    path = shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")
    if path is not None:
        return path
    return requireProgram(name)


def accepts(port: int) -> bool:
    """
    Whether something accepts TCP connections on C{HOST:port} right now.
    """
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


class ServerProcess:
    """
    One server process, restartable on the same port with the same files.
    """

    def __init__(self, name: str, argv: list[str], port: int, directory: Path) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.directory = directory
        self.logPath = directory / f"{name}.out"
        self.process: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None
        self.generations: list[subprocess.Popen[bytes]] = []

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        """
        What the process wrote to stdout and stderr so far.
        """
        if self._out is not None:
            self._out.flush()
        return self.logPath.read_text(errors="replace") if self.logPath.exists() else ""

    @inlineCallbacks
    def start(self) -> Generator[Deferred[Any], object, None]:
        """
        Start the process and wait (bounded) until it accepts connections.
        """
        assert not self.alive
        if self._out is None:
            self._out = self.logPath.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        self.generations.append(self.process)
        process = self.process

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {process.returncode}:\n{self.output()}"
                )
            return accepts(self.port)

        yield waitFor(up, STARTUP_TIMEOUT, f"{self.name} to listen on {self.port}")

    def signal(self, signum: int) -> None:
        """
        Send C{signum} to the process, by its PID, if it is alive.
        """
        if self.alive:
            os.kill(self.pid, signum)

    def waitForExit(self) -> Deferred[None]:
        return waitFor(lambda: not self.alive, EXIT_TIMEOUT, f"{self.name} {self.pid} to exit")

    def reap(self) -> None:
        """
        Kill (SIGKILL, by PID) and wait for every process started. Blocking,
        for teardown only.
        """
        for process in self.generations:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                os.kill(process.pid, signal.SIGKILL)
            process.wait(EXIT_TIMEOUT)
        if self._out is not None:
            self._out.close()


@attrs.frozen
class TLSListener:
    """
    A server's second listener, on C{port + 1}, speaking TLS with these PEM
    files; with C{requireClient}, clients must show a certificate C{ca} signed.
    """

    ca: Path
    cert: Path
    key: Path
    requireClient: bool = True


def freePort() -> int:
    """
    A port that is free now, below the kernel's ephemeral range, so that no
    C{bind(0)} elsewhere takes it while a test has its server stopped.
    """
    low = ephemeralPortRange()[0]
    rng = random.Random()
    for _ in range(50):
        port = rng.randrange(max(1024, low // 2), low)
        if portIsFree(port) and portIsFree(port + 1):
            return port
    raise AssertionError(f"no free port below {low}")


class ServerLauncher:
    """
    Writes configurations, starts servers and remembers them all for the
    fixture's teardown.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[ServerProcess] = []

    @inlineCallbacks
    def _launch(
        self, name: str, makeArgv: Callable[[int, Path], list[str]]
    ) -> Generator[Deferred[Any], object, ServerProcess]:
        failures: list[str] = []
        for attempt in range(5):
            port = freePort()
            directory = self.directory / f"{name}-{len(self.started)}-{attempt}"
            directory.mkdir()
            server = ServerProcess(name, makeArgv(port, directory), port, directory)
            self.started.append(server)
            try:
                yield server.start()
            except AssertionError as e:  # lost a race for the port: try another
                failures.append(str(e))
                server.reap()
                continue
            return server
        raise AssertionError(f"{name} did not start: {failures}")

    def redis(
        self,
        requirepass: str | None = None,
        extra: tuple[str, ...] = (),
        tls: TLSListener | None = None,
    ) -> Deferred[ServerProcess]:
        """
        A redis-server; with C{requirepass}, clients must C{AUTH}; C{extra}
        lines are added to its configuration (e.g. ACL C{user} lines); with
        C{tls}, it also listens for TLS on C{port + 1}.
        """
        program = findProgram("redis-server")

        def argv(port: int, directory: Path) -> list[str]:
            lines = [
                f"port {port}",
                f"bind {HOST}",
                'save ""',
                "appendonly no",
                f"dir {directory}",
                "loglevel verbose",
                f"logfile {directory / 'redis.log'}",
                "daemonize no",
            ]
            if requirepass is not None:
                lines.append(f"requirepass {requirepass}")
            if tls is not None:
                lines += [
                    f"tls-port {port + 1}",
                    f"tls-cert-file {tls.cert}",
                    f"tls-key-file {tls.key}",
                    f"tls-ca-cert-file {tls.ca}",
                    f"tls-auth-clients {'yes' if tls.requireClient else 'no'}",
                ]
            lines += extra
            config = directory / "redis.conf"
            config.write_text("\n".join(lines) + "\n")
            return [program, str(config)]

        return self._launch("redis", argv)

    def nats(self, user: str | None = None, password: str | None = None) -> Deferred[ServerProcess]:
        """
        A nats-server with its monitoring port at C{port + 1} (for
        C{/connz}), logging with C{-DV}; with C{user}, clients must give
        that user and C{password}.
        """
        program = findProgram("nats-server")

        def argv(port: int, directory: Path) -> list[str]:
            lines = [f"listen: {HOST}:{port}", f"http: {HOST}:{port + 1}"]
            if user is not None:
                lines.append(f'authorization {{ user: "{user}", password: "{password}" }}')
            config = directory / "nats.conf"
            config.write_text("\n".join(lines) + "\n")
            return [program, "-c", str(config), "-DV", "-l", str(directory / "nats.log")]

        return self._launch("nats", argv)

    def mosquitto(
        self,
        users: dict[str, str] | None = None,
        tls: TLSListener | None = None,
        extra: tuple[str, ...] = (),
    ) -> Deferred[ServerProcess]:
        """
        A mosquitto broker logging everything to a file; with C{users}, a
        password file made with C{mosquitto_passwd -b} and no anonymous
        clients; with C{tls}, it also listens for TLS on C{port + 1}; C{extra}
        lines are added to its configuration.
        """
        program = findProgram("mosquitto")
        passwd = findProgram("mosquitto_passwd") if users else ""

        def argv(port: int, directory: Path) -> list[str]:
            lines = [
                f"listener {port} {HOST}",
                "persistence false",
                f"log_dest file {directory / 'mosquitto.log'}",
                "log_type all",
                "connection_messages true",
                f"user {getpass.getuser()}",
            ]
            if tls is not None:
                lines += [
                    f"listener {port + 1} {HOST}",
                    f"cafile {tls.ca}",
                    f"certfile {tls.cert}",
                    f"keyfile {tls.key}",
                    f"require_certificate {'true' if tls.requireClient else 'false'}",
                ]
            if users:
                passwords = directory / "passwords"
                for user, password in users.items():
                    create = ["-c"] if not passwords.exists() else []
                    subprocess.run(
                        [passwd, *create, "-b", str(passwords), user, password],
                        check=True,
                        capture_output=True,
                        timeout=EXIT_TIMEOUT,
                    )
                passwords.chmod(0o600)
                lines += [f"password_file {passwords}", "allow_anonymous false"]
            else:
                lines.append("allow_anonymous true")
            lines += extra
            config = directory / "mosquitto.conf"
            config.write_text("\n".join(lines) + "\n")
            return [program, "-c", str(config)]

        return self._launch("mosquitto", argv)

    def memcached(self) -> Deferred[ServerProcess]:
        """
        A memcached on the loopback address only (no UDP), one thread,
        logging errors to its output.
        """
        program = findProgram("memcached")

        def argv(port: int, directory: Path) -> list[str]:
            return [
                program,
                *("-l", HOST, "-p", str(port), "-U", "0"),
                *("-t", "1", "-m", "8", "-u", getpass.getuser(), "-v"),
            ]

        return self._launch("memcached", argv)

    def forProtocol(
        self, protocol: str, user: str | None = None, password: str | None = None
    ) -> Deferred[ServerProcess]:
        """
        The server that the bundled plugin C{protocol} (C{redis}, C{nats} or
        C{mqtt}) speaks to; with C{password}, clients must authenticate
        (redis: C{requirepass}, for its default user; nats and mqtt: as
        C{user}).
        """
        if protocol == "redis":
            return self.redis(requirepass=password)
        if protocol == "nats":
            return self.nats(user=user, password=password)
        assert protocol == "mqtt", protocol
        users = {user: password} if user is not None and password is not None else None
        return self.mosquitto(users=users)

    def reapAll(self) -> None:
        reapEach(self.started)


def runProgram(argv: list[str], timeout: float = 5.0) -> Deferred[tuple[bytes, bytes, int]]:
    """
    Run a short program (a server's own client) off the reactor thread's
    back, bounded by C{timeout}: (stdout, stderr, exit code).
    """
    d: Deferred[tuple[bytes, bytes, int]] = getProcessOutputAndValue(
        argv[0], argv[1:], env=dict(os.environ), reactor=theReactor()
    )
    return d.addTimeout(timeout, theReactor())
