"""
Helpers shared by the runner and the measured children.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import Any

HEARTBEAT_INTERVAL = 1.0
"""Seconds between pings, for both implementations."""

HEARTBEAT_TIMEOUT = 0.5
"""Seconds to wait for each pong, for both implementations."""

HEARTBEAT_MISSES = 2
"""Consecutive misses that drop a connection, for both implementations."""

DETECTION_BOUND = HEARTBEAT_INTERVAL + HEARTBEAT_TIMEOUT * HEARTBEAT_MISSES
"""The configured bound on dead-peer detection: interval + timeout * misses."""

IMPLEMENTATIONS = ("netsupervisor", "baseline")

WAITING = frozenset({"<method 'poll' of 'select.epoll' objects>"})
"""The profile entries that are the reactor's wait for events: in a
wall-clock profile, idle time."""


def rssBytes() -> int:
    """
    The resident set size of this process, from C{/proc/self/statm}.
    """
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1])
    return resident * os.sysconf("SC_PAGE_SIZE")


def cpuSeconds() -> float:
    """
    User plus system CPU seconds of this process so far, to the nanosecond
    (C{CLOCK_PROCESS_CPUTIME_ID}): C{os.times()} counts in ticks of 10 ms,
    a few per cent of a window's CPU at 1,000 connections.
    """
    return time.process_time()


def sleeps() -> int:
    """
    How many times this process gave up the CPU waiting (its voluntary
    context switches so far: about one per wake-up of an idle reactor), or
    0 where the system does not say.
    """
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"voluntary_ctxt_switches:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def percentile(values: Sequence[float], share: float) -> float:
    """
    The nearest-rank percentile of C{values} (C{share} in [0, 1]); NaN if empty.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    """
    p50, p99, max and count of C{values}.
    """
    return {
        "p50": percentile(values, 0.50),
        "p99": percentile(values, 0.99),
        "max": max(values) if values else math.nan,
        "count": float(len(values)),
    }


def stormMarks(
    storm: dict[str, Any],
    left: float,
    barWidth: float,
    top: float,
    base: float,
    length: int,
    every: int,
    label: str,
) -> list[str]:
    """
    SVG for one storm panel's time axis: a dashed line (and C{label}) where
    the peer came back, and a tick label every C{every} seconds along
    C{length} bins of 100 ms.
    """
    parts = []
    restart = storm.get("restart_bin")
    if restart is not None:
        x = left + restart * barWidth
        parts.append(
            f'<line x1="{x:.2f}" y1="{top}" x2="{x:.2f}" y2="{base}" stroke="green"'
            ' stroke-dasharray="4 3"/>'
        )
        parts.append(f'<text x="{x + 3:.2f}" y="{top + 12}" fill="green">{label}</text>')
    for second in range(0, int(length / 10) + 1, every):
        x = left + second * 10 * barWidth
        parts.append(f'<text x="{x:.2f}" y="{base + 13}" text-anchor="middle">{second}s</text>')
    return parts


def valueAt(run: dict[str, Any] | None, *path: str) -> float | None:
    """
    The number at C{path} in a run's results, or L{None} when it is missing
    or not a number.
    """
    value: Any = run
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def formatNumber(value: float | None, digits: int = 2) -> str:
    """
    C{value} with thousands separators, or C{n/a}.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def formatRatio(a: float | None, b: float | None) -> str:
    """
    C{a / b} as C{0.52x}, or C{n/a}.
    """
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return "n/a"
    return f"{a / b:.2f}x"


def verdict(ok: bool | None) -> str:
    """
    A target's verdict for the report.
    """
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


def failedRuns(runs: Sequence[dict[str, Any]]) -> list[str]:
    """
    The report's lines for the runs that failed (none when none did).
    """
    failed = [r for r in runs if "error" in r]
    if not failed:
        return []
    lines = ["**Runs that failed:**", ""]
    lines += [f"- {r.get('label', r.get('impl'))} N={r.get('n')}: {r['error']}" for r in failed]
    return [*lines, ""]


DISTURBED = 0.10
"""A run is marked disturbed when other processes used more than this share
of the machine's CPUs while it ran."""

SATURATED = 0.90
"""A run is marked saturated when its measured process used more than this
share of a core over the steady window."""


def loadText(run: dict[str, Any] | None, mark: bool = True) -> str:
    """
    A run's 1-minute load average before and after it and the share of the
    machine other processes used meanwhile, marked disturbed above
    L{DISTURBED} when C{mark}.
    """
    if not run:
        return "n/a"
    before, after = run.get("loadavg_before") or [math.nan], run.get("loadavg_after") or [math.nan]
    share = valueAt(run, "other_cpu_share")
    text = f"{before[0]:.2f} → {after[0]:.2f}; others {formatNumber(share and share * 100, 0)}%"
    if mark and disturbed(run):
        text += " (disturbed)"
    return text


def disturbed(run: dict[str, Any] | None) -> bool:
    """
    Whether other processes used more than L{DISTURBED} of the machine's
    CPUs while the run lasted.
    """
    share = valueAt(run, "other_cpu_share")
    return share is not None and share > DISTURBED


def saturated(run: dict[str, Any] | None) -> bool:
    """
    Whether a run's measured process used more than L{SATURATED} of a core
    over its steady window.
    """
    share = valueAt(run, "steady", "cpu_share")
    return share is not None and share > SATURATED


def spread(values: Sequence[float | None]) -> tuple[float, float, float] | None:
    """
    The median, minimum and maximum of the numbers among C{values} (NaN and
    L{None} left out), or L{None} when there are none.
    """
    numbers = sorted(v for v in values if v is not None and not math.isnan(v))
    if not numbers:
        return None
    middle = len(numbers) // 2
    median = numbers[middle] if len(numbers) % 2 else (numbers[middle - 1] + numbers[middle]) / 2
    return median, numbers[0], numbers[-1]


def formatSpread(
    values: Sequence[float | None], digits: int = 2, unit: str = "", scale: float = 1.0
) -> str:
    """
    The median of C{values} with the minimum and maximum beside it, as
    C{0.61x (0.58-0.66)} for C{unit="x"}; only the value when there is one
    or all are equal; C{n/a} when there is none.
    """
    found = spread(values)
    if found is None:
        return "n/a"
    median, low, high = (v * scale for v in found)
    text = formatNumber(median, digits) + unit
    if formatNumber(low, digits) != formatNumber(high, digits):
        text += f" ({formatNumber(low, digits)}-{formatNumber(high, digits)})"
    return text


def ratio(a: float | None, b: float | None) -> float | None:
    """
    C{a / b}, or L{None} when either is missing or C{b} is 0.
    """
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b
