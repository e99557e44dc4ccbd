"""
L{supervisor.testing.chaos}: the fault-injecting proxy, on a fake clock and
in-memory transports, one fault at a time, then through C{iosim} with real
protocols at both ends.
"""

from __future__ import annotations

import math
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IProtocol, IProtocolFactory
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.test import iosim

from supervisor.chaos import (
    MAX_CLIENTS,
    MAX_LINE,
    ControlFactory,
    ControlProtocol,
    parseArguments,
)
from supervisor.testing.chaos import (
    FAULT_TYPES,
    HIGH_WATER,
    LOW_WATER,
    MAX_FAULT_TEXT,
    MAX_FAULTS,
    Bandwidth,
    Blackhole,
    ChaosProxy,
    Corrupt,
    Fault,
    FaultSyntaxError,
    Fragment,
    HalfClose,
    Latency,
    Reset,
    Stall,
    corrupt,
    describeFault,
    parseFault,
)

ADDRESS = IPv4Address("TCP", "127.0.0.1", 40000)


class Wire(StringTransport):
    """
    A L{StringTransport} that keeps each write apart and records half
    closes and aborts.
    """

    def __init__(self) -> None:
        super().__init__(lenient=True)
        self.writes: list[bytes] = []
        self.writeClosed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        super().write(data)
        self.writes.append(data)

    def loseWriteConnection(self) -> None:
        self.writeClosed = True

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class Upstream:
    """
    A client endpoint whose connects the test accepts or refuses.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[IProtocolFactory, Deferred[Protocol]]] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[Protocol]:
        d: Deferred[Protocol] = Deferred()
        self.pending.append((factory, d))
        return d


class Rig:
    """
    One proxy on a fake clock, its clients and their server sides.
    """

    def __init__(self, *faults: Fault) -> None:
        self.clock = Clock()
        self.upstream = Upstream()
        self.proxy = ChaosProxy(self.clock, self.upstream, rng=Random(7))
        self.proxy.setFaults(*faults)

    def accept(self) -> tuple[Protocol, Wire]:
        """
        A client connects to the proxy.
        """
        protocol = self.proxy.buildProtocol(ADDRESS)
        wire = Wire()
        protocol.makeConnection(wire)
        return protocol, wire

    def serve(self) -> tuple[Protocol, Wire]:
        """
        The target accepts the proxy's pending connect.
        """
        factory, d = self.upstream.pending.pop(0)
        protocol = factory.buildProtocol(ADDRESS)
        assert protocol is not None
        wire = Wire()
        protocol.makeConnection(wire)
        d.callback(protocol)
        return protocol, wire  # type: ignore[return-value]

    def pair(self) -> tuple[Protocol, Wire, Protocol, Wire]:
        client, clientWire = self.accept()
        server, serverWire = self.serve()
        return client, clientWire, server, serverWire

    def quiet(self) -> bool:
        return self.clock.getDelayedCalls() == []


def lose(protocol: Protocol) -> None:
    protocol.connectionLost(Failure(ConnectionDone()))


def test_plainProxyForwardsBothWays() -> None:
    """
    Without faults, bytes pass both ways at once; the client is not read
    until the target is connected; each side is the producer of the other's
    transport; a close on one side closes the other, and the proxy forgets
    the connection.
    """
    rig = Rig()
    client, clientWire = rig.accept()
    assert clientWire.producerState == "paused"
    server, serverWire = rig.serve()
    assert clientWire.producerState == "producing"
    assert clientWire.producer is server and serverWire.producer is client

    client.dataReceived(b"PING 1\r\n")
    server.dataReceived(b"PONG 1\r\n")
    assert serverWire.value() == b"PING 1\r\n"
    assert clientWire.value() == b"PONG 1\r\n"
    assert (rig.proxy.stats.toServer, rig.proxy.stats.toClient) == (8, 8)
    assert rig.proxy.stats.accepted == 1

    lose(server)
    assert clientWire.disconnecting
    closed = rig.proxy.close()
    assert not closed.called
    lose(client)
    assert closed.called
    assert rig.proxy.connections == 0
    assert rig.quiet()


def test_upstreamFailureClosesTheClient() -> None:
    """
    A target that refuses: the client is closed and the failure counted.
    """
    rig = Rig()
    _, clientWire = rig.accept()
    _, d = rig.upstream.pending.pop(0)
    d.errback(ConnectionRefusedError())
    assert clientWire.disconnecting
    assert rig.proxy.stats.upstreamFailures == 1


def test_latencyHoldsEveryChunk() -> None:
    """
    L{Latency} delays each chunk by C{delay}, in the direction given only.
    """
    rig = Rig(Latency(0.25, toward="client"))
    client, clientWire, server, serverWire = rig.pair()
    server.dataReceived(b"PONG 1\r\n")
    client.dataReceived(b"PING 2\r\n")
    assert serverWire.value() == b"PING 2\r\n"
    assert clientWire.value() == b""
    rig.clock.advance(0.2499)
    assert clientWire.value() == b""
    rig.clock.advance(0.0001)
    assert clientWire.value() == b"PONG 1\r\n"
    assert rig.quiet()


def test_jitteredLatencyKeepsOrder() -> None:
    """
    With jitter, each chunk arrives within C{[delay, delay + jitter]} of
    being sent, never before an earlier chunk.
    """
    rig = Rig(Latency(0.1, jitter=0.2))
    _, clientWire, server, _ = rig.pair()
    sentAt: dict[bytes, float] = {}
    arrivals: dict[bytes, float] = {}
    for step in range(1000):
        if step % 10 == 0 and step < 500:
            chunk = b"%03d" % (step // 10,)
            sentAt[chunk] = rig.clock.seconds()
            server.dataReceived(chunk)
        for chunk in clientWire.writes[len(arrivals) :]:
            arrivals[chunk] = rig.clock.seconds()
        rig.clock.advance(0.001)
    assert b"".join(clientWire.writes) == b"".join(b"%03d" % (i,) for i in range(50))
    delays = [arrivals[c] - sentAt[c] for c in sentAt]
    assert min(delays) >= 0.1 - 1e-9
    # Order is kept: a chunk may wait for an earlier, later-drawn one.
    assert max(delays) <= 0.3 + 1e-9
    assert len({round(d, 3) for d in delays}) > 5, "the delays vary"
    assert rig.quiet()


def test_stallHoldsBytesAndCloseUntilCleared() -> None:
    """
    L{Stall}: nothing passes, not even a close; cleared, everything held is
    delivered in order, then the close.
    """
    rig = Rig()
    client, clientWire, server, serverWire = rig.pair()
    rig.proxy.setFaults(Stall())
    server.dataReceived(b"PONG 1\r\n")
    client.dataReceived(b"PING 2\r\n")
    lose(server)
    rig.clock.advance(60)
    assert (clientWire.value(), serverWire.value()) == (b"", b"")
    assert not clientWire.disconnecting
    rig.proxy.setFaults()
    assert clientWire.value() == b"PONG 1\r\n"
    assert clientWire.disconnecting


def test_stallStopsReadingPastTheHighWaterMark() -> None:
    """
    A stalled pipe stops reading its source once it holds more than
    L{HIGH_WATER} bytes, and reads again below L{LOW_WATER}.
    """
    rig = Rig(Stall(toward="client"))
    _, clientWire, server, serverWire = rig.pair()
    chunk = b"x" * 65536
    while serverWire.producerState == "producing":
        server.dataReceived(chunk)
    held = rig.proxy.stats.toClient
    assert held == 0
    assert serverWire.producerState == "paused"
    rig.proxy.setFaults(Bandwidth(65536 * 8))
    rig.clock.advance(0.05)
    assert serverWire.producerState == "paused", "still above the low-water mark"
    for _ in range(100):
        rig.clock.advance(0.05)
    assert len(clientWire.value()) > HIGH_WATER - LOW_WATER
    assert serverWire.producerState == "producing"


def test_sinkThatDoesNotKeepUpPausesItsSource() -> None:
    """
    The client's transport pausing its producer stops reading the server.
    """
    rig = Rig()
    _, clientWire, _, serverWire = rig.pair()
    assert clientWire.producer is not None
    clientWire.producer.pauseProducing()
    assert serverWire.producerState == "paused"
    clientWire.producer.resumeProducing()
    assert serverWire.producerState == "producing"


def test_resetAbortsLiveConnectionsAndNewOnesOnAccept() -> None:
    """
    L{Reset} with C{after=0} aborts both sides of every connection at once;
    a new connection is aborted on accept, before any connect to the target.
    """
    rig = Rig()
    client, clientWire, server, serverWire = rig.pair()
    rig.proxy.setFaults(Reset())
    assert clientWire.aborted and serverWire.aborted
    lose(client)
    lose(server)
    assert rig.proxy.connections == 0

    late, lateWire = rig.accept()
    assert lateWire.aborted
    assert rig.upstream.pending == []
    lose(late)
    assert rig.proxy.connections == 0
    assert rig.proxy.stats.resets == 2
    assert rig.quiet()


def test_resetAfterADelayAndCancelled() -> None:
    """
    L{Reset} with C{after}: the abort comes that long after the fault is
    set; clearing the fault first cancels it.
    """
    rig = Rig()
    _, clientWire, _, serverWire = rig.pair()
    rig.proxy.setFaults(Reset(after=1.0))
    rig.clock.advance(0.999)
    assert not clientWire.aborted
    rig.clock.advance(0.001)
    assert clientWire.aborted and serverWire.aborted

    _, otherWire, _, _ = rig.pair()
    rig.clock.advance(0.5)
    rig.proxy.setFaults()
    rig.clock.advance(10)
    assert not otherWire.aborted
    assert rig.quiet()


def test_halfCloseSendsAFinAndKeepsReading() -> None:
    """
    L{HalfClose} toward the client shuts down the proxy's writing half
    toward it; the client's bytes still reach the server, and the server's
    are dropped. Clearing the fault does not reopen.
    """
    rig = Rig()
    client, clientWire, server, serverWire = rig.pair()
    rig.proxy.setFaults(HalfClose())
    assert clientWire.writeClosed
    assert not serverWire.writeClosed
    client.dataReceived(b"PING 1\r\n")
    server.dataReceived(b"PONG 1\r\n")
    assert serverWire.value() == b"PING 1\r\n"
    assert clientWire.value() == b""
    assert rig.proxy.stats.dropped == 8
    rig.proxy.setFaults()
    server.dataReceived(b"PONG 2\r\n")
    assert clientWire.value() == b""

    _, laterWire, _, laterServerWire = rig.pair()
    assert not laterWire.writeClosed
    rig.proxy.setFaults(HalfClose(toward="server"))
    assert laterServerWire.writeClosed and not laterWire.writeClosed


def test_blackholeDropsBytesAndCloses() -> None:
    """
    L{Blackhole}: bytes are read and dropped, a close is not passed on;
    cleared, new bytes flow again.
    """
    rig = Rig()
    client, clientWire, server, serverWire = rig.pair()
    rig.proxy.setFaults(Blackhole())
    client.dataReceived(b"PING 1\r\n")
    server.dataReceived(b"PONG 1\r\n")
    assert (clientWire.value(), serverWire.value()) == (b"", b"")
    assert clientWire.producerState == "producing", "a blackhole keeps reading"
    assert rig.proxy.stats.dropped == 16
    rig.proxy.setFaults()
    server.dataReceived(b"PONG 2\r\n")
    assert clientWire.value() == b"PONG 2\r\n"

    rig.proxy.setFaults(Blackhole(toward="client"))
    lose(server)
    rig.clock.advance(60)
    assert not clientWire.disconnecting


def test_bandwidthCapPacesDelivery() -> None:
    """
    L{Bandwidth}: C{n} bytes arrive C{n / rate} seconds after the link is
    free, in pieces of L{PIECE_SECONDS} worth.
    """
    rig = Rig(Bandwidth(100.0, toward="client"))
    _, clientWire, server, _ = rig.pair()
    server.dataReceived(b"x" * 10)
    rig.clock.advance(0.0499)
    assert clientWire.value() == b""
    rig.clock.advance(0.0001)
    assert clientWire.value() == b"xxxxx"
    rig.clock.advance(0.05)
    assert clientWire.value() == b"x" * 10
    clientWire.clear()
    server.dataReceived(b"y" * 1000)
    rig.clock.pump([0.05] * 199)
    assert len(clientWire.value()) == 995
    rig.clock.advance(0.05)
    assert clientWire.value() == b"y" * 1000
    assert all(len(w) == 5 for w in clientWire.writes[-200:])
    assert rig.quiet()


def test_corruptChangesBytesTowardOneSide() -> None:
    """
    L{Corrupt} with probability 1 changes every byte of the direction given
    and none of the other; the count is kept.
    """
    rig = Rig(Corrupt(toward="client"))
    client, clientWire, server, serverWire = rig.pair()
    server.dataReceived(b"PONG 1\r\n")
    client.dataReceived(b"PING 1\r\n")
    assert serverWire.value() == b"PING 1\r\n"
    received = clientWire.value()
    assert len(received) == 8
    assert all(a != b for a, b in zip(received, b"PONG 1\r\n", strict=True))
    assert rig.proxy.stats.corrupted == 8


def test_corruptWithAProbability() -> None:
    """
    With probability p, about p of the bytes change, and only those.
    """
    data = bytes(range(256)) * 40
    out, changed = corrupt(data, 0.1, Random(3))
    differing = sum(a != b for a, b in zip(out, data, strict=True))
    assert differing == changed
    assert 0.07 * len(data) < changed < 0.13 * len(data)


def test_fragmentWritesOneByteAPerTurn() -> None:
    """
    L{Fragment}: one write of C{size} bytes per reactor turn, in order.
    """
    rig = Rig(Fragment())
    _, clientWire, server, _ = rig.pair()
    server.dataReceived(b"PONG 1\r\n")
    assert clientWire.writes == [b"P"]
    # The rest waits for the next turn: one call, due now. (Clock runs the
    # calls that one schedules within the same advance; a reactor does not.)
    (call,) = rig.clock.getDelayedCalls()
    assert call.getTime() == rig.clock.seconds()
    rig.clock.advance(0)
    assert clientWire.writes == [bytes([b]) for b in b"PONG 1\r\n"]
    assert rig.quiet()


def test_fragmentWithIntervalAndLatencyTogether() -> None:
    """
    Faults of different kinds combine: latency first, then fragments of
    two bytes, 10 ms apart.
    """
    rig = Rig(Latency(0.1), Fragment(size=2, interval=0.01))
    _, clientWire, server, _ = rig.pair()
    server.dataReceived(b"abcdef")
    rig.clock.advance(0.1)
    assert clientWire.writes == [b"ab"]
    rig.clock.advance(0.01)
    rig.clock.advance(0.01)
    assert clientWire.writes == [b"ab", b"cd", b"ef"]
    assert rig.quiet()


def test_twoFaultsOfOneKindOnTheSameBytesAreRefused() -> None:
    """
    Two latencies on the bytes toward the client are refused, and the
    faults in force stay as they were; toward different sides they combine.
    """
    rig = Rig(Stall())
    with pytest.raises(ValueError, match="two latency faults"):
        rig.proxy.setFaults(Latency(0.1), Latency(0.2, toward="client"))
    with pytest.raises(ValueError, match="two reset faults"):
        rig.proxy.setFaults(Reset(), Reset(after=1))
    with pytest.raises(ValueError, match="at most"):
        rig.proxy.setFaults(*[Stall(toward="server")] * (MAX_FAULTS + 1))
    assert rig.proxy.faults == (Stall(),)
    rig.proxy.setFaults(Latency(0.1, toward="server"), Latency(0.2, toward="client"))
    rig.proxy.addFault(Fragment())
    assert len(rig.proxy.faults) == 3


def test_closeAbortsEverything() -> None:
    """
    L{ChaosProxy.close} aborts every connection and the connects in flight,
    and fires once all are gone; nothing stays scheduled.
    """
    rig = Rig(Latency(5.0))
    client, clientWire, server, serverWire = rig.pair()
    server.dataReceived(b"held")
    waiting, waitingWire = rig.accept()
    _, connecting = rig.upstream.pending[0]
    closed = rig.proxy.close()
    assert clientWire.aborted and serverWire.aborted and waitingWire.aborted
    assert connecting.called  # cancelled
    connecting.addErrback(lambda f: None)
    lose(client)
    lose(server)
    assert not closed.called
    lose(waiting)
    assert closed.called
    assert rig.quiet()


# The text syntax, shared with the command line and its control channel.

toward = st.sampled_from(["both", "client", "server"])
seconds = st.floats(0, 3600, allow_nan=False)
faults = st.one_of(
    st.builds(Latency, seconds, seconds, toward),
    st.builds(Stall, toward),
    st.builds(Reset, seconds),
    st.builds(HalfClose, toward),
    st.builds(Blackhole, toward),
    st.builds(Bandwidth, st.floats(1, 1e10), toward),
    st.builds(Corrupt, st.floats(1e-9, 1.0), toward),
    st.builds(Fragment, st.integers(1, 65536), seconds, toward),
)


@given(faults)
def test_describedFaultsParseBack(fault: Fault) -> None:
    """
    L{parseFault} reads back exactly what L{describeFault} writes.
    """
    assert parseFault(describeFault(fault)) == fault


def test_parseFaultShortForms() -> None:
    """
    Omitted keys take their defaults.
    """
    assert parseFault("stall") == Stall()
    assert parseFault("latency:delay=0.2,jitter=0.05") == Latency(0.2, 0.05)
    assert parseFault(" corrupt:probability=0.5,toward=client ") == Corrupt(0.5, "client")
    assert parseFault("fragment") == Fragment(1)
    assert set(FAULT_TYPES) == {
        "latency",
        "stall",
        "reset",
        "halfclose",
        "blackhole",
        "bandwidth",
        "corrupt",
        "fragment",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "unknown fault"),
        ("latency", "delay"),
        ("explode", "unknown fault 'explode'"),
        ("latency:delay", "expected KEY=VALUE"),
        ("latency:delay=1,delay=2", "given twice"),
        ("latency:speed=1", "KEY one of: delay, jitter, toward"),
        ("latency:delay=fast", "must be a number"),
        ("latency:delay=nan", r"in \[0, 3600\]"),
        ("latency:delay=inf", r"in \[0, 3600\]"),
        ("latency:delay=-1", r"in \[0, 3600\]"),
        ("latency:delay=1e9", r"in \[0, 3600\]"),
        ("bandwidth:rate=0", r"in \[1, 1e\+10\]"),
        ("corrupt:probability=0", r"in \(0, 1\]"),
        ("fragment:size=0", "integer in"),
        ("fragment:size=1.5", "must be an integer"),
        ("stall:toward=sideways", "one of both, client, server"),
        ("x" * (MAX_FAULT_TEXT + 1), f"at most {MAX_FAULT_TEXT}"),
    ],
)
def test_parseFaultRefusesWithAReason(text: str, message: str) -> None:
    """
    Every refusal is a L{FaultSyntaxError} saying what was wrong.
    """
    with pytest.raises(FaultSyntaxError, match=message):
        parseFault(text)


@given(st.text(max_size=300))
def test_parseFaultNeverRaisesAnythingElse(text: str) -> None:
    """
    Any text is a fault or a L{FaultSyntaxError}; nothing else escapes.
    """
    try:
        fault = parseFault(text)
    except FaultSyntaxError:
        return
    assert fault.kind in FAULT_TYPES
    for value in vars(fault).values() if hasattr(fault, "__dict__") else ():
        assert not (isinstance(value, float) and math.isnan(value))


# With real protocols at both ends, over iosim.


class LineClient(LineReceiver):
    delimiter = b"\n"

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.reads: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.reads.append(data)
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data.replace(b"PING", b"PONG"))


def iosimPair(server: IProtocol, client: IProtocol, clock: Clock) -> iosim.IOPump:
    """
    C{server} and C{client} connected over iosim's fake transports.
    """
    return iosim.connect(
        server,
        iosim.makeFakeServer(server),
        client,
        iosim.makeFakeClient(client),
        greet=True,
        clock=clock,
    )


class IOSimTarget:
    """
    An endpoint that connects the proxy to an L{Echo} over iosim.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.pumps: list[iosim.IOPump] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[Protocol]:
        protocol = factory.buildProtocol(ADDRESS)
        if protocol is None:
            return fail(ConnectionRefusedError())
        self.pumps.append(iosimPair(Echo(), protocol, self.clock))
        d: Deferred[Protocol] = Deferred()
        d.callback(protocol)  # type: ignore[arg-type]
        return d


def test_fragmentedEchoOverIOSim() -> None:
    """
    A line client and an echo server with the proxy between them, on
    iosim: under L{Fragment} every read of the client is one byte, and the
    line still arrives whole.
    """
    clock = Clock()
    target = IOSimTarget(clock)
    proxy = ChaosProxy(clock, target, rng=Random(1))
    # Clock.advance(0) would run the next fragment's callLater(0) at once; a
    # real reactor runs it on its next turn. An interval keeps them apart.
    proxy.setFaults(Fragment(interval=0.001, toward="client"))
    client = LineClient()
    front = iosimPair(proxy.buildProtocol(ADDRESS), client, clock)
    assert client.transport is not None
    client.transport.write(b"PING hello\r\n")
    for _ in range(40):
        for pump in target.pumps:
            pump.pump()
        front.pump()
        clock.advance(0.001)
    assert client.lines == [b"PONG hello\r"]
    assert all(len(read) == 1 for read in client.reads), client.reads
    assert len(client.reads) == len(b"PONG hello\r\n")


# The command line's control channel, bounded against hostile clients.


class BufferedWire(Wire):
    """
    A transport whose buffer pauses its producer past C{limit} bytes, as a
    TCP transport does when its peer does not read.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.value()) > self.limit and self.producer is not None:
            self.producer.pauseProducing()

    def drain(self) -> None:
        self.clear()
        if self.producer is not None:
            self.producer.resumeProducing()


def controlled(
    maxClients: int = MAX_CLIENTS,
) -> tuple[Clock, ChaosProxy, ControlFactory]:
    clock = Clock()
    proxy = ChaosProxy(clock, Upstream(), rng=Random(0))
    return clock, proxy, ControlFactory(proxy, clock, maxClients=maxClients, idleTimeout=30.0)


def controlClient(
    factory: ControlFactory, wire: Wire | None = None
) -> tuple[ControlProtocol, Wire]:
    protocol = factory.buildProtocol(ADDRESS)
    wire = wire if wire is not None else Wire()
    protocol.makeConnection(wire)
    return protocol, wire


def answers(wire: Wire) -> list[str]:
    return wire.value().decode().splitlines()


def test_controlCommandsSwitchFaults() -> None:
    """
    C{set}, C{add}, C{clear} change the faults in force; C{status} tells
    them and the counters; each answers one line.
    """
    _, proxy, factory = controlled()
    protocol, wire = controlClient(factory)
    protocol.dataReceived(
        b"set latency:delay=0.2 fragment\r\nadd stall:toward=server\nstatus\nclear\nhelp\n"
    )
    lines = answers(wire)
    assert len(lines) == 5
    assert lines[0].startswith("ok faults=latency:delay=0.2,jitter=0.0,toward=both;fragment:")
    assert "stall:toward=server" in lines[1]
    assert lines[2] == lines[1]
    assert "connections=0 accepted=0" in lines[2]
    assert lines[3].startswith("ok faults=none ")
    assert lines[4].startswith("ok commands: ")
    assert proxy.faults == ()
    protocol.dataReceived(b"quit\n")
    assert answers(wire)[-1] == "ok bye"
    assert wire.disconnecting


@pytest.mark.parametrize(
    ("command", "answer"),
    [
        (b"explode", "error unknown command 'explode'; try help"),
        (b"set latency", "error latency: "),
        (b"set latency:delay=1 latency:delay=2", "error two latency faults"),
        (b"add", "error add needs one FAULT"),
        (b"add stall stall", "error too many faults for add"),
        (b"set " + b"stall " * (MAX_FAULTS + 1), "error too many faults for set"),
        (b"set \xff", "error commands are ASCII"),
    ],
)
def test_controlRefusesBadCommands(command: bytes, answer: str) -> None:
    """
    A bad command is answered with C{error} and a reason, and changes
    nothing.
    """
    _, proxy, factory = controlled()
    proxy.setFaults(Stall())
    protocol, wire = controlClient(factory)
    protocol.dataReceived(command + b"\n")
    assert answers(wire)[0].startswith(answer)
    assert proxy.faults == (Stall(),)
    assert not wire.disconnecting


def test_controlDropsAnOverlongLine() -> None:
    """
    A line longer than L{MAX_LINE} bytes, even unfinished, closes the
    client with a reason.
    """
    _, _, factory = controlled()
    protocol, wire = controlClient(factory)
    protocol.dataReceived(b"s" * (MAX_LINE + 1))
    assert answers(wire) == [f"error line longer than {MAX_LINE} bytes; closing"]
    assert wire.disconnecting


def test_controlLimitsItsClients() -> None:
    """
    Past L{MAX_CLIENTS} at once, a new client is told so and closed; a
    client that leaves frees its place.
    """
    _, _, factory = controlled(maxClients=2)
    first, _ = controlClient(factory)
    controlClient(factory)
    _, third = controlClient(factory)
    assert answers(third) == ["error too many control clients"]
    assert third.disconnecting
    first.connectionLost(Failure(ConnectionDone()))
    _, fourth = controlClient(factory)
    assert not fourth.disconnecting
    assert factory.clients == 2


def test_controlClosesAClientThatTrickles() -> None:
    """
    A client that sends no complete line for the idle timeout is closed,
    however many bytes it trickles; a complete line restarts the timer.
    """
    clock, _, factory = controlled()
    protocol, wire = controlClient(factory)
    clock.advance(29)
    protocol.dataReceived(b"status\n")
    for _ in range(29):
        clock.advance(1)
        protocol.dataReceived(b"s")
    assert not wire.disconnecting
    clock.advance(1)
    assert wire.disconnecting
    assert answers(wire)[-1] == "error no command for 30 s; closing"
    protocol.connectionLost(Failure(ConnectionDone()))
    assert clock.getDelayedCalls() == []


def test_controlStopsReadingAClientThatDoesNotRead() -> None:
    """
    Ten thousand pipelined commands from a client that never reads: once
    the answers fill the transport's buffer, no more lines are handled and
    the transport is not read; when the answers drain, handling resumes.
    """
    _, _, factory = controlled()
    wire = BufferedWire(limit=4096)
    protocol, _ = controlClient(factory, wire)
    protocol.dataReceived(b"status\n" * 10_000)
    handled = len(answers(wire))
    assert wire.producerState == "paused"
    assert 4096 // 200 <= handled < 100
    total = handled
    for _ in range(1000):
        if total >= 10_000:
            break
        wire.drain()
        total += len(answers(wire))
    assert total == 10_000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--listen", "1", "--target", "nohost"], "expected HOST:PORT"),
        (["--listen", "1", "--target", "h:0"], "expected a port in 1..65535"),
        (["--listen", "70000", "--target", "h:1"], "--listen must be in 0..65535"),
        (["--listen", "1", "--target", "h:1", "--fault", "nope"], "unknown fault 'nope'"),
        (
            ["--listen", "1", "--target", "h:1", "--fault", "stall", "--fault", "stall"],
            "two stall faults",
        ),
    ],
)
def test_commandLineRefusesWithAReason(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """
    A bad command line exits 2 saying what is wrong, before listening.
    """
    with pytest.raises(SystemExit) as exited:
        parseArguments(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_commandLineParsesTargetsAndFaults() -> None:
    """
    IPv6 targets in brackets, repeated faults.
    """
    arguments = parseArguments(
        [
            "--listen",
            "0",
            "--target",
            "[::1]:6379",
            "--fault",
            "latency:delay=1",
            "--fault",
            "stall",
        ]
    )
    assert arguments.target == ("::1", 6379)
    assert arguments.faults == [Latency(1.0), Stall()]
    assert arguments.control is None
