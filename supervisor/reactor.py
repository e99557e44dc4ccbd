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

C{twistd netsupervisor} installs it unless C{twistd --reactor} chose one;
the twistd plugin also offers it to any twistd application as
C{--reactor=bounded-epoll}. An application that embeds a
L{supervisor.Supervisor} chooses its own reactor; it may call L{install}
before it imports C{twisted.internet.reactor}.
"""

from __future__ import annotations

import errno

# Like Twisted's own module, this one cannot be imported where there is no
# epoll (ImportError).
from twisted.internet.epollreactor import EPollReactor
from twisted.python import log

MAX_EVENTS = 256
"""How many ready descriptors one poll hands over, at most: a batch of 256
connection losses took 15 ms or less at 10,000 connections."""


class BoundedEPollReactor(EPollReactor):
    """
    Twisted's epoll reactor, handing over at most C{maxEvents} ready
    descriptors per poll.
    """

    def __init__(self, maxEvents: int = MAX_EVENTS) -> None:
        """
        @param maxEvents: at most how many ready descriptors one poll hands
            over (at least 1).
        """
        if maxEvents < 1:
            raise ValueError(f"maxEvents must be at least 1, not {maxEvents!r}")
        self.maxEvents = maxEvents
        super().__init__()  # type: ignore[no-untyped-call]

    def doPoll(self, timeout: float | None) -> None:
        """
        Poll for at most C{maxEvents} events and handle them, as
        C{EPollReactor.doPoll} does (whose events are bounded by the number
        of descriptors watched).
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
        handle = self._doReadOrWrite
        for fd, event in events:
            try:
                selectable = selectables[fd]
            except KeyError:
                pass
            else:
                log.callWithLogger(  # type: ignore[no-untyped-call]
                    selectable, handle, selectable, fd, event
                )

    doIteration = doPoll


def install(maxEvents: int = MAX_EVENTS) -> None:
    """
    Install L{BoundedEPollReactor} as the global reactor.

    @raise twisted.internet.error.ReactorAlreadyInstalledError: a reactor is
        installed already.
    """
    from twisted.internet.main import installReactor

    installReactor(BoundedEPollReactor(maxEvents))  # type: ignore[no-untyped-call]
