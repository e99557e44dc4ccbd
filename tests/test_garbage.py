"""
Full collections held off while a supervisor starts; what start-up built
frozen once every connection has had its first attempt's outcome. The same
for a reconnect wave: held while many are away from ESTABLISHED.
"""

from __future__ import annotations

from random import Random
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from supervisor.garbage import NO_FULL_COLLECTIONS, STARTUP_LIMIT, StartupCollection
from supervisor.scheduler import Scheduler
from supervisor.service import Supervisor
from supervisor.states.records import Transition
from tests.test_service import Fleet, config, spec


class FakeCollector:
    """
    The C{gc} functions L{StartupCollection} uses, recorded.
    """

    def __init__(self) -> None:
        self.thresholds = (700, 10, 10)
        self.frozen = 0

    def get_threshold(self) -> tuple[int, int, int]:
        return self.thresholds

    def set_threshold(self, *thresholds: int) -> None:
        self.thresholds = thresholds  # type: ignore[assignment]

    def freeze(self) -> None:
        self.frozen += 1


def record(name: str, old: str, new: str) -> Transition:
    return Transition(name, 0.0, old, new, "start")  # type: ignore[arg-type]


def test_noFullCollectionsWhileStartingThenFrozen() -> None:
    collector = FakeCollector()
    collection = StartupCollection(collector)
    clock = Clock()
    observe = collection.watch(["a", "b"], Scheduler(clock))
    assert collector.thresholds == (700, 10, NO_FULL_COLLECTIONS)
    observe(record("a", "IDLE", "CONNECTING"))
    observe(record("a", "CONNECTING", "ESTABLISHED"))
    assert collector.frozen == 0
    observe(record("b", "IDLE", "CONNECTING"))
    observe(record("b", "CONNECTING", "IDLE"))  # failed: its outcome is known too
    assert collector.frozen == 1
    assert collector.thresholds == (700, 10, 10)
    assert collection.frozen
    observe(record("b", "IDLE", "CONNECTING"))
    observe(record("b", "CONNECTING", "IDLE"))
    assert collector.frozen == 1
    assert clock.getDelayedCalls() == []


def test_startUpEndsAtItsLimit() -> None:
    collector = FakeCollector()
    clock = Clock()
    StartupCollection(collector).watch(["a"], Scheduler(clock))
    clock.advance(STARTUP_LIMIT - 1)
    assert collector.frozen == 0
    clock.advance(1)
    assert collector.frozen == 1
    assert collector.thresholds == (700, 10, 10)


def test_aThresholdChangedMeanwhileIsKept() -> None:
    collector = FakeCollector()
    collection = StartupCollection(collector)
    observe = collection.watch(["a"], Scheduler(Clock()))
    collector.thresholds = (1000, 20, 30)  # the application's own choice
    observe(record("a", "CONNECTING", "CLOSED"))
    assert collector.thresholds == (1000, 20, 30)
    assert collector.frozen == 1


def test_cancelledStartUpFreezesNothing() -> None:
    collector = FakeCollector()
    collection = StartupCollection(collector)
    collection.watch(["a"], Scheduler(Clock()))
    collection.cancel()
    assert collector.thresholds == (700, 10, 10)
    assert collector.frozen == 0


def test_aSupervisorFreezesOnceEveryConnectionHasStarted() -> None:
    collector = FakeCollector()
    fleet = Fleet(config(spec("a"), spec("b")), collection=StartupCollection(collector))
    fleet.supervisor.startService()
    assert collector.thresholds[2] == NO_FULL_COLLECTIONS
    fleet.accept("a")
    assert collector.frozen == 0
    fleet.accept("b")
    assert collector.frozen == 1
    assert collector.thresholds == (700, 10, 10)


def test_fullCollectionsAreHeldOffWhileTheConnectionsAreBuilt() -> None:
    """
    Building the connections is start-up too; a supervisor stopped without
    ever starting gives the collector its thresholds back.
    """
    collector = FakeCollector()
    fleet = Fleet(config(spec("a")), collection=StartupCollection(collector))
    assert collector.thresholds == (700, 10, NO_FULL_COLLECTIONS)
    fleet.supervisor.stopService()
    assert collector.thresholds == (700, 10, 10)
    assert collector.frozen == 0


def test_aSupervisorStoppedWhileStartingFreezesNothing() -> None:
    collector = FakeCollector()
    fleet = Fleet(config(spec("a")), collection=StartupCollection(collector))
    fleet.supervisor.startService()
    fleet.supervisor.stopService()
    assert collector.thresholds == (700, 10, 10)
    assert collector.frozen == 0


def test_offByDefaultForALibrary() -> None:
    supervisor = Supervisor(config(spec("a")), MemoryReactorClock(), rng=Random(0))
    assert supervisor.collection is None
    daemonLike = Supervisor(config(spec("a")), MemoryReactorClock(), freezeAfterStart=True)
    assert isinstance(daemonLike.collection, StartupCollection)


def started(names: list[str], wave: int = 2) -> tuple[FakeCollector, Clock, Any]:
    """
    A collection watching C{names} (waves of C{wave}), all ESTABLISHED:
    start-up over and frozen once.
    """
    collector = FakeCollector()
    collection = StartupCollection(collector)
    clock = Clock()
    observe = collection.watch(names, Scheduler(clock), wave=wave)
    for name in names:
        observe(record(name, "IDLE", "CONNECTING"))
        observe(record(name, "CONNECTING", "ESTABLISHED"))
    assert collector.frozen == 1
    assert collector.thresholds == (700, 10, 10)
    return collector, clock, observe


def test_aReconnectWaveIsHeldThenFrozen() -> None:
    """
    With C{wave} connections away from ESTABLISHED, full collections are
    held off; once fewer are away, what the wave built is frozen.
    """
    collector, clock, observe = started(["a", "b", "c"])
    observe(record("a", "ESTABLISHED", "IDLE"))
    assert collector.thresholds == (700, 10, 10)
    observe(record("b", "ESTABLISHED", "IDLE"))
    assert collector.thresholds == (700, 10, NO_FULL_COLLECTIONS)
    observe(record("a", "IDLE", "CONNECTING"))
    observe(record("a", "CONNECTING", "IDLE"))  # still away
    assert collector.frozen == 1
    observe(record("a", "IDLE", "CONNECTING"))
    observe(record("a", "CONNECTING", "ESTABLISHED"))
    assert collector.frozen == 2
    assert collector.thresholds == (700, 10, 10)
    assert clock.getDelayedCalls() == []


def test_aClosedConnectionIsNoLongerAway() -> None:
    collector, _, observe = started(["a", "b"])
    observe(record("a", "ESTABLISHED", "CLOSING"))
    observe(record("b", "ESTABLISHED", "IDLE"))
    assert collector.thresholds[2] == NO_FULL_COLLECTIONS
    observe(record("a", "CLOSING", "CLOSED"))
    assert collector.frozen == 2
    assert collector.thresholds == (700, 10, 10)


def test_aWaveIsHeldAtMostTheLimit() -> None:
    """
    A wave that lasts is frozen and collected as before after the limit;
    the next wave begins once fewer were away.
    """
    collector, clock, observe = started(["a", "b", "c"])
    observe(record("a", "ESTABLISHED", "IDLE"))
    observe(record("b", "ESTABLISHED", "IDLE"))
    clock.advance(STARTUP_LIMIT - 1)
    assert collector.thresholds[2] == NO_FULL_COLLECTIONS
    clock.advance(1)
    assert collector.frozen == 2
    assert collector.thresholds == (700, 10, 10)
    observe(record("c", "ESTABLISHED", "IDLE"))  # the same wave, grown
    assert collector.thresholds == (700, 10, 10)
    observe(record("a", "IDLE", "ESTABLISHED"))
    observe(record("b", "IDLE", "ESTABLISHED"))  # ebbed below the wave
    observe(record("a", "ESTABLISHED", "IDLE"))  # a new one
    assert collector.thresholds[2] == NO_FULL_COLLECTIONS


def test_aWaveDuringStartUp() -> None:
    """
    Start-up and a wave at once: held until both are over, frozen once.
    """
    collector = FakeCollector()
    observe = StartupCollection(collector).watch(["a", "b", "c"], Scheduler(Clock()), wave=2)
    for name in ("a", "b"):
        observe(record(name, "CONNECTING", "ESTABLISHED"))
        observe(record(name, "ESTABLISHED", "IDLE"))
    observe(record("c", "CONNECTING", "ESTABLISHED"))  # start-up is over
    assert (collector.frozen, collector.thresholds[2]) == (0, NO_FULL_COLLECTIONS)
    observe(record("a", "IDLE", "ESTABLISHED"))
    assert (collector.frozen, collector.thresholds) == (1, (700, 10, 10))


def test_noWaveOnceStopping() -> None:
    """
    A supervisor that stops drains every connection: that is no wave.
    """
    collector = FakeCollector()
    collection = StartupCollection(collector)
    observe = collection.watch(["a", "b"], Scheduler(Clock()), wave=2)
    for name in ("a", "b"):
        observe(record(name, "CONNECTING", "ESTABLISHED"))
    collection.cancel()
    for name in ("a", "b"):
        observe(record(name, "ESTABLISHED", "CLOSING"))
    assert (collector.frozen, collector.thresholds) == (1, (700, 10, 10))
