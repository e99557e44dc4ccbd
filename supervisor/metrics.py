"""
Prometheus metrics of one L{Supervisor}, in its own registry.

L{SupervisorMetrics} is a custom collector. It keeps the counters (attempts,
failures, disconnects, transitions, heartbeat misses, the RTT histogram) in
plain dictionaries fed by the supervisor's observers, and reads every gauge
from the live connections at scrape time: there is no Prometheus object per
connection per metric.

L{FAMILIES} is the one description of the metric families: name, type,
help, labels, and how to read the samples of one scrape. It drives both
L{SupervisorMetrics.collect} (C{prometheus_client} families, for the
registry) and L{exposition}, which writes the Prometheus text format
(version 0.0.4) itself, many times faster for ten thousand connections. A
family is one row; a family labelled by C{connection}
(L{Family.perConnection}) has a series per connection, the others are
aggregates.

Three families go beyond the list of the specification (C{SPEC.md}), for
dashboards: C{connection_info} (the connection's protocol and group, to
filter per-connection series by group with a join),
C{connection_transitions_total} (to find flapping connections) and
C{connections_held} (IDLE connections by what holds them back). The metric
names, labels and meanings are in C{docs/metrics.md}.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, compress, filterfalse, repeat
from math import isfinite
from operator import add, attrgetter, eq, is_not, itemgetter, ne, truediv
from typing import TYPE_CHECKING, Any, Final, Literal, cast, get_args

import attrs
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from supervisor.connection import queueDepthsOf, rttOf, stateOf
from supervisor.operations import RESULTS
from supervisor.states.records import (
    BREAKER_STATES,
    CONNECT_FAILURE_REASONS,
    DISCONNECT_REASONS,
    STATES,
    BreakerState,
    Held,
    State,
    Transition,
)

if TYPE_CHECKING:
    from supervisor.config import Config
    from supervisor.connection import SupervisedConnection
    from supervisor.pool import Pool
    from supervisor.service import Supervisor
    from supervisor.shard import Shard

__all__ = ["CONTENT_TYPE", "RTT_BUCKETS", "SupervisorMetrics", "exposition"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of L{exposition}'s output."""

RTT_BUCKETS: Final[tuple[float, ...]] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""The upper bounds of the heartbeat RTT histogram, in seconds (plus C{+Inf})."""

_PREFIX: Final = "netsupervisor_"
_CONNECT_FAILURES: Final = frozenset(CONNECT_FAILURE_REASONS)
_DISCONNECTS: Final = frozenset(DISCONNECT_REASONS)
_RELOAD_RESULTS: Final = ("success", "failure")
_HELD: Final[tuple[Held, ...]] = get_args(Held)

# Floats as Go writes them (prometheus_client's own function, untyped there).
_goFloat: Final[Callable[[float], str]] = floatToGoString

_LE: Final = (*(_goFloat(b) for b in RTT_BUCKETS), "+Inf")

# What a scrape reads of each connection (the others: supervisor.connection).
_breaker: Final[Callable[[SupervisedConnection], BreakerState | None]] = attrgetter("breaker")
_OPEN: Final[dict[BreakerState | None, int]] = {None: 0, "closed": 0, "open": 1, "half_open": 1}


class _Histogram:
    """
    One histogram series: counts per bucket (not cumulative), sum, count.
    """

    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(RTT_BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.buckets[bisect_left(RTT_BUCKETS, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[int]:
        total = 0
        out = []
        for n in self.buckets:
            total += n
            out.append(total)
        return out


Labels = tuple[str, ...]
Sample = tuple[Labels, "float | str | _Histogram"]
"""One sample of a family: its label values, in the order of the family's
labels, and its value: a number, a histogram's series for a histogram, the
current value of the last label for a one-hot family (L{Family.oneOf})."""


class _Column:
    """
    The samples of a family as columns: the values of its first label, the
    values of its other labels (if it has others), and the samples' values,
    in the same order. Iterating gives the samples; L{exposition} writes
    the text from the columns, with no Python code per sample.

    @ivar micros: the values in millionths, as integers from 0 (below
        10**12), or L{None}: a value is then C{micros / 1e6}, and
        L{exposition} writes it with six decimals, which parse to exactly
        that float (Go's format, C{repr}, costs a microsecond a value, and
        values that are all different, such as RTTs, are formatted anew).
    """

    __slots__ = ("first", "micros", "rest", "values")

    def __init__(
        self,
        first: Iterable[str],
        values: Iterable[Any],
        rest: Iterable[Labels] | None = None,
        micros: list[int] | None = None,
    ) -> None:
        self.first = first
        self.values = values
        self.rest = rest
        self.micros = micros

    def __iter__(self) -> Iterator[Sample]:
        labels: Iterable[Labels] = zip(self.first)
        if self.rest is not None:
            labels = map(add, labels, self.rest)
        return zip(labels, self.values, strict=True)


class _Scrape:
    """
    Everything one scrape shows, read at once: the live connections, column
    by column (the same index is the same connection), the counts by state,
    and the counters of L{SupervisorMetrics}.

    Families give per-connection samples as L{_Column}s of these columns, so
    that ten thousand connections cost no Python code per sample.
    """

    __slots__ = (
        "breakerStates",
        "budgetWaiting",
        "byState",
        "delays",
        "depths",
        "draining",
        "groups",
        "held",
        "live",
        "metrics",
        "names",
        "pools",
        "protocols",
        "reloads",
        "rtts",
        "shard",
        "states",
    )

    metrics: SupervisorMetrics
    live: dict[str, SupervisedConnection]
    names: list[str]
    states: list[State]
    rtts: list[float | None]
    delays: list[float]
    depths: list[int]
    pools: list[Pool]
    protocols: list[str]
    groups: list[str]
    byState: dict[State, int]
    held: dict[Held, int]
    breakerStates: dict[BreakerState, int]
    budgetWaiting: int
    draining: bool
    reloads: list[tuple[str, int]]
    shard: Shard

    def __init__(self, metrics: SupervisorMetrics) -> None:
        supervisor = metrics.supervisor
        connections: dict[str, SupervisedConnection] = supervisor.connections
        metrics._prune(connections)
        info = metrics._info
        self.metrics = metrics
        self.live = connections
        self.names = names = list(connections)
        everyone = list(connections.values())
        self.states = states = list(map(stateOf, everyone))
        self.rtts = list(map(rttOf, everyone))
        self.depths = queueDepthsOf(everyone)
        # A retry is scheduled only while IDLE: the others' delays are 0.
        self.delays = delays = [0.0] * len(everyone)
        found = list(map(info.get, names))
        labels = cast(list[tuple[str, str]], found)
        if None in found:  # some are not (or no longer) in the configuration
            labels = [
                (c.spec.protocol, c.spec.group) if known is None else known
                for known, c in zip(found, everyone, strict=True)
            ]
        self.protocols = list(map(itemgetter(0), labels))
        self.groups = list(map(itemgetter(1), labels))
        counts = Counter(states)
        self.byState = {state: counts[state] for state in STATES}
        self.held = held = dict.fromkeys(_HELD, 0)
        if counts["IDLE"]:
            for index in compress(range(len(everyone)), map(eq, states, repeat("IDLE"))):
                c = everyone[index]
                delays[index] = c.backoffDelay
                kind = c.held
                if kind is not None:
                    held[kind] += 1
        fleet = supervisor.fleet
        self.breakerStates = breakerStates = dict.fromkeys(BREAKER_STATES, 0)
        for breaker in fleet.breakers:
            breakerStates[breaker.state] += 1
        self.budgetWaiting = len(fleet.budget.waiting)
        self.draining = bool(supervisor.draining)
        self.reloads = [(r, supervisor.reloads.get(r, 0)) for r in _RELOAD_RESULTS]
        self.shard = supervisor.shard
        self.pools = list(supervisor.pools.values())

    def each(self, values: Iterable[float | str]) -> _Column:
        """
        One sample per live connection, labelled by its name, with its
        value from C{values} (a column).
        """
        return _Column(self.names, values)

    def counted(self, counts: dict[str, int]) -> _Column:
        """
        A per-connection counter: every live connection from 0, then the
        counts of connections being replaced (closing, their successor not
        yet started), which go on under the same name.
        """
        names, values = self.names, map(counts.get, self.names, repeat(0))
        replaced = counts.keys() - self.live.keys()
        if not replaced:
            return _Column(names, values)
        others = [name for name in counts if name in replaced]
        return _Column(chain(names, others), chain(values, map(counts.__getitem__, others)))

    def breakerOpen(self) -> _Column:
        """
        Per live connection: 1 if its target's circuit breaker is open or
        half-open, else 0 (closed, or no breaker). Read from the connections
        only when some breaker is not closed.
        """
        if self.breakerStates["open"] == self.breakerStates["half_open"] == 0:
            return self.each(repeat(0, len(self.names)))
        return self.each(map(_OPEN.__getitem__, map(_breaker, self.live.values())))

    def answered(self) -> _Column:
        """
        The last heartbeat RTT of each live connection that has one, to the
        microsecond.
        """
        rtts = self.rtts
        names = compress(self.names, map(is_not, rtts, repeat(None)))
        seconds = list(compress(rtts, map(is_not, rtts, repeat(None))))
        micros = _micros(cast(list[float], seconds))
        if micros is None:
            return _Column(names, seconds)
        return _Column(names, map(truediv, micros, repeat(1e6)), micros=micros)

    def info(self) -> _Column:
        """
        Each live connection, with its protocol and group, and the value 1.
        """
        return _Column(
            self.names, repeat(1.0, len(self.names)), zip(self.protocols, self.groups, strict=True)
        )

    def queueDepths(self) -> _Column:
        """
        The operations waiting for each live connection, then for each
        pool's own queue (under the pool's name).
        """
        pools = self.pools
        return _Column(
            chain(self.names, (p.name for p in pools)), chain(self.depths, (p.depth for p in pools))
        )

    def operations(self) -> Iterator[Sample]:
        """
        Operations ended, by connection (and pool) and result: every result,
        from 0, of every pool and of the connections that have counted any
        (so that a first refusal is an increase); nothing for the others.
        """
        counts = self.metrics.supervisor.operationCounts
        # Those that have counted any: an empty Counts is false.
        for name in compress(self.names, map(counts.get, self.names)):
            byResult = counts[name]
            if any(byResult.values()):
                yield from (((name, r), byResult[r]) for r in RESULTS)
        for pool in self.pools:
            byResult = pool.counts
            yield from (((pool.name, r), byResult[r]) for r in RESULTS)

    @staticmethod
    def byReason(counts: dict[str, dict[str, int]]) -> Iterator[Sample]:
        """
        A per-connection counter split by reason: only what has counted.
        """
        return (((name, reason), n) for name, d in counts.items() for reason, n in d.items())


def _micros(seconds: list[float]) -> list[int] | None:
    """
    C{seconds} in millionths, rounded, if they are all finite, from 0 and
    below a million seconds; else L{None} (see L{_Column.micros}).
    """
    if seconds and not (isfinite(sum(seconds)) and min(seconds) >= 0.0 and max(seconds) < 1e6):
        return None
    return list(map(round, map((1e6).__mul__, seconds)))


@attrs.frozen
class Family:
    """
    One metric family, and how to read its samples.

    @ivar name: without the C{netsupervisor_} prefix, and without the
        C{_total} that the samples of a counter carry.
    @ivar kind: C{gauge}, C{counter} or C{histogram}.
    @ivar help: what it counts or measures (its C{# HELP}).
    @ivar labels: the label names, in order (a histogram's C{le} aside).
    @ivar samples: the samples of one scrape, in the order shown.
    @ivar oneOf: for a one-hot gauge, the values of its last label, in
        order: each sample then gives the other labels and the current
        value, and the family shows 1 for it and 0 for the others.
    """

    name: str
    kind: Literal["gauge", "counter", "histogram"]
    help: str
    labels: Labels
    samples: Callable[[_Scrape], Iterable[Sample]]
    oneOf: tuple[str, ...] = ()

    @property
    def perConnection(self) -> bool:
        """
        Whether it is labelled by C{connection}: a series (or several) per
        connection, where the other families are aggregates.
        """
        return "connection" in self.labels

    @property
    def sampleName(self) -> str:
        """
        The name its samples carry (a histogram's without their suffix).
        """
        return _PREFIX + self.name + ("_total" if self.kind == "counter" else "")

    def header(self) -> str:
        """
        Its C{# HELP} and C{# TYPE} lines.
        """
        name = self.sampleName
        return f"# HELP {name} {self.help}\n# TYPE {name} {self.kind}\n"

    def metric(self) -> Metric:
        """
        It as a C{prometheus_client} family, without samples.
        """
        return Metric(_PREFIX + self.name, self.help, self.kind)


FAMILIES: Final[tuple[Family, ...]] = (
    Family(
        "connection_state",
        "gauge",
        "Whether the connection is in this state (1) or not (0).",
        ("connection", "state"),
        lambda s: s.each(s.states),
        oneOf=STATES,
    ),
    Family(
        "connection_info",
        "gauge",
        "Always 1, one per supervised connection: its protocol and group.",
        ("connection", "protocol", "group"),
        lambda s: s.info(),
    ),
    Family(
        "connections",
        "gauge",
        "Supervised connections in each state.",
        ("state",),
        lambda s: (((state,), n) for state, n in s.byState.items()),
    ),
    Family(
        "connect_attempts",
        "counter",
        "Connect attempts started (transitions into CONNECTING).",
        ("connection",),
        lambda s: s.counted(s.metrics._attempts),
    ),
    Family(
        "connect_failures",
        "counter",
        "Connect attempts that failed (CONNECTING to IDLE or CLOSED), by reason.",
        ("connection", "reason"),
        lambda s: s.byReason(s.metrics._failures),
    ),
    Family(
        "disconnects",
        "counter",
        "ESTABLISHED connections that ended (to IDLE or CLOSING), by reason.",
        ("connection", "reason"),
        lambda s: s.byReason(s.metrics._disconnects),
    ),
    Family(
        "state_transitions",
        "counter",
        "Changes of a connection's state, by the state left and the state entered.",
        ("from", "to"),
        lambda s: sorted(s.metrics._transitions.items()),
    ),
    Family(
        "connection_transitions",
        "counter",
        "Changes of the connection's state.",
        ("connection",),
        lambda s: s.counted(s.metrics._connectionTransitions),
    ),
    Family(
        "heartbeat_rtt_seconds",
        "histogram",
        "Round-trip time of answered heartbeats, by group.",
        ("group",),
        lambda s: (((group,), h) for group, h in sorted(s.metrics._histograms.items())),
    ),
    Family(
        "heartbeat_last_rtt_seconds",
        "gauge",
        "Round-trip time of the connection's last answered heartbeat.",
        ("connection",),
        lambda s: s.answered(),
    ),
    Family(
        "heartbeat_misses",
        "counter",
        "Heartbeats not answered within the heartbeat timeout.",
        ("connection",),
        lambda s: s.counted(s.metrics._misses),
    ),
    Family(
        "backoff_delay_seconds",
        "gauge",
        "Delay of the retry now scheduled, 0 if none is.",
        ("connection",),
        lambda s: s.each(s.delays),
    ),
    Family(
        "connections_held",
        "gauge",
        "IDLE connections held back from their next attempt, by what holds them.",
        ("held",),
        lambda s: (((kind,), n) for kind, n in s.held.items()),
    ),
    Family(
        "breakers",
        "gauge",
        "Circuit breakers in each state.",
        ("state",),
        lambda s: (((state,), n) for state, n in s.breakerStates.items()),
    ),
    Family(
        "breaker_open",
        "gauge",
        "1 while the circuit breaker of the connection's target is open or half-open, else 0.",
        ("connection",),
        lambda s: s.breakerOpen(),
    ),
    Family(
        "connect_budget_waiting",
        "gauge",
        "Attempts waiting for a token of the global connect budget.",
        (),
        lambda s: [((), s.budgetWaiting)],
    ),
    Family(
        "flap_holds",
        "counter",
        "Times the flap guard held the connection (or closed it, with flap.hold = 0).",
        ("connection",),
        lambda s: s.counted(s.metrics._flapHolds),
    ),
    Family(
        "queue_depth",
        "gauge",
        "Operations waiting for the connection (for a pool's own queue, the pool's name).",
        ("connection",),
        lambda s: s.queueDepths(),
    ),
    Family(
        "operations",
        "counter",
        "Operations submitted, by how they ended: ok, error, full, timeout, closed, lost.",
        ("connection", "result"),
        lambda s: s.operations(),
    ),
    Family(
        "draining",
        "gauge",
        "1 once the graceful drain of the process has begun, else 0.",
        (),
        lambda s: [((), 1.0 if s.draining else 0.0)],
    ),
    Family(
        "config_reloads",
        "counter",
        "Configuration reloads, by result.",
        ("result",),
        lambda s: (((result,), n) for result, n in s.reloads),
    ),
    Family(
        "shard_info",
        "gauge",
        "Always 1: the shard of the configuration this process keeps, shard (from 0) of shards.",
        ("shard", "shards"),
        lambda s: [((str(s.shard.index), str(s.shard.count)), 1.0)],
    ),
)
"""Every metric family, in the order of the exposition."""


def shownFamilies(config: Config) -> tuple[Family, ...]:
    """
    The families C{/metrics} shows under C{config}: all of them, or, with
    C{[metrics] per_connection = false}, only those not labelled by
    C{connection}.
    """
    if config.metrics.per_connection:
        return FAMILIES
    return _AGGREGATES


_AGGREGATES: Final = tuple(family for family in FAMILIES if not family.perConnection)


class SupervisorMetrics(Collector):
    """
    The metrics of one L{Supervisor}, as a Prometheus collector registered in
    a registry of its own (never the global one).

    Counters of a connection that is removed from the configuration are
    dropped at the next scrape; those of a connection replaced under the same
    name (a changed spec) go on counting.

    @ivar supervisor: the supervisor observed.
    @ivar registry: the registry this collector is registered in.
    """

    def __init__(self, supervisor: Supervisor, registry: CollectorRegistry | None = None) -> None:
        """
        Start counting the transitions and heartbeats of C{supervisor}.

        @param registry: where to register; by default a new
            L{CollectorRegistry} of its own.
        """
        self.supervisor = supervisor
        self._attempts: dict[str, int] = {}
        self._failures: dict[str, dict[str, int]] = {}
        self._disconnects: dict[str, dict[str, int]] = {}
        self._transitions: dict[tuple[str, str], int] = {}
        self._connectionTransitions: dict[str, int] = {}
        self._misses: dict[str, int] = {}
        self._flapHolds: dict[str, int] = {}
        self._histograms: dict[str, _Histogram] = {}
        self._connectionPairs = _Pairs("connection")
        self._groupsOf: Config | None = None
        self._groups: dict[str, str] = {}
        self._info: dict[str, tuple[str, str]] = {}
        self._groupSet: frozenset[str] = frozenset()
        self._refreshGroups()
        supervisor.addObserver(self._transition)
        supervisor.addHeartbeatObserver(self._heartbeat)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(self)

    # Counting.

    def _transition(self, record: Transition) -> None:
        name, old, new, reason = record.connection, record.from_, record.to, record.reason
        key = (old, new)
        self._transitions[key] = self._transitions.get(key, 0) + 1
        self._connectionTransitions[name] = self._connectionTransitions.get(name, 0) + 1
        if new == "CONNECTING":
            self._attempts[name] = self._attempts.get(name, 0) + 1
        elif old == "CONNECTING" or reason == "tls":
            # A client certificate refused under TLS 1.3 can end ESTABLISHED.
            if reason in _CONNECT_FAILURES:
                _bump(self._failures, name, reason)
        elif old == "ESTABLISHED" and reason in _DISCONNECTS:
            _bump(self._disconnects, name, reason)
            if new != "CLOSING" and self._heldForFlapping(name, new):
                self._flapHolds[name] = self._flapHolds.get(name, 0) + 1

    def _heldForFlapping(self, name: str, new: State) -> bool:
        """
        Whether the loss of C{name} just recorded (ESTABLISHED to C{new})
        was judged by the flap guard: it holds the connection IDLE (C{held}
        is C{flapping}), or, with C{flap.hold = 0}, closes it (the only way
        from ESTABLISHED to CLOSED; C{docs/states.md}). This counts what
        C{SupervisedConnection.flapHolds} counts, under the name, so that
        the count goes on across a replacement.
        """
        if new == "CLOSED":
            return True
        connection = self.supervisor.connection(name)
        return connection is not None and connection.held == "flapping"

    def _heartbeat(self, name: str, rtt: float | None) -> None:
        if rtt is None:
            self._misses[name] = self._misses.get(name, 0) + 1
            return
        if self.supervisor.config is not self._groupsOf:
            self._refreshGroups()
        group = self._groups.get(name, "")
        histogram = self._histograms.get(group)
        if histogram is None:
            histogram = self._histograms[group] = _Histogram()
        histogram.observe(rtt)

    def _refreshGroups(self) -> None:
        config = self.supervisor.config
        self._groupsOf = config
        self._groups = {spec.name: spec.group for spec in config.connections}
        # One (protocol, group) tuple for all the connections that share it.
        kinds: dict[tuple[str, str], tuple[str, str]] = {}
        info: dict[str, tuple[str, str]] = {}
        for spec in config.connections:
            kind = (spec.protocol, spec.group)
            info[spec.name] = kinds.setdefault(kind, kind)
        self._info = info
        self._groupSet = frozenset(self._groups.values())

    def _prune(self, connections: dict[str, SupervisedConnection]) -> None:
        """
        Forget the counters of connections that are gone for good, and make
        sure every configured group has a histogram.
        """
        if self.supervisor.config is not self._groupsOf:
            self._refreshGroups()
        configured = self._groups
        for counter in (
            self._attempts,
            self._misses,
            self._flapHolds,
            self._connectionTransitions,
            self._failures,
            self._disconnects,
        ):
            if counter.keys() <= configured.keys():
                continue  # the case but for a reload: no set made
            gone = counter.keys() - configured.keys() - connections.keys()
            for name in gone:
                del counter[name]
        if len(self._connectionPairs) > 2 * len(connections) + 100:
            self._connectionPairs.clear()  # names gone; the live ones come back
        for group in [g for g in self._histograms if g not in self._groupSet]:
            del self._histograms[group]
        for group in self._groupSet:
            if group not in self._histograms:
                self._histograms[group] = _Histogram()

    # Collecting.

    def describe(self) -> Iterable[Metric]:
        """
        The metric families, without samples (for the registry's name checks).
        """
        return [family.metric() for family in FAMILIES]

    def collect(self) -> Iterable[Metric]:
        """
        Every metric family shown, with its samples now.
        """
        scrape = _Scrape(self)
        for family in shownFamilies(self.supervisor.config):
            yield _metricFamily(family, family.samples(scrape))


def _bump(counter: dict[str, dict[str, int]], name: str, reason: str) -> None:
    byReason = counter.get(name)
    if byReason is None:
        byReason = counter[name] = {}
    byReason[reason] = byReason.get(reason, 0) + 1


def _metricFamily(family: Family, samples: Iterable[Sample]) -> Metric:
    """
    C{family}'s samples as a C{prometheus_client} family.
    """
    name, labels = _PREFIX + family.name, list(family.labels)
    if family.kind == "histogram":
        histograms = HistogramMetricFamily(name, family.help, labels=labels)
        for values, value in samples:
            h = cast(_Histogram, value)
            buckets = list(zip(_LE, map(float, h.cumulative()), strict=True))
            histograms.add_metric(list(values), buckets, h.sum)
        return histograms
    kind = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
    metric = kind(name, family.help, labels=labels)
    for values, value in samples:
        if family.oneOf:
            for each in family.oneOf:
                metric.add_metric([*values, each], 1.0 if each == value else 0.0)
        else:
            metric.add_metric(list(values), cast(float, value))
    return metric


# Label values are escaped as the text format requires; names of connections
# cannot need it (NAME_PATTERN), groups can.
_ESCAPES: Final = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})
_ESCAPED: Final = ("\\", '"', "\n")


class _Pairs(dict[str, str]):
    """
    The text of one label with each of its values (C{state="IDLE"}), made
    once per scrape and value.
    """

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def __missing__(self, value: str) -> str:
        text = self[value] = f'{self.label}="{value.translate(_ESCAPES)}"'
        return text

    def fill(self, values: list[str]) -> None:
        """
        Make the pairs of those of C{values} not seen yet, all at once
        (ten thousand names new to a first scrape, made one at a time,
        would cost it a third more).
        """
        new = list(filterfalse(self.__contains__, values))
        if not new:
            return
        if any(map(str.__contains__, repeat("".join(new)), _ESCAPED)):
            for value in new:
                self.__missing__(value)  # escaped
            return
        self.update(zip(new, map(f'{self.label}="{{}}"'.format, new), strict=True))


class _Floats(dict[float, str]):
    """
    Floats as Go writes them, each formatted once per scrape.
    """

    def __missing__(self, value: float) -> str:
        text = self[value] = _goFloat(value)
        return text


class _Numbers(dict[float, str]):
    """
    Values as C{prometheus_client} writes them, each formatted once per
    scrape: an int as C{N.0}, a float as Go writes it. An int and a float of
    the same value share their text (they differ only from 1e6 up, where
    both are the same number, C{1000000.0} and C{1e+06}).
    """

    def __missing__(self, value: float) -> str:
        text = self[value] = f"{value}.0" if type(value) is int else _goFloat(value)
        return text


class _Text:
    """
    The text format's pieces, each made once per scrape: label pairs
    (C{state="IDLE"}) by label and value, and floats as Go writes them.
    """

    def __init__(self, connections: _Pairs) -> None:
        """
        @param connections: the pairs of the C{connection} label, kept from
            one scrape to the next (the names change seldom).
        """
        self._pairs: dict[str, _Pairs] = {"connection": connections}
        self.floats = _Floats()
        self.numbers = _Numbers()
        self._firsts: tuple[object, str, list[str]] | None = None

    def pairs(self, label: str) -> _Pairs:
        found = self._pairs.get(label)
        if found is None:
            found = self._pairs[label] = _Pairs(label)
        return found

    def firsts(self, label: str, values: Iterable[str]) -> list[str]:
        """
        The pairs of C{label} with each of C{values}, in order: for the
        same list as the time before (the scrape's names, for most
        families), the same list.
        """
        last = self._firsts
        if last is not None and last[0] is values and last[1] == label:
            return last[2]
        found = list(map(self.pairs(label).__getitem__, values))
        if isinstance(values, list):
            self._firsts = (values, label, found)
        return found

    def joined(self, labels: Labels, values: Labels) -> str:
        return ",".join([self.pairs(label)[v] for label, v in zip(labels, values, strict=True)])


def _writeColumn(out: list[str], family: Family, samples: _Column, text: _Text) -> None:
    """
    Append the sample lines of a gauge or a counter given as columns to
    C{out}: each line is the family's name, the first label's pair (and the
    other labels'), and the rest of the line with the start of the next one
    (its tail, C{"} 1.0\\nNAME{"}), made once for each value. Values in
    few runs (a counter most connections share) take one join for each
    run (L{_writeRuns}); others two or three pieces a line, found in C.
    """
    head = family.sampleName + "{"
    after = "\n" + head
    firsts = text.firsts(family.labels[0], samples.first)
    tails: Iterable[str]
    if samples.micros is not None:
        micros = samples.micros
        if max(micros, default=0) < 1_000_000:  # all below a second: one number each
            tails = map(f"}} 0.%06d{after}".__mod__, micros)
        else:
            tails = map(f"}} %d.%06d{after}".__mod__, map(divmod, micros, repeat(1_000_000)))
    else:
        values = list(samples.values)
        tailOf = _Tails(text.numbers, after).__getitem__
        if samples.rest is None and _writeRuns(out, head, firsts, values, tailOf):
            return
        tails = map(tailOf, values)
    if samples.rest is None:
        _writePieces(out, head, zip(firsts, tails, strict=True))
    else:
        rest = map(_Joined(family.labels[1:], text).__getitem__, samples.rest)
        _writePieces(out, head, zip(firsts, rest, tails, strict=True))


def _writePieces(out: list[str], head: str, lines: Iterable[tuple[str, ...]]) -> None:
    """
    Append C{lines}, each as its pieces, to C{out}: the first line starts
    with C{head}, every line's last piece ends with the next line's
    C{head}, but the last line's, which is cut.
    """
    start = len(out)
    out.append(head)
    out += chain.from_iterable(lines)
    if len(out) == start + 1:
        out.pop()  # no lines
    else:
        out[-1] = out[-1][: -len(head)]


_FEW_RUNS: Final = 8
"""L{_writeRuns} joins runs while there are at most one for this many lines."""


def _writeRuns(
    out: list[str],
    head: str,
    firsts: list[str],
    values: list[Any],
    tailOf: Callable[[Any], str],
) -> bool:
    """
    Append the lines of C{firsts} (the pairs each line starts with) and
    C{values} to C{out} as one join for each run of equal values, where
    these are few (see L{_FEW_RUNS}): the tail of the run's value (which
    ends with C{head}) joins its lines' pairs. Say whether it did; if not,
    nothing is appended.
    """
    count = len(values)
    if len(firsts) != count:
        raise ValueError(f"{len(firsts)} series for {count} values")
    if count == 0:
        return True
    if values.count(values[0]) == count:
        starts = []  # one run: no comparison made
    else:
        starts = list(compress(range(1, count), map(ne, values[1:], values[:-1])))
        if len(starts) * _FEW_RUNS > count:
            return False
    out.append(head)
    begin = 0
    for end in (*starts, count):
        tail = tailOf(values[begin])
        out.append(tail.join(firsts[begin:end]))
        out.append(tail)
        begin = end
    out[-1] = out[-1][: -len(head)]
    return True


class _Tails(dict[float, str]):
    """
    The end of a sample line with the start of the next, by value.
    """

    def __init__(self, numbers: _Numbers, after: str) -> None:
        super().__init__()
        self.numbers = numbers
        self.after = after

    def __missing__(self, value: float) -> str:
        text = self[value] = f"}} {self.numbers[value]}{self.after}"
        return text


def _sampleLines(
    family: Family, samples: Iterable[tuple[Labels, Any]], text: _Text
) -> Iterator[str]:
    """
    The sample lines of a gauge or a counter, one sample at a time. An int
    is written C{N.0}, a float as Go writes it, as C{prometheus_client}
    does for both.
    """
    name, floats = family.sampleName, text.floats
    if not family.labels:
        for _, value in samples:
            yield f"{name} {f'{value}.0' if type(value) is int else floats[value]}\n"
        return
    # The first label's pair is looked up (it is the connection's, most
    # often); the others' are joined once for each combination of values.
    head, first = name + "{", text.pairs(family.labels[0])
    if len(family.labels) == 1:
        for (a,), value in samples:
            if type(value) is int:
                yield f"{head}{first[a]}}} {value}.0\n"
            else:
                yield f"{head}{first[a]}}} {floats[value]}\n"
        return
    rest = _Joined(family.labels[1:], text)
    for values, value in samples:
        number = f"{value}.0" if type(value) is int else floats[value]
        yield f"{head}{first[values[0]]}{rest[values[1:]]}}} {number}\n"


def _oneHotLines(
    family: Family, samples: Iterable[tuple[Labels, Any]], text: _Text
) -> Iterable[str]:
    """
    The sample lines of a one-hot gauge: for each series, its block of
    lines for the current value, with the other labels put in.
    """
    name, last, floats = family.sampleName, text.pairs(family.labels[-1]), text.floats
    blocks = {
        current: "".join(
            f"{name}{{\0,{last[each]}}} {floats[1.0 if each == current else 0.0]}\n"
            for each in family.oneOf
        )
        for current in family.oneOf
    }
    leading = family.labels[:-1]
    return (
        blocks[current].replace("\0", text.joined(leading, values)) for values, current in samples
    )


def _writeOneHot(out: list[str], family: Family, samples: _Column, text: _Text) -> None:
    """
    Append the sample lines of a one-hot gauge given as columns to C{out}.
    With one other label: for each value of its last label, the line of
    every series (1 for those whose current value it is, 0 for the
    others), by runs where they are few (L{_writeRuns}); with more, series
    by series (L{_oneHotLines}).
    """
    if len(family.labels) != 2 or samples.rest is not None:
        out += _oneHotLines(family, samples, text)
        return
    head = family.sampleName + "{"
    after = "\n" + head
    firsts = text.firsts(family.labels[0], samples.first)
    current = list(samples.values)
    last, one, zero = text.pairs(family.labels[-1]), text.floats[1.0], text.floats[0.0]
    for each in family.oneOf:
        pair = last[each]
        tails = {True: f",{pair}}} {one}{after}", False: f",{pair}}} {zero}{after}"}
        shown = current.count(each)
        if shown in (0, len(current)):  # the same for all
            values = [shown > 0] * len(current)
        else:
            values = list(map(eq, current, repeat(each)))
        if not _writeRuns(out, head, firsts, values, tails.__getitem__):
            _writePieces(out, head, zip(firsts, map(tails.__getitem__, values), strict=True))


def _histogramLines(
    family: Family, samples: Iterable[tuple[Labels, Any]], text: _Text
) -> Iterator[str]:
    """
    The sample lines of a histogram: cumulative buckets, count, sum.
    """
    name = family.sampleName
    for values, h in samples:
        labels = text.joined(family.labels, values)
        for le, n in zip(_LE, h.cumulative(), strict=True):
            yield f'{name}_bucket{{{labels},le="{le}"}} {n}.0\n'
        yield f"{name}_count{{{labels}}} {h.count}.0\n"
        yield f"{name}_sum{{{labels}}} {text.floats[h.sum]}\n"


class _Joined(dict[Labels, str]):
    """
    The pairs of some labels, each preceded by a comma, by their values.
    """

    def __init__(self, labels: Labels, text: _Text) -> None:
        super().__init__()
        self.labels = labels
        self.text = text

    def __missing__(self, values: Labels) -> str:
        joined = self[values] = "".join(
            "," + self.text.pairs(label)[v] for label, v in zip(self.labels, values, strict=True)
        )
        return joined


def exposition(metrics: SupervisorMetrics) -> bytes:
    """
    The metrics in the Prometheus text format, version 0.0.4
    (L{CONTENT_TYPE}): the same samples as C{prometheus_client}'s
    C{generate_latest} on L{SupervisorMetrics.registry}.
    """
    scrape, text = _Scrape(metrics), _Text(metrics._connectionPairs)
    metrics._connectionPairs.fill(scrape.names)
    out: list[str] = []
    for family in shownFamilies(metrics.supervisor.config):
        out.append(family.header())
        samples = family.samples(scrape)
        if family.kind == "histogram":
            out += _histogramLines(family, samples, text)
        elif isinstance(samples, _Column) and family.labels:
            (_writeOneHot if family.oneOf else _writeColumn)(out, family, samples, text)
        else:
            out += (_oneHotLines if family.oneOf else _sampleLines)(family, samples, text)
    return "".join(out).encode("utf-8")
