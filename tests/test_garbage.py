"""
Full collections held off while a supervisor starts; what start-up built
frozen once every connection has had its first attempt's outcome.
"""

from __future__ import annotations

from random import Random

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
