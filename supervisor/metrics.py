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

Two families go beyond the list of the specification (C{SPEC.md}), for
per-connection dashboards: C{connection_info} (the connection's protocol and
group, to filter per-connection series by group with a join) and
C{connection_transitions_total} (to find flapping connections). The metric
names, labels and meanings are in C{docs/metrics.md}.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, repeat
from typing import TYPE_CHECKING, Any, Final, Literal, cast

import attrs
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from supervisor.states.records import (
    CONNECT_FAILURE_REASONS,
    DISCONNECT_REASONS,
    STATES,
    State,
    Transition,
)

if TYPE_CHECKING:
    from supervisor.config import Config
    from supervisor.connection import SupervisedConnection
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

# Floats as Go writes them (prometheus_client's own function, untyped there).
_goFloat: Final[Callable[[float], str]] = floatToGoString

_LE: Final = (*(_goFloat(b) for b in RTT_BUCKETS), "+Inf")


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


class _Scrape:
    """
    Everything one scrape shows, read at once: the live connections, column
    by column (the same index is the same connection), the counts by state,
    and the counters of L{SupervisorMetrics}.

    Families read per-connection samples by zipping the columns, so that
    ten thousand connections cost no Python code per sample.
    """

    __slots__ = (
        "byState",
        "delays",
        "draining",
        "groups",
        "keys",
        "live",
        "metrics",
        "names",
        "protocols",
        "reloads",
        "rtts",
        "shard",
        "states",
    )

    metrics: SupervisorMetrics
    live: dict[str, SupervisedConnection]
    names: list[str]
    keys: list[Labels]
    states: list[State]
    rtts: list[float | None]
    delays: list[float]
    protocols: list[str]
    groups: list[str]
    byState: dict[State, int]
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
        self.keys = [(name,) for name in names]
        self.states = states = []
        self.rtts = rtts = []
        self.delays = delays = []
        self.protocols = protocols = []
        self.groups = groups = []
        for name, c in connections.items():
            states.append(c.state)
            rtts.append(c.rtt)
            delays.append(c.backoffDelay)
            labels = info.get(name)
            if labels is None:  # not (or no longer) in the configuration
                labels = (c.spec.protocol, c.spec.group)
            protocols.append(labels[0])
            groups.append(labels[1])
        self.byState = byState = dict.fromkeys(STATES, 0)
        for state in states:
            byState[state] += 1
        self.draining = bool(supervisor.draining)
        self.reloads = [(r, supervisor.reloads.get(r, 0)) for r in _RELOAD_RESULTS]
        self.shard = supervisor.shard

    def each(self, values: Iterable[float | str]) -> Iterator[Sample]:
        """
        One sample per live connection, labelled by its name, with its
        value from C{values} (a column).
        """
        return zip(self.keys, values, strict=True)

    def counted(self, counts: dict[str, int]) -> Iterator[Sample]:
        """
        A per-connection counter: every live connection from 0, then the
        counts of connections being replaced (closing, their successor not
        yet started), which go on under the same name.
        """
        live = self.live
        return chain(
            self.each(map(counts.get, self.names, repeat(0))),
            (((name,), n) for name, n in counts.items() if name not in live),
        )

    @staticmethod
    def byReason(counts: dict[str, dict[str, int]]) -> Iterator[Sample]:
        """
        A per-connection counter split by reason: only what has counted.
        """
        return (((name, reason), n) for name, d in counts.items() for reason, n in d.items())


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
        lambda s: zip(zip(s.names, s.protocols, s.groups, strict=True), repeat(1.0)),
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
        lambda s: ((key, rtt) for key, rtt in zip(s.keys, s.rtts, strict=True) if rtt is not None),
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
        self._histograms: dict[str, _Histogram] = {}
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
        elif old == "CONNECTING":
            if reason in _CONNECT_FAILURES:
                _bump(self._failures, name, reason)
        elif old == "ESTABLISHED" and reason in _DISCONNECTS:
            _bump(self._disconnects, name, reason)

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
        self._info = {spec.name: (spec.protocol, spec.group) for spec in config.connections}
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
            self._connectionTransitions,
            self._failures,
            self._disconnects,
        ):
            gone = [n for n in counter if n not in configured and n not in connections]
            for name in gone:
                del counter[name]
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


class _Floats(dict[float, str]):
    """
    Floats as Go writes them, each formatted once per scrape.
    """

    def __missing__(self, value: float) -> str:
        text = self[value] = _goFloat(value)
        return text


class _Text:
    """
    The text format's pieces, each made once per scrape: label pairs
    (C{state="IDLE"}) by label and value, and floats as Go writes them.
    """

    def __init__(self) -> None:
        self._pairs: dict[str, _Pairs] = {}
        self.floats = _Floats()

    def pairs(self, label: str) -> _Pairs:
        found = self._pairs.get(label)
        if found is None:
            found = self._pairs[label] = _Pairs(label)
        return found

    def joined(self, labels: Labels, values: Labels) -> str:
        return ",".join([self.pairs(label)[v] for label, v in zip(labels, values, strict=True)])


def _lines(family: Family, samples: Iterable[tuple[Labels, Any]], text: _Text) -> Iterator[str]:
    """
    The sample lines of a gauge or a counter. An int is written C{N.0},
    a float as Go writes it, as C{prometheus_client} does for both.
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
) -> Iterator[str]:
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
    if len(leading) == 1:
        first = text.pairs(leading[0])
        for (a,), current in samples:
            yield blocks[current].replace("\0", first[a])
    else:
        for values, current in samples:
            yield blocks[current].replace("\0", text.joined(leading, values))


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
    scrape, text = _Scrape(metrics), _Text()
    out: list[str] = []
    for family in shownFamilies(metrics.supervisor.config):
        out.append(family.header())
        if family.kind == "histogram":
            lines = _histogramLines
        else:
            lines = _oneHotLines if family.oneOf else _lines
        out += lines(family, family.samples(scrape), text)
    return "".join(out).encode("utf-8")
