"""
The flap guard (more than C{flap.max} losses within C{flap.within}: held for
C{flap.hold}, or CLOSED when it is 0) and the proven-health reset rule (the
backoff starts over only after C{reset_after} seconds ESTABLISHED and, when
heartbeats are on, one answered heartbeat or a frame proving the peer
alive). One connection on a fake clock; its breaker is off so that only
these rules act.
"""

from __future__ import annotations

import attrs

from supervisor.spec import BackoffSpec, BreakerSpec, FlapSpec, HeartbeatSpec
from tests.harness import ScriptedProtocol, World

NO_JITTER = BackoffSpec(initial=1.0, multiplier=2.0, max=64.0, jitter="none", reset_after=5.0)
NO_HEARTBEAT = HeartbeatSpec(interval=0.0)


def world(flap: FlapSpec, **spec: object) -> World:
    spec.setdefault("backoff", BackoffSpec(initial=0.1, multiplier=1.0, max=0.1, jitter="none"))
    spec.setdefault("heartbeat", NO_HEARTBEAT)
    w = World(breaker=BreakerSpec(scope="off"), flap=flap, **spec)
    w.connection.start()
    return w


def establish(w: World) -> ScriptedProtocol:
    """
    Wait for the next attempt (at most a minute) and accept it.
    """
    for _ in range(60_000):
        if w.pending():
            break
        w.advance(0.001)
    protocol, _ = w.accept()
    assert w.state == "ESTABLISHED"
    return protocol


def flap(w: World, up: float = 0.5) -> None:
    """
    One flap: connect, stay up C{up} seconds, lose it.
    """
    protocol = establish(w)
    w.advance(up)
    w.lose(protocol)


def test_moreThanMaxLossesWithinTheWindowHoldTheConnection() -> None:
    w = world(FlapSpec(max=3, within=10.0, hold=7.0))
    for _ in range(3):
        flap(w)
        assert w.connection.held == "backoff"
    flap(w)
    assert w.connection.held == "flapping"
    assert w.connection.internalState == "FLAPPING"
    assert w.state == "IDLE"
    assert w.connection.flapHolds == 1
    assert w.connection.backoffDelay == 7.0
    lost = w.reactor.seconds()
    assert "flapping: more than 3 losses within 10s" in (w.connection.lastError or "")
    w.advance(7.0 - 0.011)
    assert not w.pending()
    w.advance(0.02)
    assert w.pending()
    assert w.reactor.seconds() - lost >= 7.0
    w.stop()
    w.assertQuiet()


def test_exactlyMaxLossesDoNotHold() -> None:
    w = world(FlapSpec(max=3, within=10.0, hold=7.0))
    for _ in range(3):
        flap(w)
    assert w.connection.held == "backoff"
    assert w.connection.flapHolds == 0
    w.stop()
    w.assertQuiet()


def test_theWindowSlides() -> None:
    """
    Only losses within the last C{within} seconds count.
    """
    # A loss every 3.6 s (0.1 s backoff, 3.5 s up): the third falls within
    # 10 s of the first.
    w = world(FlapSpec(max=2, within=10.0, hold=30.0))
    flap(w, up=3.5)
    flap(w, up=3.5)
    assert w.connection.held == "backoff"
    flap(w, up=3.5)
    assert w.connection.held == "flapping"
    w.stop()
    # A loss every 5.6 s: never more than two in any 10 s, however many.
    w = world(FlapSpec(max=2, within=10.0, hold=30.0))
    for _ in range(10):
        flap(w, up=5.5)
        assert w.connection.held == "backoff"
    assert w.connection.flapHolds == 0
    w.stop()
    w.assertQuiet()


def test_aLossExactlyWithinSecondsAgoNoLongerCounts() -> None:
    w = world(FlapSpec(max=1, within=2.0, hold=30.0))
    protocol = establish(w)
    w.lose(protocol)
    first = w.reactor.seconds()
    protocol = establish(w)
    w.advance(first + 2.0 - w.reactor.seconds())
    w.lose(protocol)  # exactly 2.0 s after the first: out of the window
    assert w.connection.held == "backoff"
    protocol = establish(w)
    w.lose(protocol)  # the second within 2 s: held
    assert w.connection.held == "flapping"
    w.stop()


def test_lossesOfConnectionsThatProvedHealthyDoNotCount() -> None:
    """
    A connection lost after it proved healthy (up for C{reset_after}; no
    heartbeats here) is a peer restarted now and then, not a flapping one:
    however often within the window, it is not held. Only the losses of
    sessions that proved nothing count.
    """
    w = world(FlapSpec(max=1, within=120.0, hold=30.0))
    for _ in range(4):
        flap(w, up=10.5)  # reset_after = 10: proved healthy each time
        assert w.connection.held == "backoff"
    flap(w, up=0.5)  # one loss that counts: not more than max
    assert w.connection.held == "backoff"
    flap(w, up=0.5)
    assert w.connection.held == "flapping"
    assert w.connection.flapHolds == 1
    w.stop()
    w.assertQuiet()


def test_holdZeroClosesTheConnection() -> None:
    w = world(FlapSpec(max=2, within=60.0, hold=0.0))
    for _ in range(3):
        flap(w)
    assert w.state == "CLOSED"
    assert w.path()[-1] == ("ESTABLISHED", "CLOSED", "lost")
    assert "flapping" in (w.connection.lastError or "")
    assert w.connection.flapHolds == 1
    w.assertQuiet()


def test_afterAHoldTheCountStartsOver() -> None:
    w = world(FlapSpec(max=2, within=60.0, hold=1.0))
    for _ in range(3):
        flap(w)
    assert w.connection.flapHolds == 1
    for _ in range(2):
        flap(w)
        assert w.connection.held == "backoff"
    flap(w)
    assert w.connection.flapHolds == 2
    assert w.connection.held == "flapping"
    w.stop()
    w.assertQuiet()


def test_maxZeroTurnsTheGuardOff() -> None:
    w = world(FlapSpec(max=0))
    for _ in range(50):
        flap(w, up=0.01)
    assert w.connection.flapHolds == 0
    assert w.connection.held == "backoff"
    w.stop()
    w.assertQuiet()


def test_reconnectLiftsAHold() -> None:
    w = world(FlapSpec(max=1, within=60.0, hold=600.0))
    flap(w)
    flap(w)
    assert w.connection.held == "flapping"
    assert w.connection.reconnect() is True
    assert w.pending()
    w.stop()
    w.assertQuiet()


def test_stopWhileHeld() -> None:
    w = world(FlapSpec(max=1, within=60.0, hold=600.0))
    flap(w)
    flap(w)
    done = w.stop()
    assert done.called
    assert w.state == "CLOSED"
    w.assertQuiet()


def test_retuneAppliesToTheNextLossWithoutReconnecting() -> None:
    w = world(FlapSpec(max=10, within=60.0, hold=5.0))
    flap(w)
    flap(w)
    protocol = establish(w)
    spec = attrs.evolve(w.connection.spec, flap=FlapSpec(max=2, within=60.0, hold=5.0))
    w.connection.retune(spec)
    assert w.state == "ESTABLISHED"
    assert w.connection.protocol is protocol
    w.lose(protocol)
    assert w.connection.held == "flapping"
    w.stop()
    w.assertQuiet()


# The proven-health reset rule.


def delayAfter(w: World, protocol: ScriptedProtocol) -> float:
    """
    Lose C{protocol} and return the backoff delay the connection drew.
    """
    w.lose(protocol)
    assert w.connection.held == "backoff"
    return w.connection.backoffDelay


def failThenConnect(w: World, failures: int) -> ScriptedProtocol:
    """
    C{failures} refused attempts (the backoff grows), then one accepted.
    """
    for _ in range(failures):
        while not w.pending():
            w.advance(0.01)
        w.refuse()
    return establish(w)


def reset(**spec: object) -> World:
    spec.setdefault("backoff", NO_JITTER)
    spec.setdefault("heartbeat", HeartbeatSpec(interval=1.0, timeout=0.5, misses=2))
    flap = spec.pop("flap", FlapSpec(max=0))
    assert isinstance(flap, FlapSpec)
    return world(flap, **spec)


def test_healthyLongEnoughAndAnsweredResetsTheBackoff() -> None:
    w = reset()
    protocol = failThenConnect(w, 3)  # delays 1, 2, 4 drawn
    w.advance(0.99)
    assert protocol.pings
    protocol.answer()
    w.advance(5.0)
    protocol.answer()
    assert delayAfter(w, protocol) == 1.0, "started over"
    w.stop()
    w.assertQuiet()


def test_aSilentPeerKeepsBackingOff() -> None:
    """
    A peer that accepts and never answers is dropped by the heartbeat each
    time, after longer than reset_after, and the backoff goes on growing.
    """
    w = reset()
    delays = []
    for _ in range(5):
        establish(w)
        while w.state == "ESTABLISHED":
            w.advance(0.01)  # pings go unanswered: lost after interval + 2 x timeout
        assert w.path()[-1] == ("ESTABLISHED", "IDLE", "heartbeat")
        delays.append(w.connection.backoffDelay)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0]
    w.stop()
    w.assertQuiet()


def test_aPeerSilentLongerThanResetAfterKeepsBackingOff() -> None:
    """
    ESTABLISHED for longer than reset_after proves nothing without an answer.
    """
    w = reset(heartbeat=HeartbeatSpec(interval=3.0, timeout=2.0, misses=2))
    protocol = failThenConnect(w, 2)
    w.advance(6.0)
    assert w.state == "ESTABLISHED"
    assert delayAfter(w, protocol) == 4.0
    w.stop()
    w.assertQuiet()


def test_activityCountsAsAnAnswer() -> None:
    w = reset()
    protocol = failThenConnect(w, 3)
    protocol.handle.activity()
    w.advance(5.0)
    protocol.handle.activity()
    assert delayAfter(w, protocol) == 1.0
    w.stop()
    w.assertQuiet()


def test_answeredButNotLongEnoughDoesNotReset() -> None:
    w = reset()
    protocol = failThenConnect(w, 3)
    w.advance(1.0)
    protocol.answer()
    w.advance(3.0)
    assert delayAfter(w, protocol) == 8.0
    w.stop()
    w.assertQuiet()


def test_anAnswerInAnEarlierConnectionDoesNotCount() -> None:
    w = reset(heartbeat=HeartbeatSpec(interval=3.0, timeout=2.0, misses=2))
    protocol = failThenConnect(w, 2)
    w.advance(3.0)
    protocol.answer()
    assert delayAfter(w, protocol) == 4.0  # answered, but up 3 s only
    protocol = establish(w)
    w.advance(5.2)  # long enough, silent (the second miss is due at 5.5 s at the earliest)
    assert w.state == "ESTABLISHED"
    assert delayAfter(w, protocol) == 8.0
    w.stop()
    w.assertQuiet()


def test_withoutHeartbeatsLongEnoughIsProofEnough() -> None:
    w = reset(heartbeat=NO_HEARTBEAT)
    protocol = failThenConnect(w, 3)
    w.advance(5.0)
    assert delayAfter(w, protocol) == 1.0
    w.stop()
    w.assertQuiet()


def test_aFlapHoldDoesNotCountAsTimeEstablished() -> None:
    w = reset(heartbeat=NO_HEARTBEAT, flap=FlapSpec(max=1, within=60.0, hold=30.0))
    protocol = failThenConnect(w, 3)  # delays 1, 2, 4 drawn
    assert delayAfter(w, protocol) == 8.0  # first loss, up for no time
    protocol = establish(w)
    w.advance(0.5)
    w.lose(protocol)  # second loss within 60 s: held 30 s
    assert w.connection.held == "flapping"
    w.advance(30.0)
    w.refuse()  # the attempt after the hold fails: IDLE draws the next delay
    assert w.connection.backoffDelay == 16.0, "up 0.5 s is no proof of health"
