"""
A TCP proxy that puts network faults between a client and its server,
switchable at run time: latency (fixed or jittered), stall, reset, half
close, blackhole, bandwidth cap, byte corruption and fragmentation.

    from twisted.internet.endpoints import TCP4ClientEndpoint
    from supervisor.testing.chaos import ChaosProxy, Latency, Stall

    proxy = ChaosProxy(reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", 6379))
    port = reactor.listenTCP(0, proxy, interface="127.0.0.1")
    proxy.setFaults(Latency(0.2, jitter=0.05))
    ...
    proxy.setFaults(Stall())     # faults apply to live and new connections
    proxy.setFaults()            # a plain proxy again
    yield proxy.close()          # aborts every proxied connection

Every accepted connection gets its own connection to the target, and its
bytes flow through two pipes, one each way. A fault applies to the bytes
C{toward} the client, the server, or both. When one side closes, the other
is closed once the bytes queued toward it are delivered (a half-close from
either side closes the whole connection; only L{HalfClose} makes one). Both
sides are set to C{TCP_NODELAY}, so that the proxy adds no delay of its own.

Nothing here imports the global reactor: the proxy runs on the clock and
endpoint it is given, so unit tests drive it with C{Clock} and
C{StringTransport}, and integration tests on the real reactor. From a shell:
C{python -m supervisor.chaos} (with a control channel to switch faults); see
C{docs/reliability.md}.

Memory is bounded: a pipe that holds more than L{HIGH_WATER} bytes (a stall,
a slow link) stops reading its source until it is down to L{LOW_WATER}, and a
sink that does not keep up pauses its source through Twisted's producer
mechanism, so that TCP flow control reaches the sender.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterable
from typing import Any, ClassVar, Literal, cast, get_args

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, ServerFactory, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = [
    "FAULT_TYPES",
    "Bandwidth",
    "Blackhole",
    "ChaosProxy",
    "ChaosStats",
    "Corrupt",
    "Fault",
    "FaultSyntaxError",
    "Fragment",
    "HalfClose",
    "Latency",
    "Reset",
    "Stall",
    "Toward",
    "checkFaults",
    "corrupt",
    "describeFault",
    "parseFault",
]

Toward = Literal["both", "client", "server"]
"""Which bytes a fault applies to: those toward the client (sent by the
server), those toward the server (sent by the client), or both."""

_TOWARD: tuple[Toward, ...] = get_args(Toward)
_SIDES: tuple[Literal["client", "server"], ...] = ("client", "server")

MAX_SECONDS = 3600.0
"""The longest delay, jitter, interval or reset time a fault may have."""

MAX_RATE = 1e10
"""The highest bandwidth cap, in bytes per second."""

MAX_FRAGMENT = 65536
"""The largest fragment size."""

HIGH_WATER = 256 * 1024
"""A pipe holding more bytes than this stops reading from its source."""

LOW_WATER = 64 * 1024
"""...and reads again once it holds fewer than this."""

PIECE_SECONDS = 0.05
"""Under a bandwidth cap, bytes leave in pieces of at most this many
seconds' worth (at least one byte)."""


def _seconds(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (math.isfinite(value) and 0 <= value <= MAX_SECONDS):
        raise ValueError(f"{attribute.name} must be in [0, {MAX_SECONDS:g}] seconds, got {value!r}")


def _toward(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in _TOWARD:
        raise ValueError(f"{attribute.name} must be one of {', '.join(_TOWARD)}, got {value!r}")


def _rate(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (math.isfinite(value) and 1 <= value <= MAX_RATE):
        raise ValueError(f"{attribute.name} must be in [1, {MAX_RATE:g}] bytes/s, got {value!r}")


def _probability(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (math.isfinite(value) and 0 < value <= 1):
        raise ValueError(f"{attribute.name} must be in (0, 1], got {value!r}")


def _fragmentSize(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_FRAGMENT:
        raise ValueError(
            f"{attribute.name} must be an integer in [1, {MAX_FRAGMENT}], got {value!r}"
        )


@attrs.frozen
class Latency:
    """
    Every chunk of bytes is held C{delay} seconds, plus a uniform draw from
    C{[0, jitter]}; the order of bytes is kept (a chunk never overtakes an
    earlier one).
    """

    kind: ClassVar[str] = "latency"
    delay: float = attrs.field(validator=_seconds)
    jitter: float = attrs.field(default=0.0, validator=_seconds)
    toward: Toward = attrs.field(default="both", validator=_toward)


@attrs.frozen
class Stall:
    """
    Connections are accepted (and connected to the target) but nothing is
    forwarded, not even a close: bytes are held, up to L{HIGH_WATER}, then
    left unread in the kernel. Clearing the fault delivers what was held.
    """

    kind: ClassVar[str] = "stall"
    toward: Toward = attrs.field(default="both", validator=_toward)


@attrs.frozen
class Reset:
    """
    Every connection is aborted with a TCP reset, on both sides, C{after}
    seconds after the fault is set or the connection accepted. With
    C{after=0} a new connection is reset on accept, before the target is
    ever connected.
    """

    kind: ClassVar[str] = "reset"
    after: float = attrs.field(default=0.0, validator=_seconds)


@attrs.frozen
class HalfClose:
    """
    The proxy shuts down its writing half (sends a FIN) toward the client,
    the server, or both, and keeps reading; bytes that would go that way are
    dropped. A FIN cannot be taken back: clearing the fault does not reopen.
    """

    kind: ClassVar[str] = "halfclose"
    toward: Toward = attrs.field(default="client", validator=_toward)


@attrs.frozen
class Blackhole:
    """
    Bytes are read and dropped, and a close is not passed on: the other side
    sees a connection that is open and silent.
    """

    kind: ClassVar[str] = "blackhole"
    toward: Toward = attrs.field(default="both", validator=_toward)


@attrs.frozen
class Bandwidth:
    """
    A serial link of C{rate} bytes per second: a piece of C{n} bytes arrives
    C{n / rate} seconds after the link is free to send it.
    """

    kind: ClassVar[str] = "bandwidth"
    rate: float = attrs.field(validator=_rate)
    toward: Toward = attrs.field(default="both", validator=_toward)


@attrs.frozen
class Corrupt:
    """
    Each byte is changed with probability C{probability}: XORed with a
    non-zero value drawn from the proxy's random source.
    """

    kind: ClassVar[str] = "corrupt"
    probability: float = attrs.field(default=1.0, validator=_probability)
    toward: Toward = attrs.field(default="both", validator=_toward)


@attrs.frozen
class Fragment:
    """
    Bytes are written C{size} at a time, one write per reactor turn, at
    least C{interval} seconds apart.
    """

    kind: ClassVar[str] = "fragment"
    size: int = attrs.field(default=1, validator=_fragmentSize)
    interval: float = attrs.field(default=0.0, validator=_seconds)
    toward: Toward = attrs.field(default="both", validator=_toward)


Fault = Latency | Stall | Reset | HalfClose | Blackhole | Bandwidth | Corrupt | Fragment
"""Any one fault."""

FAULT_TYPES: dict[str, type[Fault]] = {
    cls.kind: cls
    for cls in (Latency, Stall, Reset, HalfClose, Blackhole, Bandwidth, Corrupt, Fragment)
}
"""Each fault class by its C{kind}, the name the text syntax uses."""

MAX_FAULTS = 16
"""The most faults in force at once."""


class FaultSyntaxError(ValueError):
    """
    A fault's text is not C{KIND[:KEY=VALUE[,KEY=VALUE]...]} with a known
    kind, known keys and values in range.
    """


MAX_FAULT_TEXT = 256
"""The longest text L{parseFault} reads."""


def parseFault(text: str) -> Fault:
    """
    The fault that C{text} describes, as C{KIND[:KEY=VALUE[,KEY=VALUE]...]}:
    C{latency:delay=0.2,jitter=0.05,toward=client}, C{stall}, C{reset:after=1},
    C{halfclose:toward=server}, C{blackhole}, C{bandwidth:rate=1000},
    C{corrupt:probability=0.01}, C{fragment:size=1,interval=0.001}.

    @raise FaultSyntaxError: anything else, with a message saying what.
    """
    if len(text) > MAX_FAULT_TEXT:
        raise FaultSyntaxError(f"a fault is at most {MAX_FAULT_TEXT} characters")
    kind, _, rest = text.strip().partition(":")
    cls = FAULT_TYPES.get(kind)
    if cls is None:
        raise FaultSyntaxError(
            f"unknown fault {kind[:20]!r}; one of: {', '.join(sorted(FAULT_TYPES))}"
        )
    fields = {f.name: f for f in attrs.fields(cls)}
    values: dict[str, object] = {}
    for item in rest.split(",") if rest else ():
        key, equals, raw = item.partition("=")
        key = key.strip()
        field = fields.get(key)
        if field is None or not equals:
            known = ", ".join(fields) or "none"
            raise FaultSyntaxError(f"{kind}: expected KEY=VALUE with KEY one of: {known}")
        if key in values:
            raise FaultSyntaxError(f"{kind}: {key} given twice")
        values[key] = _convert(kind, key, field.type, raw.strip())
    try:
        return cls(**values)  # type: ignore[arg-type]
    except (TypeError, ValueError) as e:
        raise FaultSyntaxError(f"{kind}: {e}") from None


def _convert(kind: str, key: str, declared: object, raw: str) -> object:
    if declared in ("float", float):
        try:
            return float(raw)
        except ValueError:
            raise FaultSyntaxError(f"{kind}: {key} must be a number, got {raw[:20]!r}") from None
    if declared in ("int", int):
        try:
            return int(raw)
        except ValueError:
            raise FaultSyntaxError(f"{kind}: {key} must be an integer, got {raw[:20]!r}") from None
    return raw


def describeFault(fault: Fault) -> str:
    """
    C{fault} in the syntax L{parseFault} reads (every key, defaults too).
    """
    parts = []
    for field in attrs.fields(type(fault)):
        value = getattr(fault, field.name)
        parts.append(
            f"{field.name}={value!r}" if isinstance(value, float) else f"{field.name}={value}"
        )
    return f"{fault.kind}:{','.join(parts)}" if parts else fault.kind


def corrupt(data: bytes, probability: float, rng: random.Random) -> tuple[bytes, int]:
    """
    C{data} with each byte, with probability C{probability}, XORed with a
    non-zero value from C{rng}.

    @return: the new bytes and how many were changed.
    """
    out = bytearray(data)
    changed = 0
    for i in range(len(out)):
        if probability >= 1.0 or rng.random() < probability:
            out[i] ^= rng.randrange(1, 256)
            changed += 1
    return bytes(out), changed


@attrs.frozen
class _Conditions:
    """
    The faults in force on the bytes going one way.
    """

    latency: Latency | None = None
    stall: bool = False
    blackhole: bool = False
    bandwidth: Bandwidth | None = None
    corrupt: Corrupt | None = None
    fragment: Fragment | None = None

    @classmethod
    def of(cls, faults: Iterable[Fault], side: str) -> _Conditions:
        """
        The conditions of the bytes toward C{side}.

        @raise ValueError: two faults of one kind apply to these bytes.
        """
        found: dict[str, Fault] = {}
        for fault in faults:
            if isinstance(fault, Reset | HalfClose):
                continue
            if fault.toward not in ("both", side):
                continue
            if fault.kind in found:
                raise ValueError(f"two {fault.kind} faults apply to the bytes toward the {side}")
            found[fault.kind] = fault
        return cls(
            latency=cast("Latency | None", found.get("latency")),
            stall="stall" in found,
            blackhole="blackhole" in found,
            bandwidth=cast("Bandwidth | None", found.get("bandwidth")),
            corrupt=cast("Corrupt | None", found.get("corrupt")),
            fragment=cast("Fragment | None", found.get("fragment")),
        )


def checkFaults(*faults: Fault) -> dict[str, _Conditions]:
    """
    Check that C{faults} can be in force together.

    @return: the conditions they make, by the side the bytes go toward.
    @raise ValueError: more than L{MAX_FAULTS}, two resets, or two faults of
        one kind on the same bytes.
    """
    if len(faults) > MAX_FAULTS:
        raise ValueError(f"at most {MAX_FAULTS} faults at once")
    if sum(isinstance(f, Reset) for f in faults) > 1:
        raise ValueError("two reset faults")
    return {side: _Conditions.of(faults, side) for side in _SIDES}


@attrs.define
class ChaosStats:
    """
    What a L{ChaosProxy} has done since it was made.

    @ivar accepted: connections accepted.
    @ivar upstreamFailures: connections to the target that failed.
    @ivar resets: connections aborted by a L{Reset}.
    @ivar toClient: bytes delivered toward clients.
    @ivar toServer: bytes delivered toward the target.
    @ivar dropped: bytes dropped (blackhole, half-closed direction).
    @ivar corrupted: bytes changed by L{Corrupt}.
    """

    accepted: int = 0
    upstreamFailures: int = 0
    resets: int = 0
    toClient: int = 0
    toServer: int = 0
    dropped: int = 0
    corrupted: int = 0


def _producer(transport: ITransport) -> IPushProducer:
    # Twisted's stream transports are push producers too.
    return cast(IPushProducer, transport)


@implementer(IPushProducer)
class _Side(Protocol):
    """
    One of the two connections of a session: the accepted one (C{client})
    or the one to the target (C{server}). It is the producer of what the
    other side's transport writes, so a sink that does not keep up pauses it.
    """

    def __init__(self, session: _Session, side: Literal["client", "server"]) -> None:
        self.session = session
        self.side = side
        self._pausedFor: set[str] = set()
        self.lost = False
        self.writeClosed = False

    def connectionMade(self) -> None:
        self.session.sideConnected(self)

    def dataReceived(self, data: bytes) -> None:
        self.session.received(self, data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
        self.session.sideLost(self)

    def pause(self, why: str) -> None:
        """
        Stop reading, for reason C{why} (among others).
        """
        if not self._pausedFor and self.transport is not None and not self.lost:
            _producer(self.transport).pauseProducing()
        self._pausedFor.add(why)

    def resume(self, why: str) -> None:
        """
        Reason C{why} to stop reading is over; read again if it was the last.
        """
        if why not in self._pausedFor:
            return
        self._pausedFor.discard(why)
        if not self._pausedFor and self.transport is not None and not self.lost:
            _producer(self.transport).resumeProducing()

    @property
    def paused(self) -> bool:
        """
        Whether this side is not being read.
        """
        return bool(self._pausedFor)

    # IPushProducer, for the other side's transport.

    def pauseProducing(self) -> None:
        self.pause("sink")

    def resumeProducing(self) -> None:
        self.resume("sink")

    def stopProducing(self) -> None:
        self.pause("sink")


class _ServerSideFactory(Factory):
    """
    Builds the server side of one session.
    """

    noisy = False

    def __init__(self, session: _Session) -> None:
        self.session = session

    def buildProtocol(self, addr: IAddress | None) -> _Side:
        return _Side(self.session, "server")


class _Pipe:
    """
    The bytes going one way through one session: queued with the time each
    chunk is due, then written to the sink under the conditions in force.
    """

    def __init__(self, session: _Session, toward: Literal["client", "server"]) -> None:
        self.session = session
        self.toward = toward
        self._queue: deque[tuple[float, bytes]] = deque()
        self._offset = 0
        self.queued = 0
        self._lastDue = 0.0
        self._inTransit: bytes | None = None
        self._linkFreeAt = 0.0
        self._timer: IDelayedCall | None = None
        self.sourceClosed = False
        self._closedSink = False

    @property
    def source(self) -> _Side | None:
        return self.session.server if self.toward == "client" else self.session.client

    @property
    def sink(self) -> _Side | None:
        return self.session.client if self.toward == "client" else self.session.server

    @property
    def conditions(self) -> _Conditions:
        return self.session.proxy._conditions[self.toward]

    def receive(self, data: bytes) -> None:
        """
        The source sent C{data}.
        """
        proxy = self.session.proxy
        c = self.conditions
        if c.blackhole:
            proxy.stats.dropped += len(data)
            return
        if c.corrupt is not None:
            data, changed = corrupt(data, c.corrupt.probability, proxy.rng)
            proxy.stats.corrupted += changed
        now = proxy.clock.seconds()
        due = now
        if c.latency is not None:
            due += c.latency.delay
            if c.latency.jitter:
                due += proxy.rng.uniform(0.0, c.latency.jitter)
        due = self._lastDue = max(due, self._lastDue)
        self._queue.append((due, data))
        self.queued += len(data)
        source = self.source
        if self.queued > HIGH_WATER and source is not None:
            source.pause("queue")
        if self._timer is None:
            self.pump()

    def closeFromSource(self) -> None:
        """
        The source is gone: close the sink once everything queued is out.
        """
        self.sourceClosed = True
        self.pump()

    def sinkGone(self) -> None:
        """
        The sink is gone: nothing more can be delivered.
        """
        self._cancel()
        self._drop()

    def _cancel(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _drop(self) -> None:
        self.session.proxy.stats.dropped += self.queued + len(self._inTransit or b"")
        self._queue.clear()
        self._offset = 0
        self.queued = 0
        self._inTransit = None
        self._resumeSource()

    def _resumeSource(self) -> None:
        source = self.source
        if source is not None and self.queued < LOW_WATER:
            source.resume("queue")

    def _schedule(self, when: float) -> None:
        clock = self.session.proxy.clock
        self._timer = clock.callLater(max(0.0, when - clock.seconds()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.pump()

    def _take(self, limit: int) -> bytes:
        chunk = self._queue[0][1]
        piece = chunk[self._offset : self._offset + limit]
        self._offset += len(piece)
        if self._offset >= len(chunk):
            self._queue.popleft()
            self._offset = 0
        self.queued -= len(piece)
        self._resumeSource()
        return piece

    def _write(self, piece: bytes) -> None:
        sink = self.sink
        stats = self.session.proxy.stats
        if sink is None or sink.lost or sink.writeClosed or sink.transport is None:
            stats.dropped += len(piece)
            return
        sink.transport.write(piece)
        if self.toward == "client":
            stats.toClient += len(piece)
        else:
            stats.toServer += len(piece)

    def pump(self) -> None:
        """
        Deliver whatever the conditions allow now, and schedule the rest.
        """
        self._cancel()
        sink = self.sink
        if sink is None or sink.lost:
            return
        c = self.conditions
        if c.blackhole:
            self._drop()
            return
        if c.stall:
            return
        now = self.session.proxy.clock.seconds()
        while True:
            if self._inTransit is not None:
                if c.bandwidth is not None and self._linkFreeAt > now:
                    self._schedule(self._linkFreeAt)
                    return
                piece, self._inTransit = self._inTransit, None
                self._write(piece)
                if c.fragment is not None and self._queue:
                    self._schedule(now + c.fragment.interval)
                    return
                continue
            if not self._queue:
                if self.sourceClosed and not self._closedSink:
                    self._closedSink = True
                    if sink.transport is not None:
                        sink.transport.loseConnection()
                return
            due = self._queue[0][0]
            if due > now:
                self._schedule(due)
                return
            limit = self.queued
            if c.fragment is not None:
                limit = c.fragment.size
            if c.bandwidth is not None:
                limit = min(limit, max(1, int(c.bandwidth.rate * PIECE_SECONDS)))
            piece = self._take(max(1, limit))
            if c.bandwidth is not None:
                self._inTransit = piece
                self._linkFreeAt = max(now, self._linkFreeAt) + len(piece) / c.bandwidth.rate
                continue
            self._write(piece)
            if c.fragment is not None and self._queue:
                self._schedule(now + c.fragment.interval)
                return


class _Session:
    """
    One proxied connection: the accepted client, its connection to the
    target, and a pipe each way.
    """

    def __init__(self, proxy: ChaosProxy) -> None:
        self.proxy = proxy
        self.client = _Side(self, "client")
        self.server: _Side | None = None
        self.toServer = _Pipe(self, "server")
        self.toClient = _Pipe(self, "client")
        self._connecting: Deferred[Any] | None = None
        self._reset: Reset | None = None
        self._resetCall: IDelayedCall | None = None
        self.aborted = False
        self.done = False

    def pipeToward(self, side: str) -> _Pipe:
        return self.toClient if side == "client" else self.toServer

    def sideConnected(self, side: _Side) -> None:
        assert side.transport is not None
        # Nagle's algorithm would hold small writes for the peer's delayed
        # ACK (40 ms on Linux): fragments would merge and latency would lie.
        setTcpNoDelay = getattr(side.transport, "setTcpNoDelay", None)
        if setTcpNoDelay is not None:
            setTcpNoDelay(True)
        if side.side == "client":
            self._clientConnected()
            return
        self.server = side
        if self.client.lost or self.aborted:
            side.transport.abortConnection()  # type: ignore[attr-defined]
            return
        # Each side is the producer of what the other side's transport writes.
        side.transport.registerProducer(self.client, True)  # type: ignore[attr-defined]
        assert self.client.transport is not None
        self.client.transport.registerProducer(side, True)  # type: ignore[attr-defined]
        self.client.resume("connecting")
        self.apply()
        self.toServer.pump()
        self.toClient.pump()

    def _clientConnected(self) -> None:
        proxy = self.proxy
        proxy.stats.accepted += 1
        reset = proxy._resetFault
        if reset is not None and reset.after == 0:
            self.abort()
            return
        self.client.pause("connecting")
        self._connecting = proxy.target.connect(_ServerSideFactory(self))
        self._connecting.addCallbacks(self._connected, self._connectFailed)
        self.apply()

    def _connected(self, protocol: object) -> None:
        self._connecting = None

    def _connectFailed(self, failure: Failure) -> None:
        self._connecting = None
        if not self.aborted and not self.client.lost:
            self.proxy.stats.upstreamFailures += 1
            if self.client.transport is not None:
                self.client.transport.loseConnection()

    def received(self, side: _Side, data: bytes) -> None:
        self.pipeToward("server" if side.side == "client" else "client").receive(data)

    def sideLost(self, side: _Side) -> None:
        if side.side == "client":
            self.toClient.sinkGone()
            connecting, self._connecting = self._connecting, None
            if connecting is not None:
                connecting.cancel()
            self.toServer.closeFromSource()
        else:
            self.toServer.sinkGone()
            self.toClient.closeFromSource()
        server = self.server
        if self.client.lost and (server is None or server.lost):
            self._finish()

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        self._cancelReset()
        self.toClient.sinkGone()
        self.toServer.sinkGone()
        self.proxy._sessionDone(self)

    def apply(self) -> None:
        """
        The faults changed (or a side connected): act on resets and half
        closes, and let both pipes deliver what they now may.
        """
        if self.done:
            return
        proxy = self.proxy
        reset = proxy._resetFault
        if reset != self._reset:
            self._cancelReset()
            self._reset = reset
            if reset is not None:
                if reset.after == 0:
                    self.abort()
                    return
                self._resetCall = proxy.clock.callLater(reset.after, self.abort)
        for side in proxy._halfClosed:
            target = self.client if side == "client" else self.server
            if target is not None and not target.writeClosed and not target.lost:
                target.writeClosed = True
                self.pipeToward(side).sinkGone()
                assert target.transport is not None
                loseWrite = getattr(target.transport, "loseWriteConnection", None)
                if loseWrite is not None:
                    loseWrite()
                else:
                    target.transport.loseConnection()
        self.toServer.pump()
        self.toClient.pump()

    def _cancelReset(self) -> None:
        call, self._resetCall = self._resetCall, None
        if call is not None and call.active():
            call.cancel()

    def abort(self) -> None:
        """
        Abort both connections (a TCP reset) and the connect in flight.
        """
        if self.aborted:
            return
        self.aborted = True
        self._resetCall = None
        self._cancelReset()
        self.proxy.stats.resets += 1
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
        for side in (self.client, self.server):
            if side is not None and not side.lost and side.transport is not None:
                side.transport.abortConnection()  # type: ignore[attr-defined]


class ChaosProxy(ServerFactory):
    """
    A TCP proxy with faults: listen with it as the factory (C{listenTCP},
    an endpoint's C{listen}); every accepted connection is connected to
    C{target} and its bytes pass through the faults in force.

    @ivar clock: the time source for every delay.
    @ivar target: where accepted connections are forwarded.
    @ivar rng: the source of jitter and corruption.
    @ivar stats: counts of what happened.
    """

    noisy = False

    def __init__(
        self,
        clock: IReactorTime,
        target: IStreamClientEndpoint,
        rng: random.Random | None = None,
    ) -> None:
        self.clock = clock
        self.target = target
        self.rng = rng if rng is not None else random.Random()
        self.stats = ChaosStats()
        self._faults: tuple[Fault, ...] = ()
        self._conditions: dict[str, _Conditions] = {side: _Conditions() for side in _SIDES}
        self._resetFault: Reset | None = None
        self._halfClosed: frozenset[str] = frozenset()
        self._sessions: set[_Session] = set()
        self._waiters: list[Deferred[None]] = []

    @property
    def faults(self) -> tuple[Fault, ...]:
        """
        The faults in force, in the order given.
        """
        return self._faults

    @property
    def connections(self) -> int:
        """
        How many proxied connections are open (either side still up).
        """
        return len(self._sessions)

    def setFaults(self, *faults: Fault) -> None:
        """
        Put C{faults} in force, instead of the ones before, on every live
        connection and every new one. No argument: a plain proxy again.

        @raise ValueError: more than L{MAX_FAULTS}, or two faults of one kind
            apply to the same bytes; the faults in force are left as they were.
        """
        conditions = checkFaults(*faults)
        resets = [f for f in faults if isinstance(f, Reset)]
        halfClosed: set[str] = set()
        for f in faults:
            if isinstance(f, HalfClose):
                halfClosed.update(_SIDES if f.toward == "both" else (f.toward,))
        self._faults = faults
        self._conditions = conditions
        self._resetFault = resets[0] if resets else None
        self._halfClosed = frozenset(halfClosed)
        for session in list(self._sessions):
            session.apply()

    def addFault(self, fault: Fault) -> None:
        """
        Add C{fault} to those in force.

        @raise ValueError: as L{setFaults}.
        """
        self.setFaults(*self._faults, fault)

    def buildProtocol(self, addr: IAddress | None) -> _Side:
        session = _Session(self)
        self._sessions.add(session)
        return session.client

    def _sessionDone(self, session: _Session) -> None:
        self._sessions.discard(session)
        if not self._sessions:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def close(self) -> Deferred[None]:
        """
        Abort every proxied connection (listening is the caller's to stop).

        @return: fires once every connection is gone.
        """
        for session in list(self._sessions):
            session.abort()
        if not self._sessions:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        return waiter
