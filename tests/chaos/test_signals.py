"""
Signals under load, against a real C{twistd -n netsupervisor} process with
300 line connections to two real peers (C{python -m supervisor.peer}), half
on each:

- a SIGHUP storm (20 reloads in 2 s, each adding, removing and changing a
  few connections of both halves) during a reconnect storm (one peer killed,
  and started again halfway through the storm; the other half stays
  ESTABLISHED, so that the reloads meet live connections as well as
  refused attempts): the process keeps running, never has two live
  connections of one name, leaves the connections it was not asked to
  change alone, ends with every configured name ESTABLISHED, and exits 143
  on SIGTERM;
- SIGTERM during a reconnect storm: drained, exit 143 within
  C{drain_timeout} + 1 s, no traceback;
- SIGTERM twice, and a SIGHUP, while the drain waits on peers that do not
  answer (a frozen redis-server): the second SIGTERM is logged, no attempt
  starts, the drain ends at C{drain_timeout}, exit 143.

"Two live connections of one name" is checked three ways: each connection
binds its own loopback source address (C{bindAddress}), so the kernel's
table of TCP sockets (C{/proc/net/tcp}) says how many sockets each name has
open, sampled all along; C{/connections} never lists a name twice; and the
daemon's log, which records every transition in order, must read as one
state machine per name at a time (each transition starts where the name's
previous one ended, or a new connection starts from IDLE after the old one
was CLOSED). The last is exact; the first two are samples.

(A SIGHUP before the reactor runs is L{tests.integration.test_sighup_at_start}.)
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.chaos.conftest import Figures
from tests.integration.conftest import ephemeralPortRange, portIsFree
from tests.integration.daemon import Daemon, Peer, Process, Processes, poll, stoppedAtEnd

pytestmark = pytest.mark.integration

CONNECTIONS = 300
SIGHUPS = 20
STORM_SECONDS = 2.0
CHANGES = 3
"""Names added, removed and changed by each reload."""
DRAIN = 2.0
INTERVAL, TIMEOUT, MISSES = 1.0, 2.0, 2
"""Heartbeats that a reactor late by a second (two busy shared cores) does not miss."""
SLACK = 1.0
"""The spec's own slack past C{drain_timeout} for the whole exit."""
SETTLE = 60.0
"""Bound on every wait for hundreds of connections (generous: 2 shared cores)."""

_TRANSITION = re.compile(
    r"\[netsupervisor\.connection#\w+\] (\S+) "
    r"(IDLE|CONNECTING|ESTABLISHED|CLOSING|CLOSED) -> "
    r"(IDLE|CONNECTING|ESTABLISHED|CLOSING|CLOSED) \((\w+)"
)
LIVE_TCP_STATES = {"01", "02"}
"""ESTABLISHED and SYN_SENT in C{/proc/net/tcp}: what a connection still holds
(once closed by the daemon its socket is FIN_WAIT or gone)."""


def sourceAddress(index: int) -> str:
    """
    The loopback address connection C{index} binds, its own.
    """
    return f"127.77.{index // 250}.{index % 250 + 1}"


def name(index: int) -> str:
    return f"n{index:03d}"


def quietPort() -> int:
    """
    A free port below the ephemeral range: a peer is killed and started
    again on it, and meanwhile no C{bind(0)} can be given it.
    """
    low = ephemeralPortRange()[0]
    rng = random.Random()
    for _ in range(50):
        port = rng.randrange(max(1024, low // 2), low)
        if portIsFree(port):
            return port
    raise AssertionError(f"no free port below {low}")


class Fleet:
    """
    The configuration: which names run, and each one's settings (a
    generation number that a change bumps), written atomically, as an
    operator's tool would (a reload never reads half a file). Connection
    C{i} goes to C{ports[i % len(ports)]}.

    @ivar touched: every index a mutation added, removed or changed.
    """

    def __init__(self, path: Path, ports: tuple[int, ...], protocol: str = "line") -> None:
        self.path = path
        self.ports = ports
        self.protocol = protocol
        self.generation: dict[int, int] = {i: 0 for i in range(CONNECTIONS)}
        self.removed: list[int] = []
        self.touched: set[int] = set()

    @property
    def names(self) -> set[str]:
        return {name(i) for i in self.generation}

    def port(self, index: int) -> int:
        return self.ports[index % len(self.ports)]

    def write(self) -> None:
        entries = "".join(
            f'[[connection]]\nname = "{name(i)}"\n'
            f'endpoint = "tcp:host=127.0.0.1:port={self.port(i)}:bindAddress={sourceAddress(i)}"\n'
            f'labels = {{ group = "g{generation}" }}\n'
            f"heartbeat = {{ timeout = {TIMEOUT + generation % 2 * 0.1:g} }}\n"
            for i, generation in sorted(self.generation.items())
        )
        text = (
            f'[defaults]\nprotocol = "{self.protocol}"\n'
            f"drain_timeout = {DRAIN}\nconnect_timeout = 2.0\n"
            f'backoff = {{ initial = 0.05, max = 0.5, jitter = "full", reset_after = 1.0 }}\n'
            f"heartbeat = {{ interval = {INTERVAL}, timeout = {TIMEOUT}, misses = {MISSES} }}\n"
            f"\n{entries}"
        )
        scratch = self.path.with_suffix(".new")
        scratch.write_text(text)
        os.replace(scratch, self.path)

    def mutate(self, rng: random.Random, pool: int) -> None:
        """
        Remove C{CHANGES} names, add C{CHANGES} (the ones the previous call
        removed, whose connections may still be closing, then any others out
        of C{pool} indices), and change C{CHANGES} others.
        """
        present = sorted(self.generation)
        removed = rng.sample(present, CHANGES)
        for i in removed:
            del self.generation[i]
        back = [i for i in self.removed if i not in self.generation]
        absent = sorted(set(range(pool)) - set(self.generation) - set(removed) - set(back))
        added = back + rng.sample(absent, CHANGES - len(back))
        for i in added:
            self.generation[i] = 0
        changed = rng.sample([i for i in present if i not in removed], CHANGES)
        for i in changed:
            self.generation[i] += 1
        self.removed = removed
        self.touched.update(removed, added, changed)


def liveSockets(ports: set[int], addresses: dict[str, str]) -> dict[str, set[str]]:
    """
    The live TCP sockets (ESTABLISHED or SYN_SENT) toward C{ports} that each
    name holds, by its own source address, from the kernel's table: their
    local ports.

    The table is not read atomically (it takes some 30 ms with the thousands
    of sockets of a busy machine): a line may be read twice, and a name whose
    connection was replaced during the read may show both sockets, the old
    one read before it closed and the new one after it opened.

    @param addresses: name by source address.
    """
    wanted = {_hexAddress(a): n for a, n in addresses.items()}
    # A remote port is followed by the state; a local one by an address.
    marks = tuple(f":{port:04X} {state} " for port in ports for state in LIVE_TCP_STATES)
    sockets: dict[str, set[str]] = defaultdict(set)
    with open("/proc/net/tcp") as table:
        for line in table:
            if any(mark in line for mark in marks):
                address, localPort = line.split()[1].split(":")
                owner = wanted.get(address)
                if owner is not None:
                    sockets[owner].add(localPort)
    return dict(sockets)


def _hexAddress(address: str) -> str:
    # /proc/net/tcp writes an IPv4 address as its 32 bits in host order, in hex.
    return "".join(f"{int(part):02X}" for part in reversed(address.split(".")))


def transitions(log: str) -> list[tuple[str, str, str, str]]:
    """
    Every transition the daemon logged, in order: (name, from, to, reason).
    """
    return [
        (m.group(1), m.group(2), m.group(3), m.group(4))
        for m in (_TRANSITION.search(line) for line in log.splitlines())
        if m is not None
    ]


def overlaps(logged: list[tuple[str, str, str, str]]) -> list[str]:
    """
    Where the log shows two connections of one name alive at once: a
    transition that does not start where the name's previous one ended,
    unless that one ended in CLOSED and this one starts a new connection
    (from IDLE).
    """
    last: dict[str, str] = {}
    found = []
    for index, (who, before, after, reason) in enumerate(logged):
        previous = last.get(who, "CLOSED")
        if before != previous and not (previous == "CLOSED" and before == "IDLE"):
            found.append(f"#{index} {who} {before} -> {after} ({reason}) after {previous}")
        last[who] = after
    return found


def assertCleanLog(log: str) -> None:
    for bad in ("Traceback", "Unhandled", "#critical]", "#error]"):
        assert bad not in log, f"{bad!r} in the log:\n{_around(log, bad)}"


def _around(log: str, needle: str) -> str:
    at = log.index(needle)
    return log[max(0, at - 2000) : at + 2000]


def stopAndTime(daemon: Daemon, *more: tuple[float, Callable[[], None]]) -> tuple[int, float]:
    """
    SIGTERM, then (each after its delay from the SIGTERM) the given actions;
    the exit status and the seconds from the SIGTERM to the exit.
    """
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    for delay, action in more:
        time.sleep(max(0.0, started + delay - time.monotonic()))
        action()
    code = daemon.wait(DRAIN + SLACK + 10)
    return code, time.monotonic() - started


def stopCleanly(daemon: Daemon, connections: int) -> tuple[int, float]:
    """
    SIGTERM: status 143 within C{drain_timeout} + 1 s, every connection
    closed by the drain, nothing logged as an error.
    """
    code, seconds = stopAndTime(daemon)
    log = daemon.output()
    assert code == -signal.SIGTERM, code
    assert seconds <= DRAIN + SLACK, seconds
    assert f"drain finished: {connections} connections closed" in log
    assertCleanLog(log)
    return code, seconds


class World(Processes):
    """
    The processes of one test, every one stopped by its PID at the end: a
    steady peer, a peer that a test kills and starts again, the daemon.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.stormPort = quietPort()
        self.steadyPort = quietPort()
        self.config = directory / "netsupervisor.toml"

    def peer(self, port: int | None = None, backlog: int = 1024, wait: bool = True) -> Peer:
        """
        A peer with a listen queue long enough for a storm.
        """
        return super().peer(port, backlog, wait)

    def daemon(self, fleet: Fleet) -> Daemon:
        fleet.write()
        return self.started(Daemon(fleet.path, self.directory))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from stoppedAtEnd(World(tmp_path))


def listed(daemon: Daemon) -> dict[str, str]:
    """
    The state of every connection C{/connections} lists.
    """
    return {c["name"]: c["state"] for c in daemon.json("/connections")}


def allEstablished(daemon: Daemon, names: set[str]) -> bool:
    now = listed(daemon)
    return set(now) == names and set(now.values()) == {"ESTABLISHED"}


def startFleet(world: World) -> tuple[Fleet, Peer, Daemon]:
    """
    300 connections, ESTABLISHED; the peer of the even ones is returned.
    """
    fleet = Fleet(world.config, (world.stormPort, world.steadyPort))
    storm = world.peer(world.stormPort)
    world.peer(world.steadyPort)
    daemon = world.daemon(fleet)
    poll(lambda: allEstablished(daemon, fleet.names), SETTLE, "every connection ESTABLISHED")
    return fleet, storm, daemon


def killPeer(peer: Peer, daemon: Daemon, fleet: Fleet) -> None:
    """
    SIGKILL the peer; wait until most of its connections know (the
    reconnect storm).
    """
    theirs = {name(i) for i in fleet.generation if fleet.port(i) == peer.port}
    peer.stop()
    poll(
        lambda: sum(listed(daemon).get(n) == "ESTABLISHED" for n in theirs) <= len(theirs) // 10,
        SETTLE,
        "the connections to see their peer gone",
    )


class Watch:
    """
    Threads that sample, until stopped, how many live sockets each name
    holds (the kernel's table), the names C{/connections} lists, and how long
    C{/healthz} takes (how late the daemon's reactor is).

    @ivar most: the most live sockets each name held, as two samples in a
        row saw them: the same two sockets in two reads were open at once
        (a single read may show a connection and its replacement, see
        L{liveSockets}).
    @ivar twice: C{/connections} answers that listed a name twice.
    @ivar slowest: the longest C{/healthz} took, in seconds.
    """

    def __init__(self, daemon: Daemon, ports: set[int], addresses: dict[str, str]) -> None:
        self.daemon = daemon
        self.ports = ports
        self.addresses = addresses
        self.most: Counter[str] = Counter()
        self._previous: dict[str, set[str]] = {}
        self.samples = 0
        self.listings = 0
        self.twice: list[Counter[str]] = []
        self.slowest = 0.0
        self.errors: list[BaseException] = []
        self._done = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(self._sample, 0.02), daemon=True),
            threading.Thread(target=self._loop, args=(self._list, 0.25), daemon=True),
            threading.Thread(target=self._loop, args=(self._health, 0.05), daemon=True),
        ]

    def __enter__(self) -> Watch:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join(10)
            assert not thread.is_alive()

    def _loop(self, step: Callable[[], None], pause: float) -> None:
        while not self._done.wait(pause):
            try:
                step()
            except Exception as e:  # reported by the test
                self.errors.append(e)
                return

    def _sample(self) -> None:
        self.samples += 1
        now = liveSockets(self.ports, self.addresses)
        for who, sockets in now.items():
            both = len(sockets & self._previous.get(who, set()))
            self.most[who] = max(self.most[who], both, min(1, len(sockets)))
        self._previous = now

    def _health(self) -> None:
        started = time.monotonic()
        status, _ = self.daemon.get("/healthz")
        assert status == 200, status
        self.slowest = max(self.slowest, time.monotonic() - started)

    def _list(self) -> None:
        status, body = self.daemon.get("/connections")
        assert status == 200, (status, body)
        names = Counter(c["name"] for c in json.loads(body))
        self.listings += 1
        if max(names.values(), default=0) > 1:
            self.twice.append(names)


def test_sighupStormDuringAReconnectStorm(world: World, figures: Figures) -> None:
    """
    20 reloads in 2 s while half of the connections reconnect (their peer
    killed, and started again after the 10th) and the other half are
    ESTABLISHED: never two live connections of one name (kernel sockets,
    /connections, the log), no failed reload, no transition of a connection
    no reload touched, every configured name ESTABLISHED once the peer is
    back, exit 143 on SIGTERM.
    """
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    fleet, storm, daemon = startFleet(world)
    pool = CONNECTIONS + 2 * SIGHUPS * CHANGES
    addresses = {sourceAddress(i): name(i) for i in range(pool)}
    ports = {world.stormPort, world.steadyPort}
    with Watch(daemon, ports, addresses) as watch:
        killPeer(storm, daemon, fleet)
        logBefore = len(transitions(daemon.output()))
        stormStarted = time.monotonic()
        restarted: Peer | None = None
        for k in range(SIGHUPS):
            time.sleep(max(0.0, stormStarted + k * STORM_SECONDS / SIGHUPS - time.monotonic()))
            fleet.mutate(rng, pool)
            fleet.write()
            daemon.signal(signal.SIGHUP)
            if k == SIGHUPS // 2:
                restarted = world.peer(world.stormPort, wait=False)
        stormSeconds = time.monotonic() - stormStarted
        assert restarted is not None
        restarted.listening()
        backAt = time.monotonic()
        poll(
            lambda: allEstablished(daemon, fleet.names),
            SETTLE,
            f"every configured name ESTABLISHED (seed {seed})",
        )
        recovered = time.monotonic() - backAt
    assert watch.errors == []
    assert daemon.popen.poll() is None, "the daemon died"
    assert stormSeconds <= STORM_SECONDS + SLACK

    # Signals that come faster than the process runs merge (POSIX keeps one
    # pending SIGHUP): fewer reloads, each reading the latest file.
    reloads = {
        result: int(daemon.sample("netsupervisor_config_reloads_total", result=result) or 0)
        for result in ("success", "failure")
    }
    assert 1 <= reloads["success"] <= SIGHUPS and reloads["failure"] == 0, reloads
    final = {who: len(sockets) for who, sockets in liveSockets(ports, addresses).items()}
    assert final == dict.fromkeys(fleet.names, 1), "one socket per configured name"
    doubled = {who: count for who, count in watch.most.items() if count > 1}
    assert doubled == {}, f"two live sockets of one name at once (seed {seed})"
    assert watch.twice == [], f"/connections listed a name twice (seed {seed})"
    logged = transitions(daemon.output())
    assert overlaps(logged) == [], f"interleaved transitions of one name (seed {seed})"
    during = logged[logBefore:]
    met = sum(
        1 for _, before, _, reason in during if before == "ESTABLISHED" and reason == "removed"
    )
    assert met >= 1, "no reload met an ESTABLISHED connection: the storm missed its point"
    steady = {name(i) for i in range(CONNECTIONS) if fleet.port(i) == world.steadyPort}
    untouched = steady - {name(i) for i in fleet.touched}
    moved = sorted({who for who, *_ in during} & untouched)
    assert moved == [], f"connections no reload touched changed state (seed {seed})"

    code, seconds = stopCleanly(daemon, len(fleet.names))
    figures.record(
        "signals/line/sighup-storm",
        kind="signals",
        what=f"{SIGHUPS} SIGHUPs in {STORM_SECONDS:g} s during a reconnect storm",
        connections=CONNECTIONS,
        sighups=SIGHUPS,
        storm_seconds=stormSeconds,
        reloads=reloads,
        reloads_met_established=met,
        names_at_end=len(fleet.names),
        untouched_steady=len(untouched),
        recovered_seconds=recovered,
        kernel_samples=watch.samples,
        healthz_slowest_seconds=watch.slowest,
        listings=watch.listings,
        transitions_logged=len(logged),
        most_live_sockets_per_name=max(watch.most.values()),
        overlaps=0,
        exit_code=code,
        exit_seconds=seconds,
        drain_timeout=DRAIN,
    )


def test_sigtermDuringAReconnectStorm(world: World, figures: Figures) -> None:
    """
    SIGTERM while half of the connections reconnect to their peer, just
    started again, and the other half are ESTABLISHED: drained, exit 143
    within C{drain_timeout} + 1 s, no traceback.
    """
    fleet, storm, daemon = startFleet(world)
    killPeer(storm, daemon, fleet)
    world.peer(world.stormPort)
    poll(
        lambda: Counter(listed(daemon).values())["ESTABLISHED"] >= CONNECTIONS * 6 // 10,
        SETTLE,
        "the first connections back",
    )
    during = Counter(listed(daemon).values())
    code, seconds = stopCleanly(daemon, CONNECTIONS)
    assert overlaps(transitions(daemon.output())) == []
    figures.record(
        "signals/line/sigterm-storm",
        kind="signals",
        what="SIGTERM during a reconnect storm",
        connections=CONNECTIONS,
        states_at_sigterm=dict(during),
        exit_code=code,
        exit_seconds=seconds,
        drain_timeout=DRAIN,
        outcome=f"drain finished: {CONNECTIONS} connections closed",
    )


def redisServer(world: World) -> Process:
    from tests.integration.servers import accepts, findProgram

    program = findProgram("redis-server")
    server = world.started(
        Process(
            [
                program,
                "--port",
                str(world.stormPort),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxclients",
                "4096",
                # Connections come from 127.77.x.y, which protected mode refuses.
                "--protected-mode",
                "no",
            ],
            world.directory,
            world.directory / "redis.log",
        )
    )
    poll(lambda: accepts(world.stormPort), 15, "redis-server to listen")
    return server


def test_sigtermTwiceWhileTheDrainWaits(world: World, figures: Figures) -> None:
    """
    Redis connections whose server is frozen (SIGSTOP): the drain's QUIT is
    never answered. A second SIGTERM during the drain is logged and changes
    nothing, nor does a SIGHUP (no attempt starts); the drain aborts them at
    C{drain_timeout} and says so; exit 143 within C{drain_timeout} + 1 s.
    """
    server = redisServer(world)
    fleet = Fleet(world.config, (world.stormPort,), protocol="redis")
    daemon = world.daemon(fleet)
    poll(lambda: allEstablished(daemon, fleet.names), SETTLE, "every connection ESTABLISHED")
    server.signal(signal.SIGSTOP)

    def hangup() -> None:
        fleet.mutate(random.Random(), CONNECTIONS + CHANGES)
        fleet.write()
        daemon.signal(signal.SIGHUP)

    code, seconds = stopAndTime(daemon, (0.5, lambda: daemon.signal(signal.SIGTERM)), (1.0, hangup))
    server.signal(signal.SIGCONT)
    log = daemon.output()
    assert code == -signal.SIGTERM, code
    assert DRAIN <= seconds <= DRAIN + SLACK, seconds
    draining = log.index(f"draining {CONNECTIONS} connections")
    second = log.index("SIGTERM received while draining; still draining")
    finished = log.index(
        f"drain finished: {CONNECTIONS} of {CONNECTIONS} connections aborted at drain_timeout"
    )
    assert draining < second < finished
    assert log.count("Received SIGTERM") == 1
    assertCleanLog(log)
    after = transitions(log[draining:])
    assert [t for t in after if t[2] == "CONNECTING"] == [], "an attempt during the drain"
    aborted = [t for t in after if t[2] == "CLOSED" and t[3] == "deadline"]
    assert len(aborted) == CONNECTIONS
    figures.record(
        "signals/redis/sigterm-twice",
        kind="signals",
        what="SIGTERM, SIGTERM again and SIGHUP while the drain waits on a frozen redis-server",
        connections=CONNECTIONS,
        exit_code=code,
        exit_seconds=seconds,
        drain_timeout=DRAIN,
        outcome=f"second SIGTERM logged; no attempt; {CONNECTIONS} of {CONNECTIONS} aborted "
        "at drain_timeout",
    )
