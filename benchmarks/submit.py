"""
The cost of C{submit}: operations per second through
L{SupervisedConnection.submit} on one ESTABLISHED C{line} connection,
against the same operations written directly on the protocol.

    python -m benchmarks --submit [--ops 200000] [--rounds 7] [--batch 500]
        [--lines-per-op 10] [--peers peer,sink,redis] [--ways direct,submit,...]
        [--output DIR]

One real TCP connection on the loopback interface, the real reactor,
heartbeats off. Each round sends C{--ops} lines of 16 bytes six ways, in a
rotating order; three write one line per operation:

    direct       protocol.sendLine(line)
    submit       connection.submit(operation), the operation calling sendLine
    sendLine     plugins.line.sendLine(connection, line), the typed helper

and three write C{--lines-per-op} (10) of the same lines per operation, in
one write of the joined lines:

    batchDirect  protocol.sendLines(lines)
    batchSubmit  connection.submit(operation), the operation calling sendLines
    sendLines    plugins.line.sendLines(connection, lines), the typed helper

in batches of C{--batch} lines, each followed by one turn of the reactor
(which writes what the batch buffered). Two peers, one after the other:

    peer   the project's line peer (C{python -m supervisor.peer}), which
           reads every line; a round ends when it answers a C{PING} sent
           after the last line: operations done end to end, per second
    sink   a process that reads and discards, far faster than the sender
           writes; a round ends when the transport's buffer is empty: the
           sender's own cost, the worst case for C{submit}'s share

Then the same three ways for a request and its reply, on one C{redis}
connection to a local C{redis-server} (skipped if it is not installed):
C{protocol.command(b"INCR", b"k")} against C{connection.submit} of it and
the helper C{plugins.redis.command}; a round ends when every reply is in.

Before each way's round the garbage collector collects all there is
(untimed), so that each way pays for the collections its own objects
bring, not for those the way before it left due. The sender waits for the
end of a round (the C{PONG}, the last reply) without polling, so that its
CPU per operation is its own work, not a wait on the peer.

A round's figure is its operations per second of wall time (and the
sender's CPU per operation); for the ways of several lines per operation,
also lines per second. The report gives each way's median over the rounds
with its spread (min and max), and the overhead against its direct way
(C{direct} for one line per operation, C{batchDirect} for several):
C{1 - median(way) / median(direct way)}, with its spread over the rounds.
Results go to C{benchmarks/results/submit.json}.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater, react

from plugins._support import BundledPlugin
from plugins.line import LineProtocol, Options, sendLine, sendLines
from plugins.redis import RedisProtocol, command
from supervisor import BackoffSpec, ConnectionSpec, HeartbeatSpec, SupervisedConnection, findPlugin

ROOT = Path(__file__).resolve().parent.parent
LINE = b"0123456789abcdef"
WAYS = ("direct", "submit", "sendLine", "batchDirect", "batchSubmit", "sendLines")
DIRECT = ("direct", "batchDirect")
"""The ways that write on the protocol, not through C{submit}."""
BASELINE = {"batchSubmit": "batchDirect", "sendLines": "batchDirect"}
"""The direct way each way is measured against, if not C{direct}."""
PEERS_MEASURED = ("peer", "sink", "redis")
T = TypeVar("T")

SINK = """
import socket
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(1)
print("listening on 127.0.0.1:%d" % server.getsockname()[1], flush=True)
client, _ = server.accept()
client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
while client.recv(1 << 20):
    pass
"""

PEERS = {
    "peer": [sys.executable, "-m", "supervisor.peer", "--port", "0"],
    "sink": [sys.executable, "-c", SINK],
}


class CountingLineProtocol(LineProtocol):
    """
    The line protocol, telling of the C{PONG}s it receives (the end of a
    round).
    """

    pongs: dict[bytes, Deferred[None]]

    def received(self, line: bytes) -> None:
        if line.startswith(b"PONG "):
            waiting = self.pongs.pop(line[5:].rstrip(b"\r"), None)
            if waiting is not None:
                waiting.callback(None)
        super().received(line)

    def pinged(self, token: bytes) -> Deferred[None]:
        """
        Send C{PING token}: fires once its C{PONG} is in.
        """
        pong = self.pongs[token] = Deferred()
        self.sendLine(b"PING " + token)
        return pong


def _counting(handle: Any, options: Options) -> CountingLineProtocol:
    protocol = CountingLineProtocol(handle, options)
    protocol.pongs = {}
    return protocol


plugin = BundledPlugin("line", Options, _counting)


def parseArguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks --submit", description=__doc__)
    parser.add_argument("--submit", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ops", type=int, default=200_000, help="lines per way per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (each way once a round)")
    parser.add_argument("--batch", type=int, default=500, help="lines between reactor turns")
    parser.add_argument(
        "--lines-per-op",
        type=int,
        default=10,
        help="lines per operation of the ways batchDirect, batchSubmit and sendLines",
    )
    parser.add_argument(
        "--output", default=str(ROOT / "benchmarks" / "results"), help="directory for submit.json"
    )
    parser.add_argument(
        "--peers",
        type=_names,
        default=PEERS_MEASURED,
        help="which to measure, of peer,sink,redis (comma-separated)",
    )
    parser.add_argument(
        "--ways",
        type=_names,
        default=None,
        help="only these ways (comma-separated; an overhead needs its direct way): e.g. "
        "--ways submit --peers sink --rounds 1, under valgrind --tool=callgrind at two "
        "--ops, gives the instructions of one way per operation",
    )
    arguments = parser.parse_args(argv)
    for option in ("ops", "rounds", "batch", "lines_per_op"):
        if getattr(arguments, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    if arguments.lines_per_op > arguments.batch:
        # A turn of the reactor holds whole operations: none would fit.
        parser.error(f"--lines-per-op must be at most --batch ({arguments.batch})")
    return arguments


def _names(text: str) -> tuple[str, ...]:
    return tuple(name for name in text.split(",") if name)


def _chosen(ways: dict[str, T], arguments: argparse.Namespace) -> dict[str, T]:
    """
    The ways of C{ways} that C{--ways} names (all by default), in order.
    """
    if arguments.ways is None:
        return ways
    return {name: way for name, way in ways.items() if name in arguments.ways}


def collected() -> None:
    """
    Collect all garbage before a way's round, outside its timing: each way
    then pays for the collections its own objects bring, from the same
    start, not for what the way before it left in the collector's
    generations (a full collection of the benchmark's heap costs some
    20 ms, over 15,000 INCRs a round).
    """
    gc.collect()


def buffered(protocol: LineProtocol) -> int:
    """
    Bytes the protocol's transport holds, not yet sent.
    """
    transport: Any = protocol.transport
    temporary = sum(map(len, getattr(transport, "_tempDataBuffer", ())))
    return len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0) + temporary


async def measure(
    reactor: Any, arguments: argparse.Namespace, peer: str
) -> dict[str, list[tuple[float, float]]]:
    """
    Every round against one peer: each way's (operations per second, CPU
    microseconds per operation).
    """
    process = subprocess.Popen(PEERS[peer], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline().rsplit(":", 1)[1])
        spec = ConnectionSpec(
            "bench", f"tcp:host=127.0.0.1:port={port}", heartbeat=HeartbeatSpec(interval=0)
        )
        connection = SupervisedConnection(
            spec, TCP4ClientEndpoint(reactor, "127.0.0.1", port), plugin, reactor
        )
        connection.start()
        while connection.state != "ESTABLISHED":
            await deferLater(reactor, 0.01, lambda: None)
        protocol = connection.protocol
        assert isinstance(protocol, CountingLineProtocol)

        lines = [LINE] * arguments.lines_per_op

        def operation(p: LineProtocol) -> None:
            p.sendLine(LINE)

        def batchOperation(p: LineProtocol) -> None:
            p.sendLines(lines)

        ways: dict[str, Callable[[], object]] = _chosen(
            {
                "direct": lambda: protocol.sendLine(LINE),
                "submit": lambda: connection.submit(operation),
                "sendLine": lambda: sendLine(connection, LINE),
                "batchDirect": lambda: protocol.sendLines(lines),
                "batchSubmit": lambda: connection.submit(batchOperation),
                "sendLines": lambda: sendLines(connection, lines),
            },
            arguments,
        )
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
        turns = arguments.ops // arguments.batch
        names = list(ways)
        submitted = 0
        for round in range(arguments.rounds):
            turn = round % len(names)
            for name in names[turn:] + names[:turn]:
                send = ways[name]
                perTurn = arguments.batch // linesPerOperation(name, arguments)
                token = b"%s-%d" % (name.encode(), round)
                collected()
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(turns):
                    for _ in range(perTurn):
                        send()
                    await deferLater(reactor, 0, lambda: None)
                if peer == "peer":
                    await protocol.pinged(token)
                else:
                    while buffered(protocol):
                        await deferLater(reactor, 0, lambda: None)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                operations = turns * perTurn
                figures[name].append((operations / wall, cpu / operations * 1e6))
                if name not in DIRECT:
                    submitted += operations
        counts = connection.operations.counts
        assert counts["ok"] == submitted, (counts, submitted)
        await connection.stop()
    finally:
        process.kill()
        process.wait(10)
    return figures


def linesPerOperation(way: str, arguments: argparse.Namespace) -> int:
    """
    How many lines one operation of C{way} writes.
    """
    return arguments.lines_per_op if way in ("batchDirect", *BASELINE) else 1


async def measureRedis(reactor: Any, arguments: argparse.Namespace) -> dict[str, Any] | None:
    """
    Every round of INCRs on one redis connection: each way's (operations
    per second, CPU microseconds per operation), or L{None} without a
    redis-server.
    """
    program = shutil.which("redis-server")
    if program is None:
        return None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [program, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        spec = ConnectionSpec(
            "bench",
            f"tcp:host=127.0.0.1:port={port}",
            protocol="redis",
            heartbeat=HeartbeatSpec(interval=0),
            backoff=BackoffSpec(initial=0.05, max=0.1),
        )
        connection = SupervisedConnection(
            spec, TCP4ClientEndpoint(reactor, "127.0.0.1", port), findPlugin("redis"), reactor
        )
        connection.start()
        for _ in range(1000):
            if connection.state == "ESTABLISHED":
                break
            await deferLater(reactor, 0.01, lambda: None)
        protocol = connection.protocol
        assert isinstance(protocol, RedisProtocol), connection.state
        done = [0]
        finished: list[Deferred[None]] = []

        def count(reply: object) -> None:
            done[0] += 1
            if done[0] == total:
                finished[0].callback(None)

        def incr(p: RedisProtocol) -> Deferred[object]:
            return p.command(b"INCR", b"k")

        ways: dict[str, Callable[[], Deferred[Any]]] = _chosen(
            {
                "direct": lambda: protocol.command(b"INCR", b"k"),
                "submit": lambda: connection.submit(incr),
                "command": lambda: command(connection, b"INCR", b"k"),
            },
            arguments,
        )
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
        batches, batch = arguments.ops // 10 // arguments.batch, arguments.batch
        total = batches * batch
        names = list(ways)
        for round in range(arguments.rounds):
            turn = round % len(names)
            for name in names[turn:] + names[:turn]:
                send = ways[name]
                done[0] = 0
                finished[:] = [Deferred()]
                collected()
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(batches):
                    for _ in range(batch):
                        send().addCallback(count)
                    await deferLater(reactor, 0, lambda: None)
                await finished[0]
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                figures[name].append((total / wall, cpu / total * 1e6))
        await connection.stop()
    finally:
        server.kill()
        server.wait(10)
    return figures


def summary(
    figures: dict[str, list[tuple[float, float]]], arguments: argparse.Namespace
) -> dict[str, Any]:
    ways: dict[str, Any] = {}
    for name, rounds in figures.items():
        rates = [rate for rate, _ in rounds]
        cpus = [cpu for _, cpu in rounds]
        ways[name] = {
            "ops_per_second": {
                "median": statistics.median(rates),
                "min": min(rates),
                "max": max(rates),
            },
            "cpu_us_per_op": {
                "median": statistics.median(cpus),
                "min": min(cpus),
                "max": max(cpus),
            },
            "rounds": rates,
        }
        lines = linesPerOperation(name, arguments)
        if lines > 1:
            ways[name]["lines_per_op"] = lines
            ways[name]["lines_per_second"] = {
                key: rate * lines for key, rate in ways[name]["ops_per_second"].items()
            }
    for name in figures:
        baseline = BASELINE.get(name, "direct")
        if name in DIRECT or baseline not in figures:
            continue
        direct = ways[baseline]["ops_per_second"]["median"]
        ways[name]["against"] = baseline
        ways[name]["overhead"] = 1 - ways[name]["ops_per_second"]["median"] / direct
        pairs = zip(figures[name], figures[baseline], strict=True)
        perRound = [1 - way / direct for (way, _), (direct, _) in pairs]
        ways[name]["overhead_per_round"] = {"min": min(perRound), "max": max(perRound)}
    return ways


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parseArguments(argv)
    figures: dict[str, dict[str, list[tuple[float, float]]]] = {}

    async def run(reactor: Any) -> None:
        for peer in ("peer", "sink"):
            if peer in arguments.peers:
                figures[peer] = await measure(reactor, arguments, peer)
        if "redis" in arguments.peers:
            redis = await measureRedis(reactor, arguments)
            if redis is not None:
                figures["redis"] = redis

    try:
        react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
    except SystemExit as e:
        if e.code:
            return int(e.code)
    command = ["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]
    report: dict[str, Any] = {
        "command": " ".join(command),
        "ops": arguments.ops,
        "rounds": arguments.rounds,
        "batch": arguments.batch,
        "lines_per_op": arguments.lines_per_op,
        "peers": {peer: summary(f, arguments) for peer, f in figures.items()},
    }
    output = Path(arguments.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "submit.json").write_text(json.dumps(report, indent=1) + "\n")
    titles = {
        "peer": "line, against the line peer (end to end)",
        "sink": "line, against a discarding sink (the sender's cost)",
        "redis": "redis INCR, against redis-server (end to end)",
    }
    for peer, ways in report["peers"].items():
        print(f"{titles[peer]}:")
        for name, way in ways.items():
            rate, cpu = way["ops_per_second"], way["cpu_us_per_op"]
            line = (
                f"  {name:11} {rate['median']:>11,.0f} ops/s (min {rate['min']:,.0f}, max "
                f"{rate['max']:,.0f}); {cpu['median']:.2f} us CPU/op"
            )
            if "lines_per_op" in way:
                line += (
                    f"; {way['lines_per_second']['median']:,.0f} lines/s, "
                    f"{cpu['median'] / way['lines_per_op']:.2f} us CPU/line"
                )
            if "overhead" in way:
                spread = way["overhead_per_round"]
                line += (
                    f"; overhead against {way['against']} {way['overhead']:.1%} (per round "
                    f"{spread['min']:.1%} to {spread['max']:.1%})"
                )
            print(line)
    return 0
