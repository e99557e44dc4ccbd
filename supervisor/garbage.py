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

L{StartupCollection} holds off full collections while a supervisor is built
and starts (young ones go on), then freezes (C{gc.freeze()}) everything there
is once start-up is over: the collector never traverses those objects again.
That is safe because a connection that drops, rotates or stops, or whose
connect fails (but through a host name: see L{supervisor.cycles}), leaves no
reference cycles: what a frozen connection lets go of is freed by reference
counting. What is frozen is never collected as a cycle; only a cycle that
was already garbage at that moment (rare: what the last young collections
had not reached yet) is kept for good.

A reconnect wave is start-up again: when the peer of thousands of
connections dies and comes back, their new attempts, transports and
protocols are as many new objects that will live as long, and the full
collections that reach them (one each time the old generation grew by a
quarter) take a hundred milliseconds and more at ten thousand connections.
So while at least L{WAVE} connections that were ESTABLISHED are not (and for
at most L{STARTUP_LIMIT} seconds at once), full collections are held off
the same way, and what the wave built is frozen once fewer are away.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable
from typing import Protocol

from supervisor.scheduler import Scheduler, Timer
from supervisor.states.records import Transition

NO_FULL_COLLECTIONS = 1 << 30
"""A third threshold no count of collections reaches."""

STARTUP_LIMIT = 60.0
"""Seconds after which start-up (or a reconnect wave) counts as over even if
some connections have not made their first attempt yet (held by a connect
budget, say), or are not back yet."""

WAVE = 500
"""How many connections away from ESTABLISHED (they were ESTABLISHED, and
are not again yet) make a reconnect wave. Below that, a full collection over
what their reconnects build takes a few milliseconds."""


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
    built frozen once it is over; the same for each reconnect wave.

    @ivar frozen: whether start-up is over and was frozen.
    """

    def __init__(self, collector: Collector = gc) -> None:
        self._collector = collector
        self._saved: tuple[int, int, int] | None = None
        self._cancelled = False
        self.frozen = False

    def watch(
        self,
        names: Iterable[str],
        scheduler: Scheduler,
        limit: float = STARTUP_LIMIT,
        wave: int = WAVE,
    ) -> Callable[[Transition], None]:
        """
        Start-up begins for the connections called C{names}; it is over once
        each has left CONNECTING (or closed) once, or after C{limit} seconds.
        Then each reconnect wave (at least C{wave} connections away from
        ESTABLISHED) is held the same way, until fewer are away or for at
        most C{limit} seconds; a wave held to its limit ends once fewer are
        away, and the next begins after that.

        @return: the transition observer that follows them.
        """
        pending = set(names)
        away: set[str] = set()
        timer: Timer | None = None
        # The wave now away was held to the limit.
        spent = False

        def update() -> None:
            nonlocal timer, spent
            if len(away) < wave:
                spent = False
            wanted = bool(pending) or (len(away) >= wave and not spent)
            if wanted and timer is None:
                self.starting()
                timer = scheduler.callLater(limit, expire)
            elif not wanted and timer is not None:
                timer.cancel()
                timer = None
                self.started()

        def expire() -> None:
            nonlocal timer, spent
            timer = None
            pending.clear()
            spent = len(away) >= wave
            self.started()

        def observe(record: Transition) -> None:
            name = record.connection
            if pending and (record.from_ == "CONNECTING" or record.to == "CLOSED"):
                pending.discard(name)
            if record.from_ == "ESTABLISHED":
                away.add(name)
            elif record.to == "ESTABLISHED" or record.to == "CLOSED":
                away.discard(name)
            if not self._cancelled:
                update()

        self.starting()
        timer = scheduler.callLater(limit, expire)
        update()
        return observe

    def starting(self) -> None:
        """
        Start-up (or a reconnect wave) begins: no full collection until
        L{started}.
        """
        if self._saved is not None or self._cancelled:
            return
        self._saved = self._collector.get_threshold()
        young, middle, _ = self._saved
        self._collector.set_threshold(young, middle, NO_FULL_COLLECTIONS)

    def started(self) -> None:
        """
        Start-up (or a reconnect wave) is over: freeze everything, and
        collect as before (unless the thresholds were changed meanwhile by
        someone else).
        """
        saved, self._saved = self._saved, None
        if saved is None:
            return
        self._collector.freeze()
        self.frozen = True
        self._restore(saved)

    def cancel(self) -> None:
        """
        The supervisor stops: collect as before from now on, freezing
        nothing more (a start-up or a wave under way ends without being over).
        """
        self._cancelled = True
        saved, self._saved = self._saved, None
        if saved is not None:
            self._restore(saved)

    def _restore(self, saved: tuple[int, int, int]) -> None:
        young, middle, full = self._collector.get_threshold()
        if full == NO_FULL_COLLECTIONS:
            self._collector.set_threshold(young, middle, saved[2])
