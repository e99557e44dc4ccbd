"""
The flap soak, as a child process of its own (so that its memory, its
descriptors and its reactor are measured alone)::

    python -m tests.chaos.soak --port PORT --output RESULT.json
        [--connections 1000] [--cycles 10000] [--log PATH]

C{PORT} is a peer that accepts then drops every connection (the chaos
proxy with a C{reset} fault). A L{Supervisor} with C{--connections} line
connections to it runs on the global reactor, with its metrics collector,
logging every transition to C{--log} as twistd would, until the
connections have flapped (an attempt accepted, then lost) through a warm-up
and then C{--cycles} more times. The warm-up lasts until every connection's
bounded history (its last 50 transitions) is full, so that what the measured
cycles add is what leaks. tracemalloc runs from the start (C{--no-tracemalloc}
leaves it off), so that the differences it reports are net. Then it stops the supervisor and writes:

- cycles, seconds, attempts, and the outcomes of the attempts;
- C{rss}: resident memory (less tracemalloc's own) at the end of the
  warm-up, every 1,000 cycles, and at the end, and the growth in percent;
- C{tracemalloc}: the ten largest differences between the end of the
  warm-up and the end, by line;
- C{descriptors}: before the start, at the end of the warm-up, at the end,
  and after the stop;
- C{delayed_calls}: the most pending at once, and those left after the stop;
- C{lag}: the reactor's lateness, sampled every 50 ms (p50, p99, max);
- C{errors}: log events at error level or with a failure.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import tracemalloc
from collections.abc import Sequence
from typing import Any

from benchmarks.common import percentile, rssBytes
from supervisor.peer import raiseFileLimit


def descriptors() -> int:
    return len(os.listdir("/proc/self/fd")) - 1


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    if arguments.tracemalloc:
        tracemalloc.start(1)
    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall
    from twisted.logger import (
        LogLevel,
        globalLogBeginner,
        textFileLogObserver,
    )

    from supervisor import (
        AdminSpec,
        BackoffSpec,
        BreakerSpec,
        Config,
        ConnectionSpec,
        FlapSpec,
        HeartbeatSpec,
        Supervisor,
    )
    from supervisor.metrics import SupervisorMetrics, exposition
    from supervisor.states.core import HISTORY_LENGTH
    from supervisor.states.records import Transition

    r: Any = reactor
    logFile = open(arguments.log, "a")  # noqa: SIM115 (open for the run)
    errors: list[str] = []

    def errorObserver(event: dict[str, Any]) -> None:
        if "log_failure" in event or event.get("log_level") in (LogLevel.error, LogLevel.critical):
            errors.append(str(event.get("log_format"))[:200])

    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(logFile), errorObserver], redirectStandardIO=False
    )

    specs = tuple(
        ConnectionSpec(
            name=f"flap-{i:04d}",
            endpoint=f"tcp:host=127.0.0.1:port={arguments.port}",
            protocol="line",
            connect_timeout=5.0,
            drain_timeout=1.0,
            backoff=BackoffSpec(initial=0.05, multiplier=1.6, max=1.0, reset_after=10.0),
            heartbeat=HeartbeatSpec(interval=1.0, timeout=1.0, misses=2),
            # The soak measures what ten thousand flaps leave behind: the
            # recovery mechanisms that would hold the flapping connections
            # back (the flap guard, the peer's circuit breaker) are off.
            breaker=BreakerSpec(scope="off"),
            flap=FlapSpec(max=0),
        )
        for i in range(arguments.connections)
    )
    supervisor = Supervisor(Config(path="<soak>", admin=AdminSpec(), connections=specs), r)
    metrics = SupervisorMetrics(supervisor)
    result: dict[str, Any] = {
        "connections": arguments.connections,
        "cycles_measured": arguments.cycles,
        "descriptors": {},
        "outcomes": {},
        "rss": {"samples": []},
    }
    state: dict[str, Any] = {
        "cycles": 0,
        "transitions": dict.fromkeys((s.name for s in specs), 0),
        "full": 0,
        "warm": None,
        "maxDelayed": 0,
        "lags": [],
    }
    outcomes: dict[str, int] = result["outcomes"]

    def memory() -> int:
        return rssBytes() - tracemalloc.get_tracemalloc_memory()

    def observe(t: Transition) -> None:
        seen = state["transitions"][t.connection] = state["transitions"][t.connection] + 1
        if seen == HISTORY_LENGTH:
            state["full"] += 1
        if t.to != "IDLE" or t.from_ not in ("CONNECTING", "ESTABLISHED"):
            return
        key = f"{t.from_}->{t.to} ({t.reason})"
        outcomes[key] = outcomes.get(key, 0) + 1
        state["cycles"] += 1
        if state["warm"] is None:
            # Warm once every connection's history is full.
            if state["full"] == len(specs):
                r.callLater(0, warmedUp)
                state["warm"] = state["cycles"]
        else:
            measured = state["cycles"] - state["warm"]
            if measured % 1000 == 0 and measured:
                result["rss"]["samples"].append([measured, memory()])
            if measured == arguments.cycles:
                r.callLater(0, finish)

    supervisor.addObserver(observe)

    expected = [r.seconds() + 0.05]

    def probe() -> None:
        now = r.seconds()
        state["lags"].append(max(0.0, now - expected[0]))
        expected[0] = now + 0.05
        state["maxDelayed"] = max(state["maxDelayed"], len(r.getDelayedCalls()))

    lag = LoopingCall(probe)
    lag.clock = r

    def warmedUp() -> None:
        gc.collect()
        result["warmup_cycles"] = state["warm"]
        result["warmup_seconds"] = r.seconds() - started[0]
        if arguments.tracemalloc:
            state["snapshot"] = tracemalloc.take_snapshot()
        # After the snapshot, which is memory too.
        result["rss"]["warm"] = memory()
        result["descriptors"]["warm"] = descriptors()
        state["lags"] = []
        state["measuredFrom"] = r.seconds()
        expected[0] = r.seconds() + 0.05
        lag.start(0.05, now=False)

    def finish() -> None:
        if "end" in result["rss"]:
            return
        gc.collect()
        result["measured_seconds"] = r.seconds() - state["measuredFrom"]
        result["rss"]["end"] = memory()
        result["descriptors"]["end"] = descriptors()
        if arguments.tracemalloc:
            snapshot = tracemalloc.take_snapshot()
            top = snapshot.compare_to(state["snapshot"], "lineno")[:10]
            result["tracemalloc"] = [
                {
                    "where": f"{s.traceback[0].filename}:{s.traceback[0].lineno}",
                    "size_diff": s.size_diff,
                    "count_diff": s.count_diff,
                }
                for s in top
            ]
            del snapshot
            state.pop("snapshot")
        result["scrape_bytes"] = len(exposition(metrics))
        lag.stop()
        lags = state["lags"]
        result["lag"] = {
            "p50": percentile(lags, 0.5),
            "p99": percentile(lags, 0.99),
            "max": max(lags),
            "samples": len(lags),
        }
        result["delayed_calls"] = {"max_pending": state["maxDelayed"]}
        result["cycles_total"] = state["cycles"]
        result["attempts"] = sum(c.attempts for c in supervisor.connections.values())
        stopping = supervisor.stopService()
        stopping.addCallback(lambda _: r.callLater(0.5, stopped))

    def stopped() -> None:
        limit.cancel()
        gc.collect()
        left = [repr(c) for c in r.getDelayedCalls()]
        result["delayed_calls"]["left"] = left
        result["descriptors"]["after"] = descriptors()
        result["states_after"] = sorted({c.state for c in supervisor.connections.values()})
        result["errors"] = errors
        r.stop()

    started = [r.seconds()]
    wall = time.monotonic()

    def begin() -> None:
        # Once running: the reactor's own waker descriptors exist by now.
        result["descriptors"]["before"] = descriptors()
        started[0] = r.seconds()
        supervisor.startService()

    r.callWhenRunning(begin)
    limit = r.callLater(arguments.time_limit, r.stop)
    r.run()
    result["seconds"] = time.monotonic() - wall
    warm = result["rss"].get("warm")
    end = result["rss"].get("end")
    if warm and end:
        result["rss"]["growth_percent"] = 100.0 * (end - warm) / warm
    logFile.close()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.soak")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--log", default=os.devnull)
    parser.add_argument("--time-limit", type=float, default=200.0)
    parser.add_argument(
        "--no-tracemalloc",
        dest="tracemalloc",
        action="store_false",
        help="leave tracemalloc off (it slows every allocation)",
    )
    arguments = parser.parse_args(argv)
    raiseFileLimit()
    result = run(arguments)
    with open(arguments.output, "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
