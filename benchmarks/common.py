"""
Helpers shared by the runner and the measured children.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

HEARTBEAT_INTERVAL = 1.0
"""Seconds between pings, for both implementations."""

HEARTBEAT_TIMEOUT = 0.5
"""Seconds to wait for each pong, for both implementations."""

HEARTBEAT_MISSES = 2
"""Consecutive misses that drop a connection, for both implementations."""

DETECTION_BOUND = HEARTBEAT_INTERVAL + HEARTBEAT_TIMEOUT * HEARTBEAT_MISSES
"""The configured bound on dead-peer detection: interval + timeout * misses."""

IMPLEMENTATIONS = ("netsupervisor", "baseline")


def rssBytes() -> int:
    """
    The resident set size of this process, from C{/proc/self/statm}.
    """
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1])
    return resident * os.sysconf("SC_PAGE_SIZE")


def cpuSeconds() -> float:
    """
    User plus system CPU seconds of this process so far.
    """
    times = os.times()
    return times.user + times.system


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
