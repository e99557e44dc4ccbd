"""
Rotation at 1,000 real connections: a L{Supervisor} on the real reactor,
1,000 line connections to one real peer (C{python -m supervisor.peer}), all
with C{max_lifetime = 5} and the default C{lifetime_jitter}, for 20 seconds.

How flat can the rotations be? Each connection draws each lifetime from
C{[L(1-j), L]} (C{L = max_lifetime}, C{j = lifetime_jitter}), independently
of when it was ESTABLISHED. So, whatever the start-up looked like, the
chance that a given connection rotates within any window of C{w} seconds
(C{w + Lj <= L(1-j)}, so at most one lifetime can end in it) is at most
C{w / (Lj)}, and the fleet's expected count in the window at most
C{N w / (Lj)}: a rate of C{N / (Lj)} per second, 2,000/s here. A fleet that
came up together rotates first in a wave as narrow as that band (half a
second here: a per-second histogram of a wave can only be bounded by C{N});
each later wave is wider (the sum of more draws), so they flatten, but
slowly. The test holds the count in every 0.1 s window to that bound, with a
statistical allowance, both for when rotations were due and for when they
happened; checks that every lifetime fell in its band and that the draws
fill the band evenly (a constant lifetime, or a narrower band, fails); that
no connection was lost for any other reason; that every rotation was
ESTABLISHED again within a bound; and that heartbeats were answered in
every second, with none missed.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall

from supervisor import AdminSpec, Config, ConnectionSpec, HeartbeatSpec, Supervisor
from supervisor.states.records import Transition
from tests.chaos.conftest import Figures
from tests.integration.conftest import HOST, theReactor, waitFor
from tests.integration.daemon import Peer, freePort

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONNECTIONS = 1000
MAX_LIFETIME = 5.0
JITTER = ConnectionSpec("x", "tcp:host=127.0.0.1:port=1").lifetime_jitter
"""The default C{lifetime_jitter}."""
BAND = MAX_LIFETIME * JITTER
"""Width of the band lifetimes are drawn from: 0.5 s."""
WINDOW = 20.0
"""Seconds measured, from the first connection ESTABLISHED."""
BIN = 0.1
"""Width of the windows the rate is judged in (C{BIN + BAND <= L(1-j)})."""
HEARTBEAT = HeartbeatSpec(interval=1.0, timeout=2.0, misses=2)
"""Heartbeats that a reactor late by a second (two busy shared cores) does not miss."""
BACK_BOUND = 2.0
"""Seconds from a rotation to ESTABLISHED again (a drain, a connect on loopback)."""
LATE_BOUND = 1.0
"""Seconds a rotation may come after it was due (the reactor's lag)."""
SIGMAS = 5.0
SEEN = 0.01
"""How much later than its drawing a lifetime may be seen: the connection's
transition is recorded, and its observers called, a moment after ESTABLISHED
drew it (its timer is set), in the same reactor turn (a collection of garbage
may fall in between)."""


def allowance(mean: float) -> float:
    """
    The most a count whose expectation is at most C{mean} may reach: a sum
    of independent draws, judged at C{SIGMAS} standard deviations (a Poisson
    bound), plus one.
    """
    return mean + SIGMAS * math.sqrt(mean) + 1


@attrs.define
class Record:
    """
    What the fleet did: transitions, when each connection's rotation was
    due, heartbeats, and how late the reactor ran.
    """

    supervisor: Supervisor
    transitions: list[Transition] = attrs.Factory(list)
    rotatesAt: dict[tuple[str, float], float] = attrs.Factory(dict)
    answered: list[tuple[float, str]] = attrs.Factory(list)
    missed: list[tuple[float, str]] = attrs.Factory(list)
    lags: list[float] = attrs.Factory(list)

    def transition(self, record: Transition) -> None:
        self.transitions.append(record)
        if record.to == "ESTABLISHED":
            connection = self.supervisor.connection(record.connection)
            assert connection is not None
            left = connection.lifetimeLeft
            assert left is not None, "an ESTABLISHED connection without a lifetime"
            self.rotatesAt[record.connection, record.time] = theReactor().seconds() + left

    @property
    def lifetimes(self) -> list[float]:
        """
        Every lifetime drawn, as seen from the time of its transition to
        ESTABLISHED (a moment after it was drawn: short by that moment).
        """
        return [at - since for (_, since), at in self.rotatesAt.items()]

    @property
    def due(self) -> list[float]:
        """
        When each lifetime drawn was to end.
        """
        return list(self.rotatesAt.values())

    def heartbeat(self, name: str, rtt: float | None) -> None:
        now = theReactor().seconds()
        if rtt is None:
            self.missed.append((now, name))
        else:
            self.answered.append((now, name))


def histogram(times: list[float], start: float, width: float, count: int) -> list[int]:
    """
    How many of C{times} fall in each of C{count} bins of C{width} from C{start}.
    """
    bins = [0] * count
    for t in times:
        index = math.floor((t - start) / width)
        if 0 <= index < count:
            bins[index] += 1
    return bins


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Peer]:
    """
    A line peer with a listen queue for a thousand connects at once,
    stopped by its PID at the end.
    """
    process = Peer(freePort(), tmp_path, 0, backlog=1024)
    try:
        yield process
    finally:
        process.stop()


@pytest_twisted.inlineCallbacks
def test_aThousandConnectionsRotateWithinTheJitterBound(
    peer: Peer, figures: Figures
) -> Generator[Deferred[Any], Any, None]:
    reactor: Any = theReactor()
    specs = tuple(
        ConnectionSpec(
            name=f"r{i:04d}",
            endpoint=f"tcp:host={HOST}:port={peer.port}",
            protocol="line",
            connect_timeout=5.0,
            drain_timeout=1.0,
            heartbeat=HEARTBEAT,
            max_lifetime=MAX_LIFETIME,
        )
        for i in range(CONNECTIONS)
    )
    supervisor = Supervisor(
        Config(path="<rotation>", admin=AdminSpec(), connections=specs), reactor
    )
    record = Record(supervisor)
    supervisor.addObserver(record.transition)
    supervisor.addHeartbeatObserver(record.heartbeat)
    expected = [reactor.seconds() + 0.05]

    def tick() -> None:
        now = reactor.seconds()
        record.lags.append(max(0.0, now - expected[0]))
        expected[0] = now + 0.05

    lag = LoopingCall(tick)
    lag.clock = reactor
    startedAt = reactor.seconds()
    try:
        supervisor.startService()
        lag.start(0.05, now=False)
        connections = list(supervisor.connections.values())
        yield waitFor(
            lambda: all(c.state == "ESTABLISHED" for c in connections),
            30.0,
            "every connection ESTABLISHED",
        )
        first = min(t.time for t in record.transitions if t.to == "ESTABLISHED")
        upAt = reactor.seconds()
        end = first + WINDOW
        yield waitFor(lambda: reactor.seconds() >= end, WINDOW + 5.0, "the window to pass")
    finally:
        if lag.running:
            lag.stop()
        if supervisor.running:
            yield supervisor.stopService().addTimeout(10.0, reactor)
    stoppedAt = reactor.seconds()

    byName: dict[str, list[Transition]] = defaultdict(list)
    for t in record.transitions:
        byName[t.connection].append(t)
    rotations = [t for t in record.transitions if t.reason == "rotation" and t.time < end]
    rotationTimes = [t.time for t in rotations]

    # Nothing but rotations: no loss, no failed attempt, no missed heartbeat.
    paths = Counter((t.from_, t.to, t.reason) for t in record.transitions if t.time < end)
    assert set(paths) <= {
        ("IDLE", "CONNECTING", "start"),
        ("CONNECTING", "ESTABLISHED", "ready"),
        ("ESTABLISHED", "CLOSING", "rotation"),
        ("CLOSING", "IDLE", "closed"),
        ("IDLE", "CONNECTING", "retry"),
    }, paths
    assert record.missed == []

    # Every lifetime in its band; the draws fill it evenly.
    low = MAX_LIFETIME * (1 - JITTER)
    assert record.lifetimes and min(record.lifetimes) >= low - SEEN
    assert max(record.lifetimes) <= MAX_LIFETIME + 1e-6
    inBand = [min(max(low, x), MAX_LIFETIME - 1e-9) for x in record.lifetimes]
    fifths = histogram(inBand, low, BAND / 5, 5)
    assert sum(fifths) == len(record.lifetimes)
    for share in fifths:
        assert 0.1 * len(record.lifetimes) <= share <= 0.3 * len(record.lifetimes), fifths

    # Each rotation when its lifetime said, give or take the reactor's lag,
    # and ESTABLISHED again soon after.
    late: list[float] = []
    back: list[float] = []
    for name, seen in byName.items():
        established = None
        for index, t in enumerate(seen):
            if t.to == "ESTABLISHED":
                established = t
            elif t.reason == "rotation":
                assert established is not None, name
                lived = t.time - established.time
                assert low - SEEN <= lived, (name, lived)
                late.append(t.time - record.rotatesAt[name, established.time])
                again = [u for u in seen[index + 1 :] if u.to == "ESTABLISHED"]
                if again:
                    back.append(again[0].time - t.time)
                else:
                    # Only a rotation cut short by the stop may end otherwise.
                    assert t.time >= stoppedAt - BACK_BOUND - 1.0, (name, t)
    assert max(late) <= LATE_BOUND, max(late)
    assert max(back) <= BACK_BOUND, max(back)

    # The rate: in every 0.1 s window, due and done, within N w / (Lj).
    bins = math.ceil(WINDOW / BIN)
    bound = allowance(CONNECTIONS * BIN / BAND)
    dueBins = histogram([d for d in record.due if d < end], first, BIN, bins)
    doneBins = histogram(rotationTimes, first, BIN, bins)
    assert max(dueBins) <= bound, (max(dueBins), bound)
    lateBound = allowance(CONNECTIONS * (BIN + max(late)) / BAND)
    assert max(doneBins) <= lateBound, (max(doneBins), lateBound)
    assert len(rotations) >= CONNECTIONS * (WINDOW - MAX_LIFETIME - 2) / MAX_LIFETIME

    # Heartbeats: answered in every ESTABLISHED period long enough for one
    # (all of them, a lifetime being longer), and in every second.
    pongs: dict[str, list[float]] = defaultdict(list)
    for at, name in record.answered:
        pongs[name].append(at)
    periods = 0
    for name, seen in byName.items():
        for since, until in _established(seen, end):
            if until - since >= HEARTBEAT.interval + HEARTBEAT.timeout:
                periods += 1
                assert any(since < at <= until for at in pongs[name]), (name, since, until)
    assert periods >= CONNECTIONS * (WINDOW - MAX_LIFETIME) / MAX_LIFETIME
    seconds = histogram([at for at, _ in record.answered], upAt, 1.0, math.floor(end - upAt))
    assert min(seconds) >= 1, seconds

    perSecond = histogram(rotationTimes, first, 1.0, math.ceil(WINDOW))
    figures.record(
        "rotation/line/lifetime",
        kind="rotation",
        connections=CONNECTIONS,
        max_lifetime=MAX_LIFETIME,
        lifetime_jitter=JITTER,
        window_seconds=WINDOW,
        start_seconds=upAt - startedAt,
        rotations=len(rotations),
        per_second=perSecond,
        bin_seconds=BIN,
        bound_per_bin=bound,
        due_max_per_bin=max(dueBins),
        done_max_per_bin=max(doneBins),
        done_bound_per_bin=lateBound,
        lifetime_min=min(record.lifetimes),
        lifetime_max=max(record.lifetimes),
        lifetime_fifths=fifths,
        late_p99=percentile(late, 0.99),
        late_max=max(late),
        back_p50=percentile(back, 0.5),
        back_p99=percentile(back, 0.99),
        back_max=max(back),
        heartbeats_answered=len(record.answered),
        established_periods_checked=periods,
        heartbeats_min_per_second=min(seconds),
        heartbeats_missed=len(record.missed),
        other_losses=0,
        lag_p99=percentile(record.lags, 0.99),
        lag_max=max(record.lags),
    )


def _established(seen: list[Transition], end: float) -> Iterator[tuple[float, float]]:
    """
    The ESTABLISHED periods of one connection's transitions that began
    before C{end}: (entered, left or C{end}).
    """
    since: float | None = None
    for t in seen:
        if t.to == "ESTABLISHED":
            since = t.time
        elif since is not None and t.from_ == "ESTABLISHED":
            if since < end:
                yield since, min(t.time, end)
            since = None
    if since is not None and since < end:
        yield since, end
