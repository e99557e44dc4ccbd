"""
What the real-server tests of the plugins do the same way: the timings, the
connection to a server on the loopback address, a secret file, and the
scenarios (established with an RTT, killed and restarted, frozen and
thawed, refused for good, a graceful stop).
"""

from __future__ import annotations

import signal
from collections.abc import Generator
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import clientFromString

from supervisor import (
    BackoffSpec,
    ConnectionSpec,
    FlapSpec,
    HeartbeatSpec,
    SupervisedConnection,
    Transition,
    findPlugin,
)
from tests.integration.conftest import HOST, holdsFor, theReactor, waitFor
from tests.integration.servers import ServerProcess

HEARTBEAT = HeartbeatSpec(interval=0.3, timeout=0.3, misses=2)
BACKOFF = BackoffSpec(initial=0.1, max=0.5, jitter="full", reset_after=1.0)
CONNECT_TIMEOUT = 1.0
SLACK = 1.0
"""Honest slack for a loaded machine: process scheduling, the reactor's turn."""


class Recorder:
    """
    Everything one connection reported: transitions and heartbeats, timed.
    """

    def __init__(self, connection: SupervisedConnection) -> None:
        self.connection = connection
        self.transitions: list[Transition] = []
        self.heartbeats: list[tuple[float, float | None]] = []
        self.links: list[tuple[str, str]] = []
        connection.addObserver(self._transition)
        connection.addHeartbeatObserver(self._heartbeat)

    def _transition(self, transition: Transition) -> None:
        self.transitions.append(transition)
        if transition.to == "ESTABLISHED":
            protocol = self.connection.protocol
            transport = getattr(protocol, "transport", None)
            if transport is not None:
                self.links.append((str(transport.getHost()), str(transport.getPeer())))

    def _heartbeat(self, name: str, rtt: float | None) -> None:
        self.heartbeats.append((theReactor().seconds(), rtt))

    def pairs(self, since: int = 0) -> list[tuple[str, str]]:
        """
        (from, to) of the transitions from index C{since} on.
        """
        return [(t.from_, t.to) for t in self.transitions[since:]]

    def __str__(self) -> str:
        start = self.transitions[0].time if self.transitions else 0.0
        lines = [
            f"{t.time - start:7.3f} {t.from_} -> {t.to} ({t.reason}: {t.detail})"
            for t in self.transitions
        ]
        lines += [f"link: {host} -> {peer}" for host, peer in self.links]
        return "\n".join(lines)

    def answeredSince(self, when: float) -> bool:
        """
        Whether a heartbeat was answered after C{when}.
        """
        return any(at > when and rtt is not None for at, rtt in self.heartbeats)


def lineConnection(name: str, port: int) -> SupervisedConnection:
    """
    A connection to the peer on C{port}, with timings small enough for a test.
    """
    reactor = theReactor()
    spec = ConnectionSpec(
        name=name,
        endpoint=f"tcp:host={HOST}:port={port}",
        protocol="line",
        connect_timeout=2.0,
        drain_timeout=1.0,
        backoff=BACKOFF,
        heartbeat=HEARTBEAT,
        # A frozen peer is dropped, reconnected (its kernel still accepts)
        # and dropped again within a second: the flap guard would hold it.
        flap=FlapSpec(max=0),
    )
    endpoint = clientFromString(reactor, spec.endpoint)
    return SupervisedConnection(spec, endpoint, findPlugin(spec.protocol), reactor)


def stopAtLast(connection: SupervisedConnection) -> Deferred[None]:
    """
    Close C{connection} if a failed test left it open, so that none of its
    timers or sockets outlive the test.
    """
    return connection.stop().addTimeout(5.0, theReactor())


def connectionTo(protocol: str, name: str, port: int, **options: object) -> SupervisedConnection:
    """
    A connection with the shared timings to C{port} on the loopback address,
    speaking the bundled plugin C{protocol} with C{options}.
    """
    reactor = theReactor()
    spec = ConnectionSpec(
        name=name,
        endpoint=f"tcp:host={HOST}:port={port}",
        protocol=protocol,
        connect_timeout=CONNECT_TIMEOUT,
        drain_timeout=2.0,
        backoff=BACKOFF,
        heartbeat=HEARTBEAT,
        options=options,
    )
    return SupervisedConnection(
        spec, clientFromString(reactor, spec.endpoint), findPlugin(protocol), reactor
    )


def secretFile(directory: Path, text: str) -> str:
    """
    The path of a new file in C{directory} holding C{text} on one line.
    """
    path = directory / "secret"
    path.write_text(text + "\n")
    return str(path)


@inlineCallbacks
def freezeAndThaw(
    server: ServerProcess, connection: SupervisedConnection
) -> Generator[Deferred[Any], Any, None]:
    """
    Start C{connection} against C{server}, SIGSTOP the server once a
    heartbeat is answered: the connection is dropped for "heartbeat" within
    the bound, and no attempt reaches ESTABLISHED while the server is frozen
    (its handshake needs the server's answer); SIGCONT: back to ESTABLISHED
    with an answered heartbeat, and stable for longer than a silent peer
    could be. Stops the connection at the end, whatever happened.
    """
    reactor = theReactor()
    seen = Recorder(connection)
    try:
        connection.start()
        yield waitFor(lambda: connection.rtt is not None, 5.0, "a heartbeat RTT")

        frozen = len(seen.transitions)
        frozenAt = reactor.seconds()
        server.signal(signal.SIGSTOP)
        bound = HEARTBEAT.detectionBound + SLACK
        yield waitFor(lambda: len(seen.transitions) > frozen, bound, "the drop")
        drop = seen.transitions[frozen]
        assert (drop.from_, drop.to, drop.reason) == ("ESTABLISHED", "IDLE", "heartbeat"), str(seen)
        assert drop.time - frozenAt <= bound, str(seen)

        yield waitFor(lambda: connection.attempts >= 3, 10.0, "attempts while frozen")
        outage = seen.transitions[frozen + 1 :]
        assert "ESTABLISHED" not in {t.to for t in outage}, str(seen)
        assert "timeout" in {t.reason for t in outage if t.to == "IDLE"}, str(seen)

        thawedAt = reactor.seconds()
        server.signal(signal.SIGCONT)
        yield waitFor(
            lambda: connection.state == "ESTABLISHED" and seen.answeredSince(thawedAt),
            CONNECT_TIMEOUT + BACKOFF.max + HEARTBEAT.detectionBound + SLACK + 1.0,
            "ESTABLISHED with an answered heartbeat after SIGCONT",
        )
        settled = len(seen.transitions)
        yield holdsFor(
            lambda: len(seen.transitions) == settled, HEARTBEAT.detectionBound + 0.5, "stable"
        )
        assert connection.state == "ESTABLISHED"
        yield connection.stop().addTimeout(3.0, reactor)
        assert connection.state == "CLOSED"
    finally:
        server.signal(signal.SIGCONT)
        yield stopAtLast(connection)


@inlineCallbacks
def establishWithRtt(
    connection: SupervisedConnection, seen: Recorder
) -> Generator[Deferred[Any], Any, None]:
    """
    Start C{connection}: ESTABLISHED after one attempt, with a measured RTT.
    """
    connection.start()
    yield waitFor(lambda: connection.state == "ESTABLISHED", 5.0, "ESTABLISHED")
    yield waitFor(lambda: connection.rtt is not None, 2.0, "a heartbeat RTT")
    assert connection.rtt is not None
    # Loopback answers in well under the timeout (the late-check margin aside).
    assert 0.0 <= connection.rtt < HEARTBEAT.timeout + 0.1
    assert seen.pairs() == [("IDLE", "CONNECTING"), ("CONNECTING", "ESTABLISHED")]


@inlineCallbacks
def answeredAtFirstAttempt(
    connection: SupervisedConnection, what: str
) -> Generator[Deferred[Any], Any, Recorder]:
    """
    Start C{connection}: ESTABLISHED at its first attempt, with a heartbeat
    answered within 10 s (C{what} names that in a timeout's message). What
    the connection reported.
    """
    seen = Recorder(connection)
    connection.start()
    yield waitFor(lambda: connection.rtt is not None, 10, f"{what}\n{seen}")
    assert seen.pairs() == [("IDLE", "CONNECTING"), ("CONNECTING", "ESTABLISHED")], str(seen)
    assert connection.attempts == 1
    return seen


@inlineCallbacks
def killAndRestart(
    server: ServerProcess, connection: SupervisedConnection, seen: Recorder
) -> Generator[Deferred[Any], Any, None]:
    """
    SIGKILL the server: ESTABLISHED -> IDLE ("lost"), attempts go on while it
    is down and none succeeds; start it again on the same port: ESTABLISHED
    with an answered heartbeat.
    """
    killed = len(seen.transitions)
    server.signal(signal.SIGKILL)
    yield server.waitForExit()
    yield waitFor(lambda: connection.state != "ESTABLISHED", 2.0, "the loss")
    loss = seen.transitions[killed]
    assert (loss.from_, loss.to, loss.reason) == ("ESTABLISHED", "IDLE", "lost"), str(seen)
    yield waitFor(lambda: connection.attempts >= 3, 5.0, "attempts while down")

    restartedAt = theReactor().seconds()
    yield server.start()
    yield waitFor(lambda: connection.state == "ESTABLISHED", 5.0, "ESTABLISHED again")
    yield waitFor(lambda: seen.answeredSince(restartedAt), 2.0, "a heartbeat answered")
    outage = seen.transitions[killed + 1 : -1]
    assert {t.to for t in outage} <= {"IDLE", "CONNECTING"}, str(seen)


@inlineCallbacks
def refusedForGood(
    connection: SupervisedConnection, why: str, secret: str
) -> Generator[Deferred[Any], Any, None]:
    """
    Start C{connection}: CLOSED after its one attempt, for good, reason
    "handshake" with C{why} in the detail, and C{secret} nowhere in what
    it reported. Stops the connection at the end, whatever happened.
    """
    seen = Recorder(connection)
    try:
        connection.start()
        yield waitFor(lambda: connection.state == "CLOSED", 5.0, "CLOSED")
        assert seen.pairs() == [("IDLE", "CONNECTING"), ("CONNECTING", "CLOSED")], str(seen)
        final = seen.transitions[-1]
        assert final.reason == "handshake"
        assert why in (final.detail or ""), str(seen)
        assert connection.attempts == 1
        assert secret not in str(seen)
        assert secret not in (connection.lastError or "")
    finally:
        yield stopAtLast(connection)


@inlineCallbacks
def stopGracefully(connection: SupervisedConnection) -> Generator[Deferred[Any], Any, None]:
    """
    Stop: ESTABLISHED -> CLOSING -> CLOSED within 3 s.
    """
    yield connection.stop().addTimeout(3.0, theReactor())
    assert [(t.from_, t.to) for t in connection.history[-2:]] == [
        ("ESTABLISHED", "CLOSING"),
        ("CLOSING", "CLOSED"),
    ], connection.history
