"""
Keeping the cyclic garbage collector off what a supervisor's start-up built.

Ten thousand connections are some 400,000 objects that live as long as the
process. The cyclic collector traverses every object of the generations it
collects, and start-up leaves them where it is costly: a full collection
while connections are being made (each time the old generation grew by a
quarter) and, after start-up, the young collections that first reach the
objects start-up made last. At ten thousand connections each takes tens to
hundreds of milliseconds, during which nothing is read and no heartbeat is
sent.

L{StartupCollection} holds off full collections while a supervisor is built and starts
(young ones go on, and collect what failed connects leave), then freezes
(C{gc.freeze()}) everything there is once start-up is over: the collector
never traverses those objects again. That is safe because a connection that
drops, rotates or stops leaves no reference cycles (L{supervisor.cycles}):
what a frozen connection lets go of is freed by reference counting. What is
frozen is never collected as a cycle; only a cycle that was already garbage
at that moment (rare: what the last young collections had not reached yet)
is kept for good.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable
from typing import Protocol

from supervisor.scheduler import Scheduler
from supervisor.states.records import Transition

NO_FULL_COLLECTIONS = 1 << 30
"""A third threshold no count of collections reaches."""

STARTUP_LIMIT = 60.0
"""Seconds after which start-up counts as over even if some connections have
not made their first attempt yet (held by a connect budget, say)."""


class Collector(Protocol):
    """
    What L{StartupCollection} uses of the C{gc} module (a test gives a fake).
    """

    def get_threshold(self) -> tuple[int, int, int]: ...

    def set_threshold(
        self, threshold0: int, threshold1: int = ..., threshold2: int = ..., /
    ) -> None: ...

    def freeze(self) -> None: ...


class StartupCollection:
    """
    Full collections held off while a supervisor starts, and what start-up
    built frozen once it is over.

    @ivar frozen: whether start-up is over and was frozen.
    """

    def __init__(self, collector: Collector = gc) -> None:
        self._collector = collector
        self._saved: tuple[int, int, int] | None = None
        self.frozen = False

    def watch(
        self, names: Iterable[str], scheduler: Scheduler, limit: float = STARTUP_LIMIT
    ) -> Callable[[Transition], None]:
        """
        Start-up begins for the connections called C{names}; it is over once
        each has left CONNECTING (or closed) once, or after C{limit} seconds.

        @return: the transition observer that follows it.
        """
        pending = set(names)
        self.starting()
        timer = scheduler.callLater(limit, self.started)

        def observe(record: Transition) -> None:
            if pending and (record.from_ == "CONNECTING" or record.to == "CLOSED"):
                pending.discard(record.connection)
                if not pending:
                    timer.cancel()
                    self.started()

        if not pending:
            timer.cancel()
            self.started()
        return observe

    def starting(self) -> None:
        """
        Start-up begins: no full collection until L{started}.
        """
        if self._saved is not None or self.frozen:
            return
        self._saved = self._collector.get_threshold()
        young, middle, _ = self._saved
        self._collector.set_threshold(young, middle, NO_FULL_COLLECTIONS)

    def started(self) -> None:
        """
        Start-up is over: freeze everything, and collect as before (unless
        the thresholds were changed meanwhile by someone else).
        """
        saved, self._saved = self._saved, None
        if saved is None:
            return
        self._collector.freeze()
        self.frozen = True
        self._restore(saved)

    def cancel(self) -> None:
        """
        Start-up ends without being over (the supervisor stops): collect as
        before, freezing nothing.
        """
        saved, self._saved = self._saved, None
        if saved is not None:
            self._restore(saved)

    def _restore(self, saved: tuple[int, int, int]) -> None:
        young, middle, full = self._collector.get_threshold()
        if full == NO_FULL_COLLECTIONS:
            self._collector.set_threshold(young, middle, saved[2])
