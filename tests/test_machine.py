"""
Every transition of the connection machine, driven through a real
endpoint on a memory reactor with a fake clock.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from OpenSSL import SSL
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import directlyProvides

from supervisor.automaton import BUSY
from supervisor.heartbeat import PHASES
from supervisor.spec import BackoffSpec, BreakerSpec, FlapSpec, HeartbeatSpec
from tests.harness import ADDRESS, ScriptedPlugin, World

NO_JITTER = BackoffSpec(initial=1.0, multiplier=2.0, max=60.0, jitter="none", reset_after=10.0)


def established(**spec: object) -> tuple[World, object, object]:
    world = World(**spec)  # type: ignore[arg-type]
    world.connection.start()
    protocol, transport = world.accept()
    assert world.state == "ESTABLISHED"
    return world, protocol, transport


def test_notStartedIsIdleWithNothingScheduled() -> None:
    world = World()
    assert world.state == "IDLE"
    assert world.connection.internalState == "INIT"
    assert world.connection.backoffDelay == 0
    world.assertQuiet()


def test_startConnectsAndReadyEstablishes() -> None:
    world = World(plugin=ScriptedPlugin(readyOnConnect=False))
    world.connection.start()
    assert world.state == "CONNECTING"
    protocol, _ = world.accept()
    assert world.state == "CONNECTING", "transport up is not ESTABLISHED: the handshake is not done"
    protocol.handle.ready()
    assert world.state == "ESTABLISHED"
    assert world.path() == [("IDLE", "CONNECTING", "start"), ("CONNECTING", "ESTABLISHED", "ready")]
    assert world.connection.attempts == 1


@pytest.mark.parametrize(
    ("exc", "reason"),
    [(None, "refused"), (DNSLookupError("x"), "dns")],
)
def test_transientFailureGoesIdleAndRetriesAfterTheBackoff(
    exc: Exception | None, reason: str
) -> None:
    world = World(backoff=NO_JITTER)
    world.connection.start()
    world.refuse(exc)
    assert world.state == "IDLE"
    assert world.path()[-1] == ("CONNECTING", "IDLE", reason)
    assert world.connection.backoffDelay == 1.0
    assert world.connection.lastError is not None and world.connection.lastError.startswith(reason)
    world.advance(0.999)
    assert world.state == "IDLE" and not world.pending()
    world.advance(0.001)
    assert world.state == "CONNECTING"
    assert world.path()[-1] == ("IDLE", "CONNECTING", "retry")
    assert world.connection.backoffDelay == 0


def test_backoffGrowsAcrossConsecutiveFailures() -> None:
    world = World(backoff=NO_JITTER)
    world.connection.start()
    seen = []
    for _ in range(5):
        world.refuse()
        seen.append(world.connection.backoffDelay)
        world.advance(world.connection.backoffDelay)
    assert seen == [1, 2, 4, 8, 16]
    assert world.connection.attempts == 6
    assert world.connection.consecutiveFailures == 5


def test_aPeerThatAcceptsAndClosesAtOnceBacksOff() -> None:
    """
    ESTABLISHED for less than reset_after does not reset the backoff: a peer
    that accepts and drops cannot cause a tight loop (the backoff alone: the
    flap guard is off).
    """
    world = World(backoff=NO_JITTER, flap=FlapSpec(max=0))
    world.connection.start()
    seen = []
    for _ in range(5):
        protocol, _ = world.accept()
        world.lose(protocol)
        assert world.path()[-1] == ("ESTABLISHED", "IDLE", "lost")
        seen.append(world.connection.backoffDelay)
        world.advance(world.connection.backoffDelay)
    assert seen == [1, 2, 4, 8, 16]


def test_backoffResetsAfterStayingEstablishedForResetAfter() -> None:
    world = World(backoff=NO_JITTER, heartbeat=HeartbeatSpec(interval=0))
    world.connection.start()
    for _ in range(3):
        world.refuse()
        world.advance(world.connection.backoffDelay)
    protocol, _ = world.accept()
    world.advance(9.9)
    world.lose(protocol)
    assert world.connection.backoffDelay == 8, "9.9 s is short of reset_after"
    world.advance(8)
    protocol, _ = world.accept()
    world.advance(10)
    world.lose(protocol)
    assert world.connection.backoffDelay == 1, "10 s ESTABLISHED resets the backoff"


def test_connectTimeoutDuringAStalledHandshake() -> None:
    world = World(
        plugin=ScriptedPlugin(readyOnConnect=False), connect_timeout=5.0, backoff=NO_JITTER
    )
    world.connection.start()
    _, transport = world.accept()
    world.advance(4.99)
    assert world.state == "CONNECTING"
    world.advance(0.01)
    assert world.state == "IDLE"
    assert world.path()[-1] == ("CONNECTING", "IDLE", "timeout")
    assert transport.disconnecting, "the stalled transport is aborted"


def test_connectTimeoutWithNoAnswerCancelsTheConnect() -> None:
    world = World(connect_timeout=3.0)
    world.connection.start()
    world.skip()
    world.advance(3)
    assert world.path()[-1] == ("CONNECTING", "IDLE", "timeout")
    assert world.reactor.connectors[0].stoppedConnecting


def test_lateReadyAfterTheTimeoutIsIgnored() -> None:
    world = World(plugin=ScriptedPlugin(readyOnConnect=False), connect_timeout=1.0)
    world.connection.start()
    protocol, _ = world.accept()
    world.advance(1)
    protocol.handle.ready()
    world.lose(protocol)
    assert world.state == "IDLE"
    assert [t.to for t in world.transitions] == ["CONNECTING", "IDLE"]


def test_permanentPluginRejectionCloses() -> None:
    world = World(plugin=ScriptedPlugin(readyOnConnect=False))
    world.connection.start()
    protocol, transport = world.accept()
    protocol.handle.reject("WRONGPASS invalid password", permanent=True)
    assert world.state == "CLOSED"
    assert world.path()[-1] == ("CONNECTING", "CLOSED", "handshake")
    assert world.connection.lastError == "handshake: WRONGPASS invalid password"
    assert transport.disconnecting
    world.advance(3600)
    assert not world.pending()
    world.assertQuiet()


def test_certificateVerificationFailureCloses() -> None:
    world = World(plugin=ScriptedPlugin(readyOnConnect=False))
    world.connection.start()
    protocol, _ = world.accept()
    world.lose(protocol, SSL.Error([("SSL routines", "", "certificate verify failed")]))
    assert world.path()[-1] == ("CONNECTING", "CLOSED", "tls")
    world.assertQuiet()


def test_protocolClassificationOverridesTheDefault() -> None:
    from supervisor.interfaces import Classification

    plugin = ScriptedPlugin(readyOnConnect=False)
    world = World(plugin=plugin)
    world.connection.start()
    protocol, _ = world.accept()
    plugin.classification = Classification("handshake", permanent=True)
    world.lose(protocol)
    assert world.path()[-1] == ("CONNECTING", "CLOSED", "handshake")


def test_pluginClassifiesFailuresBeforeAProtocolExists() -> None:
    from zope.interface import implementer

    from supervisor.interfaces import Classification, IFailureClassifier

    @implementer(IFailureClassifier)
    class Strict(ScriptedPlugin):
        def classifyFailure(self, failure: object) -> Classification:
            return Classification("refused", permanent=True)

    world = World(plugin=Strict())
    world.connection.start()
    world.refuse()
    assert world.path()[-1] == ("CONNECTING", "CLOSED", "refused")


def test_maxRetriesExhaustedCloses() -> None:
    world = World(max_retries=3, backoff=NO_JITTER)
    world.connection.start()
    world.refuse()
    world.advance(1)
    world.refuse()
    world.advance(2)
    world.refuse()
    assert world.state == "CLOSED"
    assert world.path()[-1] == ("CONNECTING", "CLOSED", "refused")
    assert "retries exhausted" in (world.connection.lastError or "")
    world.assertQuiet()


def test_lostWhileEstablishedGoesIdle() -> None:
    world, protocol, _ = established()
    world.lose(protocol)  # type: ignore[arg-type]
    assert world.path()[-1] == ("ESTABLISHED", "IDLE", "lost")
    assert world.connection.protocol is None


def test_heartbeatMissesDropTheConnection() -> None:
    spec = HeartbeatSpec(interval=10, timeout=2, misses=3)
    world, protocol, transport = established(heartbeat=spec, seed=4)
    # the first ping comes between interval/2 and interval after ESTABLISHED
    for _ in range(1000):
        if protocol.pings:  # type: ignore[attr-defined]
            break
        world.advance(0.01)
    firstPing = world.reactor.seconds()
    assert 5 <= firstPing <= 10.01
    protocol.answer()  # type: ignore[attr-defined]
    assert world.connection.rtt == 0
    for _ in range(2000):
        if world.state != "ESTABLISHED":
            break
        world.advance(0.01)
    assert world.path()[-1] == ("ESTABLISHED", "IDLE", "heartbeat")
    assert len(protocol.pings) == 4  # type: ignore[attr-defined]
    assert world.reactor.seconds() - firstPing == pytest.approx(10 + 2 * 3, abs=0.02)
    assert transport.disconnecting  # type: ignore[attr-defined]


def test_heartbeatRttIsReportedToObservers() -> None:
    world, protocol, _ = established(heartbeat=HeartbeatSpec(interval=1, timeout=1, misses=1))
    seen: list[tuple[str, float | None]] = []
    world.connection.addHeartbeatObserver(lambda name, rtt: seen.append((name, rtt)))
    while not protocol.pings:  # type: ignore[attr-defined]
        world.advance(0.1)
    world.advance(0.25)
    protocol.answer()  # type: ignore[attr-defined]
    assert seen == [("c1", pytest.approx(0.25))]
    assert world.connection.rtt == pytest.approx(0.25)


class WatchedInputs:
    """
    The machine's inputs as an attempt sees them, recording the pongs given
    to the machine; C{busy} makes the machine seem to handle another input,
    and L{None} makes it an Automat without the busy mark.
    """

    def __init__(self, inputs: object, busy: bool | None) -> None:
        self.inputs = inputs
        self.pongs: list[bytes] = []
        if busy is not None:
            self.__automat_postponed__: list[object] | None = [] if busy else None

    def pong(self, token: bytes) -> None:
        self.pongs.append(token)
        self.inputs.pong(token)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        if name == BUSY:
            raise AttributeError(name)
        return getattr(self.inputs, name)


def test_theMachineIsNotBusyBetweenInputs() -> None:
    """
    The pong shortcut reads Automat's private mark of a machine handling an
    input: between inputs it is L{None} on the real machine. If a later
    Automat renames or drops it, this fails (pongs would still be handled,
    through the machine, only slower).
    """
    _, protocol, _ = established(heartbeat=HeartbeatSpec(interval=1, timeout=1, misses=1))
    attempt = protocol.handle  # type: ignore[attr-defined]
    assert getattr(attempt._events, BUSY, "no such mark") is None


@pytest.mark.parametrize("busy", [False, True, None])
def test_aPongGoesStraightToTheHeartbeatUnlessTheMachineIsBusy(busy: bool | None) -> None:
    """
    While ESTABLISHED, a pong skips the machine's dispatch (its C{pong}
    input there does nothing but hand it to the heartbeat); while the
    machine handles another input, or if Automat has no busy mark, it goes
    through the machine, which handles it in its turn. Either way it is the
    same answered heartbeat.
    """
    world, protocol, _ = established(heartbeat=HeartbeatSpec(interval=1, timeout=1, misses=1))
    attempt = protocol.handle  # type: ignore[attr-defined]
    inputs = attempt._events = WatchedInputs(attempt._events, busy)
    while not protocol.pings:  # type: ignore[attr-defined]
        world.advance(0.1)
    world.advance(0.25)
    protocol.answer()  # type: ignore[attr-defined]
    assert inputs.pongs == ([] if busy is False else [b"1"])
    assert world.connection.rtt == pytest.approx(0.25)
    world.connection.stop()
    assert attempt.pongTo is None


def test_heartbeatsOffMeansNoTimers() -> None:
    world, _, _ = established(heartbeat=HeartbeatSpec(interval=0))
    world.assertQuiet()


def test_connectionsThatCameUpTogetherPingAtDifferentTimes() -> None:
    """
    Connections that came up together spread their first pings over the
    grid points (every C{interval / PHASES}) of the second half of an
    interval, rather than pinging together.
    """
    firsts = set()
    for seed in range(40):
        world, protocol, _ = established(heartbeat=HeartbeatSpec(interval=10), seed=seed)
        while not protocol.pings:  # type: ignore[attr-defined]
            world.advance(0.01)
        firsts.add(round(world.reactor.seconds(), 2))
    step = 10 / PHASES
    assert len(firsts) >= 8
    assert all(min(t % step, step - t % step) <= 0.011 for t in firsts)


def test_stopBeforeStart() -> None:
    world = World()
    d = world.stop()
    assert world.path() == [("IDLE", "CLOSED", "stopped")]
    assert d.called
    world.connection.start()
    assert world.state == "CLOSED" and not world.pending()


def test_stopWhileIdleCancelsTheRetry() -> None:
    world = World()
    world.connection.start()
    world.refuse()
    d = world.stop()
    assert d.called
    assert world.path()[-1] == ("IDLE", "CLOSED", "stopped")
    world.assertQuiet()


def test_stopWhileConnectingCancelsTheAttempt() -> None:
    world = World()
    world.connection.start()
    d = world.stop()
    assert d.called
    assert world.path()[-1] == ("CONNECTING", "CLOSED", "stopped")
    assert world.reactor.connectors[0].stoppedConnecting
    world.assertQuiet()


def test_stopDuringTheHandshakeAbortsTheTransport() -> None:
    world = World(plugin=ScriptedPlugin(readyOnConnect=False))
    world.connection.start()
    protocol, transport = world.accept()
    d = world.stop()
    assert d.called and transport.disconnecting
    protocol.handle.ready()  # too late: ignored
    world.lose(protocol)
    assert world.path()[-1] == ("CONNECTING", "CLOSED", "stopped")
    world.assertQuiet()


def test_stopWhileEstablishedDrainsThenCloses() -> None:
    world, protocol, transport = established(plugin=ScriptedPlugin(drainAtOnce=False))
    d = world.stop()
    assert world.state == "CLOSING" and not d.called
    assert world.path()[-1] == ("ESTABLISHED", "CLOSING", "stopped")
    assert not transport.disconnecting, "the plugin drains first"
    protocol.drains[0].callback(None)  # type: ignore[attr-defined]
    assert transport.disconnecting  # type: ignore[attr-defined]
    world.lose(protocol)  # type: ignore[arg-type]
    assert world.path()[-1] == ("CLOSING", "CLOSED", "closed")
    assert d.called
    world.assertQuiet()


def test_drainPastTheDeadlineIsAborted() -> None:
    world, protocol, transport = established(
        plugin=ScriptedPlugin(drainAtOnce=False), drain_timeout=30.0
    )
    d = world.stop()
    world.advance(29.99)
    assert world.state == "CLOSING"
    world.advance(0.01)
    assert world.path()[-1] == ("CLOSING", "CLOSED", "deadline")
    assert d.called and transport.disconnecting  # type: ignore[attr-defined]
    assert protocol.drains[0].called, "the plugin's drain was cancelled"  # type: ignore[attr-defined]
    world.assertQuiet()


def test_stopTwiceWhileClosingBothFire() -> None:
    world, protocol, _ = established(plugin=ScriptedPlugin(drainAtOnce=False))
    first, second = world.stop(), world.stop()
    assert not first.called and not second.called
    protocol.drains[0].callback(None)  # type: ignore[attr-defined]
    world.lose(protocol)  # type: ignore[arg-type]
    assert first.called and second.called
    assert world.stop().called


def test_reconnectRotatesAnEstablishedConnection() -> None:
    world, protocol, transport = established()
    world.connection.reconnect()
    assert world.path()[-1] == ("ESTABLISHED", "CLOSING", "rotation")
    assert transport.disconnecting  # type: ignore[attr-defined]
    world.lose(protocol)  # type: ignore[arg-type]
    assert world.path()[-1] == ("CLOSING", "IDLE", "closed")
    assert world.connection.backoffDelay == 0
    world.advance(0)
    assert world.state == "CONNECTING"


def test_stopDuringRotationEndsClosed() -> None:
    world, protocol, _ = established(plugin=ScriptedPlugin(drainAtOnce=False))
    world.connection.reconnect()
    d = world.stop()
    assert world.connection.internalState == "CLOSING"
    protocol.drains[0].callback(None)  # type: ignore[attr-defined]
    world.lose(protocol)  # type: ignore[arg-type]
    assert world.path()[-1] == ("CLOSING", "CLOSED", "closed")
    assert d.called
    world.assertQuiet()


def test_reconnectWhileIdleRetriesNow() -> None:
    world = World(backoff=NO_JITTER)
    world.connection.start()
    world.refuse()
    world.connection.reconnect()
    assert world.path()[-1] == ("IDLE", "CONNECTING", "retry")
    world.refuse()
    assert world.connection.backoffDelay == 2


def test_historyIsBoundedAndOrdered() -> None:
    world = World(
        backoff=BackoffSpec(initial=0.1, max=0.1, jitter="none"),
        breaker=BreakerSpec(scope="off"),
    )
    world.connection.start()
    for _ in range(40):
        world.refuse()
        world.advance(0.1)
    history = world.connection.history
    assert len(history) == 50
    assert history == tuple(world.transitions[-50:])
    for before, after in itertools.pairwise(history):
        assert before.to == after.from_ and before.time <= after.time


def test_aFailingObserverIsLoggedAndTheOthersRun(noLoggedErrors: list[dict[str, object]]) -> None:
    world = World()
    world.connection.addObserver(lambda record: 1 / 0)
    later: list[object] = []
    world.connection.addObserver(later.append)
    world.connection.start()
    assert world.state == "CONNECTING" and len(later) == 1
    assert len(noLoggedErrors) == 1
    noLoggedErrors.clear()


def test_transitionJSONUsesTheSpecNames() -> None:
    world = World()
    world.connection.start()
    assert world.connection.history[0].asJSON() == {
        "time": 0.0,
        "from": "IDLE",
        "to": "CONNECTING",
        "reason": "start",
    }


def _overTLS(world: World) -> Any:
    """
    Accept the pending attempt on a transport that is TLS: Twisted connects
    the protocol before the TLS handshake. Return the attempt.
    """
    factory, _ = world._next()
    # The attempt itself: it connects with connectTCP, not through the
    # endpoint's wrapping factory.
    attempt = factory.buildProtocol(ADDRESS)
    transport = StringTransport()
    directlyProvides(transport, ISSLTransport)
    attempt.makeConnection(transport)  # the plugin calls ready() in here
    return attempt


def test_overTLSReadyWaitsForTheTLSHandshake() -> None:
    world = World()
    world.connection.start()
    link = _overTLS(world)
    assert world.state == "CONNECTING"
    link.handshakeCompleted()
    assert world.state == "ESTABLISHED"


def test_overTLSAFailedCertificateFailsTheAttemptForGood() -> None:
    world = World()
    world.connection.start()
    link = _overTLS(world)
    link.connectionLost(Failure(SSL.Error([("SSL routines", "", "certificate verify failed")])))
    assert world.path() == [("IDLE", "CONNECTING", "start"), ("CONNECTING", "CLOSED", "tls")]
    world.assertQuiet()


def test_aRejectionInsideConnectionMadeClosesCleanly() -> None:
    """
    The endpoint fires its connect Deferred only after connectionMade
    returns; a plugin that rejects inside connectionMade must still end the
    attempt (here permanently) without touching that Deferred.
    """
    world = World(plugin=ScriptedPlugin(rejectOnConnect="bad configuration"))
    world.connection.start()
    _, transport = world.accept()
    assert world.path()[-1] == ("CONNECTING", "CLOSED", "handshake")
    assert transport.disconnecting
    world.assertQuiet()


def test_overTLSHandshakeFirstThenThePluginsReady() -> None:
    """
    TLS may complete before the plugin's own handshake: HANDSHAKING, then
    ESTABLISHED on the plugin's ready, with one deadline all along.
    """
    world = World(plugin=ScriptedPlugin(readyOnConnect=False), connect_timeout=5.0)
    world.connection.start()
    attempt = _overTLS(world)
    assert world.connection.internalState == "SECURING"
    world.advance(2)
    attempt.handshakeCompleted()
    assert world.connection.internalState == "HANDSHAKING"
    assert world.state == "CONNECTING"
    world.advance(2.99)
    assert world.state == "CONNECTING", "the deadline is the attempt's, not restarted"
    world.advance(0.01)
    assert world.path()[-1] == ("CONNECTING", "IDLE", "timeout")


def test_overTLSReadyIsHeldInSecuringReady() -> None:
    world = World()
    world.connection.start()
    attempt = _overTLS(world)  # the scripted plugin is ready in connectionMade
    assert world.connection.internalState == "SECURING_READY"
    attempt.ready()  # a second ready changes nothing
    assert world.connection.internalState == "SECURING_READY"
    attempt.handshakeCompleted()
    assert world.path() == [("IDLE", "CONNECTING", "start"), ("CONNECTING", "ESTABLISHED", "ready")]


@pytest.mark.parametrize(
    ("setUp", "reconnects", "drains"),
    [
        ("unstarted", False, True),
        ("idle", True, True),
        ("connecting", True, True),
        ("established", True, True),
        ("rotating", True, True),
        ("closing", False, False),
        ("closed", False, False),
    ],
)
def test_reconnectAndDrainSayWhetherTheyWereAccepted(
    setUp: str, reconnects: bool, drains: bool
) -> None:
    """
    C{reconnect()} answers whether a new connection will follow, C{drain()}
    whether it began a close for good; the admin API answers 409 from them.
    """

    def prepare() -> World:
        world = World(plugin=ScriptedPlugin(drainAtOnce=False))
        if setUp == "unstarted":
            return world
        world.connection.start()
        if setUp == "idle":
            world.refuse()
        elif setUp in ("established", "rotating", "closing"):
            world.accept()
            if setUp == "rotating":
                assert world.connection.reconnect()
            elif setUp == "closing":
                world.connection.stop()
        elif setUp == "closed":
            world.connection.stop()
        return world

    world = prepare()
    assert world.connection.reconnect() is reconnects
    world = prepare()
    assert world.connection.drain() is drains


def test_lateAndRepeatedEventsOfAnAttemptAreIgnored() -> None:
    """
    Once the machine is done with an attempt, nothing it reports gets
    through; an attempt reports at most one failure.
    """
    world = World(plugin=ScriptedPlugin(readyOnConnect=False), backoff=NO_JITTER, connect_timeout=2)
    world.connection.start()
    old, _ = world.accept()
    world.advance(2)
    assert world.path()[-1] == ("CONNECTING", "IDLE", "timeout")
    old.handle.ready()
    old.handle.pong(b"1")
    old.handle.activity()
    old.handle.reject("late", permanent=True)
    old.handle.handshakeCompleted()  # type: ignore[attr-defined]
    world.lose(old)
    assert world.state == "IDLE" and len(world.transitions) == 2
    world.advance(1)
    new, _ = world.accept()
    new.handle.ready()
    new.handle.ready()
    assert world.state == "ESTABLISHED"
    new.handle.reject("first", permanent=False)
    new.handle.reject("second", permanent=True)
    world.lose(new)
    assert world.path()[-1] == ("ESTABLISHED", "IDLE", "lost")
    assert world.connection.lastError == "lost: first"


def test_pongsReachTheHeartbeatOnlyWhileEstablished() -> None:
    world = World(heartbeat=HeartbeatSpec(interval=1.0, timeout=0.5, misses=1))
    world.connection.start()
    protocol, _ = world.accept()
    world.advance(1.0)
    assert protocol.pings
    assert world.connection.reconnect()
    protocol.answer()  # during the rotation's drain: accepted and ignored
    assert world.connection.rtt is None
    assert world.state == "CLOSING"


# A certificate refused after the handshake (TLS 1.3).


def test_aCertificateRefusedOnceEstablishedClosesForGoodWithTls() -> None:
    """
    Under TLS 1.3 a server refuses the client's certificate (or its absence)
    after the client's handshake completed: a plugin ready at once is
    ESTABLISHED by then. That is no loss to retry, it is C{tls} for good.
    """
    world = World()
    world.connection.start()
    link = _overTLS(world)
    link.handshakeCompleted()
    assert world.state == "ESTABLISHED"
    alert = SSL.Error([("SSL routines", "", "tlsv13 alert certificate required")])
    link.connectionLost(Failure(alert))
    assert world.path() == [
        ("IDLE", "CONNECTING", "start"),
        ("CONNECTING", "ESTABLISHED", "ready"),
        ("ESTABLISHED", "CLOSED", "tls"),
    ]
    assert world.connection.lastError == "tls: " + str(alert)
    world.assertQuiet()


def test_anyOtherTLSErrorOnceEstablishedIsALoss() -> None:
    world = World()
    world.connection.start()
    link = _overTLS(world)
    link.handshakeCompleted()
    link.connectionLost(Failure(SSL.Error([("SSL routines", "", "decryption failed")])))
    assert world.path()[-1] == ("ESTABLISHED", "IDLE", "lost")
