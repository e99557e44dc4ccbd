"""
C{python -m supervisor.chaos} as a user runs it: a real process between a
real client socket and a line peer, its faults switched through the control
port, which stays bounded against hostile clients.
"""

from __future__ import annotations

import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.chaos import MAX_CLIENTS, MAX_LINE
from tests.integration.daemon import Peer, Process, freePort, poll

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


class ChaosProcess(Process):
    """
    The chaos proxy in front of a line peer, with a control port.
    """

    def __init__(self, directory: Path, target: int, *faults: str) -> None:
        argv = [sys.executable, "-m", "supervisor.chaos", "--listen", "0", "--control", "0"]
        argv += ["--target", f"{HOST}:{target}", "--seed", "1"]
        for fault in faults:
            argv += ["--fault", fault]
        super().__init__(argv, ROOT, directory / "chaos.log")
        lines = poll(self._announced, 15, "the proxy to listen")
        self.port = int(lines[0].rsplit(":", 1)[1])
        self.control = int(lines[1].rsplit(":", 1)[1])

    def _announced(self) -> list[str] | None:
        if self.popen.poll() is not None:
            raise AssertionError(f"exited {self.popen.returncode}: {self.output()}")
        lines = self.output().splitlines()
        if len(lines) >= 2 and lines[1].startswith("control on"):
            assert lines[0].startswith(f"listening on {HOST}:")
            return lines
        return None


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[ChaosProcess]:
    line = Peer(freePort(), tmp_path, 0)
    proxy = ChaosProcess(tmp_path, line.port, "latency:delay=0.2")
    try:
        yield proxy
    finally:
        proxy.stop()
        line.stop()


def roundTrip(port: int, payload: bytes, timeout: float) -> tuple[bytes, float]:
    """
    Send C{PING payload} through the proxy; the answer (b"" if none came in
    C{timeout}) and how long it took.
    """
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.settimeout(timeout)
        start = time.monotonic()
        s.sendall(b"PING " + payload + b"\r\n")
        try:
            answer = s.recv(100)
        except TimeoutError:
            answer = b""
        return answer, time.monotonic() - start


class Control:
    """
    A client of the control port: one command, one answer line.
    """

    def __init__(self, port: int) -> None:
        self.socket = socket.create_connection((HOST, port), timeout=5)
        self.file = self.socket.makefile("rwb")

    def __call__(self, command: bytes) -> str:
        self.file.write(command + b"\n")
        self.file.flush()
        return self.file.readline().decode().rstrip("\n")

    def close(self) -> None:
        self.file.close()
        self.socket.close()


def test_faultsSwitchedThroughTheControlPort(chaos: ChaosProcess) -> None:
    """
    The fault given on the command line is in force; the control port
    replaces it (blackhole), clears it, and reports the counters; SIGTERM
    ends the process with status 0.
    """
    answer, took = roundTrip(chaos.port, b"1", 5)
    assert answer == b"PONG 1\r\n"
    assert took >= 0.4, "200 ms each way"

    control = Control(chaos.control)
    try:
        assert control(b"status").startswith("ok faults=latency:delay=0.2,")
        assert control(b"set blackhole").startswith("ok faults=blackhole:toward=both ")
        answer, _ = roundTrip(chaos.port, b"2", 0.5)
        assert answer == b""
        assert control(b"set nonsense") == (
            "error unknown fault 'nonsense'; one of: bandwidth, blackhole, corrupt, "
            "fragment, halfclose, latency, reset, stall"
        )
        assert control(b"clear").startswith("ok faults=none ")
        answer, took = roundTrip(chaos.port, b"3", 5)
        assert answer == b"PONG 3\r\n"
        assert took < 0.4
        status = control(b"status")
        assert " accepted=3 " in status
        assert " dropped=8 " in status  # "PING 2\r\n", read and dropped
        assert control(b"quit") == "ok bye"
    finally:
        control.close()

    chaos.signal(signal.SIGTERM)
    assert chaos.wait(10) == 0


def test_controlPortBoundsHostileClients(chaos: ChaosProcess) -> None:
    """
    Past L{MAX_CLIENTS} a client is refused; an overlong line closes its
    sender; a client that never reads its answers does not stop the proxy
    from serving others.
    """
    clients = [Control(chaos.control) for _ in range(MAX_CLIENTS)]
    try:
        assert all(c(b"status").startswith("ok ") for c in clients)
        extra = socket.create_connection((HOST, chaos.control), timeout=5)
        with extra:
            assert extra.recv(100) == b"error too many control clients\n"
            assert extra.recv(100) == b""
    finally:
        for c in clients:
            c.close()

    poll(lambda: _accepted(chaos.control), 5, "a place for a new client")
    long = socket.create_connection((HOST, chaos.control), timeout=5)
    with long:
        long.sendall(b"s" * (MAX_LINE + 10))
        received = b""
        while True:
            chunk = long.recv(200)
            if not chunk:
                break
            received += chunk
        assert received == f"error line longer than {MAX_LINE} bytes; closing\n".encode()

    # Never reads: pipelines commands until its own send blocks.
    greedy = socket.create_connection((HOST, chaos.control), timeout=5)
    with greedy:
        greedy.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                sent += greedy.send(b"status\n" * 1000)
            except BlockingIOError:
                break
        assert time.monotonic() < deadline, "the proxy stopped reading the greedy client"
        control = Control(chaos.control)
        try:
            assert control(b"status").startswith("ok ")
        finally:
            control.close()
        answer, _ = roundTrip(chaos.port, b"4", 5)
        assert answer == b"PONG 4\r\n"


def _accepted(port: int) -> bool:
    control = Control(port)
    try:
        return control(b"status").startswith("ok ")
    finally:
        control.close()
