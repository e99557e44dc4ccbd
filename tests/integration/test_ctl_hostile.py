"""
netsupervisor-ctl, the real console script on real sockets, against admin
"endpoints" that are hostile or broken: endless headers, a trickle, a huge
body, a peer that accepts and says nothing. Each ends within its bound,
with exit status 3 and one line saying why, and no traceback.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemon import BIN, HOST, Process, freePort, poll

pytestmark = pytest.mark.integration

# One connection at a time; each behaviour bounded to 30 s in all.
SERVER = """
import socket, sys, time
mode, port = sys.argv[1], int(sys.argv[2])
server = socket.create_server(("127.0.0.1", port))
print("listening", flush=True)
end = time.monotonic() + 30
server.settimeout(1)
while time.monotonic() < end:
    try:
        connection, _ = server.accept()
    except socket.timeout:
        continue
    connection.settimeout(1)
    try:
        connection.recv(65536)
        if mode == "headers":
            connection.sendall(b"HTTP/1.1 200 OK\\r\\n")
            while time.monotonic() < end:
                connection.sendall(b"X-Junk: " + b"y" * 1000 + b"\\r\\n")
        elif mode == "trickle":
            for byte in b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\n[]":
                if time.monotonic() > end:
                    break
                connection.sendall(bytes([byte]))
                time.sleep(0.5)
        elif mode == "body":
            connection.sendall(b"HTTP/1.1 200 OK\\r\\n\\r\\n[")
            while time.monotonic() < end:
                connection.sendall(b" " * 65536)
        elif mode == "silent":
            time.sleep(30)
    except OSError:
        pass
    finally:
        connection.close()
"""


class Hostile(Process):
    def __init__(self, mode: str, directory: Path) -> None:
        self.port = freePort()
        super().__init__(
            [sys.executable, "-c", SERVER, mode, str(self.port)],
            directory,
            directory / f"hostile-{mode}.log",
        )
        poll(lambda: "listening" in self.output(), 10, f"the {mode} server to listen")


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[list[Process]]:
    started: list[Process] = []
    try:
        yield started
    finally:
        for process in started:
            process.stop()


@pytest.mark.parametrize(
    ("mode", "why", "bound"),
    [
        # Headers are bounded by the whole connection's bytes: the body
        # limit plus 64 KiB for the status line and headers.
        ("headers", "headers and body larger than 66,560 bytes", 5.0),
        ("body", "answer larger than 1,024 bytes", 5.0),
        ("trickle", "no answer within 3 s", 6.0),
        ("silent", "no answer within 3 s", 6.0),
    ],
)
def test_aHostileAdminEndpointIsBounded(
    mode: str, why: str, bound: float, tmp_path: Path, hostile: list[Process]
) -> None:
    server = Hostile(mode, tmp_path)
    hostile.append(server)
    url = f"http://{HOST}:{server.port}"
    started = time.monotonic()
    done = subprocess.run(
        [
            str(BIN / "netsupervisor-ctl"),
            "--url",
            url,
            "--timeout",
            "3",
            "--max-bytes",
            "1024",
            "status",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    took = time.monotonic() - started
    assert (done.returncode, done.stderr) == (3, ""), done.stdout + done.stderr
    assert done.stdout.splitlines()[1].endswith(f"unreachable: {why}"), done.stdout
    assert took < bound, took
