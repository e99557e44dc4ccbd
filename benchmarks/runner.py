"""
The runner: for each run, a fresh peer process and a fresh measured child;
it answers the child's requests to kill, restart, freeze and make the peer
flap, collects the child's JSON, writes C{results.json} (the main suite) or
C{recovery.json} (the recovery suite) and the Markdown report.

The main suite measures each implementation at each size (steady state,
scrape and reload, the storm at one size, detection). The recovery suite
(C{--suite recovery}) measures the reconnect storm at each size for both
implementations, the storm with a connect budget, and a flapping peer, each
C{--repeat} times, alternating which side goes first, with the load average
before and after every run. The establish suite (C{--suite establish})
measures only the time to establish all N, in C{--repeat} short pairs at
each size (C{establish.json}).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from benchmarks.common import IMPLEMENTATIONS, loadText
from benchmarks.report import machineInfo, writeReport
from supervisor.peer import raiseFileLimit

ROOT = Path(__file__).resolve().parent.parent
PEER_BACKLOG = 4096


def freePort() -> int:
    """
    A free port on 127.0.0.1 below the ephemeral range, so that no outgoing
    connection takes it while the peer is down.
    """
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


class Lines:
    """
    The lines of a pipe, read by a thread, with a timeout on each read.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self.queue: queue.Queue[bytes | None] = queue.Queue()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            self.queue.put(line)
        self.queue.put(None)

    def get(self, timeout: float) -> bytes | None:
        """
        The next line; L{None} at end of stream; raise L{TimeoutError} after C{timeout}.
        """
        try:
            return self.queue.get(timeout=max(timeout, 0.001))
        except queue.Empty:
            raise TimeoutError(f"no line within {timeout:.0f} s") from None


class Peer:
    """
    One peer process on a fixed port: C{python -m supervisor.peer}, or the
    flapping peer (C{python -m benchmarks.flappeer}).
    """

    def __init__(self, port: int, module: str = "supervisor.peer") -> None:
        self.port = port
        self.module = module
        self.process: subprocess.Popen[bytes] | None = None
        self.cpuSeconds = 0.0

    def start(self, timeout: float = 15.0) -> float:
        """
        Start the peer and wait until it listens; return that time.
        """
        deadline = time.time() + timeout
        while True:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    self.module,
                    "--port",
                    str(self.port),
                    "--backlog",
                    str(PEER_BACKLOG),
                ],
                stdout=subprocess.PIPE,
                cwd=ROOT,
            )
            self.process = process
            assert process.stdout is not None
            line = Lines(process.stdout).get(max(1.0, deadline - time.time()))
            if line and line.startswith(b"listening on"):
                return time.time()
            self.kill()
            if time.time() > deadline:
                raise RuntimeError(f"peer did not listen on port {self.port}")
            time.sleep(0.2)

    def signal(self, number: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, number)

    def kill(self) -> None:
        """
        SIGKILL the peer (a stopped one too) and reap it, adding the CPU it
        used to L{cpuSeconds}.
        """
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            self.cpuSeconds += processCPU(process.pid)
            os.kill(process.pid, signal.SIGKILL)
        if process is not None:
            process.wait(timeout=10)


@dataclass
class Run:
    """
    One measured run: an implementation at a size, the phases after
    establishing, and what else the child is told.

    @ivar label: the run's name in the results (by default, the implementation's).
    @ivar peer: the peer's module.
    """

    impl: str
    n: int
    phases: tuple[str, ...]
    label: str = ""
    options: tuple[str, ...] = ()
    peer: str = "supervisor.peer"
    tags: dict[str, Any] = field(default_factory=dict)


TICKS = os.sysconf("SC_CLK_TCK")


def processCPU(pid: int) -> float:
    """
    User plus system CPU seconds of process C{pid} so far (0 if it is gone).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def machineBusy() -> float:
    """
    CPU seconds all processors spent busy since boot (C{/proc/stat}).
    """
    try:
        with open("/proc/stat") as f:
            values = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / TICKS


def loadAverage() -> list[float]:
    """
    The 1, 5 and 15 minute load averages, from C{/proc/loadavg}.
    """
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except OSError:
        return []


def measure(run: Run, arguments: argparse.Namespace, log: IO[str]) -> dict[str, Any]:
    """
    Run one measured child for C{run} against a new peer, with the load
    average before and after.
    """
    before = loadAverage()
    started, busy, own = time.time(), machineBusy(), time.process_time()
    peer = Peer(freePort(), run.peer)
    result = _measure(run, peer, arguments, log)
    wall = time.time() - started
    # What other processes used meanwhile: the machine's busy time less the
    # child's, the peers' and this runner's.
    ours = result.get("cpu_seconds_total", 0.0) + peer.cpuSeconds + time.process_time() - own
    others = max(0.0, machineBusy() - busy - ours)
    result.setdefault("label", run.label or run.impl)
    result.update(run.tags)
    result["loadavg_before"] = before
    result["loadavg_after"] = loadAverage()
    result["wall_seconds"] = wall
    result["peer_cpu_seconds"] = peer.cpuSeconds
    result["other_cpu_share"] = others / wall / (os.cpu_count() or 1)
    return result


def _measure(run: Run, peer: Peer, arguments: argparse.Namespace, log: IO[str]) -> dict[str, Any]:
    impl, n = run.impl, run.n
    child: subprocess.Popen[bytes] | None = None
    budget = arguments.establish_timeout + 60 + n / 100
    if "steady" in run.phases:
        budget += arguments.steady * 4 / 3
    if "storm" in run.phases:
        budget += arguments.storm_timeout + arguments.down
    if "flap" in run.phases:
        budget += arguments.flap_seconds
    deadline = time.time() + budget
    try:
        peer.start()
        command = [
            sys.executable,
            "-m",
            "benchmarks.child",
            "--impl",
            impl,
            "--n",
            str(n),
            "--port",
            str(peer.port),
            "--phases",
            ",".join(run.phases),
            "--steady",
            str(arguments.steady),
            "--settle",
            str(arguments.settle),
            "--establish-timeout",
            str(arguments.establish_timeout),
            "--storm-timeout",
            str(arguments.storm_timeout),
            "--flap-seconds",
            str(arguments.flap_seconds),
            *run.options,
        ]
        child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
        assert child.stdout is not None and child.stdin is not None
        lines = Lines(child.stdout)

        def reply(message: dict[str, float]) -> None:
            assert child is not None and child.stdin is not None
            child.stdin.write(json.dumps(message).encode() + b"\n")
            child.stdin.flush()

        while True:
            line = lines.get(deadline - time.time())
            if line is None:
                return {"impl": impl, "n": n, "error": f"child exited ({child.wait()})"}
            message = json.loads(line)
            if "log" in message:
                print(message["log"], file=log, flush=True)
            elif "result" in message:
                result: dict[str, Any] = message["result"]
                return result
            elif message.get("request") == "kill-peer":
                peer.kill()
                reply({"killed": time.time()})
                time.sleep(arguments.down)
                reply({"restarted": peer.start()})
            elif message.get("request") == "freeze-peer":
                peer.signal(signal.SIGSTOP)
                reply({"frozen": time.time()})
            elif message.get("request") == "flap-peer":
                peer.signal(signal.SIGUSR1)
                reply({"flapping": time.time()})
    except Exception as e:
        return {"impl": impl, "n": n, "error": f"{type(e).__name__}: {e}"}
    finally:
        if child is not None:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
        peer.kill()


def mainRuns(arguments: argparse.Namespace) -> tuple[list[Run], int]:
    """
    The main suite, C{--repeat} rounds: each implementation at each size;
    the storm at the largest size (issue 17's lag target is at 10,000).
    Every other round runs the sides in the other order.
    """
    sizes: list[int] = arguments.sizes
    stormSize = max(sizes)
    runs = []
    for round_ in range(arguments.repeat):
        for n in sizes:
            phases = ("steady", "scrape", *(("storm",) if n == stormSize else ()), "detection")
            runs += _pair(arguments, n, phases, round_)
    return runs, stormSize


def _pair(arguments: argparse.Namespace, n: int, phases: tuple[str, ...], round_: int) -> list[Run]:
    """
    Each implementation at size C{n} with C{phases}, in round C{round_}:
    every other round the other side first.
    """
    pair = [Run(impl, n, phases, tags={"round": round_}) for impl in arguments.impls]
    if round_ % 2:
        pair.reverse()
    return pair


def profileRun(arguments: argparse.Namespace) -> Run:
    """
    C{--profile}: netsupervisor at the largest size under cProfile, for
    start-up, the steady window and the reconnect storm.
    """
    return Run(
        "netsupervisor",
        max(arguments.sizes),
        ("steady", "storm"),
        options=("--profile",),
        tags={"profiled": True},
    )


def recoveryRuns(arguments: argparse.Namespace) -> list[Run]:
    """
    The recovery suite, C{--repeat} rounds: at each size, the storm for both
    implementations (each with its own defaults) and for netsupervisor with
    C{connect_rate}; then the flapping peer for netsupervisor with and
    without its flap guard (and the baseline, for reference). Every other
    round runs the sides in the other order.
    """
    runs = []
    rate = ("--connect-rate", str(arguments.connect_rate))
    for round_ in range(arguments.repeat):
        tags = {"round": round_}
        for n in arguments.sizes:
            pair = [
                Run("netsupervisor", n, ("storm",), "netsupervisor", tags=tags),
                Run("baseline", n, ("storm",), "baseline", tags=tags),
            ]
            if round_ % 2:
                pair.reverse()
            runs += pair
            runs.append(
                Run(
                    "netsupervisor",
                    n,
                    ("storm",),
                    f"netsupervisor connect_rate={arguments.connect_rate:g}",
                    rate,
                    tags={**tags, "connect_rate": arguments.connect_rate, "connect_burst": 100},
                )
            )
        flappers = [
            Run("netsupervisor", arguments.flap_size, ("flap",), "flap guard on", tags=tags),
            Run(
                "netsupervisor",
                arguments.flap_size,
                ("flap",),
                "flap guard off (backoff alone)",
                ("--flap-guard", "off"),
                tags=tags,
            ),
            Run("baseline", arguments.flap_size, ("flap",), "baseline", tags=tags),
        ]
        if round_ % 2:
            flappers.reverse()
        for run in flappers:
            run.peer = "benchmarks.flappeer"
        runs += flappers
    return runs


def establishRuns(arguments: argparse.Namespace) -> list[Run]:
    """
    The establish suite: at each size, C{--repeat} pairs of runs that only
    establish all N (no phase after it), every other pair the other side
    first.
    """
    return [
        run
        for round_ in range(arguments.repeat)
        for n in arguments.sizes
        for run in _pair(arguments, n, (), round_)
    ]


def parseArguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="netsupervisor against stock Twisted ClientService, side by side.",
    )
    parser.add_argument("--quick", action="store_true", help="N=200, a few seconds per phase")
    parser.add_argument(
        "--submit",
        action="store_true",
        help="measure SupervisedConnection.submit instead (see benchmarks/submit.py)",
    )
    parser.add_argument(
        "--suite",
        choices=("main", "recovery", "establish"),
        default="main",
        help="main: steady state, scrape, storm, detection; recovery: storms, budget, flapping;"
        " establish: the time to establish all N, in many pairs",
    )
    parser.add_argument(
        "--sizes",
        default=None,
        help="comma-separated N (default 1000,5000,10000; recovery: 5000,10000)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="rounds, each side first in turn (default 3; recovery: 2; establish: 15 pairs)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run netsupervisor at the largest size under cProfile (profile.json)",
    )
    parser.add_argument(
        "--connect-rate",
        type=float,
        default=1000.0,
        help="recovery: connect_rate of the budgeted storm (default 1000)",
    )
    parser.add_argument(
        "--flap-size", type=int, default=1000, help="recovery: N of the flapping peer runs"
    )
    parser.add_argument(
        "--flap-seconds", type=float, default=None, help="recovery: flapping time (default 60)"
    )
    parser.add_argument(
        "--steady", type=float, default=None, help="steady window seconds (default 30)"
    )
    parser.add_argument("--output", default=None, help="directory for results.json")
    parser.add_argument(
        "--report",
        default=None,
        help="Markdown report (default docs/performance.md; OUTPUT/performance.md if --quick)",
    )
    parser.add_argument(
        "--impls", default=",".join(IMPLEMENTATIONS), help="comma-separated implementations"
    )
    parser.add_argument(
        "--from-results",
        default=None,
        metavar="JSON",
        help="measure nothing: write the report from an earlier results.json",
    )
    arguments = parser.parse_args(argv)
    quick = arguments.quick
    recovery = arguments.suite == "recovery"
    establish = arguments.suite == "establish"
    default = "200" if quick else ("5000,10000" if recovery else "1000,5000,10000")
    arguments.sizes = [int(s) for s in (arguments.sizes or default).split(",")]
    if arguments.repeat is None:
        arguments.repeat = 2 if recovery else 15 if establish else 3
    if arguments.flap_seconds is None:
        arguments.flap_seconds = 10.0 if quick else 60.0
    if quick:
        arguments.flap_size = min(arguments.flap_size, 200)
        # A median needs a few pairs even in the smoke run.
        arguments.repeat = min(arguments.repeat, 3 if establish else 1)
    if arguments.steady is None:
        arguments.steady = 3.0 if quick else 30.0
    arguments.output = Path(arguments.output or ROOT / "benchmarks" / "results")
    if arguments.report is None:
        arguments.report = (
            arguments.output / "performance.md" if quick else ROOT / "docs" / "performance.md"
        )
    arguments.report = Path(arguments.report)
    arguments.impls = [i for i in arguments.impls.split(",") if i]
    # The establish suite stops once everyone is up.
    arguments.settle = 0.0 if establish else 1.0 if quick else 3.0
    arguments.down = 2.0 if quick else 5.0
    arguments.establish_timeout = 60.0 if quick else 180.0
    arguments.storm_timeout = 60.0 if quick else 240.0
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    if "--submit" in (sys.argv[1:] if argv is None else argv):
        # The cost of submit: a scenario of its own (benchmarks/submit.py).
        from benchmarks.submit import main as submitMain

        return submitMain(argv)
    arguments = parseArguments(argv)
    output: Path = arguments.output
    if arguments.from_results:
        source = Path(arguments.from_results)
        found = {
            name: _load(source.parent / name)
            for name in ("results.json", "recovery.json", "profile.json", "establish.json")
        }
        if source.name in found:
            found[source.name] = json.loads(source.read_text())
        else:
            found["results.json"] = json.loads(source.read_text())
        writeReport(
            found["results.json"],
            arguments.report,
            found["recovery.json"],
            found["profile.json"],
            found["establish.json"],
        )
        print(f"report: {arguments.report}")
        return 0
    raiseFileLimit()
    started = time.time()
    if arguments.profile:
        runs, stormSize = [profileRun(arguments)], max(arguments.sizes)
        name = "profile.json"
    elif arguments.suite == "recovery":
        runs, stormSize = recoveryRuns(arguments), max(arguments.sizes)
        name = "recovery.json"
    elif arguments.suite == "establish":
        runs, stormSize = establishRuns(arguments), max(arguments.sizes)
        name = "establish.json"
    else:
        runs, stormSize = mainRuns(arguments)
        name = "results.json"
    results_ = []
    for run in runs:
        print(
            f"== {run.label or run.impl} N={run.n} {' '.join(run.phases)}",
            file=sys.stderr,
            flush=True,
        )
        results_.append(measure(run, arguments, sys.stderr))
        print(f"   load {loadText(results_[-1])}", file=sys.stderr)
    results = {
        "command": " ".join(
            ["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]
        ),
        "suite": arguments.suite,
        "started": started,
        "seconds": time.time() - started,
        "quick": arguments.quick,
        "sizes": arguments.sizes,
        "storm_size": stormSize,
        "repeat": 1 if arguments.profile else arguments.repeat,
        "machine": machineInfo(),
        "runs": results_,
    }
    if arguments.suite == "recovery":
        results["flap_size"] = arguments.flap_size
        results["flap_seconds"] = arguments.flap_seconds
        results["connect_rate"] = arguments.connect_rate
    output.mkdir(parents=True, exist_ok=True)
    (output / name).write_text(json.dumps(results, indent=1) + "\n")
    writeReport(
        _load(output / "results.json"),
        arguments.report,
        _load(output / "recovery.json"),
        _load(output / "profile.json"),
        _load(output / "establish.json"),
    )
    print(f"results: {output / name}; report: {arguments.report}")
    errors = [r for r in results_ if "error" in r]
    for r in errors:
        print(f"error: {r['label']} N={r['n']}: {r['error']}", file=sys.stderr)
    return 1 if errors else 0


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None
