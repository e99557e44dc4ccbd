"""
C{docs/reliability.md} from the figures the chaos suite recorded
(L{tests.chaos.conftest.Figures}, written as JSON by C{python -m tests.chaos}).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import attrs

from supervisor.testing.chaos import FAULT_TYPES
from tests.chaos.trial import BACKOFF, CONNECT_TIMEOUT, HEARTBEAT, SLACK

COMMAND = ".venv/bin/python -m tests.chaos"


def _n(value: Any, digits: int = 3, scale: float = 1.0) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "n/a"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value * scale:,.{digits}f}"


def _epytext(text: str) -> str:
    """
    A docstring's epytext markup as Markdown.
    """
    text = re.sub(r"[CL]\{([^}]*)\}", r"`\1`", text)
    return " ".join(text.split())


def faultTable() -> list[str]:
    """
    Every fault kind, its keys with their defaults, and what it does (from
    the classes themselves, so that this table cannot drift).
    """
    out = ["| fault | keys (default) | what it does |", "| --- | --- | --- |"]
    for kind, cls in FAULT_TYPES.items():
        keys = []
        for field in attrs.fields(cls):
            default = field.default
            keys.append(
                f"`{field.name}`" if default is attrs.NOTHING else f"`{field.name}` ({default})"
            )
        doc = _epytext((cls.__doc__ or "").strip().split("\n\n")[0])
        out.append(f"| `{kind}` | {', '.join(keys) or 'n/a'} | {doc} |")
    return out


def _faultRows(cases: dict[str, dict[str, Any]]) -> list[str]:
    out = [
        "| fault | protocol | expected | outcome | detected (s) | bound (s) "
        "| RTT under the fault (ms) | recovered (s) | sockets left | RSS Δ (KiB) |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key in sorted(cases, key=_order):
        c = cases[key]
        if c.get("kind") != "fault":
            continue
        rtt = "n/a"
        if "rtt_min" in c:
            rtt = f"{_n(c['rtt_min'], 1, 1000)} to {_n(c['rtt_max'], 1, 1000)}"
        outcome = c.get("outcome", "n/a")
        if "reads" in c:
            outcome += f"; {c['pongs']} pongs in {c['reads']} reads"
        elif "pongs" in c:
            outcome += f"; {c['pongs']} pongs"
        out.append(
            f"| {c['fault']} | {c['protocol']} | {c['expected']} | {outcome} "
            f"| {_n(c.get('detect_seconds'))} | {_n(c.get('bound_seconds'), 2)} | {rtt} "
            f"| {_n(c.get('recovery_seconds'))} | {c.get('sockets_delta', 'n/a')} "
            f"| {c.get('rss_delta_kib', 'n/a')} |"
        )
    return out


def _order(key: str) -> tuple[int, str, str]:
    from tests.chaos.test_faults import CASES, PROTOCOLS

    parts = key.split("/")
    names = [c.name for c in CASES] + ["stall-handshake"]
    fault = parts[2] if len(parts) > 2 else ""
    index = names.index(fault) if fault in names else len(names)
    protocol = PROTOCOLS.index(parts[1]) if parts[1] in PROTOCOLS else 9
    return index, str(protocol), key


def _soakRows(soak: dict[str, Any]) -> list[str]:
    plain, traced = soak.get("plain", {}), soak.get("traced", {})

    def both(label: str, get: Any, digits: int = 0) -> str:
        a, b = get(plain), get(traced)
        fa = a if isinstance(a, str) else _n(a, digits)
        fb = b if isinstance(b, str) else _n(b, digits)
        return f"| {label} | {fa} | {fb} |"

    mib = 1 / (1024 * 1024)

    def calls(run: dict[str, Any]) -> dict[str, Any]:
        value: dict[str, Any] = run.get("delayed_calls", {})
        return value

    def rss(run: dict[str, Any], key: str) -> float | None:
        value = run.get("rss", {}).get(key)
        return None if value is None else value * mib

    return [
        "| figure | plain run | traced run (tracemalloc on) |",
        "| --- | ---: | ---: |",
        both("connections", lambda r: r.get("connections")),
        both("warm-up flaps (until every history is full)", lambda r: r.get("warmup_cycles")),
        both("measured flaps", lambda r: r.get("cycles_measured")),
        both("measured window (s)", lambda r: r.get("measured_seconds"), 1),
        both(
            "outcomes (all cycles)",
            lambda r: ", ".join(f"{k}: {v:,}" for k, v in sorted(r.get("outcomes", {}).items())),
        ),
        both("RSS after the warm-up (MiB)", lambda r: rss(r, "warm"), 1),
        both("RSS at the end (MiB)", lambda r: rss(r, "end"), 1),
        both("RSS growth (%)", lambda r: r.get("rss", {}).get("growth_percent"), 2),
        both("descriptors before the start", lambda r: r.get("descriptors", {}).get("before")),
        both("descriptors after the stop", lambda r: r.get("descriptors", {}).get("after")),
        both(
            "DelayedCalls pending, most at once",
            lambda r: r.get("delayed_calls", {}).get("max_pending"),
        ),
        both(
            "DelayedCalls left after the stop",
            lambda r: len(r.get("delayed_calls", {}).get("left", [])),
        ),
        both("reactor lag p50 (ms)", lambda r: r.get("lag", {}).get("p50", 0) * 1000, 1),
        both("reactor lag p99 (ms)", lambda r: r.get("lag", {}).get("p99", 0) * 1000, 1),
        both("reactor lag max (ms)", lambda r: r.get("lag", {}).get("max", 0) * 1000, 1),
        both("errors logged", lambda r: len(r.get("errors", []))),
        both("states after the stop", lambda r: ", ".join(r.get("states_after", []))),
    ]


def _tracemallocRows(soak: dict[str, Any]) -> list[str]:
    out = ["| where | size Δ (KiB) | objects Δ |", "| --- | ---: | ---: |"]
    for d in soak.get("traced", {}).get("tracemalloc", []):
        # Paths as the project and its dependencies name them, wherever the
        # run's checkout or virtual environment was.
        where = re.sub(r".*/site-packages/", "", d["where"])
        where = re.sub(r"^/.*?/(?=(supervisor|plugins|tests|benchmarks)/)", "", where)
        out.append(f"| `{where}` | {d['size_diff'] / 1024:,.1f} | {d['count_diff']:,} |")
    return out


def _signalRows(cases: dict[str, dict[str, Any]]) -> list[str]:
    out = [
        "| case | connections | outcome | exit status | exit (s) | bound (s) |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for key in sorted(k for k, c in cases.items() if c.get("kind") == "signals"):
        c = cases[key]
        code = c.get("exit_code")
        shell = 128 - code if isinstance(code, int) and code < 0 else code
        outcome = c.get("outcome")
        if outcome is None and "reloads" in c:
            reloads = c["reloads"]
            outcome = (
                f"{reloads.get('success', 0)} reloads applied, {reloads.get('failure', 0)} refused;"
                f" every configured name ESTABLISHED {_n(c.get('recovered_seconds'), 1)} s after"
                " the peer was back; at most"
                f" {c.get('most_live_sockets_per_name', 'n/a')} live socket per name"
            )
        drain = c.get("drain_timeout")
        bound = drain + 1 if isinstance(drain, int | float) else None
        out.append(
            f"| {c.get('what', key)} | {_n(c.get('connections'), 0)} | {outcome or 'n/a'} "
            f"| {shell if shell is not None else 'n/a'} | {_n(c.get('exit_seconds'), 2)} "
            f"| {_n(bound, 1)} |"
        )
    return out


def _stormRows(storm: dict[str, Any]) -> list[str]:
    reloads = storm.get("reloads", {})

    def n(key: str) -> str:
        return _n(storm.get(key), 0)

    return [
        "| figure | value |",
        "| --- | ---: |",
        f"| SIGHUPs sent / seconds | {n('sighups')} / {_n(storm.get('storm_seconds'), 2)} |",
        f"| reloads applied / refused | {_n(reloads.get('success'), 0)} /"
        f" {_n(reloads.get('failure'), 0)} |",
        f"| ESTABLISHED connections a reload closed (`removed`) | {n('reloads_met_established')} |",
        f"| connections no reload touched, left alone | {n('untouched_steady')} |",
        f"| names configured at the end, all ESTABLISHED | {n('names_at_end')} |",
        f"| kernel socket samples / most live sockets of one name | {n('kernel_samples')} /"
        f" {n('most_live_sockets_per_name')} |",
        f"| `/connections` samples / listing a name twice | {n('listings')} / 0 |",
        f"| transitions logged / out of one name's order | {n('transitions_logged')} /"
        f" {n('overlaps')} |",
        f"| slowest `/healthz` during the storm (ms) |"
        f" {_n(storm.get('healthz_slowest_seconds'), 0, 1000)} |",
    ]


def _rotationRows(rotation: dict[str, Any]) -> list[str]:
    if not rotation:
        return ["(not measured)"]
    perSecond = rotation.get("per_second", [])
    fifths = rotation.get("lifetime_fifths", [])
    ms = 1000.0
    return [
        "| figure | value |",
        "| --- | ---: |",
        f"| connections, `max_lifetime`, `lifetime_jitter` | {rotation['connections']:,},"
        f" {rotation['max_lifetime']:g} s, {rotation['lifetime_jitter']:g} |",
        f"| all ESTABLISHED after (s) | {_n(rotation.get('start_seconds'), 2)} |",
        f"| rotations in {rotation['window_seconds']:g} s | {rotation['rotations']:,} |",
        f"| lifetimes drawn, shortest / longest (s) | {_n(rotation.get('lifetime_min'))} /"
        f" {_n(rotation.get('lifetime_max'))} |",
        f"| lifetimes in each fifth of the band | {' / '.join(str(f) for f in fifths)} |",
        f"| most rotations due in one {rotation['bin_seconds']:g} s (bound) |"
        f" {rotation['due_max_per_bin']} ({_n(rotation['bound_per_bin'], 0)}) |",
        f"| most rotations done in one {rotation['bin_seconds']:g} s (bound, with the lateness) |"
        f" {rotation['done_max_per_bin']} ({_n(rotation['done_bound_per_bin'], 0)}) |",
        f"| rotation after it was due, p99 / max (ms) | {_n(rotation.get('late_p99'), 0, ms)} /"
        f" {_n(rotation.get('late_max'), 0, ms)} |",
        f"| rotation to ESTABLISHED again, p50 / p99 / max (ms) |"
        f" {_n(rotation.get('back_p50'), 0, ms)} / {_n(rotation.get('back_p99'), 0, ms)} /"
        f" {_n(rotation.get('back_max'), 0, ms)} |",
        f"| connections lost otherwise | {rotation.get('other_losses', 'n/a')} |",
        f"| heartbeats answered / missed | {rotation.get('heartbeats_answered', 0):,} /"
        f" {rotation.get('heartbeats_missed', 'n/a')} |",
        f"| ESTABLISHED periods, each with a heartbeat answered |"
        f" {rotation.get('established_periods_checked', 0):,} |",
        f"| fewest heartbeats answered in one second |"
        f" {_n(rotation.get('heartbeats_min_per_second'), 0)} |",
        f"| reactor lag p99 / max (ms) | {_n(rotation.get('lag_p99'), 0, ms)} /"
        f" {_n(rotation.get('lag_max'), 0, ms)} |",
        "",
        "Rotations in each second of the window, from the first connection ESTABLISHED:",
        "",
        "| second | " + " | ".join(str(i) for i in range(len(perSecond))) + " |",
        "| --- | " + " | ".join("---:" for _ in perSecond) + " |",
        "| rotations | " + " | ".join(str(n) for n in perSecond) + " |",
    ]


def render(results: dict[str, Any]) -> str:
    """
    The Markdown of C{docs/reliability.md} for C{results}.
    """
    run = results.get("run", {})
    cases: dict[str, dict[str, Any]] = results.get("cases", {})
    machine = run.get("machine", {})
    netns = [c for c in cases.values() if c.get("kind") == "netns"]
    soak = next((c for c in cases.values() if c.get("kind") == "soak"), {})
    storm = cases.get("signals/line/sighup-storm", {})
    rotation = next((c for c in cases.values() if c.get("kind") == "rotation"), {})
    memory = machine.get("memory_bytes", 0) / 2**30
    lines = [
        "# Reliability: the chaos suite",
        "",
        f"<!-- Generated by `{COMMAND}`; do not edit by hand: rerun instead. -->",
        "",
        "The chaos suite (`tests/chaos/`) puts real peers (the line peer, redis-server,",
        "nats-server, mosquitto) behind a fault-injecting proxy, drops packets in the kernel",
        "between two network namespaces, flaps a thousand connections ten thousand times,",
        "signals a loaded `twistd netsupervisor` while its peers die and come back, and",
        "rotates a thousand connections by their lifetime.",
        "Every figure below is what its last run measured; every expectation is a test",
        "assertion. Rerun the suite and rewrite this file with:",
        "",
        "```sh",
        f"{COMMAND}              # runs tests/chaos (about 5 minutes here), then writes this file",
        f"{COMMAND} --from-results tests/chaos/results.json   # rewrite from the last results",
        "```",
        "",
        "`--output PATH` (the JSON figures, default `tests/chaos/results.json`), `--report PATH`",
        "(this file). The same tests run in `./scripts/test`; the soak, the namespace test and",
        "the rotation are marked `slow` (`-m 'not slow'` leaves them out of a quick local run;",
        "CI runs them).",
        "",
        "## This run",
        "",
        f"- command: `{COMMAND}` ({_n(run.get('seconds'), 0)} s),"
        f" pytest: {run.get('pytest', 'n/a')}",
        f"- machine: {machine.get('nproc', '?')} CPUs ({machine.get('cpu_model', '?')}),"
        f" {memory:.1f} GiB, Linux {machine.get('kernel', '?')}; load average at the start"
        f" {run.get('load', '?')}",
        f"- Python {machine.get('python', '?')}, Twisted {machine.get('twisted', '?')}",
        f"- heartbeat: interval {HEARTBEAT.interval:g} s, timeout {HEARTBEAT.timeout:g} s,"
        f" misses {HEARTBEAT.misses}: detection bound {HEARTBEAT.detectionBound:g} s, asserted"
        f" with {SLACK:g} s of slack; connect timeout {CONNECT_TIMEOUT:g} s; backoff"
        f" {BACKOFF.initial:g} s to {BACKOFF.max:g} s, {BACKOFF.jitter} jitter",
        "",
        "## Faults through the chaos proxy",
        "",
        "One supervised connection per case, in-process on the real reactor (a `Supervisor`",
        "service with its metrics collector, as `twistd netsupervisor` runs it), through",
        "`supervisor.testing.chaos.ChaosProxy` to a real peer. A case passes when the",
        "connection reaches the expected state with the expected reason, the scraped metrics",
        "agree (`connection_state`, `disconnects_total{reason}`, `heartbeat_misses_total`,",
        "`heartbeat_last_rtt_seconds`, `connect_failures_total{reason}`), nothing logs a",
        "traceback, it is ESTABLISHED again with a heartbeat answered once the fault is",
        "cleared, and no socket is left open. *Detected* is from the moment the fault was set",
        "(or the connection started, for `stall-handshake`) to the transition; *recovered*,",
        "from the moment the fault was cleared to the first heartbeat answered after it. A",
        "dropped connection also tried again under the fault, without ever going CLOSED.",
        "",
        *_faultRows(cases),
        "",
        "*RSS Δ* is the test process's resident memory after the case less before it: noise",
        "of a few pages, shown so that a leak would stand out.",
        "",
        "## Kernel blackhole (network namespaces)",
        "",
        "`twistd -n netsupervisor` in one network namespace, a line peer in another, joined by",
        "a veth pair (addresses 10.213.57.1/30 and .2/30, which exist only inside the two",
        "namespaces); then nftables rules in the peer's namespace drop every packet of the",
        "connection, counted by the kernel. Only the heartbeats can tell. Needs root (the",
        "test skips without it, and fails under `CI=true`); the namespaces are deleted at",
        "teardown whatever happened.",
        "",
        "| case | expected | outcome | detected (s) | bound (s) | packets dropped "
        "| recovered (s) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
        *[
            f"| {c['what']} | {c['expected']} | {c['outcome']} | {_n(c.get('detect_seconds'))}"
            f" | {_n(c.get('bound_seconds'), 2)} | {c.get('dropped_packets', 'n/a')}"
            f" | {_n(c.get('recovery_seconds'))} |"
            for c in netns
        ],
        "",
        "## Flap soak",
        "",
        "A thousand line connections to a peer that accepts and then drops each one (the",
        "chaos proxy, `reset:after=0.02`, in front of a line peer), in a child process of its",
        "own (`python -m tests.chaos.soak`): a warm-up until every connection's 50-transition",
        "history is full, then 10,000 measured flaps, then a stop. The test asserts RSS",
        "growth ≤ 5%, descriptors back to their count before the start, no DelayedCall left",
        "and at most one pending per connection (plus a few), reactor lag p99 ≤ 500 ms and",
        "max ≤ 2 s, no error logged. The traced run repeats it with tracemalloc on from the",
        "start, which slows every allocation (its pace is not judged), for the largest",
        "memory differences between the end of the warm-up and the end.",
        "",
        *_soakRows(soak),
        "",
        "The ten largest differences by line (traced run, end of the measured flaps less the",
        "end of the warm-up). What is there at either moment includes the attempts in flight",
        "then (their timers, Deferreds and transports), which come and go with the flapping:",
        "a leak would be a line that grows with the number of flaps, run after run.",
        "",
        *_tracemallocRows(soak),
        "",
        "## Signals under load",
        "",
        "A real `twistd -n netsupervisor` process (`tests/chaos/test_signals.py`) with 300 line",
        "connections, half to a peer that stays up and half to one that is killed (SIGKILL)",
        "and started again, or 300 redis connections to a redis-server frozen with SIGSTOP;",
        "heartbeat interval 1 s, timeout 2 s; `drain_timeout` 2 s. Each connection binds its",
        "own loopback source address, so the kernel's socket table says how many live TCP",
        "connections (ESTABLISHED or SYN_SENT) each name holds. The SIGHUP storm writes 20",
        "configurations in 2 s (each removes 3 names, adds 3, among them the 3 the previous one",
        "removed, and changes 3; written atomically) and signals after each; the killed peer is",
        "started again after the 10th. The test asserts: the process keeps running; no failed",
        "reload; never two live sockets of one name (the kernel's table, sampled; two reads in",
        "a row must both show them, one read not being atomic), never a name listed twice",
        "(`/connections`, sampled), and the log's transitions read as one state machine per",
        "name at a time (exact); no connection that no reload touched changed state; every",
        "configured name ESTABLISHED once the peer is back; then SIGTERM: status 143 within",
        "`drain_timeout` + 1 s, the drain's own log line, no traceback. SIGHUPs that arrive",
        "faster than the process runs merge into one (POSIX keeps one pending): fewer reloads,",
        "each of the latest file. *Exit* is from the (first) SIGTERM to the process's end, as",
        "its parent sees it; the status is the shell's (128 + the signal).",
        "",
        *_signalRows(cases),
        "",
        "The SIGHUP storm in figures:",
        "",
        *_stormRows(storm),
        "",
        "## Rotation at 1,000 connections",
        "",
        "A `Supervisor` on the real reactor (`tests/chaos/test_rotation.py`), 1,000 line",
        "connections to one peer, `max_lifetime = 5` and the default `lifetime_jitter`, for",
        "20 seconds from the first connection ESTABLISHED. Each lifetime is drawn from",
        "`[L(1-j), L]`, whenever the connection came up, so the chance that one connection",
        "rotates in any window of `w` seconds is at most `w / (L j)`, and the fleet's expected",
        "count at most `N w / (L j)`: a rate of `N / (L j)`, 2,000 per second here (for",
        "10,000 connections with `max_lifetime = 600` it is 167 per second). At this scale",
        "the band (`L j` = 0.5 s) is narrower than a second: a fleet that came up together",
        "rotates in waves, each within about a second, and the later waves (sums of more",
        "draws) only slowly spread; a per-second count can only be bounded by `N`. So the",
        "test judges every 0.1 s window, against `N w / (L j)` plus five standard deviations:",
        "the rotations due (each connection's lifetime as drawn) and the rotations done (whose",
        "window is widened by how late the reactor ran them). It also asserts every lifetime",
        "in its band and each fifth of the band holding 10% to 30% of them (a constant or a",
        "narrower draw fails), no transition but a rotation's, ESTABLISHED again within 2 s",
        "of each rotation, and a heartbeat answered in every ESTABLISHED period, none missed.",
        "",
        *_rotationRows(rotation),
        "",
        "## The chaos proxy",
        "",
        "The proxy the suite uses is public: `supervisor.testing.chaos` for tests (it takes",
        "the reactor and the target endpoint as parameters), `python -m supervisor.chaos` for",
        "a shell.",
        "",
        "```python",
        "from twisted.internet.endpoints import TCP4ClientEndpoint",
        "from supervisor.testing.chaos import ChaosProxy, Latency, Stall",
        "",
        'proxy = ChaosProxy(reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", 6379))',
        'port = reactor.listenTCP(0, proxy, interface="127.0.0.1")',
        "proxy.setFaults(Latency(0.2, jitter=0.05))   # live and new connections alike",
        "proxy.setFaults(Stall())",
        "proxy.setFaults()                            # a plain proxy again",
        "yield proxy.close()                          # abort every proxied connection",
        "```",
        "",
        "```sh",
        "python -m supervisor.chaos --listen 7001 --target 127.0.0.1:6379 \\",
        "    --fault latency:delay=0.2,jitter=0.05 --control 7002",
        "printf 'set stall\\nstatus\\nclear\\nquit\\n' | nc 127.0.0.1 7002",
        "```",
        "",
        "A fault is `KIND[:KEY=VALUE,...]`; `toward` is `client` (the bytes the server sends),",
        "`server`, or `both`. Faults of different kinds combine (latency then fragments, say);",
        "two of one kind on the same bytes are refused.",
        "",
        *faultTable(),
        "",
        "The control port (127.0.0.1 only) takes one command per line and answers one line,",
        "`ok ...` or `error ...`: `status`, `set FAULT [FAULT...]`, `add FAULT`, `clear`,",
        "`help`, `quit`. It serves at most 8 clients at once, closes a client whose line",
        "passes 1 KiB or who sends no complete line for 300 s, and stops reading a client",
        "that does not read its answers. The proxy's own buffers are bounded: a pipe holding",
        "more than 256 KiB (a stall, a slow link) stops reading its source until it is down",
        "to 64 KiB, and a sink that does not keep up pauses its source, so that TCP flow",
        "control reaches the sender.",
        "",
    ]
    return "\n".join(lines)


def writeReport(results: dict[str, Any], path: Path) -> None:
    """
    Write the report for C{results} to C{path}.
    """
    path.write_text(render(results))
