"""
The heartbeat schedule on its own: pings, misses, RTT, liveness.
"""

from __future__ import annotations

import gc
import weakref

from twisted.internet.task import Clock

from supervisor.heartbeat import PHASES, Heartbeat
from supervisor.scheduler import Scheduler
from supervisor.spec import HeartbeatSpec


class Recorder:
    """
    The heartbeat's target: records what it is told, with the time.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.pings: list[tuple[float, bytes]] = []
        self.dead: list[tuple[float, int]] = []
        self.rtts: list[float | None] = []

    def sendPing(self, token: bytes) -> None:
        self.pings.append((self.clock.seconds(), token))

    def heartbeatObserved(self, rtt: float | None) -> None:
        self.rtts.append(rtt)

    def heartbeatDead(self, misses: int) -> None:
        self.dead.append((self.clock.seconds(), misses))

    def deadAfter(self, step: float, limit: int) -> float:
        """
        Advance the clock C{step} at a time, at most C{limit} times, until
        the heartbeat declares the peer dead: when it did.
        """
        for _ in range(limit):
            if self.dead:
                break
            self.clock.advance(step)
        assert self.dead, f"not dead after {limit} steps of {step} s"
        return self.dead[0][0]


def make(
    interval: float = 10, timeout: float = 2, misses: int = 3
) -> tuple[Clock, Recorder, Heartbeat]:
    clock = Clock()
    recorder = Recorder(clock)
    heartbeat = Heartbeat(HeartbeatSpec(interval, timeout, misses), Scheduler(clock), recorder)
    heartbeat.start(interval)
    return clock, recorder, heartbeat


def test_answeredPingsKeepTheInterval() -> None:
    clock, recorder, heartbeat = make()
    for n in range(1, 4):
        clock.pump([10] if n == 1 else [1.5, 8])  # through the timeout check at +2 s
        assert recorder.pings[-1] == (10.0 * n, b"%d" % n)
        clock.advance(0.5)
        heartbeat.pong(b"%d" % n)
    assert recorder.rtts == [0.5, 0.5, 0.5]
    assert recorder.dead == []
    heartbeat.stop()
    assert clock.getDelayedCalls() == []


def test_missesAreCountedAndTheLimitDrops() -> None:
    """
    Silent from the start: pings at 10, 12, 14 (each miss re-pings at once),
    dropped at 16 = interval + timeout * misses.
    """
    clock, recorder, heartbeat = make(interval=10, timeout=2, misses=3)
    clock.pump([10, 2, 2])
    assert [t for t, _ in recorder.pings] == [10, 12, 14]
    assert heartbeat.misses == 2
    assert recorder.dead == []
    clock.advance(2)
    assert recorder.dead == [(16, 3)]
    assert recorder.rtts == [None, None, None]
    assert clock.getDelayedCalls() == []


def test_aPongResetsTheMissCount() -> None:
    clock, recorder, heartbeat = make(interval=10, timeout=2, misses=2)
    clock.pump([10, 2])
    assert heartbeat.misses == 1
    heartbeat.pong(recorder.pings[-1][1])
    assert heartbeat.misses == 0
    clock.pump([2, 10, 2])
    assert recorder.dead == []
    assert heartbeat.misses == 1


def test_staleOrUnknownPongsAreIgnored() -> None:
    clock, recorder, heartbeat = make(interval=10, timeout=2, misses=2)
    clock.advance(10)
    heartbeat.pong(b"not-a-token")
    clock.advance(2)
    assert heartbeat.misses == 1
    heartbeat.pong(b"1")  # answer to the first ping, too late
    assert heartbeat.misses == 1
    assert recorder.rtts == [None]


def test_detectionWithinTheBoundAfterALastPong() -> None:
    """
    The peer answers one ping, then goes silent: the drop comes at most
    interval + timeout * misses after that last answer.
    """
    clock, recorder, heartbeat = make(interval=10, timeout=2, misses=2)
    clock.advance(10)
    heartbeat.pong(recorder.pings[-1][1])
    lastAnswer = clock.seconds()
    assert recorder.deadAfter(0.5, 100) - lastAnswer <= 10 + 2 * 2


def test_activityCountsAsLivenessAndPostponesPings() -> None:
    clock, recorder, heartbeat = make(interval=10, timeout=2, misses=1)
    clock.advance(10)
    assert len(recorder.pings) == 1
    clock.advance(1)
    heartbeat.activity()  # answers the outstanding ping without an RTT sample
    clock.advance(1)
    assert recorder.dead == [] and recorder.rtts == []
    # busy connection: a frame every 5 s means no ping is needed
    for _ in range(6):
        clock.advance(5)
        heartbeat.activity()
    assert len(recorder.pings) == 1
    clock.advance(10)
    assert len(recorder.pings) == 2


def test_stoppedHeartbeatIgnoresEverything() -> None:
    clock, recorder, heartbeat = make()
    heartbeat.stop()
    heartbeat.pong(b"1")
    heartbeat.activity()
    clock.advance(100)
    assert recorder.pings == [] and recorder.dead == []
    assert clock.getDelayedCalls() == []


def test_aTimeoutLongerThanTheIntervalKeepsTheBound() -> None:
    """
    With timeout > interval, pings still go out every interval after a
    pong, and a silent peer is dropped within interval + timeout * misses
    of the last answer.
    """
    clock, recorder, heartbeat = make(interval=2, timeout=5, misses=2)
    clock.advance(2)
    clock.advance(0.1)
    heartbeat.pong(recorder.pings[-1][1])
    clock.advance(1.9)
    assert [t for t, _ in recorder.pings] == [2, 4]
    lastAnswer = 2.1
    assert recorder.deadAfter(0.05, 400) - lastAnswer <= 2 + 5 * 2


def test_aPongReadAfterTheProcessWasHeldUpIsNoMiss() -> None:
    """
    The pong arrived in time, but the process was held up past the timeout
    (a long garbage collection) and reads it only then: the timeout is
    decided after that read, so the ping counts as answered.
    """
    clock, recorder, heartbeat = make(interval=10, timeout=2, misses=1)
    clock.advance(10)
    assert recorder.pings == [(10.0, b"1")]
    clock.advance(5)  # held up from 10.001 to 15; the pong waits unread
    heartbeat.pong(b"1")  # the first thing the reactor reads
    clock.advance(0.01)
    assert recorder.dead == []
    assert recorder.rtts == [5.0]
    clock.advance(5)
    assert [token for _, token in recorder.pings] == [b"1", b"2"]


def test_aStoppedHeartbeatLetsItsTargetGo() -> None:
    """
    Its target holds the heartbeat (ESTABLISHED does); once stopped, the
    heartbeat no longer holds its target, so both are freed without the
    cyclic garbage collector.
    """
    clock = Clock()
    recorder = Recorder(clock)
    heartbeat = Heartbeat(HeartbeatSpec(10, 2, 3), Scheduler(clock), recorder)
    recorder.heartbeat = heartbeat  # type: ignore[attr-defined]
    heartbeat.start(10)
    target = weakref.ref(recorder)
    gc.disable()
    try:
        heartbeat.stop()
        del recorder, heartbeat
        assert target() is None
    finally:
        gc.enable()


def test_pingsAreDueOnTheGridAndALatePingKeepsTheSchedule() -> None:
    """
    Pings are due on the grid of C{interval / PHASES}: heartbeats started a
    little apart ping together. One sent late (a busy process) is followed by
    the next an interval after it was due, not after it was sent, so that
    heartbeats do not drift onto the grid's later points and pile up there.
    """
    clock = Clock()
    scheduler = Scheduler(clock)
    spec = HeartbeatSpec(interval=1, timeout=0.5, misses=2)
    recorders = [Recorder(clock) for _ in range(2)]
    heartbeats = [Heartbeat(spec, scheduler, recorder) for recorder in recorders]
    heartbeats[0].start(0.71)
    heartbeats[1].start(0.74)
    assert spec.interval / PHASES == 0.05
    clock.advance(0.7 + 0.12)  # the pings due at 0.7 go out 0.12 s late
    assert [r.pings for r in recorders] == [[(0.82, b"1")], [(0.82, b"1")]]
    for heartbeat in heartbeats:
        heartbeat.pong(b"1")
    clock.advance(1.69 - 0.82)
    assert all(len(r.pings) == 1 for r in recorders)
    clock.advance(0.02)  # due at 1.7, not at 0.82 + 1
    assert [(round(t, 6), token) for r in recorders for t, token in r.pings[1:]] == [
        (1.71, b"2"),
        (1.71, b"2"),
    ]
    for heartbeat in heartbeats:
        heartbeat.stop()


def test_aHeartbeatKeepsOneTimerForGood() -> None:
    """
    Ping, pong, miss and the ping after it: the heartbeat moves the one
    L{supervisor.scheduler.Timer} it started with rather than making a new
    one each time, and the scheduler never holds more than that one.
    """
    clock, recorder, heartbeat = make(interval=10, timeout=2, misses=3)
    first = heartbeat._timer
    assert first is not None
    clock.advance(10)  # the first ping
    clock.advance(0.5)
    heartbeat.pong(b"1")
    assert heartbeat._timer is first and len(heartbeat._scheduler) == 1
    clock.advance(9.5)  # the second ping, never answered
    clock.advance(2)  # a miss: the third ping at once
    assert [token for _, token in recorder.pings] == [b"1", b"2", b"3"]
    assert recorder.rtts == [0.5, None]
    assert heartbeat._timer is first and len(heartbeat._scheduler) == 1
    heartbeat.stop()
    assert not first.active and len(heartbeat._scheduler) == 0
