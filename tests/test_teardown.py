"""
The teardown of a dropped connection: decided at once, done once the timers
due have run (L{supervisor.scheduler.Scheduler.soon}), so that a burst of
missed heartbeats is decided on time.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport

from supervisor.attempt import Attempt, _AttemptFactory
from supervisor.interfaces import IConnectionHandle
from supervisor.spec import HeartbeatSpec
from supervisor.states.records import Transition
from tests.fleetworld import FleetWorld
from tests.harness import ADDRESS


class Events:
    """
    The machine, as far as an attempt can tell: records what it reports.
    """

    def __init__(self) -> None:
        self.reported: list[str] = []

    def failed(self, failure: object) -> None:
        self.reported.append("failed")


class Received(Protocol):
    """
    A plugin's protocol that records what it is given.
    """

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)


class Plugin:
    name = "received"

    def buildProtocol(self, handle: IConnectionHandle, options: object) -> Protocol:
        return Received()


def test_aDetachedAttemptReadsNothingUntilItsAbort() -> None:
    """
    Detached with its transport still up, an attempt passes nothing more to
    the plugin's protocol (as an aborted transport would not), says its
    transport is left for L{Attempt.abort}, which aborts it.
    """
    transport = StringTransport()
    attempt = Attempt(Events(), "c", HeartbeatSpec(), Plugin(), None, lambda: 0.0)  # type: ignore[arg-type]
    _AttemptFactory(attempt).buildProtocol(ADDRESS)
    attempt.makeConnection(transport)
    protocol = attempt.protocol
    assert isinstance(protocol, Received)
    attempt.dataReceived(b"before")
    assert attempt.detach() is True
    attempt.dataReceived(b"after")
    assert protocol.received == [b"before"]
    assert not transport.disconnecting
    attempt.abort()
    assert transport.disconnecting


def test_abortNowAbortsAnyOtherTransportAsAbortDoes() -> None:
    """
    L{Attempt.abortNow} runs the teardown at once only for Twisted's TCP
    client (C{tests/integration/test_teardown_now.py}); any other transport
    is aborted by its own C{abortConnection}, and an attempt without one has
    nothing to abort.
    """
    transport = StringTransport()
    attempt = Attempt(Events(), "c", HeartbeatSpec(), Plugin(), None, lambda: 0.0)  # type: ignore[arg-type]
    _AttemptFactory(attempt).buildProtocol(ADDRESS)
    attempt.makeConnection(transport)
    assert attempt.detach() is True
    assert not transport.disconnecting
    attempt.abortNow()
    assert transport.disconnecting
    bare = Attempt(Events(), "c", HeartbeatSpec(), Plugin(), None, lambda: 0.0)  # type: ignore[arg-type]
    bare.abortNow()
    assert bare.transport is None


def test_anAttemptWithoutTransportLeavesNothingToAbort() -> None:
    """
    An attempt whose transport is gone (or never came) has nothing to abort.
    """
    attempt = Attempt(Events(), "c", HeartbeatSpec(), Plugin(), None, lambda: 0.0)  # type: ignore[arg-type]
    assert attempt.detach() is False
    attempt.abort()


def test_missedHeartbeatsAreAllDecidedBeforeAnyTeardown() -> None:
    """
    Connections whose last heartbeat is missed in the same wake-up of the
    scheduler all leave ESTABLISHED before the transport of any of them is
    aborted; by the end of that wake-up every one is.
    """
    world = FleetWorld(200, heartbeat=HeartbeatSpec(interval=1.0, timeout=0.5, misses=2))
    world.supervisor.startService()
    world.runUntil(world.allEstablished, 1)
    transports = {name: transport for name, (_, transport) in world.live.items()}
    world.latency = None  # reconnects stay pending
    seen: list[tuple[float, int]] = []

    def observe(record: Transition) -> None:
        if record.from_ == "ESTABLISHED":
            aborted = sum(1 for t in transports.values() if t.disconnecting)
            seen.append((record.time, aborted))

    world.supervisor.addObserver(observe)
    world.runUntil(lambda: len(seen) == len(transports), 5)
    assert len({when for when, _ in seen}) > 1, "the drops came in several wake-ups"
    for when, aborted in seen:
        # Aborted by then: exactly those dropped in earlier wake-ups.
        assert aborted == sum(1 for earlier, _ in seen if earlier < when)
    assert all(t.disconnecting for t in transports.values())
    world.stop()
