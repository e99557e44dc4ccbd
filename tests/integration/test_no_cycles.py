"""
Reconnects leave no reference cycles: everything a connection used is freed
by reference counting when it drops, or when an attempt's connect fails
(refused, or cancelled at its deadline), so that reconnect churn does not need
the cyclic garbage collector (which must run over every object of the
process to find cycles), and objects frozen with C{gc.freeze()} after
start-up are not kept for ever.

Real C{line} connections on loopback TCP to a real peer, with the cyclic
collector off and what it would find kept (C{gc.DEBUG_SAVEALL}).
"""

from __future__ import annotations

import gc
import signal
import socket
from collections.abc import Generator, Iterator
from random import Random
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.tcp import Client, Connector

from supervisor import (
    BackoffSpec,
    BreakerSpec,
    Config,
    ConnectionSpec,
    FlapSpec,
    HeartbeatSpec,
    Supervisor,
)
from supervisor.config import AdminSpec
from tests.integration.conftest import HOST, PeerLauncher, theReactor, waitFor

pytestmark = pytest.mark.integration

N = 10
HEARTBEAT = HeartbeatSpec(interval=0.2, timeout=0.2, misses=1)
BACKOFF = BackoffSpec(initial=0.05, max=0.2, reset_after=0.5)

# What a connection's drop must free without the cyclic collector: the
# connection's own objects, and Twisted's TCP client objects of its
# connections to the test's peer (other tests' objects may become garbage
# meanwhile: a server port closing late, say).
OURS = ("supervisor.", "plugins.")


def watched(thing: object, port: int) -> bool:
    kind = type(thing)
    if f"{kind.__module__}.".startswith(OURS):
        return True
    if kind is Client:
        return getattr(thing, "realAddress", (None, None))[1] == port
    if kind is Connector:
        return getattr(thing, "port", None) == port
    return False


@pytest.fixture
def savedGarbage() -> Iterator[None]:
    gc.collect()
    gc.disable()
    # What earlier tests left alive (a connection built without a supervisor
    # and released late, say) is held until the end, so it cannot turn into
    # garbage during this test and be taken for this test's.
    earlier = [o for o in gc.get_objects() if f"{type(o).__module__}.".startswith(OURS)]
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield
    finally:
        del earlier
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        gc.collect()


def cyclicGarbage(port: int) -> list[str]:
    """
    The watched objects the cyclic collector finds unreachable now (then
    freed).
    """
    gc.collect()
    found = sorted(
        f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage if watched(o, port)
    )
    gc.set_debug(0)
    gc.garbage.clear()
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    return found


@pytest_twisted.inlineCallbacks
def test_dropsLeaveNoCycles(
    peers: PeerLauncher, savedGarbage: None
) -> Generator[Deferred[Any], Any, None]:
    peer = yield peers.launch()
    specs = peer.specs(
        N,
        heartbeat=HEARTBEAT,
        backoff=BACKOFF,
        drain_timeout=1.0,
        # Lost, rotated and dropped within seconds: the flap guard would
        # hold them (this test is about what a drop leaves).
        flap=FlapSpec(max=0),
    )
    supervisor = Supervisor(Config("cycles", AdminSpec(), specs), theReactor(), rng=Random(0))
    connections = list(supervisor.connections.values())

    def allEstablished() -> bool:
        return all(c.state == "ESTABLISHED" for c in connections)

    supervisor.startService()
    try:
        yield waitFor(allEstablished, 10, "all ESTABLISHED")
        yield waitFor(lambda: all(c.rtt is not None for c in connections), 5, "heartbeats")
        assert cyclicGarbage(peer.port) == [], "start-up and heartbeats"

        # The peer's side goes away: each transport is lost.
        for c in connections:
            transport = getattr(c.protocol, "transport", None)
            assert transport is not None
            transport.abortConnection()
        yield waitFor(lambda: all(c.attempts >= 2 for c in connections), 5, "new attempts")
        yield waitFor(allEstablished, 10, "all ESTABLISHED after the losses")
        assert cyclicGarbage(peer.port) == [], "transports lost"

        # Rotation: a graceful close, then a new attempt.
        for c in connections:
            assert c.reconnect()
        yield waitFor(lambda: all(c.attempts >= 3 for c in connections), 5, "the rotations")
        yield waitFor(allEstablished, 10, "all ESTABLISHED after the rotations")
        assert cyclicGarbage(peer.port) == [], "rotations"

        # A silent peer: dropped for heartbeats (the transport is aborted).
        peer.signal(signal.SIGSTOP)
        yield waitFor(lambda: not any(c.state == "ESTABLISHED" for c in connections), 5, "drops")
        peer.signal(signal.SIGCONT)
        yield waitFor(allEstablished, 10, "all ESTABLISHED after the thaw")
        assert cyclicGarbage(peer.port) == [], "heartbeat drops"

        yield supervisor.stopService()
        assert cyclicGarbage(peer.port) == [], "stop"
    finally:
        if not supervisor.draining:
            yield supervisor.stopService()


def failingConnects(
    port: int, connectTimeout: float, attempts: int, reason: str
) -> Generator[Deferred[Any], Any, None]:
    """
    C{N} connections to C{port} on loopback, retrying every few tens of
    milliseconds with no breaker to hold them, until each has failed
    C{attempts} times for C{reason}: the cyclic collector finds nothing of
    theirs, then or once they are stopped.
    """
    specs = tuple(
        ConnectionSpec(
            f"c{i}",
            f"tcp:host={HOST}:port={port}",
            backoff=BackoffSpec(initial=0.02, max=0.05),
            connect_timeout=connectTimeout,
            breaker=BreakerSpec(scope="off"),
        )
        for i in range(N)
    )
    supervisor = Supervisor(Config("failing", AdminSpec(), specs), theReactor(), rng=Random(0))
    connections = list(supervisor.connections.values())
    supervisor.startService()
    try:
        yield waitFor(lambda: all(c.attempts >= attempts for c in connections), 10, reason)
        errors = [c.lastError or "" for c in connections]
        assert all(error.startswith(f"{reason}:") for error in errors), errors
        assert cyclicGarbage(port) == [], f"attempts failed for {reason}"
    finally:
        yield supervisor.stopService()
    assert cyclicGarbage(port) == [], "stop"


@pytest_twisted.inlineCallbacks
def test_refusedConnectsLeaveNoCycles(savedGarbage: None) -> Generator[Deferred[Any], Any, None]:
    """
    A connect the peer refuses leaves nothing for the cyclic collector.
    """
    # A port nobody listens on: every connect is refused.
    unused = socket.socket()
    unused.bind((HOST, 0))
    port = unused.getsockname()[1]
    unused.close()
    yield from failingConnects(port, connectTimeout=5.0, attempts=3, reason="refused")


@pytest_twisted.inlineCallbacks
def test_connectsPastTheirDeadlineLeaveNoCycles(
    savedGarbage: None,
) -> Generator[Deferred[Any], Any, None]:
    """
    A connect cancelled at the attempt's deadline (the peer never answers
    the SYN) leaves nothing for the cyclic collector: these are the attempts
    that live long enough to reach the old generation, where a held-off full
    collection and the freeze after start-up would keep their garbage.
    """
    # A listener whose queue is full and that never accepts: the kernel
    # drops further SYNs, as a blackholed peer's network does.
    listener = socket.socket()
    fillers = [socket.socket() for _ in range(4)]
    try:
        listener.bind((HOST, 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex((HOST, port))
        yield from failingConnects(port, connectTimeout=0.2, attempts=2, reason="timeout")
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
