"""
Every fault of the chaos proxy against every real-peer protocol (line,
redis, nats, mqtt): the supervised connection reaches the expected state
with the expected reason and metric, within the configured bounds; every
dropped connection comes back once the fault is cleared; nothing logs a
traceback; the process's sockets are back where they were.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Literal

import attrs
import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, inlineCallbacks

from supervisor.testing.chaos import (
    Bandwidth,
    Blackhole,
    Corrupt,
    Fault,
    Fragment,
    HalfClose,
    Latency,
    Reset,
    Stall,
    describeFault,
)
from tests.chaos.conftest import Figures
from tests.chaos.trial import (
    CONNECT_TIMEOUT,
    HEARTBEAT,
    RECOVERY_BOUND,
    SLACK,
    Trial,
    openSockets,
    rssKiB,
)
from tests.integration.conftest import PeerLauncher, holdsFor, waitFor
from tests.integration.servers import ServerLauncher

pytestmark = pytest.mark.integration

PROTOCOLS = ("line", "redis", "nats", "mqtt")

SURVIVAL_WINDOW = HEARTBEAT.detectionBound + 0.5
"""How long a connection must stay up under a fault it should survive:
longer than a silent peer could stay ESTABLISHED."""


@attrs.frozen
class Case:
    """
    One fault and what it must do to a supervised connection.

    @ivar early: the fault is in force before the first attempt (the
        handshake goes through it); otherwise it is set once ESTABLISHED.
    @ivar outcome: C{survives} (stays ESTABLISHED, heartbeats answered) or
        C{dropped} (ESTABLISHED -> IDLE with one of C{reasons}).
    @ivar bound: for a drop, the longest it may take from the fault.
    @ivar minRtt: for survival, the least round trip the fault allows.
    @ivar what: the case in a few words, for the report.
    @ivar then: for an early case, the faults put in force instead once
        ESTABLISHED (switched at run time).
    """

    name: str
    faults: tuple[Fault, ...]
    early: bool
    outcome: Literal["survives", "dropped"]
    what: str
    reasons: frozenset[str] = frozenset()
    bound: float = 0.0
    minRtt: float = 0.0
    then: tuple[Fault, ...] = ()


def survives(
    name: str,
    fault: Fault,
    what: str,
    minRtt: float = 0.0,
    early: bool = False,
    then: tuple[Fault, ...] = (),
) -> Case:
    """
    A case where the connection stays ESTABLISHED under C{fault}, with
    round trips of at least C{minRtt}.
    """
    return Case(name, (fault,), early, "survives", what, minRtt=minRtt, then=then)


def dropped(name: str, fault: Fault, what: str, reasons: set[str], bound: float) -> Case:
    """
    A case where C{fault}, put in force once ESTABLISHED, drops the
    connection to IDLE within C{bound}, for one of C{reasons}.
    """
    return Case(name, (fault,), False, "dropped", what, frozenset(reasons), bound)


HEARTBEAT_BOUND = HEARTBEAT.detectionBound + SLACK
IMMEDIATE_BOUND = SLACK

CASES = (
    survives("latency", Latency(0.05), "50 ms each way, from the first byte", 0.1, early=True),
    survives(
        "jitter", Latency(0.01, jitter=0.08), "10-90 ms each way, order kept", 0.02, early=True
    ),
    dropped(
        "latency-over-timeout",
        Latency(0.3),
        "300 ms each way: a round trip past the heartbeat timeout",
        {"heartbeat"},
        HEARTBEAT_BOUND,
    ),
    dropped(
        "stall",
        Stall(),
        "nothing forwarded either way, connection kept open",
        {"heartbeat"},
        HEARTBEAT_BOUND,
    ),
    dropped(
        "blackhole", Blackhole(), "bytes read and dropped, no close", {"heartbeat"}, HEARTBEAT_BOUND
    ),
    dropped(
        "reset",
        Reset(),
        "TCP reset both ways; new connections reset on accept",
        {"lost"},
        IMMEDIATE_BOUND,
    ),
    dropped(
        "halfclose",
        HalfClose(),
        "FIN toward the supervisor, its side left open",
        {"lost"},
        IMMEDIATE_BOUND,
    ),
    survives("bandwidth", Bandwidth(200.0), "200 bytes/s each way", 4 / 200.0),
    # A parser that sees garbage refuses it ("lost"); one that never sees a
    # whole frame waits, and the heartbeat ends it.
    dropped(
        "corrupt",
        Corrupt(toward="client"),
        "every byte toward the supervisor changed",
        {"lost", "heartbeat"},
        HEARTBEAT_BOUND,
    ),
    survives(
        "fragment",
        Fragment(),
        "one byte per write: each reactor turn in the handshake, then 5 ms apart",
        early=True,
        then=(Fragment(interval=0.005),),
    ),
)


def firstAnswerSince(trial: Trial, when: float) -> float:
    """
    When the first heartbeat after C{when} was answered.
    """
    return min(at for at, rtt in trial.seen.heartbeats if at > when and rtt is not None)


@inlineCallbacks
def recoveryOnceCleared(trial: Trial, what: str) -> Generator[Deferred[Any], Any, float]:
    """
    Clear every fault: the connection is ESTABLISHED with an answered
    heartbeat within C{RECOVERY_BOUND}. How long the first answer took.
    """
    trial.proxy.setFaults()
    clearedAt = trial.now()
    yield waitFor(
        lambda: trial.connection.state == "ESTABLISHED" and trial.seen.answeredSince(clearedAt),
        RECOVERY_BOUND,
        what,
    )
    return firstAnswerSince(trial, clearedAt) - clearedAt


@inlineCallbacks
def launchPeer(
    protocol: str, peers: PeerLauncher, servers: ServerLauncher
) -> Generator[Deferred[Any], Any, int]:
    """
    Start the real peer of C{protocol}; its port.
    """
    if protocol == "line":
        peer = yield peers.launch()
    else:
        peer = yield servers.forProtocol(protocol)
    return int(peer.port)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest_twisted.inlineCallbacks
def test_fault(
    protocol: str,
    case: Case,
    peers: PeerLauncher,
    servers: ServerLauncher,
    figures: Figures,
    logText: list[str],
) -> Generator[Deferred[Any], Any, None]:
    """
    The connection does what C{case} says under its fault, within bounds,
    and is ESTABLISHED again once the fault is cleared.
    """
    port = yield launchPeer(protocol, peers, servers)
    trial = Trial(f"{protocol}-{case.name}", protocol, port, seed=len(case.name))
    seen = trial.seen
    connection = trial.connection
    found: dict[str, Any] = {
        "kind": "fault",
        "protocol": protocol,
        "fault": case.name,
        "faults": ";".join(describeFault(f) for f in case.faults + case.then),
        "what": case.what,
        "expected": case.outcome
        if case.outcome == "survives"
        else f"IDLE ({'/'.join(sorted(case.reasons))})",
    }
    try:
        if case.early:
            trial.proxy.setFaults(*case.faults)
        trial.start()
        yield waitFor(lambda: connection.rtt is not None, 5.0, "ESTABLISHED with an RTT")
        assert seen.pairs() == [("IDLE", "CONNECTING"), ("CONNECTING", "ESTABLISHED")], str(seen)
        mark = len(seen.transitions)
        if not case.early:
            trial.proxy.setFaults(*case.faults)
        elif case.then:
            trial.proxy.setFaults(*case.then)
        faultAt = trial.now()
        heartbeatsAtFault = len(seen.heartbeats)

        reads: list[int] = []
        if case.name == "fragment":
            # What the plugin's protocol is given, read by read.
            plugin: Any = connection.protocol
            received = plugin.dataReceived

            def recordingDataReceived(data: bytes) -> None:
                reads.append(len(data))
                received(data)

            plugin.dataReceived = recordingDataReceived

        if case.outcome == "survives":
            yield holdsFor(
                lambda: len(seen.transitions) == mark,
                SURVIVAL_WINDOW,
                "ESTABLISHED under the fault",
            )
            rtts = [rtt for at, rtt in seen.heartbeats[heartbeatsAtFault:] if rtt is not None]
            misses = [at for at, rtt in seen.heartbeats[heartbeatsAtFault:] if rtt is None]
            assert len(rtts) >= 2, f"pongs under the fault: {seen.heartbeats}"
            assert min(rtts) >= case.minRtt - 0.005, rtts
            assert trial.sample("netsupervisor_connection_state", state="ESTABLISHED") == 1.0
            assert trial.sample("netsupervisor_disconnects_total") is None
            lastRtt = trial.sample("netsupervisor_heartbeat_last_rtt_seconds")
            assert lastRtt is not None and lastRtt >= case.minRtt - 0.005
            found.update(
                outcome="ESTABLISHED",
                pongs=len(rtts),
                misses=len(misses),
                rtt_min=min(rtts),
                rtt_max=max(rtts),
            )
            if case.name == "fragment":
                # TCP may still merge segments when the reactor is late to
                # read, but every pong arrives in pieces, mostly of one byte.
                assert len(reads) >= len(rtts) * 2, reads
                assert reads.count(1) * 2 >= len(reads), reads
                found["reads"] = len(reads)
                found["one_byte_reads"] = reads.count(1)
            if case.name == "jitter":
                assert max(rtts) - min(rtts) > 0.005, f"jitter varies the RTT: {rtts}"
        else:
            yield waitFor(lambda: len(seen.transitions) > mark, case.bound, "the drop")
            drop = seen.transitions[mark]
            detected = drop.time - faultAt
            assert (drop.from_, drop.to) == ("ESTABLISHED", "IDLE"), str(seen)
            assert drop.reason in case.reasons, str(seen)
            assert detected <= case.bound, str(seen)
            # The metric says the same as the transitions.
            counted = trial.sample("netsupervisor_disconnects_total", reason=drop.reason)
            assert counted == trial.disconnects(drop.reason) >= 1
            assert trial.sample("netsupervisor_connection_state", state=connection.state) == 1.0
            if drop.reason == "heartbeat":
                misses = trial.sample("netsupervisor_heartbeat_misses_total")
                assert misses is not None and misses >= HEARTBEAT.misses
            found.update(
                outcome=f"{drop.to} ({drop.reason})",
                detail=drop.detail,
                detect_seconds=detected,
                bound_seconds=case.bound,
            )

            # Under the fault, attempts go on, and every ESTABLISHED ends
            # for one of the expected reasons; nothing is CLOSED.
            attempts = connection.attempts
            yield waitFor(
                lambda: connection.attempts > attempts and connection.state == "IDLE",
                RECOVERY_BOUND,
                "an attempt under the fault",
            )
            during = seen.transitions[mark:]
            assert "CLOSED" not in {t.to for t in during}, str(seen)
            assert {t.reason for t in during if t.from_ == "ESTABLISHED"} <= case.reasons, str(seen)
            found["attempts_under_fault"] = connection.attempts - attempts + 1

            found["recovery_seconds"] = yield recoveryOnceCleared(
                trial, "ESTABLISHED with an answered heartbeat after the fault is cleared"
            )

        yield trial.stop()
        assert connection.state == "CLOSED"
        assert [line for line in logText if "Traceback" in line] == []
        found["sockets_delta"] = openSockets() - trial.socketsBefore
        found["rss_delta_kib"] = rssKiB() - trial.rssBefore
        assert found["sockets_delta"] == 0, "every socket of the case is closed"
        figures.record(f"fault/{protocol}/{case.name}", **found)
    finally:
        if connection.state != "CLOSED" or trial.port.connected:  # type: ignore[attr-defined]
            yield trial.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest_twisted.inlineCallbacks
def test_stalledHandshake(
    protocol: str,
    peers: PeerLauncher,
    servers: ServerLauncher,
    figures: Figures,
    logText: list[str],
) -> Generator[Deferred[Any], Any, None]:
    """
    A stall from the first byte: a protocol with a handshake never becomes
    ESTABLISHED, each attempt ending at C{connect_timeout} ("timeout"); the
    line protocol, ready at connect, becomes ESTABLISHED and is dropped by
    its heartbeats. Cleared: ESTABLISHED, heartbeats answered.
    """
    port = yield launchPeer(protocol, peers, servers)
    trial = Trial(f"{protocol}-stall-handshake", protocol, port)
    seen = trial.seen
    connection = trial.connection
    try:
        trial.proxy.setFaults(Stall())
        startedAt = trial.now()
        trial.start()
        if protocol == "line":
            expected = ("ESTABLISHED", "IDLE", "heartbeat")
            bound = HEARTBEAT.detectionBound + SLACK
        else:
            expected = ("CONNECTING", "IDLE", "timeout")
            bound = CONNECT_TIMEOUT + SLACK
        yield waitFor(lambda: connection.attempts >= 2, bound + RECOVERY_BOUND, "a second attempt")
        first = next(t for t in seen.transitions if t.to == "IDLE")
        assert (first.from_, first.to, first.reason) == expected, str(seen)
        detected = first.time - startedAt
        assert detected <= bound, str(seen)
        if protocol != "line":
            assert "ESTABLISHED" not in {t.to for t in seen.transitions}, str(seen)
            failures = trial.sample("netsupervisor_connect_failures_total", reason="timeout")
            assert failures is not None and failures >= 1
        else:
            assert trial.sample("netsupervisor_disconnects_total", reason="heartbeat") == 1

        recovered = yield recoveryOnceCleared(trial, "ESTABLISHED once the stall is cleared")
        yield trial.stop()
        assert [line for line in logText if "Traceback" in line] == []
        assert openSockets() == trial.socketsBefore
        rssDelta = rssKiB() - trial.rssBefore
        figures.record(
            f"fault/{protocol}/stall-handshake",
            kind="fault",
            protocol=protocol,
            fault="stall-handshake",
            faults=describeFault(Stall()),
            what="nothing forwarded from the first byte",
            expected=f"{expected[1]} ({expected[2]})",
            outcome=f"{first.to} ({first.reason}) from {first.from_}",
            detect_seconds=detected,
            bound_seconds=bound,
            recovery_seconds=recovered,
            sockets_delta=0,
            rss_delta_kib=rssDelta,
        )
    finally:
        if connection.state != "CLOSED" or trial.port.connected:  # type: ignore[attr-defined]
            yield trial.stop()
