"""
ESTABLISHED's watch: a connection's lifetime (it rotates when its drawn
lifetime is over, then attempts at once), its idle timeout (nothing received
for C{idle_timeout}: dropped with the reason C{idle}), and the transport's
backpressure (a peer that does not read is not read from).
"""

from __future__ import annotations

from collections import Counter
from random import Random

import pytest
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport

from supervisor import Config, ConnectionSpec, Supervisor
from supervisor.config import AdminSpec
from supervisor.spec import BackoffSpec, BreakerSpec, HeartbeatSpec
from tests.harness import ADDRESS, ScriptedPlugin, World

NO_JITTER = BackoffSpec(initial=1.0, multiplier=2, max=60, jitter="none")
QUIET = HeartbeatSpec(interval=0)


def test_aLifetimeIsDrawnWithinItsJitterBand() -> None:
    spec = ConnectionSpec("c", "tcp:host=127.0.0.1:port=1", max_lifetime=600, lifetime_jitter=0.1)
    rng = Random(1)
    drawn = [spec.drawLifetime(rng) for _ in range(2000)]
    assert all(d is not None and 540 <= d <= 600 for d in drawn)
    assert min(d for d in drawn if d is not None) < 541
    assert max(d for d in drawn if d is not None) > 599
    assert ConnectionSpec("c", "tcp:host=127.0.0.1:port=1").drawLifetime(rng) is None


def test_theConnectionRotatesWhenItsLifetimeIsOver() -> None:
    world = World(max_lifetime=10.0, lifetime_jitter=0.0, heartbeat=QUIET, backoff=NO_JITTER)
    world.connection.start()
    first, _ = world.accept()
    assert world.connection.lifetimeLeft == 10.0
    world.advance(4)
    assert world.connection.lifetimeLeft == 6.0
    world.advance(5.99)
    assert world.state == "ESTABLISHED"
    world.advance(0.01)
    assert world.path()[-1] == ("ESTABLISHED", "CLOSING", "rotation")
    assert world.connection.lifetimeLeft is None
    world.lose(first)  # the drain closed the transport
    world.advance(0.01)  # the shared scheduler's resolution
    # Then at once (no backoff) a new attempt, and a new lifetime.
    assert world.path()[-2:] == [("CLOSING", "IDLE", "closed"), ("IDLE", "CONNECTING", "retry")]
    second, _ = world.accept()
    assert world.connection.lifetimeLeft == pytest.approx(10.0)
    world.stop()
    world.lose(second)
    world.assertQuiet()


def test_aLifetimeIsNotRestartedByHeartbeats() -> None:
    world = World(
        max_lifetime=5.0,
        lifetime_jitter=0.0,
        heartbeat=HeartbeatSpec(interval=1.0, timeout=0.5, misses=2),
    )
    world.connection.start()
    protocol, _ = world.accept()
    for _ in range(12):
        world.advance(0.5)
        if protocol.pings and world.state == "ESTABLISHED":
            protocol.answer()
    assert ("ESTABLISHED", "CLOSING", "rotation") in world.path()


def test_aFleetStartedTogetherRotatesSpreadOverTheJitterBand() -> None:
    """
    2,000 connections that came up in the same second, C{max_lifetime = 600}
    and the default jitter of 0.1: their rotations spread over the last 60
    seconds of the lifetime, no second with more than twice its fair share
    (2000 / 60), every second of the band used.
    """
    reactor = MemoryReactorClock()
    plugin = ScriptedPlugin()
    specs = tuple(
        ConnectionSpec(
            f"c{i}",
            "tcp:host=127.0.0.1:port=1",
            protocol="scripted",
            heartbeat=QUIET,
            max_lifetime=600.0,
            breaker=BreakerSpec(scope="off"),
        )
        for i in range(2000)
    )
    supervisor = Supervisor(
        Config("t.toml", AdminSpec(), specs),
        reactor,
        plugins=lambda name: plugin,
        endpoints=lambda spec: TCP4ClientEndpoint(reactor, "127.0.0.1", 1),
        rng=Random(7),
    )
    rotations: Counter[int] = Counter()
    supervisor.addObserver(
        lambda t: rotations.update([int(t.time)]) if t.reason == "rotation" else None
    )
    supervisor.startService()
    while len(reactor.tcpClients) < len(specs):  # the rest start over the next turns
        reactor.advance(0)
    for _, _, factory, _, _ in reactor.tcpClients:
        factory.buildProtocol(ADDRESS).makeConnection(StringTransport())
    for _ in range(610):
        reactor.advance(1.0)
    assert sum(rotations.values()) == 2000
    assert min(rotations) >= 540 and max(rotations) <= 600
    fair = 2000 / 60
    assert max(rotations.values()) <= 2 * fair
    assert len(rotations) >= 59
    stopped = supervisor.stopService()
    reactor.advance(31)  # the transports of the scripted peers never close
    assert stopped.called


def test_nothingReceivedForIdleTimeoutDropsTheConnection() -> None:
    world = World(idle_timeout=3.0, heartbeat=QUIET, backoff=NO_JITTER)
    world.connection.start()
    protocol, _ = world.accept()
    world.advance(2.0)
    protocol.handle.dataReceived(b"x")  # type: ignore[attr-defined]
    world.advance(2.9)
    assert world.state == "ESTABLISHED", "the byte at 2 s postponed it to 5 s"
    world.advance(0.1)
    assert world.path()[-1] == ("ESTABLISHED", "IDLE", "idle")
    assert world.connection.lastError == "idle: nothing received for 3s"
    world.stop()
    world.assertQuiet()


def test_pongsKeepAnIdleTimeoutAtBay() -> None:
    world = World(idle_timeout=2.0, heartbeat=HeartbeatSpec(interval=1.0, timeout=0.5, misses=2))
    world.connection.start()
    protocol, _ = world.accept()
    for _ in range(20):
        world.advance(0.5)
        if protocol.pings:
            protocol.handle.dataReceived(b"PONG\r\n")  # type: ignore[attr-defined]
            protocol.answer()
            protocol.pings.clear()
    assert world.state == "ESTABLISHED"
    world.stop()


def test_aPeerThatDoesNotReadIsNotReadFrom() -> None:
    """
    The attempt is its transport's producer: past the transport's buffer
    size it stops reading until the peer has read what it owes.
    """
    world = World(heartbeat=QUIET)
    world.connection.start()
    _, transport = world.accept()
    assert transport.producer is not None and transport.streaming
    assert not world.connection.writeBlocked
    transport.producer.pauseProducing()  # the transport's buffer is full
    assert world.connection.writeBlocked
    assert transport.producerState == "paused", "reading from the peer stopped"
    transport.producer.resumeProducing()
    assert not world.connection.writeBlocked
    assert transport.producerState == "producing"
    world.stop()


def test_overTLSTheAttemptProducesOnceTheHandshakeIsDone() -> None:
    """
    Twisted's TLS pauses a producer until its handshake completes (and would
    stop reading, so the handshake could not complete), and shuts down only
    once no producer is registered: the attempt becomes the producer after
    the handshake and stops being it before it closes the transport.
    """
    world = World(heartbeat=QUIET)
    world.connection.start()
    protocol, transport = world.accept(tls=True)
    assert transport.producer is None
    protocol.handle.handshakeCompleted()  # type: ignore[attr-defined]
    assert transport.producer is not None
    assert world.state == "ESTABLISHED"
    world.stop()  # the scripted plugin drains at once: the transport closes
    assert transport.producer is None and transport.disconnecting
    world.lose(protocol)
    world.assertQuiet()
