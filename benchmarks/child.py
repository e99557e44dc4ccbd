"""
One measured process: one implementation, N connections, every phase.

    python -m benchmarks.child --impl netsupervisor --n 1000 --port 23456 ...

It talks to the runner in JSON lines: on stdout it sends progress
(C{{"log": ...}}), requests (C{{"request": "kill-peer"}} or
C{{"request": "freeze-peer"}}) and, last, C{{"result": {...}}}; on stdin it
receives the runner's answers (C{{"killed": t}}, C{{"restarted": t}},
C{{"frozen": t}}, times in C{time.time()} seconds, which is also the
reactor's clock).

Phases (C{--phases}, in this order): establish all N (always; with the
reactor lag of a 10 ms probe timer from the start of the connections until
all are ESTABLISHED); C{steady} window (CPU per ping, the probe's reactor
lag, GC pauses, wake-ups), then a third as long without the probe (CPU per
ping and wake-ups only);
C{scrape}: for netsupervisor, C{/metrics} exposition and a one-entry
reload; C{storm}: the peer is killed and restarted (the reconnect storm; the probe's
reactor lag from the kill until all are ESTABLISHED again);
C{flap}: the peer starts flapping (it answers one more heartbeat on each
connection, then drops it 0.5 s later, and so on for every new one) and
attempts are counted for C{--flap-seconds}; C{detection}: the peer is
frozen (dead-peer detection).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import math
import os
import pstats
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import (
    DETECTION_BOUND,
    HEARTBEAT_INTERVAL,
    WAITING,
    cpuSeconds,
    percentile,
    rssBytes,
    sleeps,
    summary,
)
from supervisor.peer import raiseFileLimit

PROBE_PERIOD = 0.01
BIN = 0.1
SCRAPES = 10
SCRAPE_GAP = 0.3
TOP = 15


def _where(key: tuple[str, int, str]) -> str:
    """
    A profile entry's function, its file shortened to the path in its package.
    """
    path, line, name = key
    if path == "~":
        return name
    path = re.sub(r"^.*/(site-packages|lib/python3\.\d+)/", "", path)
    root = f"{Path(__file__).resolve().parent.parent}/"
    return f"{path.removeprefix(root)}:{line}({name})"


def topEntries(profile: cProfile.Profile) -> dict[str, Any]:
    """
    The L{TOP} entries of C{profile} by own time and by cumulative time.
    """
    stats: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    entries = [
        {"function": _where(key), "calls": nc, "own_seconds": tt, "cumulative_seconds": ct}
        for key, (_, nc, tt, ct, _) in stats.items()
    ]
    return {
        "total_seconds": sum(e["own_seconds"] for e in entries),
        "waiting_seconds": sum(e["own_seconds"] for e in entries if e["function"] in WAITING),
        "by_own": sorted(entries, key=lambda e: -e["own_seconds"])[:TOP],
        "by_cumulative": sorted(entries, key=lambda e: -e["cumulative_seconds"])[:TOP],
    }


class LagProbe:
    """
    A timer due every 10 ms; records how late each firing is.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.lags: list[float] = []
        self.expected = 0.0
        self.call: Any = None

    def start(self) -> None:
        self.expected = self.reactor.seconds() + PROBE_PERIOD
        self.call = self.reactor.callLater(PROBE_PERIOD, self._fire)

    def _fire(self) -> None:
        now = self.reactor.seconds()
        self.lags.append(max(0.0, now - self.expected))
        self.expected = now + PROBE_PERIOD
        self.call = self.reactor.callLater(PROBE_PERIOD, self._fire)

    def stop(self) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None

    def figures(self) -> dict[str, float]:
        """
        The lags recorded so far in milliseconds (count, p50, p99, max...).
        """
        return {k: v * 1e3 if k != "count" else v for k, v in summary(self.lags).items()}


class GCWatch:
    """
    Records the duration and generation of every garbage collection while on.
    """

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._started = 0.0
        self.on = False
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if not self.on:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))


class Controller:
    """
    Runs the phases and gathers the figures.
    """

    def __init__(self, arguments: argparse.Namespace, reactor: Any, rssBefore: int) -> None:
        self.args = arguments
        self.reactor = reactor
        self.n: int = arguments.n
        self.rssBefore = rssBefore
        self.up: set[str] = set()
        self.lastEstablished = 0.0
        self.pings = 0
        # Pings counted when the last connection so far became ESTABLISHED.
        self.pingsWhenEstablished = 0
        self.attemptTimes: list[float] | None = None
        self.attemptReasons: dict[str, int] | None = None
        self.establishedTimes: dict[str, float] | None = None
        self.losses: list[float] | None = None
        self.lossReasons: dict[str, int] | None = None
        self.leftAt: dict[str, float] | None = None
        self.waiting: dict[str, Any] = {}
        self.result: dict[str, Any] = {
            "impl": arguments.impl,
            "n": self.n,
            "reactor": f"{type(reactor).__module__}.{type(reactor).__qualname__}",
            "python": sys.version.split()[0],
            "fd_soft_limit": raiseFileLimit(),
        }
        self.gcWatch = GCWatch()
        self.driver: Any = None

    # Events from the driver.

    def attempt(self, name: str, when: float, reason: str = "") -> None:
        if self.attemptTimes is not None:
            self.attemptTimes.append(when)
        if self.attemptReasons is not None:
            self.attemptReasons[reason] = self.attemptReasons.get(reason, 0) + 1

    def established(self, name: str, when: float) -> None:
        self.up.add(name)
        self.lastEstablished = when
        self.pingsWhenEstablished = self.pings
        if self.establishedTimes is not None and name not in self.establishedTimes:
            self.establishedTimes[name] = when

    def left(self, name: str, when: float, reason: str = "") -> None:
        self.up.discard(name)
        if self.lossReasons is not None:
            self.lossReasons[reason] = self.lossReasons.get(reason, 0) + 1
        if self.leftAt is not None and name not in self.leftAt:
            self.leftAt[name] = when
        if self.losses is not None:
            self.losses.append(when)

    def pingSent(self) -> None:
        self.pings += 1

    # Talking to the runner.

    def send(self, message: dict[str, Any]) -> None:
        # Blocking writes on fd 1 (StandardIO only reads fd 0): every line,
        # the last one included, is out before the next statement.
        data = (json.dumps(message) + "\n").encode()
        while data:
            data = data[os.write(1, data) :]

    def log(self, text: str) -> None:
        self.send({"log": f"[{self.args.impl} n={self.n}] {text}"})

    def answer(self, message: dict[str, Any]) -> None:
        for key, waiter in list(self.waiting.items()):
            if key in message:
                del self.waiting[key]
                waiter.callback(float(message[key]))

    def expect(self, key: str) -> Any:
        from twisted.internet.defer import Deferred

        waiter: Deferred[float] = Deferred()
        self.waiting[key] = waiter
        return waiter

    def sleep(self, seconds: float) -> Any:
        from twisted.internet.task import deferLater

        return deferLater(self.reactor, seconds, lambda: None)

    async def waitFor(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.time() + timeout
        while not predicate():
            if time.time() > deadline:
                return False
            await self.sleep(0.05)
        return True

    # Phases.

    async def run(self) -> None:
        phases = self.args.phases
        try:
            await self.establish()
            await self.sleep(self.args.settle)
            if "steady" in phases:
                await self.steady()
            if "scrape" in phases and self.args.impl == "netsupervisor":
                await self.scrapeAndReload()
            if "storm" in phases:
                await self.storm()
                await self.sleep(self.args.settle)
            if "flap" in phases:
                await self.flap()
            if "detection" in phases:
                await self.detection()
        except Exception as e:  # report what we have, and why we stopped
            self.result["error"] = f"{type(e).__name__}: {e}"
        self.finish()

    async def establish(self) -> None:
        from benchmarks.drivers import BaselineDriver, NetsupervisorDriver

        started, cpu0, pings0 = time.time(), cpuSeconds(), self.pings
        reasons: dict[str, int] = {}
        lossReasons: dict[str, int] = {}
        self.attemptReasons, self.lossReasons = reasons, lossReasons
        if self.args.impl == "netsupervisor":
            self.driver = NetsupervisorDriver(
                self,
                self.n,
                self.args.port,
                self.reactor,
                connectRate=self.args.connect_rate,
                connectBurst=self.args.connect_burst,
                flapGuard=self.args.flap_guard == "on",
            )
        else:
            self.driver = BaselineDriver(self, self.n, self.args.port, self.reactor)
        # The probe from the start: a driver that starts everything at once
        # holds the reactor, and the probe's first firing is that late.
        probe = LagProbe(self.reactor)
        self.gcWatch.pauses.clear()
        self.gcWatch.on = True
        probe.start()
        profile = self.profiler()
        self.driver.start()
        ok = await self.waitFor(lambda: len(self.up) == self.n, self.args.establish_timeout)
        self.profiled("start-up", profile)
        cpu = cpuSeconds() - cpu0
        probe.stop()
        self.gcWatch.on = False
        pauses = [p for _, p in self.gcWatch.pauses]
        elapsed = self.lastEstablished - started
        gc.collect()
        await self.sleep(0.5)
        gc.collect()
        rssAfter = rssBytes()
        self.attemptReasons = self.lossReasons = None
        self.result["establish"] = {
            "all_established": ok,
            "established": len(self.up),
            "seconds": elapsed,
            "cpu_seconds": cpu,
            # Heartbeats answered or missed before the last was ESTABLISHED:
            # work in the window besides establishing.
            "pings": self.pingsWhenEstablished - pings0,
            "attempts_by_reason": reasons,
            "losses_by_reason": lossReasons,
            "lag_ms": probe.figures(),
            "gc_pause_max_ms": max(pauses) * 1e3 if pauses else 0.0,
        }
        self.result["memory"] = {
            "rss_before_bytes": self.rssBefore,
            "rss_after_bytes": rssAfter,
            "bytes_per_connection": (rssAfter - self.rssBefore) / self.n,
        }
        self.log(f"{len(self.up)} ESTABLISHED in {elapsed:.1f} s")
        if not ok:
            raise RuntimeError(f"only {len(self.up)} of {self.n} ESTABLISHED")

    def meter(self) -> Callable[[], dict[str, float]]:
        """
        From now on: a function that gives, each time it is called, the
        window so far: its wall and CPU seconds, CPU share, pings, CPU per
        ping and wake-ups per second.
        """
        pings0, cpu0, wall0, sleeps0 = self.pings, cpuSeconds(), time.time(), sleeps()

        def figures() -> dict[str, float]:
            cpu, wall, pings = cpuSeconds() - cpu0, time.time() - wall0, self.pings - pings0
            return {
                "window_seconds": wall,
                "cpu_seconds": cpu,
                "cpu_share": cpu / wall,
                "pings": pings,
                "cpu_per_ping_us": cpu / pings * 1e6 if pings else math.nan,
                "wakes_per_second": (sleeps() - sleeps0) / wall,
            }

        return figures

    async def steady(self) -> None:
        window = self.args.steady
        probe = LagProbe(self.reactor)
        measured = self.meter()
        gcCounts0 = [s["collections"] for s in gc.get_stats()]
        self.gcWatch.pauses.clear()
        self.gcWatch.on = True
        probe.start()
        profile = self.profiler()
        await self.sleep(window)
        self.profiled("steady", profile)
        probe.stop()
        self.gcWatch.on = False
        figures = measured()
        gcCounts = [s["collections"] - c for s, c in zip(gc.get_stats(), gcCounts0, strict=True)]
        pauses = [p for _, p in self.gcWatch.pauses]
        self.result["steady"] = {
            **figures,
            "pings_per_second": figures["pings"] / figures["window_seconds"],
            "lag_ms": probe.figures(),
            "gc_collections_by_generation": gcCounts,
            "gc_pause_max_ms": max(pauses) * 1e3 if pauses else 0.0,
            "gc_pause_total_ms": sum(pauses) * 1e3,
            "still_established": len(self.up),
        }
        self.log(f"steady: {figures['cpu_share']:.1%} CPU, {figures['pings']} pings")
        # The same measure over a further third without the lag probe, whose
        # 100 wake-ups a second cost either side the same CPU and so pull
        # the steady window's ratio towards 1.
        measured = self.meter()
        await self.sleep(window / 3)
        self.result["steady"]["unprobed"] = measured()

    def profiler(self) -> cProfile.Profile | None:
        """
        With C{--profile}, a running profiler; otherwise L{None}.
        """
        if not self.args.profile:
            return None
        # The default (wall) clock: a CPU-time clock costs so much per call
        # that it saturates the process at 10,000 connections.
        profile = cProfile.Profile()
        profile.enable()
        return profile

    def profiled(self, phase: str, profile: cProfile.Profile | None) -> None:
        """
        Stop C{profile} and keep its top entries as the phase's profile.
        """
        if profile is not None:
            profile.disable()
            self.result.setdefault("profile", {})[phase] = topEntries(profile)

    async def scrapeAndReload(self) -> None:
        from supervisor.config import parseConfig
        from supervisor.metrics import exposition

        driver = self.driver
        times = []
        body = b""
        for _ in range(SCRAPES):
            # Heartbeats run between the scrapes.
            await self.sleep(SCRAPE_GAP)
            t0 = time.perf_counter()
            body = exposition(driver.metrics)
            times.append(time.perf_counter() - t0)
        self.result["scrape"] = {
            "seconds_median": sorted(times)[len(times) // 2],
            "seconds_max": max(times),
            "seconds": times,
            "bytes": len(body),
        }
        supervisor = driver.supervisor
        text = driver.configText(self.n, changed=0)
        protocols = {name: c.protocol for name, c in supervisor.connections.items()}
        touched: set[str] = set()

        def observe(record: Any) -> None:
            touched.add(record.connection)

        supervisor.addObserver(observe)
        t0 = time.perf_counter()
        config = parseConfig(text, "<benchmark>.toml")
        t1 = time.perf_counter()
        report = supervisor.reload(config)
        t2 = time.perf_counter()
        first = supervisor.connections
        changedName = sorted(first)[0]
        ok = await self.waitFor(
            lambda: (
                (c := supervisor.connection(changedName)) is not None and c.state == "ESTABLISHED"
            ),
            10.0,
        )
        await self.sleep(1.0)
        after = supervisor.connections
        for name, protocol in protocols.items():
            current = after.get(name)
            if current is None or current.protocol is not protocol:
                touched.add(name)
        self.result["reload"] = {
            "parse_seconds": t1 - t0,
            "apply_seconds": t2 - t1,
            "total_seconds": t2 - t0,
            "changed": len(report.changed),
            "unchanged": len(report.unchanged),
            "touched": len(touched),
            "changed_back_established": ok,
        }
        self.log(f"scrape {max(times) * 1e3:.0f} ms, reload {t2 - t0:.2f} s, touched {touched}")

    async def request(self, what: str, key: str) -> float:
        waiter = self.expect(key)
        self.send({"request": what})
        result: float = await waiter
        return result

    async def storm(self) -> None:
        attempts: list[float] = []
        back: dict[str, float] = {}
        self.attemptTimes = attempts
        reasons: dict[str, int] = {}
        self.attemptReasons = reasons
        self.establishedTimes = back
        lossReasons: dict[str, int] = {}
        self.lossReasons = lossReasons
        holds0 = self.flapHolds()
        probe = LagProbe(self.reactor)
        probe.start()
        restarted = self.expect("restarted")
        profile = self.profiler()
        killed = await self.request("kill-peer", "killed")
        restart: float = await restarted
        ok = await self.waitFor(lambda: len(self.up) == self.n, self.args.storm_timeout)
        self.profiled("storm", profile)
        probe.stop()
        end = self.lastEstablished if ok else time.time()
        await self.sleep(0.5)
        self.attemptTimes = self.attemptReasons = self.establishedTimes = None
        self.lossReasons = None
        whileDown = len([t for t in attempts if killed <= t < restart])
        untilBack = len([t for t in attempts if killed <= t <= end])
        bins = max(1, math.ceil((end + 0.5 - killed) / BIN))
        histogram = [0] * bins
        for t in attempts:
            index = int((t - killed) / BIN)
            if 0 <= index < bins:
                histogram[index] += 1
        restartBin = int((restart - killed) / BIN)
        # When each connection was first ESTABLISHED again, from the restart.
        backAfter = sorted(max(0.0, t - restart) for t in back.values())
        self.result["storm"] = {
            "all_established": ok,
            "established": len(self.up),
            "down_seconds": restart - killed,
            "recovery_seconds": end - restart,
            "recovery_p50_seconds": percentile(backAfter, 0.5),
            "recovery_p99_seconds": percentile(backAfter, 0.99),
            "attempts_total": len(attempts),
            "attempts_while_down": whileDown,
            "attempts_per_connection_while_down": whileDown / self.n,
            "attempts_until_back": untilBack,
            "attempts_per_connection_until_back": untilBack / self.n,
            "attempts_by_reason": reasons,
            "losses_by_reason": lossReasons,
            "flap_holds": None if holds0 is None else (self.flapHolds() or 0) - holds0,
            "peak_attempts_per_100ms": max(histogram),
            "peak_attempts_per_100ms_after_restart": max(histogram[restartBin:] or [0]),
            "bin_seconds": BIN,
            "restart_bin": restartBin,
            "histogram": histogram,
            "lag_ms": probe.figures(),
        }
        self.log(
            f"storm: back in {end - restart:.1f} s after restart, peak {max(histogram)}/100 ms,"
            f" {untilBack / self.n:.2f} attempts per connection"
        )

    def flapHolds(self) -> int | None:
        """
        The flap guard's holds so far (netsupervisor only).
        """
        count = getattr(self.driver, "flapHolds", None)
        return None if count is None else int(count())

    async def flap(self) -> None:
        attempts: list[float] = []
        losses: list[float] = []
        self.attemptTimes = attempts
        reasons: dict[str, int] = {}
        self.attemptReasons = reasons
        self.losses = losses
        began = await self.request("flap-peer", "flapping")
        await self.sleep(self.args.flap_seconds)
        end = time.time()
        self.attemptTimes = self.attemptReasons = self.losses = None
        counted = [t for t in attempts if began <= t <= end]
        self.result["flap"] = {
            "seconds": end - began,
            "attempts": len(counted),
            "attempts_per_connection": len(counted) / self.n,
            "attempts_by_reason": reasons,
            "losses": len([t for t in losses if began <= t <= end]),
            "established_at_end": len(self.up),
            "flap_holds": self.flapHolds(),
        }
        self.log(
            f"flap: {len(counted) / self.n:.2f} attempts per connection in {end - began:.0f} s"
        )

    async def detection(self) -> None:
        watched = set(self.up)
        self.leftAt = {}
        frozen = await self.request("freeze-peer", "frozen")
        leftAt = self.leftAt
        ok = await self.waitFor(
            lambda: all(name in leftAt for name in watched), DETECTION_BOUND * 3 + 10
        )
        times = [leftAt[name] - frozen for name in watched if name in leftAt]
        self.leftAt = None
        self.result["detection"] = {
            "bound_seconds": DETECTION_BOUND,
            "interval_seconds": HEARTBEAT_INTERVAL,
            "watched": len(watched),
            "detected": len(times),
            "all_detected": ok,
            "seconds": summary(times),
            "min_seconds": min(times) if times else math.nan,
            "over_bound": sum(1 for t in times if t > DETECTION_BOUND),
            "p99_over_bound_ratio": percentile(times, 0.99) / DETECTION_BOUND,
        }
        self.log(f"detection p99 {percentile(times, 0.99):.3f} s of bound {DETECTION_BOUND}")

    def finish(self) -> None:
        self.result["cpu_seconds_total"] = cpuSeconds()
        self.send({"result": self.result})
        os._exit(0)


def parseArguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.child")
    parser.add_argument("--impl", choices=("netsupervisor", "baseline"), required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--steady", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument(
        "--phases",
        default="steady,scrape,detection",
        help="comma-separated: steady, scrape, storm, flap, detection",
    )
    parser.add_argument("--establish-timeout", type=float, default=120.0)
    parser.add_argument("--storm-timeout", type=float, default=180.0)
    parser.add_argument("--flap-seconds", type=float, default=60.0)
    parser.add_argument(
        "--connect-rate", type=float, default=0.0, help="netsupervisor: [supervisor] connect_rate"
    )
    parser.add_argument(
        "--connect-burst", type=int, default=100, help="netsupervisor: [supervisor] connect_burst"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run start-up, the steady window and the storm under cProfile; report the top entries",
    )
    parser.add_argument(
        "--flap-guard",
        choices=("on", "off"),
        default="on",
        help="netsupervisor: off sets flap.max = 0 (backoff alone)",
    )
    arguments = parser.parse_args(argv)
    arguments.phases = set(filter(None, arguments.phases.split(",")))
    return arguments


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parseArguments(argv)
    raiseFileLimit()
    if arguments.impl == "netsupervisor":
        # The reactor twistd netsupervisor installs (supervisor.reactor).
        from supervisor.daemon import installReactor

        installReactor()
    else:
        # Stock Twisted's.
        from twisted.internet import epollreactor

        epollreactor.install()  # type: ignore[no-untyped-call]
    from twisted.internet import reactor, stdio
    from twisted.internet.defer import Deferred
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )
    from twisted.protocols.basic import LineOnlyReceiver

    # Log warnings and worse to stderr; info events (one per transition) are
    # dropped, as both implementations would be configured in production:
    # netsupervisor is told so (it then builds no info event per transition),
    # the baseline's factory is not noisy.
    from supervisor.logs import setLogLevel

    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])],
        redirectStandardIO=False,
    )
    setLogLevel(LogLevel.warn)
    # Import everything either driver needs before the memory baseline.
    import benchmarks.drivers  # noqa: F401
    import supervisor.metrics
    import supervisor.service  # noqa: F401
    from supervisor.plugin import findPlugin

    findPlugin("line")
    gc.collect()
    controller = Controller(arguments, reactor, rssBytes())

    class Commands(LineOnlyReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            controller.answer(json.loads(line))

    # Commands arrive on fd 0; StandardIO's own output goes to /dev/null.
    stdio.StandardIO(  # type: ignore[no-untyped-call, call-arg, unused-ignore]
        Commands(), stdout=os.open(os.devnull, os.O_WRONLY)
    )
    reactor.callWhenRunning(  # type: ignore[attr-defined, unused-ignore]
        lambda: Deferred.fromCoroutine(controller.run())
    )
    reactor.run()  # type: ignore[attr-defined, unused-ignore]


if __name__ == "__main__":
    main()
