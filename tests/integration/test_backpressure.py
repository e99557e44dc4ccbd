"""
A peer that writes but never reads (issue 12, item 7): it sends C{PING}
lines as fast as it can and reads nothing, so every C{PONG} the line plugin
owes it piles up. Between its pings it sends another line, which the line
plugin counts as proof of life: as long as the connection reads, the
heartbeat (whose pings the peer never answers) keeps it. The connection
stops reading once what it owes passes the transport's buffer size; with
nothing read, heartbeats drop it within their bound, and the process's
memory stays flat.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import Generator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from tests.integration.conftest import waitFor
from tests.integration.scenarios import Recorder, lineConnection, stopAtLast

pytestmark = pytest.mark.integration

# Accept one client, then write PING lines, each followed by a line that
# proves it alive, without ever reading, for at most 30 s (the test stops it
# sooner).
FLOODER = """
import socket, sys, time
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(1)
print(server.getsockname()[1], flush=True)
client, _ = server.accept()
client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
client.settimeout(0.2)
burst = b"PING flood\\r\\nalive\\r\\n" * 2048
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        client.send(burst)
    except socket.timeout:
        pass
    except OSError:
        break
"""


def dropped(seen: Recorder) -> bool:
    return any(t.from_ == "ESTABLISHED" for t in seen.transitions)


def maxRssMiB() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest_twisted.inlineCallbacks
def test_aPeerThatNeverReadsIsDroppedAndCostsNoMemory() -> Generator[Deferred[Any], Any, None]:
    flooder = subprocess.Popen([sys.executable, "-c", FLOODER], stdout=subprocess.PIPE, text=True)
    try:
        assert flooder.stdout is not None
        port = int(flooder.stdout.readline())
        connection = lineConnection("never-reads", port)
        seen = Recorder(connection)
        before = maxRssMiB()
        try:
            connection.start()
            yield waitFor(lambda: connection.state == "ESTABLISHED", 5.0, "ESTABLISHED")
            # Until the kernel's buffers are full, Twisted's may pass its
            # size and empty again many times: the first time the poll sees
            # it past, on a loaded machine, may be seconds later.
            yield waitFor(
                lambda: connection.writeBlocked or dropped(seen),
                20.0,
                "the owed PONGs to pass the buffer size",
            )
            assert not dropped(seen), f"dropped while it was read from:\n{seen}"
            # Nothing is read now: the peer's lines, which prove it alive,
            # stop arriving, and the heartbeat drops it within its bound.
            bound = connection.spec.heartbeat.detectionBound
            yield waitFor(lambda: dropped(seen), bound + 2.0, "the drop")
            drop = next(t for t in seen.transitions if t.from_ == "ESTABLISHED")
            assert drop.reason == "heartbeat", str(seen)
            assert maxRssMiB() - before < 64, "the owed answers were buffered without bound"
        finally:
            yield stopAtLast(connection)
    finally:
        flooder.kill()
        flooder.wait(5)
