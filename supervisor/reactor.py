"""
The reactor C{twistd netsupervisor} runs on where epoll(7) exists: Twisted's
epoll reactor, handling at most L{MAX_EVENTS} ready descriptors per poll.

Twisted's C{EPollReactor} asks the kernel for as many events as it watches
descriptors and handles all it gets before it looks at its timers. When a
peer of ten thousand connections dies, that is ten thousand connection
losses (each a read, a close and the protocol's C{connectionLost}) in one
reactor turn, and every timer of the process waits for all of them: a
quarter of a second at 10,000 connections. With the events of one poll
bounded, the reactor handles them in batches, and its timers run between
two batches; the descriptors not handed over stay ready (epoll is
level-triggered here) and, as epoll_wait(2) says, successive polls go round
the ready descriptors, so none waits for long.

Nothing else changes: the same descriptors, the same callbacks in the same
order within a batch, the same C{doRead}/C{doWrite} dispatch.

One thing is lighter. Twisted runs every event inside
C{twisted.python.log.callWithLogger}, which copies the legacy log context
twice and calls five functions deep, so that lines logged with the legacy
C{twisted.python.log} while the event is handled carry the descriptor's
C{logPrefix()} as their system: about 1.5 microseconds of every read, a
twentieth of what one heartbeat costs. This reactor calls C{doRead} or
C{doWrite} of a plain read or write event directly; a failure it raises is
still logged with the descriptor's prefix, and a disconnection (the event,
or what C{doRead}/C{doWrite} returned) is still handled inside
C{callWithLogger}, as Twisted does. Only legacy log lines written by a
protocol while it reads or writes lose that prefix (the process's own lines
use C{twisted.logger}, whose events never had it).

A batch is bounded in time as well: once handling it has taken
L{MAX_BATCH_SECONDS}, the events left in it are not handled in this turn.
They are not lost: epoll is level-triggered, so the next poll reports those
descriptors again (behind the others ready meanwhile). What one event costs
depends on the host (on a loaded machine, a batch of 128 connection losses
or completed connects at 10,000 connections took up to 40 ms), and a bound
in events alone lets a slower host hold its timers for longer.

C{twistd netsupervisor} installs it unless C{twistd --reactor} chose one;
the twistd plugin also offers it to any twistd application as
C{--reactor=bounded-epoll}. An application that embeds a
L{supervisor.Supervisor} chooses its own reactor; it may call L{install}
before it imports C{twisted.internet.reactor}.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from time import monotonic
from typing import Any

# Like Twisted's own module, this one cannot be imported where there is no
# epoll (ImportError).
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.posixbase import _NO_FILEDESC
from twisted.python import log


def _prefix(selectable: Any) -> str:
    # What callWithLogger names the system of what it logs.
    try:
        return str(selectable.logPrefix())
    except Exception:
        return "(buggy logPrefix method)"


MAX_EVENTS = 128
"""How many ready descriptors one poll hands over, at most. A batch of 256
connection losses took up to 15 ms at 10,000 connections. With 128 rather
than 256, the reactor lag p99 while establishing 10,000 connections fell from
24 to 15 ms, and in the storm from 8 to 5 ms (medians of five alternated runs
each, 2026-12-01, on a loaded machine)."""


MAX_BATCH_SECONDS = 0.010
"""How long the events of one poll may take to handle before the rest wait
for the next poll: what the reactor's reading and writing add to the
lateness of the process's timers is this, and one event more. At 10,000
connections on a loaded machine (four alternated rounds each, 2026-12-01),
10 ms took the reactor lag p99 in the storm from 22.4 to 19.0 ms and in the
steady window from 17.2 to 12.6 ms, with the same time to establish all
(3.1 s); 5 ms took the storm's p99 to 13 ms but made establishing about a
fifth slower."""


class BoundedEPollReactor(EPollReactor):
    """
    Twisted's epoll reactor, handing over at most C{maxEvents} ready
    descriptors per poll, and handling them for at most C{maxBatchSeconds}.
    """

    def __init__(
        self,
        maxEvents: int = MAX_EVENTS,
        maxBatchSeconds: float = MAX_BATCH_SECONDS,
        monotonic: Callable[[], float] = monotonic,
    ) -> None:
        """
        @param maxEvents: at most how many ready descriptors one poll hands
            over (at least 1).
        @param maxBatchSeconds: once the events of one poll have taken this
            long, the rest are left for the next poll (more than 0; at least
            one event is handled in each poll).
        @param monotonic: the clock that times a batch.
        """
        if maxEvents < 1:
            raise ValueError(f"maxEvents must be at least 1, not {maxEvents!r}")
        if not maxBatchSeconds > 0:
            raise ValueError(f"maxBatchSeconds must be more than 0, not {maxBatchSeconds!r}")
        self.maxEvents = maxEvents
        self.maxBatchSeconds = maxBatchSeconds
        self._monotonic = monotonic
        super().__init__()  # type: ignore[no-untyped-call]

    def doPoll(self, timeout: float | None) -> None:
        """
        Poll for at most C{maxEvents} events and handle them, as
        C{EPollReactor.doPoll} does (whose events are bounded by the number
        of descriptors watched), until they have taken C{maxBatchSeconds}.
        """
        if timeout is None:
            timeout = -1  # Wait indefinitely.
        try:
            events = self._poller.poll(timeout, max(1, min(len(self._selectables), self.maxEvents)))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        # Twisted's own masks (EPOLLIN, EPOLLOUT), as locals for the loop.
        pollIn, pollOut = self._POLL_IN, self._POLL_OUT
        clock = self._monotonic
        deadline = clock() + self.maxBatchSeconds
        for fd, event in events:
            try:
                selectable = selectables[fd]
            except KeyError:
                continue
            if event == pollIn:
                self._plain(selectable, True)
            elif event == pollOut:
                self._plain(selectable, False)
            else:
                # Anything else (a hang-up or an error, both directions at
                # once) as Twisted handles it.
                log.callWithLogger(  # type: ignore[no-untyped-call]
                    selectable, self._doReadOrWrite, selectable, fd, event
                )
            if clock() >= deadline:
                # The rest are still ready: the next poll reports them.
                return

    def _plain(self, selectable: Any, reading: bool) -> None:
        """
        Handle a plain read (C{reading}) or write event as C{_doReadOrWrite}
        does, without its log context while the selectable reads or writes.
        """
        # As there, "inRead" is set only once doRead has returned.
        inRead = False
        try:
            if selectable.fileno() == -1:
                why: object = _NO_FILEDESC
            elif reading:
                why = selectable.doRead()
                inRead = True
            else:
                why = selectable.doWrite()
        except BaseException:
            why = sys.exc_info()[1]
            log.err(  # type: ignore[no-untyped-call]
                system=_prefix(selectable)
            )
        if why:
            log.callWithLogger(  # type: ignore[no-untyped-call]
                selectable, self._disconnectSelectable, selectable, why, inRead
            )

    doIteration = doPoll


def install(maxEvents: int = MAX_EVENTS, maxBatchSeconds: float = MAX_BATCH_SECONDS) -> None:
    """
    Install L{BoundedEPollReactor} as the global reactor.

    @raise twisted.internet.error.ReactorAlreadyInstalledError: a reactor is
        installed already.
    """
    from twisted.internet.main import installReactor

    installReactor(BoundedEPollReactor(maxEvents, maxBatchSeconds))  # type: ignore[no-untyped-call]
