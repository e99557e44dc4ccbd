"""
The recovery suite's part of the report (C{python -m benchmarks --suite
recovery}): the targets of issue 11, the storms side by side, the budgeted
storm, the flapping peer, and the storm figure
(C{docs/performance-storm.svg}).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from benchmarks.common import DISTURBED, failedRuns, stormMarks
from benchmarks.common import formatNumber as _fmt
from benchmarks.common import formatRatio as _ratio
from benchmarks.common import loadText as _load
from benchmarks.common import valueAt as _get
from benchmarks.common import verdict as _verdict

SVG_NAME = "performance-storm.svg"

Run = dict[str, Any]


class Recovery:
    """
    The runs of one recovery results file, by kind, size and round.
    """

    def __init__(self, results: dict[str, Any]) -> None:
        self.results = results
        self.runs: list[Run] = results["runs"]
        self.sizes: list[int] = results["sizes"]
        self.rounds = sorted({r.get("round", 0) for r in self.runs})
        self.rate: float = results.get("connect_rate", 1000.0)

    def find(self, label: str, n: int | None, round_: int) -> Run | None:
        for run in self.runs:
            matches = run.get("label", run.get("impl")) == label or (
                label == "budgeted"
                and str(run.get("label", "")).startswith("netsupervisor connect")
            )
            if matches and (n is None or run.get("n") == n) and run.get("round", 0) == round_:
                return run
        return None

    def storms(self) -> list[tuple[int, int, Run | None, Run | None]]:
        """
        (N, round, netsupervisor's run, the baseline's run) of every storm
        pair, by size then round.
        """
        return [
            (n, r, self.find("netsupervisor", n, r), self.find("baseline", n, r))
            for n in self.sizes
            for r in self.rounds
        ]

    def first(self, n: int, round_: int) -> str:
        """
        Which side of the storm pair ran first.
        """
        order = [
            r["label"]
            for r in self.runs
            if r.get("n") == n
            and r.get("round", 0) == round_
            and r.get("label") in ("netsupervisor", "baseline")
        ]
        return order[0] if order else "n/a"


def targets(rec: Recovery) -> list[str]:
    out = ["| target | N | round | figures | verdict |", "| --- | ---: | ---: | --- | --- |"]
    for n, r, ns, base in rec.storms():
        a = _get(ns, "storm", "attempts_per_connection_until_back")
        b = _get(base, "storm", "attempts_per_connection_until_back")
        out.append(
            f"| attempts per connection, kill → everyone back ≤ 1.2 | {n:,} | {r + 1} |"
            f" {_fmt(a)} (stock {_fmt(b)}) | {_verdict(None if a is None else a <= 1.2)} |"
        )
    for n, r, ns, base in rec.storms():
        a, b = (
            _get(ns, "storm", "peak_attempts_per_100ms"),
            _get(base, "storm", "peak_attempts_per_100ms"),
        )
        ok = None if a is None or not b else a <= 0.35 * b
        out.append(
            f"| peak attempts in any 100 ms ≤ 0.35x stock | {n:,} | {r + 1} |"
            f" {_fmt(a, 0)} vs {_fmt(b, 0)} = {_ratio(a, b)} | {_verdict(ok)} |"
        )
    for n, r, ns, base in rec.storms():
        a, b = _get(ns, "storm", "recovery_seconds"), _get(base, "storm", "recovery_seconds")
        pa = _get(ns, "storm", "recovery_p50_seconds")
        pb = _get(base, "storm", "recovery_p50_seconds")
        ok = None if a is None or not b else a <= b
        out.append(
            f"| everyone ESTABLISHED after the restart ≤ 1.0x stock | {n:,} | {r + 1} |"
            f" {_fmt(a)} s vs {_fmt(b)} s = {_ratio(a, b)} (p50 {_fmt(pa)} s vs"
            f" {_fmt(pb)} s) | {_verdict(ok)} |"
        )
    for n in rec.sizes:
        for r in rec.rounds:
            run = rec.find("budgeted", n, r)
            burst = (run or {}).get("connect_burst", 100)
            rate = (run or {}).get("connect_rate", rec.rate)
            peak = _get(run, "storm", "peak_attempts_per_100ms")
            limit = rate * 0.1 + burst
            out.append(
                f"| `connect_rate = {rate:g}`: peak per 100 ms ≤ {rate * 0.1:g} + burst"
                f" ({burst}) | {n:,} | {r + 1} | {_fmt(peak, 0)} (limit {limit:g}) |"
                f" {_verdict(None if peak is None else peak <= limit)} |"
            )
            back = _get(run, "storm", "recovery_seconds")
            bound = n / rate + 2
            out.append(
                f"| `connect_rate = {rate:g}`: recovery ≤ N/{rate:g} s + 2 s | {n:,} | {r + 1} |"
                f" {_fmt(back)} s (limit {bound:g} s) |"
                f" {_verdict(None if back is None else back <= bound)} |"
            )
    for r in rec.rounds:
        on = rec.find("flap guard on", None, r)
        off = rec.find("flap guard off (backoff alone)", None, r)
        a, b = _get(on, "flap", "attempts"), _get(off, "flap", "attempts")
        ok = None if a is None or not b else a <= 0.2 * b
        n = (on or {}).get("n", 0)
        out.append(
            f"| flapping peer, {rec.results.get('flap_seconds', 60):g} s: attempts with the flap"
            f" guard ≤ 0.2x backoff alone | {n:,} | {r + 1} | {_fmt(a, 0)} vs {_fmt(b, 0)} ="
            f" {_ratio(a, b)} | {_verdict(ok)} |"
        )
    return out


STORM_ROWS: list[tuple[str, tuple[str, ...], int]] = [
    ("peer down (s)", ("storm", "down_seconds"), 2),
    ("everyone ESTABLISHED again, after the restart (s)", ("storm", "recovery_seconds"), 2),
    (
        "half of them ESTABLISHED again, after the restart: p50 (s)",
        ("storm", "recovery_p50_seconds"),
        2,
    ),
    (
        "attempts per connection, kill → everyone back",
        ("storm", "attempts_per_connection_until_back"),
        2,
    ),
    ("attempts while the peer was down", ("storm", "attempts_while_down"), 0),
    ("  of which probes", ("storm", "attempts_by_reason", "probe"), 0),
    ("attempts released by a half-open breaker", ("storm", "attempts_by_reason", "release"), 0),
    ("peak attempts in any 100 ms", ("storm", "peak_attempts_per_100ms"), 0),
    (
        "peak attempts in any 100 ms after the restart",
        ("storm", "peak_attempts_per_100ms_after_restart"),
        0,
    ),
]


def stormTables(rec: Recovery) -> list[str]:
    out = []
    for n, r, ns, base in rec.storms():
        out += [
            f"**N = {n:,}, round {r + 1}** ({rec.first(n, r)} ran first)",
            "",
            "| measure | netsupervisor | stock ClientService | ratio |",
            "| --- | ---: | ---: | ---: |",
        ]
        for label, path, digits in STORM_ROWS:
            a, b = _get(ns, *path), _get(base, *path)
            ratio = _ratio(a, b) if not label.startswith(" ") and b else ""
            out.append(f"| {label} | {_fmt(a, digits)} | {_fmt(b, digits)} | {ratio} |")
        out.append(
            f"| load average (1 min) before → after; other processes | {_load(ns)} |"
            f" {_load(base)} | |"
        )
        out.append("")
    return out


def budgetTable(rec: Recovery) -> list[str]:
    out = [
        "| N | round | peak per 100 ms | everyone back after the restart (s) | p50 (s) |"
        " attempts per connection, kill → back | load before → after |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for n in rec.sizes:
        for r in rec.rounds:
            run = rec.find("budgeted", n, r)
            out.append(
                f"| {n:,} | {r + 1} | {_fmt(_get(run, 'storm', 'peak_attempts_per_100ms'), 0)} |"
                f" {_fmt(_get(run, 'storm', 'recovery_seconds'))} |"
                f" {_fmt(_get(run, 'storm', 'recovery_p50_seconds'))} |"
                f" {_fmt(_get(run, 'storm', 'attempts_per_connection_until_back'))} |"
                f" {_load(run)} |"
            )
    return out


FLAP_SIDES = ["flap guard on", "flap guard off (backoff alone)", "baseline"]


def flapTable(rec: Recovery) -> list[str]:
    out = [
        "| round | side | attempts | per connection | losses | flap holds |"
        " ESTABLISHED at the end | load before → after |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rec.rounds:
        for side in FLAP_SIDES:
            run = rec.find(side, None, r)
            if run is None:
                continue
            label = "stock ClientService (reference)" if side == "baseline" else side
            out.append(
                f"| {r + 1} | {label} | {_fmt(_get(run, 'flap', 'attempts'), 0)} |"
                f" {_fmt(_get(run, 'flap', 'attempts_per_connection'))} |"
                f" {_fmt(_get(run, 'flap', 'losses'), 0)} |"
                f" {_fmt(_get(run, 'flap', 'flap_holds'), 0)} |"
                f" {_fmt(_get(run, 'flap', 'established_at_end'), 0)} | {_load(run)} |"
            )
    return out


SERIES = [
    ("netsupervisor (defaults)", "netsupervisor", "#2b6cb0"),
    ("stock ClientService", "baseline", "#c05621"),
    ("netsupervisor, connect_rate", "budgeted", "#2f855a"),
]


def stormSVG(rec: Recovery) -> str:
    """
    For each size (first round): attempts per 100 ms of each side, one bar
    panel each, on the same scales within a size; time 0 is the kill.
    """
    width, panel, left, gap = 900, 110, 60, 36
    blocks = []
    for n in rec.sizes:
        runs = [
            (name, rec.find(label, n, rec.rounds[0] if rec.rounds else 0), colour)
            for name, label, colour in SERIES
        ]
        storms = [(name, (run or {}).get("storm", {}), colour) for name, run, colour in runs]
        blocks.append((n, storms))
    # The time axis spans the longer of the two default sides; a slower
    # budgeted run is clipped there.
    length = max(
        [len(s.get("histogram", [])) for _, storms in blocks for _, s, _ in storms[:2]] + [1]
    )
    barWidth = (width - left - 10) / length
    height = 30 + sum(30 + len(storms) * (panel + gap) for _, storms in blocks)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        ' font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="18" font-size="14">Reconnect storm: connect attempts per 100 ms,'
        " peer killed at 0 s (round 1 of the recovery suite)</text>",
    ]
    y = 30
    for n, storms in blocks:
        peak = max([1, *(max(s.get("histogram", [0]) or [0]) for _, s, _ in storms)])
        parts.append(
            f'<text x="{left}" y="{y + 16}" font-weight="bold">N = {n:,}'
            f" (same scale for the three panels: full height = {peak})</text>"
        )
        y += 30
        for name, storm, colour in storms:
            top, base = y + 14, y + 14 + panel
            label = name
            if name.endswith("connect_rate"):
                label = f"{name} = {rec.rate:g}"
            parts.append(
                f'<line x1="{left}" y1="{base}" x2="{width - 10}" y2="{base}" stroke="black"/>'
            )
            parts.append(f'<text x="{left - 5}" y="{top + 10}" text-anchor="end">{peak}</text>')
            parts.append(f'<text x="{left - 5}" y="{base}" text-anchor="end">0</text>')
            histogram = storm.get("histogram", [])
            if len(histogram) > length:
                label += " (cut where the other two end)"
            for i, count in enumerate(histogram[:length]):
                if count:
                    # At least 2 px: a single probe shows.
                    h = max(2.0, count / peak * panel)
                    parts.append(
                        f'<rect x="{left + i * barWidth:.2f}" y="{base - h:.2f}"'
                        f' width="{max(barWidth, 0.6):.2f}" height="{h:.2f}" fill="{colour}"/>'
                    )
            parts.append(f'<text x="{left}" y="{y + 10}">{label}</text>')
            parts += stormMarks(storm, left, barWidth, top, base, length, 2, "peer back")
            y += panel + gap
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def chart(rec: Recovery, n: int) -> list[str]:
    """
    A text version of the figure at size C{n}: one row per 200 ms, the
    busiest 100 ms of each side.
    """
    round_ = rec.rounds[0] if rec.rounds else 0
    series = [
        (label, (rec.find(label, n, round_) or {}).get("storm", {})) for _, label, _ in SERIES
    ]
    # As long as the longer of the two default sides (a slower budgeted run is cut).
    length = max([len(s.get("histogram", [])) for _, s in series[:2]] + [0])
    if not length:
        return ["(no storm data)"]
    out = [
        f"N = {n:,}: attempts in the busiest 100 ms of each 200 ms (time 0: the kill)",
        f"{'t (s)':>6} {'netsupervisor':>14} {'stock':>8} {'budgeted':>9}",
    ]
    restart = series[0][1].get("restart_bin", -1)
    for start in range(0, length, 2):
        values = [max(s.get("histogram", [])[start : start + 2] or [0]) for _, s in series]
        mark = "  <- peer back (netsupervisor's run)" if start <= restart < start + 2 else ""
        out.append(f"{start / 10:6.1f} {values[0]:>14} {values[1]:>8} {values[2]:>9}{mark}")
    return out


def section(results: dict[str, Any]) -> list[str]:
    """
    The Markdown of the recovery suite.
    """
    rec = Recovery(results)
    machine = results["machine"]
    when = datetime.fromtimestamp(results["started"], UTC).strftime("%Y-%m-%d %H:%M UTC")
    failed = [r for r in rec.runs if "error" in r]
    lines = [
        "## Fleet-safe recovery (issue 11)",
        "",
        "The reconnect storm, the storm under a connect budget, and a flapping peer, netsupervisor",
        "with its defaults (circuit breaker per target, flap guard; the budget is off by default)",
        "beside the stock `ClientService` baseline with its own. Rerun with:",
        "",
        "```sh",
        ".venv/bin/python -m benchmarks --suite recovery   # 5,000 and 10,000, two rounds",
        ".venv/bin/python -m benchmarks --suite recovery --quick --output /tmp/bench   # N = 200",
        "```",
        "",
        "Options: `--sizes`, `--repeat ROUNDS` (default 2; every other round runs the sides in the",
        "other order), `--connect-rate` (default 1000), `--flap-size` (default 1000),",
        "`--flap-seconds` (default 60). The figures below are from this run:",
        "",
        f"- command: `{results['command']}`, {when}, {results['seconds'] / 60:.0f} minutes",
        f"- machine: {machine['nproc']} CPUs ({machine['cpu_model']}), Linux {machine['kernel']},"
        f" Python {machine['python']}, Twisted {machine['twisted']}",
        "- every run is on its own line below with the 1-minute load average before and after it,",
        "  and the share of the machine's CPUs other processes used while it ran (the machine is",
        f"  shared); a run where they used more than {DISTURBED:.0%} is marked *disturbed*.",
        "",
    ]
    lines += failedRuns(failed)
    lines += [
        "### Targets",
        "",
        *targets(rec),
        "",
        "### The storm, side by side",
        "",
        "The peer is killed (SIGKILL) with every connection ESTABLISHED and restarted on the same",
        "port about 5 s later. Attempts are counted in the measured process (netsupervisor:",
        "transitions into CONNECTING, with their reason; stock: calls of the endpoint's",
        "`connect`).",
        '"Everyone back" is the last connection ESTABLISHED again; p50 is when half of them were.',
        "",
        *stormTables(rec),
        f"![attempts per 100 ms during the storm]({SVG_NAME})",
        "",
        "```text",
    ]
    for n in rec.sizes:
        lines += [*chart(rec, n), ""]
    lines[-1:] = ["```", ""]
    lines += [
        f"### The storm with `[supervisor] connect_rate = {rec.rate:g}` (`connect_burst = 100`)",
        "",
        *budgetTable(rec),
        "",
        f"### A flapping peer ({results.get('flap_seconds', 60):g} s)",
        "",
        f"{results.get('flap_size', 1000):,} connections are ESTABLISHED to a peer"
        " (`python -m benchmarks.flappeer`) that then starts",
        "flapping: on every connection it answers one more heartbeat and drops the connection",
        "0.5 s later, and it treats every new connection the same way. Attempts are counted",
        "from then for the time given. **Backoff alone** is netsupervisor with its flap guard off",
        "(`flap = { max = 0 }`) and every other setting at its default; the stock ClientService",
        "is shown for reference (its retry delay starts over at every successful connect).",
        "",
        *flapTable(rec),
        "",
    ]
    return lines


NOTES = """### Reading the figures (recovery suite)

What the 2026-12-02 01:43 run shows, on aea0ee8 (the same machine as the 22:49 run, an Intel
Xeon; the earlier runs were on an AMD EPYC):

- **All 22 rows are met.** Attempts per connection from the kill to everyone back 1.00 (stock
  2.00-2.89), peaks 0.16-0.33x stock's, everyone back after the restart in 0.61-0.69x stock's
  time at 5,000 and 0.56x at 10,000 in round 2 (3.18 against 5.64 s; 0.12x in round 1, where
  stock took 25.3 s, below), the connect budget's rows and the flapping peer's (0.12x). No
  flap hold in any storm; every loss at the kill counted once (5,000 or 10,000 losses).
- **Stock's round 1 at 10,000: 18,748 losses for 10,000 connections.** 8,748 of its
  connections, up again after the restart, were lost a second time, and the last came back
  25.3 s after it. This is what the 22:49 run saw on our side in one storm (below): a
  restarted peer taking thousands of connections a second ends some of the first sessions
  (or answers their first heartbeats late), for either implementation.

What the 2026-12-01 22:49 run showed, on ad15893: 21 of the 22 rows met.

- **Missed: everyone back at 10,000 in round 2, 63.8 s against 5.97 s.** Half were back in
  1.62 s and 99% in 3.76 s, but 159 connections, ESTABLISHED again after the restart, were
  lost a second time within the flap guard's 10 s (`flap.max = 1`), and the guard held them
  for `flap.hold` (60 s) before their retry: 10,159 losses (8,970 `lost`, 1,189 `heartbeat`),
  159 flap holds, 159 attempts of reason `retry`. The run does not record why those second
  sessions ended. It did not happen again in 52 storms at 10,000 run alone after it (23:04,
  six on ad15893 alternated with six on 7c14049; 23:32-23:44, forty on ad15893 recording every
  loss: no connection lost twice, no flap hold, everyone back in 2.80-3.66 s), nor in the 3
  storms of the main suite's 22:31 run, the 4 of 2026-11-30, the 3 of the main suite's
  2026-12-02 01:06 run or the 4 of the 01:43 run above.
  A restarted peer that takes 4,000 connections a second and then drops some of them (or
  answers their first heartbeats late) looks, to the flap guard, like a peer that drops every
  session: what to do about that is left open.
- **Losses at the kill** are partly `heartbeat` (243-947 of 10,000 at 01:43, 510-1,189 at
  22:49; none on 2026-11-30): the reactor reads the peer's closes in bounded turns, and a
  connection whose close is still unread when its heartbeat's deadline comes due is dropped
  for it. Either way the connection is lost once, and counts once against its breaker.

What was learnt on 2026-11-30 (the figures in the bullets below are from those runs):

From the 2026-11-30 17:25 run and five earlier ones on the same 2-vCPU machine,
shared with other work: the "others" figure of each run says how much of the machine other
processes took; runs above 10% are marked, and some took more than half of it.

- **Losses open the breaker.** A member's connection lost from ESTABLISHED counts against
  its target like a failed attempt, so when N connections lose their peer at once the breaker
  opens on the fifth loss, before any retry is due (full jitter below `backoff.initial`, 1 s).
  While the peer is down only probes go out (one every 0.25-0.5 s): 1.00 attempts per
  connection from the kill to everyone back, at both sizes, against stock's 2.3-2.9. Earlier
  runs, before losses counted, let the retries due before the first refusals out: a fifth to
  two thirds of N in the first second or two, the peak of every storm and 1.2-1.65 attempts
  per connection.
- **Time until everyone is back** is the wait for the next probe (up to `probe_max`, 0.5 s)
  plus the release, spread over about 2.5 s whatever N (2,000 a second at 5,000, 4,000 at
  10,000, the cap `release_rate`), plus pauses in the band: at 10,000 the process is busy
  establishing the connections it just released (gaps of 100-200 ms with no release), and
  that, not the pace, is what keeps it near stock there (0.88-1.01x), where at 5,000 it is
  about 0.7x. A fixed pace cannot do both: 3,000 a second kept the peak under 0.35x of stock's
  at 10,000 but not at 5,000 (329 per 100 ms against 807), and took 10,000 back no sooner.
- **The connect budget** holds its targets in every run: at most 157-180 attempts per 100 ms
  for `connect_rate = 1000`, `connect_burst = 100`, and everyone back in 5.0 s at 5,000 and
  10.7 s at 10,000 (N / 1,000 plus the wait for the probe).
- **The flapping peer**: 1.00 attempt per connection in 60 s with the flap guard (each
  connection retried once after its first loss, then held at the second), against 8.30-8.33
  with the backoff alone (its delays grow because a 1-2 s session never proves healthy), and
  16.8 for stock `ClientService` (its delay starts over at every successful connect): 0.12x.
  The guard needs `max = 1` for that: with `max = 2` each connection retries twice (0.24x);
  and `hold` at least the length of the measurement.
- **Disturbed runs** agree with the quiet ones where it matters: attempts per connection, the probes
  and the band do not depend on the load; the recovery times grow with it (stock's too).

"""

METHOD = """## Method (recovery suite)

- **Processes.** As in the main suite: for every run a fresh peer and a fresh measured child,
  killed by PID at the end. The runner reads `/proc/loadavg` before and after each run, and
  `/proc/stat` with the child's and the peers' own CPU time to tell how much of the machine
  other processes used meanwhile.
- **Storm.** The child establishes N connections, waits 3 s, asks the runner to kill the peer
  (SIGKILL) and restart it on the same port 5 s later (`--down`); it records every attempt with
  its time (and, for netsupervisor, the transition's reason: `retry`, `probe`, `release`) and
  every connection's first ESTABLISHED after the restart, until all N are back. Peaks are counted
  in 100 ms bins from the kill.
- **Sides.** netsupervisor: a `Supervisor` of N `line` connections with every default but the
  heartbeat's (1 s interval, 0.5 s timeout, 2 misses, as the baseline's): its backoff, its
  breaker (scope `endpoint`: the N connections share one) and its flap guard. Stock: one
  `ClientService` per connection with its default retry policy.
- **Budgeted storm.** The same storm, netsupervisor only, with `[supervisor] connect_rate`
  (default 1000) and `connect_burst = 100`.
- **Flapping peer.** `python -m benchmarks.flappeer` serves as the plain peer until the child
  asks the runner to make it flap (SIGUSR1); attempts are counted from then.
- **Rounds.** Each round measures every size for both sides, then the flapping peer; every other
  round runs the sides in the other order.
"""
