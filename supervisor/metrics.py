"""
Prometheus metrics of one L{Supervisor}, in its own registry.

L{SupervisorMetrics} is a custom collector. It keeps the counters (attempts,
failures, disconnects, transitions, heartbeat misses, the RTT histogram) in
plain dictionaries fed by the supervisor's observers, and reads every gauge
from the live connections at scrape time: there is no Prometheus object per
connection per metric.

Two families go beyond the list of the specification (C{SPEC.md}), for
per-connection dashboards: C{connection_info} (the connection's protocol and
group, to filter per-connection series by group with a join) and
C{connection_transitions_total} (to find flapping connections).

L{exposition} renders the Prometheus text format (version 0.0.4) directly;
it gives the same samples as C{prometheus_client.generate_latest} on
L{SupervisorMetrics.registry}, many times faster for ten thousand
connections. The metric names, labels and meanings are in C{docs/metrics.md}.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Final

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

# name (without _total for counters), type, help
_STATE = ("connection_state", "gauge", "Whether the connection is in this state (1) or not (0).")
_INFO = (
    "connection_info",
    "gauge",
    "Always 1, one per supervised connection: its protocol and group.",
)
_CONNECTIONS = ("connections", "gauge", "Supervised connections in each state.")
_ATTEMPTS = (
    "connect_attempts",
    "counter",
    "Connect attempts started (transitions into CONNECTING).",
)
_FAILURES = (
    "connect_failures",
    "counter",
    "Connect attempts that failed (CONNECTING to IDLE or CLOSED), by reason.",
)
_DISCONNECTS_ = (
    "disconnects",
    "counter",
    "ESTABLISHED connections that ended (to IDLE or CLOSING), by reason.",
)
_TRANSITIONS = (
    "state_transitions",
    "counter",
    "Changes of a connection's state, by the state left and the state entered.",
)
_CONNECTION_TRANSITIONS = (
    "connection_transitions",
    "counter",
    "Changes of the connection's state.",
)
_RTT = ("heartbeat_rtt_seconds", "histogram", "Round-trip time of answered heartbeats, by group.")
_LAST_RTT = (
    "heartbeat_last_rtt_seconds",
    "gauge",
    "Round-trip time of the connection's last answered heartbeat.",
)
_MISSES = (
    "heartbeat_misses",
    "counter",
    "Heartbeats not answered within the heartbeat timeout.",
)
_BACKOFF = (
    "backoff_delay_seconds",
    "gauge",
    "Delay of the retry now scheduled, 0 if none is.",
)
_DRAINING = ("draining", "gauge", "1 once the graceful drain of the process has begun, else 0.")
_RELOADS = ("config_reloads", "counter", "Configuration reloads, by result.")
_SHARD_INFO = (
    "shard_info",
    "gauge",
    "Always 1: the shard of the configuration this process keeps, shard (from 0) of shards.",
)
_RELOAD_RESULTS: Final = ("success", "failure")

# Floats as Go writes them (prometheus_client's own function, untyped there).
_goFloat: Final[Callable[[float], str]] = floatToGoString

_LE: Final = (*(_goFloat(b) for b in RTT_BUCKETS), "+Inf")

# Label values are escaped as the text format requires; names of connections
# cannot need it (NAME_PATTERN), groups can.
_ESCAPES: Final = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})


def _escape(value: str) -> str:
    return value.translate(_ESCAPES)


def _header(name: str, kind: str, help: str) -> str:
    if kind == "counter":
        name += "_total"
    return f"# HELP {_PREFIX}{name} {help}\n# TYPE {_PREFIX}{name} {kind}\n"


# The five lines of connection_state for a connection in each state, with
# "\0" where the connection's name goes.
_STATE_BLOCKS: Final[dict[str, str]] = {
    current: "".join(
        f'{_PREFIX}connection_state{{connection="\0",state="{s}"}} '
        f"{'1.0' if s == current else '0.0'}\n"
        for s in STATES
    )
    for current in STATES
}


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


class _Snapshot:
    """
    Everything one scrape shows, read at once.
    """

    __slots__ = (
        "byState",
        "disconnects",
        "draining",
        "failures",
        "histograms",
        "orphanAttempts",
        "orphanMisses",
        "orphanTransitions",
        "reloads",
        "rows",
        "transitions",
    )

    def __init__(self, metrics: SupervisorMetrics) -> None:
        supervisor = metrics.supervisor
        connections: dict[str, SupervisedConnection] = supervisor.connections
        metrics._prune(connections)
        byState = dict.fromkeys(STATES, 0)
        info = metrics._info
        rows: list[tuple[str, State, float | None, float, tuple[str, str]]] = []
        for name, c in connections.items():
            state = c.state
            byState[state] += 1
            labels = info.get(name)
            if labels is None:  # not (or no longer) in the configuration
                labels = (c.spec.protocol, c.spec.group)
            rows.append((name, state, c.rtt, c.backoffDelay, labels))
        self.rows = rows
        self.byState = byState
        # Every live connection has its counters, 0 until it counts (see
        # the rows); a connection being replaced keeps its own (here).
        self.orphanAttempts = [(n, v) for n, v in metrics._attempts.items() if n not in connections]
        self.orphanMisses = [(n, v) for n, v in metrics._misses.items() if n not in connections]
        self.orphanTransitions = [
            (n, v) for n, v in metrics._connectionTransitions.items() if n not in connections
        ]
        self.failures = [(n, r, v) for n, d in metrics._failures.items() for r, v in d.items()]
        self.disconnects = [
            (n, r, v) for n, d in metrics._disconnects.items() for r, v in d.items()
        ]
        self.transitions = sorted(metrics._transitions.items())
        self.histograms = sorted(metrics._histograms.items())
        self.draining = bool(supervisor.draining)
        self.reloads = [(r, supervisor.reloads.get(r, 0)) for r in _RELOAD_RESULTS]


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
        for name, kind, help in (
            _STATE,
            _INFO,
            _CONNECTIONS,
            _ATTEMPTS,
            _FAILURES,
            _DISCONNECTS_,
            _TRANSITIONS,
            _CONNECTION_TRANSITIONS,
            _RTT,
            _LAST_RTT,
            _MISSES,
            _BACKOFF,
            _DRAINING,
            _RELOADS,
            _SHARD_INFO,
        ):
            yield Metric(_PREFIX + name, help, kind)

    def collect(self) -> Iterable[Metric]:
        """
        Every metric family, with its samples now.
        """
        return _families(self, _Snapshot(self))


def _bump(counter: dict[str, dict[str, int]], name: str, reason: str) -> None:
    byReason = counter.get(name)
    if byReason is None:
        byReason = counter[name] = {}
    byReason[reason] = byReason.get(reason, 0) + 1


def _families(metrics: SupervisorMetrics, s: _Snapshot) -> Iterator[Metric]:
    def gauge(spec: tuple[str, str, str], labels: list[str]) -> GaugeMetricFamily:
        return GaugeMetricFamily(_PREFIX + spec[0], spec[2], labels=labels)

    def counter(spec: tuple[str, str, str], labels: list[str]) -> CounterMetricFamily:
        return CounterMetricFamily(_PREFIX + spec[0], spec[2], labels=labels)

    def perConnection(
        spec: tuple[str, str, str], counts: dict[str, int], orphans: list[tuple[str, int]]
    ) -> CounterMetricFamily:
        # Every live connection from 0, then the counts of removed ones.
        c = counter(spec, ["connection"])
        for name, _, _, _, _ in s.rows:
            c.add_metric([name], counts.get(name, 0))
        for name, n in orphans:
            c.add_metric([name], n)
        return c

    m = gauge(_STATE, ["connection", "state"])
    for name, state, _, _, _ in s.rows:
        for each in STATES:
            m.add_metric([name, each], 1.0 if each == state else 0.0)
    yield m
    m = gauge(_INFO, ["connection", "protocol", "group"])
    for name, _, _, _, (protocol, group) in s.rows:
        m.add_metric([name, protocol, group], 1.0)
    yield m
    m = gauge(_CONNECTIONS, ["state"])
    for state, n in s.byState.items():
        m.add_metric([state], n)
    yield m
    yield perConnection(_ATTEMPTS, metrics._attempts, s.orphanAttempts)
    c = counter(_FAILURES, ["connection", "reason"])
    for name, reason, n in s.failures:
        c.add_metric([name, reason], n)
    yield c
    c = counter(_DISCONNECTS_, ["connection", "reason"])
    for name, reason, n in s.disconnects:
        c.add_metric([name, reason], n)
    yield c
    c = counter(_TRANSITIONS, ["from", "to"])
    for (old, new), n in s.transitions:
        c.add_metric([old, new], n)
    yield c
    yield perConnection(
        _CONNECTION_TRANSITIONS, metrics._connectionTransitions, s.orphanTransitions
    )
    h = HistogramMetricFamily(_PREFIX + _RTT[0], _RTT[2], labels=["group"])
    for group, histogram in s.histograms:
        h.add_metric(
            [group], list(zip(_LE, map(float, histogram.cumulative()), strict=True)), histogram.sum
        )
    yield h
    m = gauge(_LAST_RTT, ["connection"])
    for name, _, rtt, _, _ in s.rows:
        if rtt is not None:
            m.add_metric([name], rtt)
    yield m
    yield perConnection(_MISSES, metrics._misses, s.orphanMisses)
    m = gauge(_BACKOFF, ["connection"])
    for name, _, _, delay, _ in s.rows:
        m.add_metric([name], delay)
    yield m
    m = gauge(_DRAINING, [])
    m.add_metric([], 1.0 if s.draining else 0.0)
    yield m
    c = counter(_RELOADS, ["result"])
    for result, n in s.reloads:
        c.add_metric([result], n)
    yield c
    m = gauge(_SHARD_INFO, ["shard", "shards"])
    m.add_metric(list(_shardLabels(metrics)), 1.0)
    yield m


def _shardLabels(metrics: SupervisorMetrics) -> tuple[str, str]:
    shard = metrics.supervisor.shard
    return str(shard.index), str(shard.count)


def exposition(metrics: SupervisorMetrics) -> bytes:
    """
    The metrics in the Prometheus text format, version 0.0.4 (L{CONTENT_TYPE}).
    """
    s = _Snapshot(metrics)
    fmt = _goFloat
    blocks = _STATE_BLOCKS
    attempts, misses = metrics._attempts, metrics._misses
    transitions = metrics._connectionTransitions
    # The escaped protocol and group labels of connection_info, once each.
    infoLabels: dict[tuple[str, str], str] = {}
    # One pass over the connections fills the per-connection families.
    states: list[str] = [_header(*_STATE)]
    info: list[str] = [_header(*_INFO)]
    transitionLines: list[str] = [_header(*_CONNECTION_TRANSITIONS)]
    attemptLines: list[str] = [_header(*_ATTEMPTS)]
    lastRtt: list[str] = [_header(*_LAST_RTT)]
    missLines: list[str] = [_header(*_MISSES)]
    backoff: list[str] = [_header(*_BACKOFF)]
    for name, state, rtt, delay, pair in s.rows:
        escaped = _escape(name)
        label = f'{{connection="{escaped}"}} '
        states.append(blocks[state].replace("\0", escaped))
        rest = infoLabels.get(pair)
        if rest is None:
            rest = infoLabels[pair] = (
                f'protocol="{_escape(pair[0])}",group="{_escape(pair[1])}"}} 1.0\n'
            )
        info.append(f'{_PREFIX}connection_info{{connection="{escaped}",{rest}')
        transitionLines.append(
            f"{_PREFIX}connection_transitions_total{label}{transitions.get(name, 0)}.0\n"
        )
        attemptLines.append(f"{_PREFIX}connect_attempts_total{label}{attempts.get(name, 0)}.0\n")
        missLines.append(f"{_PREFIX}heartbeat_misses_total{label}{misses.get(name, 0)}.0\n")
        if rtt is not None:
            lastRtt.append(f"{_PREFIX}heartbeat_last_rtt_seconds{label}{fmt(rtt)}\n")
        backoff.append(f"{_PREFIX}backoff_delay_seconds{label}{fmt(delay) if delay else '0.0'}\n")
    for name, n in s.orphanAttempts:
        attemptLines.append(
            f'{_PREFIX}connect_attempts_total{{connection="{_escape(name)}"}} {n}.0\n'
        )
    for name, n in s.orphanMisses:
        missLines.append(f'{_PREFIX}heartbeat_misses_total{{connection="{_escape(name)}"}} {n}.0\n')
    for name, n in s.orphanTransitions:
        transitionLines.append(
            f'{_PREFIX}connection_transitions_total{{connection="{_escape(name)}"}} {n}.0\n'
        )

    out = states
    out += info
    add = out.append
    add(_header(*_CONNECTIONS))
    for state, n in s.byState.items():
        add(f'{_PREFIX}connections{{state="{state}"}} {n}.0\n')
    out += attemptLines
    add(_header(*_FAILURES))
    for name, reason, n in s.failures:
        add(
            f'{_PREFIX}connect_failures_total{{connection="{_escape(name)}",'
            f'reason="{reason}"}} {n}.0\n'
        )
    add(_header(*_DISCONNECTS_))
    for name, reason, n in s.disconnects:
        add(f'{_PREFIX}disconnects_total{{connection="{_escape(name)}",reason="{reason}"}} {n}.0\n')
    add(_header(*_TRANSITIONS))
    for (old, new), n in s.transitions:
        add(f'{_PREFIX}state_transitions_total{{from="{old}",to="{new}"}} {n}.0\n')
    out += transitionLines
    add(_header(*_RTT))
    histogramName = _PREFIX + _RTT[0]
    for group, histogram in s.histograms:
        glabel = f'group="{_escape(group)}"'
        for le, n in zip(_LE, histogram.cumulative(), strict=True):
            add(f'{histogramName}_bucket{{{glabel},le="{le}"}} {n}.0\n')
        add(f"{histogramName}_count{{{glabel}}} {histogram.count}.0\n")
        add(f"{histogramName}_sum{{{glabel}}} {fmt(histogram.sum)}\n")
    out += lastRtt
    out += missLines
    out += backoff
    add(_header(*_DRAINING))
    add(f"{_PREFIX}draining {'1.0' if s.draining else '0.0'}\n")
    add(_header(*_RELOADS))
    for result, n in s.reloads:
        add(f'{_PREFIX}config_reloads_total{{result="{result}"}} {n}.0\n')
    add(_header(*_SHARD_INFO))
    index, count = _shardLabels(metrics)
    add(f'{_PREFIX}shard_info{{shard="{index}",shards="{count}"}} 1.0\n')
    return "".join(out).encode("utf-8")
