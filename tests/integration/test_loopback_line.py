"""
A supervised C{line} connection against a real peer process
(C{python -m supervisor.peer}) over loopback TCP, on the real reactor: the
peer is killed and restarted, and frozen and thawed, and the connection
follows.
"""

from __future__ import annotations

import signal
from collections.abc import Generator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from tests.integration.conftest import PeerLauncher, holdsFor, theReactor, waitFor
from tests.integration.scenarios import (
    BACKOFF,
    HEARTBEAT,
    SLACK,
    Recorder,
    establishWithRtt,
    lineConnection,
    stopAtLast,
)

pytestmark = pytest.mark.integration


@pytest_twisted.inlineCallbacks
def test_killedPeerIsRetriedUntilItIsBack(
    peers: PeerLauncher,
) -> Generator[Deferred[Any], Any, None]:
    """
    ESTABLISHED with a measured RTT; the peer is killed: IDLE ("lost"),
    then refused attempts, IDLE and CONNECTING only; a new peer on the same
    port: ESTABLISHED again; stop: CLOSING then CLOSED.
    """
    # Not --port 0: the port must stay ours while no peer listens on it.
    peer = yield peers.launchOutsideEphemeralRange()
    connection = lineConnection("loopback-kill", peer.port)
    seen = Recorder(connection)
    try:
        yield establishWithRtt(connection, seen)

        # Kill the peer: the kernel closes its socket, the client sees it at once.
        killed = len(seen.transitions)
        peer.signal(signal.SIGKILL)
        yield peer.waitForExit()
        yield waitFor(lambda: connection.state != "ESTABLISHED", 2.0, "the loss")
        loss = seen.transitions[killed]
        assert (loss.from_, loss.to, loss.reason) == ("ESTABLISHED", "IDLE", "lost"), str(seen)
        assert connection.history[killed] == loss

        # Nothing listens: attempts keep coming and are refused.
        attemptsAtLoss = connection.attempts
        yield waitFor(lambda: connection.attempts >= attemptsAtLoss + 3, 5.0, "three more attempts")
        assert connection.state in ("IDLE", "CONNECTING")
        assert connection.lastError is not None
        assert "refused" in connection.lastError.lower()
        assert connection.consecutiveFailures >= 2
        outage = seen.transitions[killed + 1 :]
        assert {t.to for t in outage} <= {"IDLE", "CONNECTING"}, str(seen)
        assert {t.reason for t in outage if t.to == "IDLE"} == {"refused"}, str(seen)

        # The same port again: back to ESTABLISHED, and heartbeats answered.
        restartedAt = theReactor().seconds()
        restarted = yield peers.launch(port=peer.port)
        assert restarted.port == peer.port
        yield waitFor(lambda: connection.state == "ESTABLISHED", 5.0, "ESTABLISHED again")
        yield waitFor(lambda: seen.answeredSince(restartedAt), 2.0, "a heartbeat answered")
        assert connection.consecutiveFailures == 0

        # Stop: a graceful close, then CLOSED for good.
        yield connection.stop().addTimeout(3.0, theReactor())
        assert connection.state == "CLOSED"
        assert connection.internalState == "CLOSED"
        assert [(t.from_, t.to) for t in connection.history[-2:]] == [
            ("ESTABLISHED", "CLOSING"),
            ("CLOSING", "CLOSED"),
        ]
        assert connection.history[-2].reason == "stopped"
        assert connection.protocol is None
        assert connection.backoffDelay == 0.0
        assert restarted.alive
    finally:
        if connection.state != "CLOSED":
            yield stopAtLast(connection)


@pytest_twisted.inlineCallbacks
def test_frozenPeerIsDroppedForHeartbeats(
    peers: PeerLauncher,
) -> Generator[Deferred[Any], Any, None]:
    """
    A peer stopped with SIGSTOP keeps its sockets open but answers nothing:
    the connection is dropped ("heartbeat") within
    C{interval + timeout * misses} (plus slack); after SIGCONT it is
    ESTABLISHED again, with heartbeats answered, and stays so.
    """
    reactor = theReactor()
    peer = yield peers.launch()
    connection = lineConnection("loopback-freeze", peer.port)
    seen = Recorder(connection)
    try:
        connection.start()
        yield waitFor(lambda: connection.state == "ESTABLISHED", 5.0, "ESTABLISHED")
        yield waitFor(lambda: connection.rtt is not None, 2.0, "a heartbeat RTT")

        frozen = len(seen.transitions)
        frozenAt = reactor.seconds()
        peer.signal(signal.SIGSTOP)
        bound = HEARTBEAT.detectionBound + SLACK
        yield waitFor(
            lambda: len(seen.transitions) > frozen, bound, "the frozen peer to be dropped"
        )
        drop = seen.transitions[frozen]
        assert (drop.from_, drop.to, drop.reason) == ("ESTABLISHED", "IDLE", "heartbeat"), str(seen)
        assert drop.time - frozenAt <= bound, str(seen)
        assert peer.isStopped()
        assert any(rtt is None for _, rtt in seen.heartbeats), "misses are reported"

        # While frozen, the kernel still completes TCP handshakes into the
        # listen backlog, and the line protocol has no handshake of its own:
        # new attempts may be ESTABLISHED for a moment, but every ESTABLISHED
        # ends with a heartbeat drop; none is ever declared healthy by a pong.
        yield waitFor(lambda: connection.attempts >= 3, 10.0, "a second reconnect attempt")
        outage = seen.transitions[frozen:]
        assert {t.reason for t in outage if t.from_ == "ESTABLISHED"} == {"heartbeat"}, str(seen)
        assert not seen.answeredSince(frozenAt + SLACK)

        thawedAt = reactor.seconds()
        peer.signal(signal.SIGCONT)
        yield waitFor(
            lambda: connection.state == "ESTABLISHED" and seen.answeredSince(thawedAt),
            HEARTBEAT.detectionBound + BACKOFF.max + HEARTBEAT.interval + SLACK + 1.0,
            "ESTABLISHED with an answered heartbeat after SIGCONT",
        )
        # And it stays up for longer than a silent peer could.
        settled = len(seen.transitions)
        yield holdsFor(
            lambda: len(seen.transitions) == settled,
            HEARTBEAT.detectionBound + 0.5,
            "ESTABLISHED after SIGCONT",
        )
        assert connection.state == "ESTABLISHED"
        assert peer.alive

        yield connection.stop().addTimeout(3.0, reactor)
        assert connection.state == "CLOSED"
    finally:
        peer.signal(signal.SIGCONT)
        if connection.state != "CLOSED":
            yield stopAtLast(connection)
