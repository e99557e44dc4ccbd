"""
The profile's part of the report (C{python -m benchmarks --profile}): where
netsupervisor's time goes at start-up and in the steady heartbeat window,
the top entries of cProfile by own and by cumulative time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from benchmarks.common import WAITING, loadText
from benchmarks.common import formatNumber as _fmt
from benchmarks.common import valueAt as _get

PHASES = [
    ("start-up", "Start-up: from building the connections to all N ESTABLISHED"),
    ("steady", "The steady heartbeat window"),
    ("storm", "The reconnect storm: from the kill to everyone ESTABLISHED again"),
]


NOTES = [
    "What it shows (2026-12-01 16:06, after the sixth round of issue-17 work). The profile is",
    "taken at 5,000 (`--sizes 5000`): at 10,000 the profiler's own cost saturates the process",
    "(16:00, the same command at 10,000: in the storm 20,855 connections were dropped for",
    "missed heartbeats once back, and 3,600 held by the flap guard, so that everyone was back",
    "only 147 s after the restart instead of about 3 s), and its profile shows the profiler,",
    "not the storm. Even at 5,000 the profiler costs the storm some of that: in this run 1,620",
    "connections were dropped for missed heartbeats once back (1.23 attempts per connection,",
    "everyone back 7.2 s after the restart; 1.00 and about 3 s without the profiler), and in",
    "another (16:03) 3,249, with everyone back after 69 s. In the steady window the socket's",
    "`send` is still the largest single item (a ninth of the busy time: one `send` per ping,",
    "written at once); the shared scheduler (`reschedule`, `_insert`, `_wake`) comes next,",
    "about a sixth; then the heartbeat's `pong` and `_ping`, Twisted's read path and the line",
    "parser, none above 5%. Start-up (6.2 s under the profiler, with 18,697 pings sent before",
    "the last connection was up) and the storm show the same few leaders below 5%: the",
    "connection machine's inputs (`supervisor/automaton.py`: six per connection at start-up,",
    "eleven per connection back in the storm), `send`, `connect_ex` and the scheduler; in the",
    "storm the half-open breakers' releases (`breaker.py` `_release`, each starting the",
    "connects it releases) are about a sixth of the busy time, cumulatively. Timed without the",
    "profiler (see the reading of the main suite), start-up is 13% more instructions per",
    "connection than stock and the same system calls.",
    "",
]


def _entries(entries: list[dict[str, Any]], total: float) -> list[str]:
    out = [
        "| function | calls | own (s) | share of the busy time | cumulative (s) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for entry in entries:
        own = float(entry["own_seconds"])
        share = f"{_fmt(own / total * 100 if total else None, 1)}%"
        if entry["function"] in WAITING:
            share = "(idle)"
        out.append(
            f"| `{entry['function']}` | {entry['calls']:,} | {_fmt(own, 3)} |"
            f" {share} | {_fmt(float(entry['cumulative_seconds']), 3)} |"
        )
    return out


def section(results: dict[str, Any]) -> list[str]:
    """
    The Markdown of the profile run.
    """
    run: dict[str, Any] = results["runs"][0] if results.get("runs") else {}
    when = datetime.fromtimestamp(results["started"], UTC).strftime("%Y-%m-%d %H:%M UTC")
    n = run.get("n", 0)
    share = _get(run, "steady", "cpu_share")
    lines = [
        f"## Where the time goes (netsupervisor, N={n:,}, cProfile)",
        "",
        f"- command: `{results['command']}`, {when}; load (1 min) and other processes:"
        f" {loadText(run)}",
        f"- under the profiler the process used {_fmt(share and share * 100, 1)}% of a core in the"
        f" steady window ({_fmt(_get(run, 'steady', 'pings_per_second'), 0)} pings a second):",
        "  the profiler's own cost is in those figures, so read the shares rather than the",
        "  seconds. Times are wall-clock (a CPU-time clock made the profiler itself saturate",
        "  the process); the reactor's wait, `epoll.poll`, is idle time, and each share below is",
        "  of the time outside it. Work done in C (the socket calls) shows as the built-in's own",
        "  time.",
        "",
    ]
    lines += NOTES
    if "error" in run:
        lines += [f"**The run failed:** {run['error']}", ""]
    profile: dict[str, Any] = run.get("profile", {})
    for key, title in PHASES:
        phase = profile.get(key)
        if phase is None:
            continue
        total = float(phase["total_seconds"])
        waiting = float(phase.get("waiting_seconds", 0.0))
        lines += [
            f"### {title}",
            "",
            f"{_fmt(total, 2)} s profiled, {_fmt(waiting, 2)} s of it waiting in `epoll.poll`:"
            f" {_fmt(total - waiting, 2)} s busy. By own time:",
            "",
            *_entries(phase["by_own"], total - waiting),
            "",
            "By cumulative time:",
            "",
            *_entries(phase["by_cumulative"], total - waiting),
            "",
        ]
    return lines
