"""
L{supervisor.reactor.BoundedEPollReactor} on a real epoll with real socket
pairs: at most C{maxEvents} ready descriptors handled per poll, and for at
most C{maxBatchSeconds}; the others in the next polls, and the timers due
run between two batches.

Each test builds its own reactor (not the global one) and turns it by hand,
a bounded number of times.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from twisted.application.reactors import getReactorTypes
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.main import CONNECTION_DONE
from twisted.python.failure import Failure
from zope.interface import implementer

from supervisor.reactor import MAX_BATCH_SECONDS, MAX_EVENTS, BoundedEPollReactor

pytestmark = pytest.mark.integration

PAIRS = 10
BATCH = 4


@implementer(IReadDescriptor)
class End:
    """
    Our end of a socket pair, watched for reading: each read takes one byte;
    the far end closed is the connection lost.
    """

    def __init__(self, name: str, sock: socket.socket, events: list[str]) -> None:
        self.name = name
        self.sock = sock
        self.events = events

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return self.name

    def doRead(self) -> object:
        if not self.sock.recv(1):
            return CONNECTION_DONE
        self.events.append(self.name)
        return None

    def connectionLost(self, reason: Failure) -> None:
        self.events.append(f"lost {self.name}")


class Pairs:
    """
    L{PAIRS} socket pairs, our ends watched by a reactor.
    """

    def __init__(self, reactor: EPollReactor) -> None:
        self.reactor = reactor
        self.events: list[str] = []
        self.far: list[socket.socket] = []
        self.ends: list[End] = []
        for i in range(PAIRS):
            ours, far = socket.socketpair()
            ours.setblocking(False)
            self.far.append(far)
            end = End(f"e{i}", ours, self.events)
            self.ends.append(end)
            reactor.addReader(end)

    def close(self) -> None:
        for end in self.ends:
            self.reactor.removeReader(end)
            end.sock.close()
        for far in self.far:
            far.close()
        closeReactor(self.reactor)


def closeReactor(reactor: EPollReactor) -> None:
    """
    Close the descriptors of a reactor that never ran: its waker, its epoll.
    """
    waker = getattr(reactor, "waker", None)
    if waker is not None:
        reactor.removeReader(waker)
        waker.connectionLost(None)
    reactor._poller.close()


def pairsOn(reactor: EPollReactor) -> Iterator[Pairs]:
    pairs = Pairs(reactor)
    try:
        yield pairs
    finally:
        pairs.close()


@pytest.fixture
def bounded() -> Iterator[Pairs]:
    yield from pairsOn(BoundedEPollReactor(maxEvents=BATCH))


@pytest.fixture
def stock() -> Iterator[Pairs]:
    yield from pairsOn(EPollReactor())


def reads(events: list[str]) -> list[str]:
    return [e for e in events if e.startswith("e")]


def handledPerPoll(pairs: Pairs, polls: int) -> list[int]:
    """
    Make every descriptor ready with one byte, then poll C{polls} times: how
    many reads were handled after each poll.
    """
    for far in pairs.far:
        far.send(b"x")
    counts = []
    for _ in range(polls):
        pairs.reactor.doPoll(0)
        counts.append(len(pairs.events))
    return counts


def test_atMostMaxEventsPerPoll(bounded: Pairs) -> None:
    """
    With every descriptor ready, one poll hands over C{maxEvents} of them;
    the next polls hand over the others, none twice.
    """
    assert handledPerPoll(bounded, 4) == [4, 8, 10, 10]
    assert sorted(bounded.events) == sorted(end.name for end in bounded.ends)


def test_everyReadyDescriptorHasItsTurn(bounded: Pairs) -> None:
    """
    Descriptors that stay ready (more bytes to read) do not keep the others
    waiting: the kernel goes round the ready ones (epoll_wait(2)), so three
    polls of four reach all ten.
    """
    for far in bounded.far:
        far.send(b"xxxxx")
    for _ in range(3):
        bounded.reactor.doPoll(0)
    assert len(bounded.events) == 12
    assert set(bounded.events) == {end.name for end in bounded.ends}


def test_hangUpsInBatches(bounded: Pairs) -> None:
    """
    Ten peers closing at once are ten connection losses: at most
    C{maxEvents} in each reactor iteration.
    """
    for far in bounded.far:
        far.close()
    bounded.far.clear()
    lost = []
    for _ in range(4):
        bounded.reactor.iterate(0)
        lost.append(len(bounded.events))
    assert lost == [4, 8, 10, 10]
    assert all(e.startswith("lost ") for e in bounded.events)
    assert not set(bounded.reactor.getReaders()) & set(bounded.ends)


def timerAfterFirstRead(pairs: Pairs) -> list[str]:
    """
    Make every descriptor ready; the first read schedules a timer due at
    once. Turn the reactor four times: what happened, in order.
    """
    events = pairs.events
    reactor = pairs.reactor

    def first() -> None:
        if len(reads(events)) == 1:
            reactor.callLater(0, events.append, "timer")

    for end in pairs.ends:
        read = end.doRead

        def doRead(read: object = read) -> object:
            result = read()
            first()
            return result

        end.doRead = doRead
    for far in pairs.far:
        far.send(b"x")
    for _ in range(4):
        reactor.iterate(0)
    return events


def test_timersRunBetweenBatches(bounded: Pairs, stock: Pairs) -> None:
    """
    A timer that falls due while the first batch is handled runs before the
    second batch (with Twisted's own epoll reactor, after every descriptor).
    """
    events = timerAfterFirstRead(bounded)
    assert events.index("timer") == BATCH
    assert len(reads(events)) == PAIRS
    events = timerAfterFirstRead(stock)
    assert events.index("timer") == PAIRS


class Stopwatch:
    """
    The time a batch is timed by, moved on by the reads themselves.
    """

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def slowReads(pairs: Pairs, watch: Stopwatch, seconds: float) -> None:
    """
    Make every read of C{pairs} take C{seconds} on C{watch}.
    """
    for end in pairs.ends:
        read = end.doRead

        def doRead(read: object = read) -> object:
            watch.now += seconds
            return read()  # type: ignore[operator]

        end.doRead = doRead  # type: ignore[method-assign]


def test_aBatchStopsAfterItsTime() -> None:
    """
    Once the events of one poll have taken C{maxBatchSeconds}, the rest
    wait: with reads of a second each and three seconds, three reads a
    poll, though the poll handed over all ten. The rest are still ready,
    so the next polls handle them, each once.
    """
    watch = Stopwatch()
    with contextmanager(pairsOn)(BoundedEPollReactor(PAIRS, 3.0, watch)) as pairs:
        slowReads(pairs, watch, 1.0)
        assert handledPerPoll(pairs, 5) == [3, 6, 9, 10, 10]
        assert sorted(pairs.events) == sorted(end.name for end in pairs.ends)


def test_aSlowEventIsHandledAlone() -> None:
    """
    An event that takes longer than a whole batch may take is still
    handled: one a poll, and the timers due run between them.
    """
    watch = Stopwatch()
    with contextmanager(pairsOn)(BoundedEPollReactor(PAIRS, 0.5, watch)) as pairs:
        slowReads(pairs, watch, 1.0)
        events = timerAfterFirstRead(pairs)
        # Four turns of the reactor: a read in each, the timer in the second.
        assert events.index("timer") == 1
        assert len(reads(events)) == 4


def test_maxBatchSecondsMoreThanZero() -> None:
    """
    A batch must be given some time.
    """
    with pytest.raises(ValueError, match="more than 0"):
        BoundedEPollReactor(maxBatchSeconds=0)


def test_maxEventsAtLeastOne() -> None:
    """
    A poll hands over at least one descriptor.
    """
    with pytest.raises(ValueError, match="at least 1"):
        BoundedEPollReactor(maxEvents=0)


def test_defaultBatch() -> None:
    """
    By default a poll hands over L{MAX_EVENTS} descriptors at most, and
    handles them for L{MAX_BATCH_SECONDS} at most.
    """
    reactor = BoundedEPollReactor()
    try:
        assert reactor.maxEvents == MAX_EVENTS == 128
        assert reactor.maxBatchSeconds == MAX_BATCH_SECONDS == 0.010
    finally:
        closeReactor(reactor)


def test_twistdReactorPlugin() -> None:
    """
    Any twistd application may choose it: C{twistd --reactor=bounded-epoll}.
    """
    found = {r.shortName: r for r in getReactorTypes()}
    assert found["bounded-epoll"].moduleName == "supervisor.reactor"


class Failing(End):
    """
    An end whose reads (or writes) fail the way a broken protocol does, or
    whose descriptor is gone.
    """

    def __init__(self, how: str, sock: socket.socket, events: list[str]) -> None:
        super().__init__("broken", sock, events)
        self.how = how

    def fileno(self) -> int:
        return -1 if self.how == "gone" else super().fileno()

    def doRead(self) -> object:
        if self.how == "raise":
            raise ZeroDivisionError("a broken protocol")
        return super().doRead()

    def doWrite(self) -> object:
        if self.how == "raise":
            raise ZeroDivisionError("a broken protocol")
        self.events.append("wrote")
        return None

    def connectionLost(self, reason: Failure) -> None:
        self.events.append(f"lost {reason.type.__name__}")


def handleOnce(reactor: EPollReactor, how: str, writing: bool) -> tuple[list[str], list[str]]:
    """
    One descriptor, ready (for writing, or with a byte to read), whose
    handler does C{how}; poll once. What it did, and the systems and first
    lines of the legacy log lines written meanwhile.
    """
    from twisted.python import log

    ours, far = socket.socketpair()
    ours.setblocking(False)
    events: list[str] = []
    logged: list[str] = []
    end = Failing(how, ours, events)
    far.send(b"x")

    def observe(event: dict[str, object]) -> None:
        if event.get("isError"):
            failure = event.get("failure")
            what = failure.type.__name__ if isinstance(failure, Failure) else "?"
            logged.append(f"{event.get('system')} {what}")

    # Register with the real descriptor (a gone one cannot be registered).
    fileno, end.fileno = end.fileno, ours.fileno  # type: ignore[method-assign]
    (reactor.addWriter if writing else reactor.addReader)(end)
    end.fileno = fileno  # type: ignore[method-assign]
    log.addObserver(observe)
    try:
        reactor.doPoll(0)
    finally:
        log.removeObserver(observe)
        reactor.removeAll()
        ours.close()
        far.close()
        closeReactor(reactor)
    return events, logged


@pytest.mark.parametrize("writing", [False, True])
@pytest.mark.parametrize("how", ["raise", "gone", "fine"])
def test_sameHandlingAsTwisted(
    how: str, writing: bool, noLoggedErrors: list[dict[str, object]]
) -> None:
    """
    A read or write that raises, a descriptor gone, a plain read or write:
    the bounded reactor (which calls C{doRead}/C{doWrite} of a plain event
    without Twisted's log context) does what Twisted's own does, and the
    failure is still logged as the descriptor's (its C{logPrefix()}).
    """
    ours = handleOnce(BoundedEPollReactor(), how, writing)
    twisted = handleOnce(EPollReactor(), how, writing)
    assert ours == twisted
    # The two failures logged (ours, Twisted's) are this test's.
    assert len(noLoggedErrors) == (2 if how == "raise" else 0)
    noLoggedErrors.clear()
    events, logged = ours
    if how == "raise":
        assert events == ["lost ZeroDivisionError"]
        assert logged == ["broken ZeroDivisionError"]
    elif how == "gone":
        assert events == ["lost ConnectionFdescWentAway"]
        assert logged == []
    else:
        assert events == (["wrote"] if writing else ["broken"])
        assert logged == []
