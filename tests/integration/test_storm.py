"""
A reconnect storm over real sockets: 500 supervised C{line} connections to
one peer process (C{python -m supervisor.peer}), every recovery setting at
its default. The peer is killed while they are all ESTABLISHED and
restarted on the same port a few seconds later: every connection comes
back, and while it was down the target's circuit breaker kept the attempts
under C{failures} + its probes + 10% of the connections.
"""

from __future__ import annotations

import signal
from collections.abc import Generator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from supervisor import Config, ConnectionSpec, Supervisor, Transition
from supervisor.peer import raiseFileLimit
from supervisor.spec import BreakerSpec
from tests.integration.conftest import PeerLauncher, theReactor, waitFor

pytestmark = pytest.mark.integration

COUNT = 500
DOWN = 3.0
"""Seconds the peer stays dead: several probes' worth."""

BACKLOG = 1024
ESTABLISH_WITHIN = 30.0
BACK_WITHIN = 20.0
"""Bounds for a loaded machine: everyone is back well within probe_max plus
500 releases at release_rate, unless the machine stalls for seconds."""


@pytest_twisted.inlineCallbacks
def test_everyoneIsBackAndTheDeadPeerWasSpared(
    peers: PeerLauncher,
) -> Generator[Deferred[Any], Any, None]:
    raiseFileLimit()
    reactor = theReactor()
    # A listen queue for the whole fleet, as a server built for it has: with
    # a short one, the kernel completes handshakes it never queues, and
    # those clients see neither the accept nor, later, the death.
    peer = yield peers.launchOutsideEphemeralRange(backlog=BACKLOG)
    endpoint = peer.endpoint
    config = Config(
        path="<storm>",
        connections=tuple(
            ConnectionSpec(name=f"s{i:03d}", endpoint=endpoint, protocol="line")
            for i in range(COUNT)
        ),
    )
    supervisor = Supervisor(config, reactor)
    attempts: list[tuple[float, str]] = []

    def count(transition: Transition) -> None:
        if transition.to == "CONNECTING":
            attempts.append((transition.time, transition.reason))

    supervisor.addObserver(count)
    connections = list(supervisor.connections.values())

    def established() -> int:
        return sum(1 for c in connections if c.state == "ESTABLISHED")

    supervisor.startService()
    try:
        yield waitFor(lambda: established() == COUNT, ESTABLISH_WITHIN, "all ESTABLISHED")
        (breaker,) = supervisor.fleet.breakers

        killedAt = reactor.seconds()
        peer.signal(signal.SIGKILL)
        yield peer.waitForExit()
        yield waitFor(lambda: established() == 0, 5.0, "every connection to see the loss")
        yield waitFor(lambda: breaker.state == "open", 5.0, "the breaker to open")
        yield waitFor(lambda: reactor.seconds() >= killedAt + DOWN, DOWN + 1, "the outage")
        restarted = yield peers.launch(port=peer.port, backlog=BACKLOG)
        backAt = reactor.seconds()

        whileDown = [reason for time, reason in attempts if killedAt <= time < backAt]
        probes = whileDown.count("probe")
        bound = BreakerSpec().failures + probes + COUNT * 0.1
        assert probes >= 1
        assert len(whileDown) <= bound, (len(whileDown), probes, sorted(set(whileDown)))

        yield waitFor(lambda: established() == COUNT, BACK_WITHIN, "everyone back")
        afterBack = [reason for time, reason in attempts if time >= backAt]
        assert afterBack.count("release") >= COUNT * 0.9, "the half-open breaker released them"
        yield waitFor(lambda: breaker.state == "closed", 5.0, "the breaker to close")
        assert restarted.alive
    finally:
        yield supervisor.stopService().addTimeout(30.0, reactor)
    assert all(c.state == "CLOSED" for c in connections)
    assert supervisor.fleet.breakers == []
