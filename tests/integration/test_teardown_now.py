"""
The teardown of a connection dropped for missed heartbeats is done within
the scheduler's slice: the transport is aborted and its C{connectionLost}
run (Twisted's C{abortConnection} leaves that to a C{callLater(0)} at the
reactor's next turn), before the next work the scheduler was handed runs.

Real C{line} connections on loopback TCP to a real peer, which is stopped
(SIGSTOP) so that their heartbeats go unanswered.
"""

from __future__ import annotations

import signal
from collections.abc import Generator
from random import Random
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.tcp import Client

from supervisor import BackoffSpec, Config, FlapSpec, HeartbeatSpec, Supervisor
from supervisor.config import AdminSpec
from supervisor.states.records import Transition
from tests.integration.conftest import PeerLauncher, theReactor, waitFor

pytestmark = pytest.mark.integration

N = 5


@pytest_twisted.inlineCallbacks
def test_aHeartbeatDropIsTornDownWithinTheScheduler(
    peers: PeerLauncher,
) -> Generator[Deferred[Any], Any, None]:
    peer = yield peers.launch()
    specs = peer.specs(
        N,
        heartbeat=HeartbeatSpec(interval=0.2, timeout=0.2, misses=1),
        # No new attempt while the test looks.
        backoff=BackoffSpec(initial=30.0, max=30.0),
        flap=FlapSpec(max=0),
    )
    reactor = theReactor()
    supervisor = Supervisor(Config("teardown", AdminSpec(), specs), reactor, rng=Random(0))
    connections = list(supervisor.connections.values())
    transports: dict[str, Client] = {}
    # For each drop: whether its transport was gone (disconnected, its
    # socket closed, no connectionLost left for the reactor) when the work
    # the scheduler was handed next ran.
    seen: dict[str, tuple[bool, bool, bool]] = {}

    def look(name: str) -> None:
        transport = transports[name]
        pending = [
            call
            for call in reactor.getDelayedCalls()  # type: ignore[attr-defined]
            if getattr(call.func, "__self__", None) is transport
        ]
        seen[name] = (bool(transport.disconnected), transport.fileno() == -1, pending == [])

    def observe(record: Transition) -> None:
        if record.from_ == "ESTABLISHED" and record.reason == "heartbeat":
            # Decided by the scheduler: handed on after the drop's teardown.
            assert supervisor.scheduler.waking
            supervisor.scheduler.soon(lambda: look(record.connection))

    supervisor.addObserver(observe)
    supervisor.startService()
    try:
        yield waitFor(lambda: all(c.state == "ESTABLISHED" for c in connections), 10, "up")
        for c in connections:
            transport = getattr(c.protocol, "transport", None)
            assert type(transport) is Client
            transports[c.name] = transport
        peer.signal(signal.SIGSTOP)
        yield waitFor(lambda: len(seen) == N, 5, "every connection dropped")
        assert seen == {c.name: (True, True, True) for c in connections}
    finally:
        peer.signal(signal.SIGCONT)
        yield supervisor.stopService()
