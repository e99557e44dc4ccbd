"""
The establish suite's part of the report (C{python -m benchmarks --suite
establish}): the time to establish all N, measured in many short alternated
pairs instead of three rounds, so that issue 17's row (at most 1.2x stock)
is judged on a median that one lucky or unlucky process does not move.

A pair is one netsupervisor run and one baseline run at the same size, each
a fresh peer and a fresh child that only establishes (no phase after it);
every other pair runs the other side first. The ratio is taken within each
pair, then the median, the quartiles and the extremes of those ratios.
"""

from __future__ import annotations

import statistics
from datetime import UTC, datetime
from typing import Any

from benchmarks.common import disturbed, failedRuns
from benchmarks.common import formatNumber as _fmt
from benchmarks.common import valueAt as _get
from benchmarks.common import verdict as _verdict

LIMIT = 1.2
"""Issue 17's target: the time to establish all N at most this many times stock's."""

Run = dict[str, Any]


def pairs(results: dict[str, Any], n: int) -> list[tuple[Run, Run]]:
    """
    (netsupervisor's run, the baseline's run) of every round at size C{n}
    where both established all N, in round order.
    """
    byRound: dict[int, dict[str, Run]] = {}
    for run in results["runs"]:
        if run.get("n") == n and "error" not in run:
            byRound.setdefault(run.get("round", 0), {})[run["impl"]] = run
    found = []
    for round_ in sorted(byRound):
        sides = byRound[round_]
        ns, base = sides.get("netsupervisor"), sides.get("baseline")
        if ns is None or base is None:
            continue
        if all(_everyoneUp(run) for run in (ns, base)):
            found.append((ns, base))
    return found


def _everyoneUp(run: Run) -> bool:
    return (
        _get(run, "establish", "seconds") is not None
        and run["establish"].get("all_established") is True
    )


def ratios(found: list[tuple[Run, Run]], *path: str) -> list[float]:
    """
    The ratio netsupervisor / baseline of the figure at C{path} in each pair.
    """
    out = []
    for ns, base in found:
        a, b = _get(ns, *path), _get(base, *path)
        if a is not None and b:
            out.append(a / b)
    return out


def quartiles(values: list[float]) -> tuple[float, float, float, float, float] | None:
    """
    (minimum, first quartile, median, third quartile, maximum) of
    C{values}, or L{None} when there are none.
    """
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        low = high = ordered[0]
    else:
        low, _, high = statistics.quantiles(ordered, n=4, method="inclusive")
    return ordered[0], low, statistics.median(ordered), high, ordered[-1]


def _median(runs: list[Run], path: tuple[str, ...], scale: float, digits: int) -> str:
    """
    The median over C{runs} of the figure at C{path}, times C{scale}.
    """
    values = [v for v in (_get(r, *path) for r in runs) if v is not None]
    return _fmt(statistics.median(values) * scale, digits) if values else "n/a"


def _both(found: list[tuple[Run, Run]], key: str, scale: float, digits: int) -> str:
    """
    The establish phase's C{key} over the pairs C{found}: netsupervisor's
    median vs stock's.
    """
    path = ("establish", key)
    ours = _median([ns for ns, _ in found], path, scale, digits)
    stock = _median([base for _, base in found], path, scale, digits)
    return f"{ours} vs {stock}"


def section(results: dict[str, Any]) -> list[str]:
    """
    The report's lines for the establish suite's C{results}.
    """
    when = datetime.fromtimestamp(results["started"], UTC).strftime("%Y-%m-%d %H:%M UTC")
    sizes: list[int] = results["sizes"]
    minutes = results["seconds"] / 60
    took = "a few seconds" if minutes < 1 else f"{minutes:.0f} minutes"
    lines = [
        "## Time to establish all N, in many pairs (issue 17)",
        "",
        "The main suite's three rounds cannot judge the establish row: a window of 0.15 s at",
        "1,000 moves by a third from one process to the next on this host, both sides alike.",
        "This suite runs only that phase, in many short pairs (a fresh peer and a fresh child",
        "each, every other pair the other side first), and judges the target on the median of",
        "the ratios taken within each pair. Rerun with:",
        "",
        "```sh",
        f".venv/bin/python -m benchmarks --suite establish --sizes {','.join(map(str, sizes))}"
        f" --repeat {results['repeat']}"
        f"   # {took} here",
        "```",
        "",
        f"This run: `{results['command']}`",
        f"({when}, {took}{', quick mode' if results.get('quick') else ''}). The ratio is",
        "netsupervisor's time over stock's; CPU per connection is the measured process's CPU",
        "from before the connections are built until the last is ESTABLISHED, divided by N.",
        "Heartbeats in the window are those answered or missed before the last connection was",
        "ESTABLISHED (netsupervisor: heartbeat observer calls; the baseline: pings written),",
        "over N: work in the window besides establishing. netsupervisor's first ping is due",
        "half an interval to an interval after ESTABLISHED, the baseline's an interval after.",
        "",
        "| N | pairs | time ratio: median (quartiles; min-max) | pairs within 1.2x |"
        " CPU ratio, median | time, median (s) | CPU per connection (µs) |"
        " heartbeats in the window per connection | disturbed runs | ≤ 1.2x stock |",
        "| ---: | ---: | --- | ---: | ---: | --- | --- | --- | ---: | --- |",
    ]
    for n in sizes:
        found = pairs(results, n)
        timeRatios = ratios(found, "establish", "seconds")
        time = quartiles(timeRatios)
        cpu = quartiles(ratios(found, "establish", "cpu_seconds"))
        disturbedRuns = sum(disturbed(r) for pair in found for r in pair)
        if time is None:
            figures, within = "n/a", "n/a"
        else:
            low, q1, median, q3, high = time
            figures = f"**{median:.2f}x** ({q1:.2f}-{q3:.2f}; {low:.2f}-{high:.2f})"
            count = sum(r <= LIMIT for r in timeRatios)
            within = f"{count} of {len(found)}"
        lines.append(
            f"| {n:,} | {len(found)} | {figures} | {within} |"
            f" {'n/a' if cpu is None else f'{cpu[2]:.2f}x'} |"
            f" {_both(found, 'seconds', 1, 3)} | {_both(found, 'cpu_seconds', 1e6 / n, 0)} |"
            f" {_both(found, 'pings', 1 / n, 2)} |"
            f" {disturbedRuns} | {_verdict(None if time is None else time[2] <= LIMIT)} |"
        )
    lines += ["", *failedRuns(results["runs"]), *NOTES]
    return lines


NOTES = [
    "What it shows (2026-12-01 23:08, on ad15893, whose establish path is 5454181's; read the",
    "main suite's establish row through these figures, not its three rounds):",
    "",
    "- **All three sizes are met: 1.13x at 1,000** (quartiles 0.94-1.51; 9 of 15 pairs within",
    "  1.2x), **0.81x at 5,000 and 1.00x at 10,000**. This machine is not the one of the 20:33",
    "  run (an Intel Xeon, where that ran on an AMD EPYC): there, on the same code, 0.99x,",
    "  0.82x and 0.92x. At 1,000 the row is met with less room here: CPU per connection 202",
    "  against 172 µs (1.14x), where it was 120 against 135 µs there.",
    "- The 20:33 run (5454181): 0.99x at 1,000 (a quarter of the pairs below 0.77x, a quarter",
    "  above 1.23x; 11 of 15 within 1.2x), 0.82x at 5,000 and 0.92x at 10,000.",
    "- **What changed since the 17:35 run** (8a6b3dd: 1.27x, 1.00x and 1.03x): a connection to",
    "  an IPv4 address connects with the reactor's `connectTCP` and a client factory of its",
    "  own, as `TCP4ClientEndpoint.connect` would, without the endpoint's wrapping factory, its",
    "  Deferred and its wrapping protocol (5454181); a closed breaker admits and counts a",
    "  success without its machine's dispatch (51f6a04). In 15 alternated establish-only pairs",
    "  at 1,000 (20:25), netsupervisor on 5454181 took 0.81x the time of 51f6a04 and 0.82x",
    "  that of 8589c87; stock was the fourth run of each group. cProfile counts 283 calls per",
    "  connection on the way up, 310 before, and the window now runs 46-49 young collections",
    "  (9.3-12.8 ms) against 54-57 (12-16 ms) before and stock's 75 (9-10 ms). That is less than",
    "  the time saved, which is not fully explained.",
    "- CPU per connection at 20:33 was 120 against 135 µs at 1,000 (218 against 163 at 17:35,",
    "  when the host was slower for both: compare the ratios, not the times of different runs).",
    "- At 10,000 netsupervisor answers 0.75 heartbeats per connection before the last is up",
    "  (its first ping is due half an interval to an interval after ESTABLISHED, so that the",
    "  detection bound holds from the start); stock answers none: its reactor is held while it",
    "  starts everyone in one turn, and its pings wait.",
    "",
]
