"""
A peer that writes but never reads (issue 12, item 7): it sends C{PING}
lines as fast as it can and reads nothing, so every C{PONG} the line plugin
owes it piles up. The connection stops reading from it once what it owes
passes the transport's buffer size; with nothing read, heartbeats drop it
within their bound, and the process's memory stays flat.
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

# Accept one client, then write PING lines without ever reading, for at
# most 30 s (the test stops it sooner).
FLOODER = """
import socket, sys, time
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(1)
print(server.getsockname()[1], flush=True)
client, _ = server.accept()
client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
client.settimeout(0.2)
burst = b"PING flood\\r\\n" * 4096
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        client.send(burst)
    except socket.timeout:
        pass
    except OSError:
        break
"""


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
            yield waitFor(
                lambda: connection.writeBlocked, 5.0, "the owed PONGs to pass the buffer size"
            )
            # Nothing is read now: the peer's lines, which prove it alive,
            # stop arriving, and the heartbeat drops it within its bound.
            bound = connection.spec.heartbeat.detectionBound
            yield waitFor(lambda: connection.state != "ESTABLISHED", bound + 2.0, "the drop")
            assert seen.transitions[-1].reason == "heartbeat", str(seen)
            assert maxRssMiB() - before < 64, "the owed answers were buffered without bound"
        finally:
            yield stopAtLast(connection)
    finally:
        flooder.kill()
        flooder.wait(5)
