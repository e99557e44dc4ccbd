"""
The runner: for each implementation and size, a fresh peer process and a
fresh measured child; it answers the child's requests to kill, restart and
freeze the peer, collects the child's JSON, writes C{results.json} and the
Markdown report.
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
from pathlib import Path
from typing import IO, Any

from benchmarks.common import IMPLEMENTATIONS
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
    One C{python -m supervisor.peer} process on a fixed port.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

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
                    "supervisor.peer",
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
        SIGKILL the peer (a stopped one too) and reap it.
        """
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        if process is not None:
            process.wait(timeout=10)


def measure(
    impl: str, n: int, arguments: argparse.Namespace, storm: bool, log: IO[str]
) -> dict[str, Any]:
    """
    Run one measured child for C{impl} at size C{n} against a new peer.
    """
    peer = Peer(freePort())
    child: subprocess.Popen[bytes] | None = None
    budget = arguments.establish_timeout + arguments.steady + 60 + n / 100
    if storm:
        budget += arguments.storm_timeout + arguments.down
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
            "--steady",
            str(arguments.steady),
            "--settle",
            str(arguments.settle),
            "--establish-timeout",
            str(arguments.establish_timeout),
            "--storm-timeout",
            str(arguments.storm_timeout),
        ]
        if storm:
            command.append("--storm")
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
    except Exception as e:
        return {"impl": impl, "n": n, "error": f"{type(e).__name__}: {e}"}
    finally:
        if child is not None:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
        peer.kill()


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
    parser.add_argument("--sizes", default=None, help="comma-separated N (default 1000,5000,10000)")
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
    arguments.sizes = [
        int(s) for s in (arguments.sizes or ("200" if quick else "1000,5000,10000")).split(",")
    ]
    if arguments.steady is None:
        arguments.steady = 3.0 if quick else 30.0
    arguments.output = Path(arguments.output or ROOT / "benchmarks" / "results")
    if arguments.report is None:
        arguments.report = (
            arguments.output / "performance.md" if quick else ROOT / "docs" / "performance.md"
        )
    arguments.report = Path(arguments.report)
    arguments.impls = [i for i in arguments.impls.split(",") if i]
    arguments.settle = 1.0 if quick else 3.0
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
    if arguments.from_results:
        writeReport(json.loads(Path(arguments.from_results).read_text()), arguments.report)
        print(f"report: {arguments.report}")
        return 0
    raiseFileLimit()
    sizes: list[int] = arguments.sizes
    stormSize = 5000 if 5000 in sizes else max(sizes)
    started = time.time()
    runs = []
    for n in sizes:
        for impl in arguments.impls:
            print(f"== {impl} N={n}", file=sys.stderr, flush=True)
            runs.append(measure(impl, n, arguments, n == stormSize, sys.stderr))
    results = {
        "command": " ".join(
            ["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]
        ),
        "started": started,
        "seconds": time.time() - started,
        "quick": arguments.quick,
        "sizes": sizes,
        "storm_size": stormSize,
        "machine": machineInfo(),
        "runs": runs,
    }
    arguments.output.mkdir(parents=True, exist_ok=True)
    (arguments.output / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    writeReport(results, arguments.report)
    print(f"results: {arguments.output / 'results.json'}; report: {arguments.report}")
    errors = [r for r in runs if "error" in r]
    for r in errors:
        print(f"error: {r['impl']} N={r['n']}: {r['error']}", file=sys.stderr)
    return 1 if errors else 0
