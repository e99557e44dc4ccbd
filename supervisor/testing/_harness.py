"""
L{PluginHarness} and L{FakePeer}: one supervised connection of a plugin under
test, on a fake clock and in-memory transports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from random import Random
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import (
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
)
from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport

from supervisor.connection import SupervisedConnection
from supervisor.interfaces import IProtocolPlugin, ISupervisedProtocol
from supervisor.policy import failureOf
from supervisor.spec import BackoffSpec, ConnectionSpec, FlapSpec, HeartbeatSpec
from supervisor.states.records import State, Transition

Responder = Callable[[bytes], "bytes | None"]
"""Answers one write of the plugin with the bytes the peer sends back, or
L{None} (or C{b""}) to stay silent. See L{perLine} and L{perFrame} for
responders that answer whole lines or frames, however they were written."""

FrameLength = Callable[[bytes], "int | None"]
"""The length of the first whole frame at the start of some bytes, header
included, or L{None} when they do not hold a whole frame yet."""

Step = tuple[str, str, str]
"""One transition as C{(from, to, reason)}."""

HOST = "127.0.0.1"
PORT = 4321
MAX_STEPS = 100_000


def _silent(data: bytes) -> None:
    return None


def perFrame(answer: Responder, frameLength: FrameLength) -> Responder:
    """
    A responder that answers whole frames, however the plugin wrote them: its
    writes are joined, cut into frames by C{frameLength}, and each frame is
    given to C{answer}; the answers to the frames one write completes are
    sent together. A frame written in two writes is answered once, when it
    is whole.

    It keeps the unfinished frame between writes: make one per peer.
    """
    pending = bytearray()

    def respond(data: bytes) -> bytes | None:
        pending.extend(data)
        answers = []
        while pending:
            size = frameLength(bytes(pending))
            if size is None or size > len(pending):
                break
            frame = bytes(pending[:size])
            del pending[:size]
            answers.append(answer(frame) or b"")
        return b"".join(answers) or None

    return respond


def perLine(answer: Responder, delimiter: bytes = b"\n") -> Responder:
    """
    A responder that answers whole lines ending in C{delimiter}: each line,
    without its delimiter, is given to C{answer} (see L{perFrame}).
    """

    def lineLength(data: bytes) -> int | None:
        end = data.find(delimiter)
        return None if end < 0 else end + len(delimiter)

    return perFrame(lambda line: answer(line[: -len(delimiter)]), lineLength)


class _PluginSide(StringTransport):
    """
    The transport the plugin writes to: a L{StringTransport} that also keeps
    each write apart, so a responder sees the plugin's writes one by one.
    """

    def __init__(self, peer: FakePeer, host: IPv4Address, remote: IPv4Address) -> None:
        super().__init__(hostAddress=host, peerAddress=remote)  # type: ignore[no-untyped-call]
        self._peer = peer

    def write(self, data: bytes) -> None:
        if self.disconnecting or not data:
            return
        super().write(data)  # type: ignore[no-untyped-call]
        self._peer._writes.append(bytes(data))

    def writeSequence(self, data: Sequence[bytes]) -> None:
        self.write(b"".join(data))


class _PeerSide(StringTransport):
    """
    The transport a served peer protocol writes to: what it writes reaches
    the plugin, and closing it closes the connection.
    """

    def __init__(self, peer: FakePeer, host: IPv4Address, remote: IPv4Address) -> None:
        super().__init__(hostAddress=host, peerAddress=remote)  # type: ignore[no-untyped-call]
        self._peer = peer

    def write(self, data: bytes) -> None:
        self._peer._outbox.append(bytes(data))

    def writeSequence(self, data: Sequence[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self._peer._closeAfterOutbox = True

    def abortConnection(self) -> None:
        self._peer._outbox.clear()
        self._peer._closeAfterOutbox = True


class FakePeer:
    """
    The remote end of one accepted attempt.

    By default the peer is silent. L{respond} answers each write of the
    plugin with a function (L{perLine} and L{perFrame} make one that answers
    whole lines or frames instead); L{serve} puts a real Twisted protocol (a
    server implementation) at this end instead.

    @ivar received: every byte the plugin wrote, in order (see L{clear}).
    @ivar writes: the plugin's writes, one item per C{write} call.
    @ivar transport: the plugin's transport (a L{StringTransport}).
    @ivar closedBy: L{None} while connected; C{"peer"} when L{close} was
        called, C{"plugin"} when the supervisor or plugin closed it
        gracefully, C{"abort"} when they aborted it.
    """

    def __init__(self, harness: PluginHarness, protocol: IProtocol, index: int) -> None:
        self._harness = harness
        self._protocol = protocol
        self.index = index
        address = IPv4Address("TCP", HOST, PORT)
        local = IPv4Address("TCP", HOST, 50000 + index)
        self.transport = _PluginSide(self, local, address)
        self._writes: list[bytes] = []
        self._seen = 0
        self._outbox: list[bytes] = []
        self._closeAfterOutbox = False
        self._responder: Responder = _silent
        self._delay = 0.0
        self._server: IProtocol | None = None
        self.closedBy: str | None = None

    # What the test reads.

    @property
    def received(self) -> bytes:
        return bytes(self.transport.value())  # type: ignore[no-untyped-call]

    @property
    def writes(self) -> list[bytes]:
        return list(self._writes)

    @property
    def connected(self) -> bool:
        """
        Whether the connection is still up.
        """
        return self.closedBy is None

    def take(self) -> bytes:
        """
        What the plugin wrote since the last L{take} or L{clear}, which is
        then forgotten.
        """
        data = self.received
        self.clear()
        return data

    def clear(self) -> None:
        """
        Forget what the plugin wrote so far (L{received} and L{writes}).
        """
        self._harness.flush()
        self.transport.clear()  # type: ignore[no-untyped-call]
        self._seen = 0
        self._writes.clear()

    # What the test makes the peer do.

    def send(self, data: bytes) -> None:
        """
        Deliver C{data} to the plugin now (dropped if the connection is gone).
        """
        if self.connected:
            self._protocol.dataReceived(data)
        self._harness.flush()

    def close(self, reason: BaseException | None = None) -> None:
        """
        The peer closes the connection (with C{ConnectionDone}, or C{reason}).
        """
        if self.connected:
            self.closedBy = "peer"
            self.transport.disconnecting = True
            self._protocol.connectionLost(failureOf(reason or ConnectionDone()))
            self._serverLost(reason or ConnectionDone())
        self._harness.flush()

    def lose(self) -> None:
        """
        The network fails: the connection is lost with C{ConnectionLost}.
        """
        self.close(ConnectionLost("connection lost (fake peer)"))

    def respond(self, responder: Responder, delay: float = 0.0) -> FakePeer:
        """
        From now on answer each write of the plugin with C{responder(data)},
        C{delay} seconds later on the clock.
        """
        self._responder = responder
        self._delay = delay
        self._harness.flush()
        return self

    def silence(self) -> FakePeer:
        """
        From now on answer nothing (the connection stays open).
        """
        return self.respond(_silent)

    def serve(self, protocol: IProtocol) -> FakePeer:
        """
        Put C{protocol}, a peer implementation, at this end: it receives what
        the plugin writes (everything since the connection was made, so it
        may be served late), and what it writes reaches the plugin.
        """
        self._server = protocol
        self._seen = 0
        address = IPv4Address("TCP", HOST, PORT)
        local = IPv4Address("TCP", HOST, 50000 + self.index)
        protocol.makeConnection(_PeerSide(self, address, local))
        self._harness.flush()
        return self

    # Driven by the harness.

    def _step(self) -> bool:
        """
        Move bytes and closes one round; return whether anything happened.
        """
        progress = False
        while self._seen < len(self._writes):
            data = self._writes[self._seen]
            self._seen += 1
            progress = True
            if self._server is not None:
                self._server.dataReceived(data)
            else:
                answer = self._responder(data)
                if answer:
                    if self._delay > 0:
                        self._harness.reactor.callLater(self._delay, self.send, answer)
                    else:
                        self._outbox.append(answer)
        while self._outbox and self.connected:
            progress = True
            self._protocol.dataReceived(self._outbox.pop(0))
        if self._closeAfterOutbox and self.connected:
            self._closeAfterOutbox = False
            self.closedBy = "peer"
            self.transport.disconnecting = True
            self._protocol.connectionLost(failureOf(ConnectionDone()))
            self._serverLost(ConnectionDone())
            return True
        if self.connected and self.transport.disconnecting:
            # The supervisor (or the plugin) closed or aborted the transport:
            # a real transport reports that with connectionLost.
            aborted = self.transport.disconnected
            self.closedBy = "abort" if aborted else "plugin"
            self._protocol.connectionLost(
                failureOf(ConnectionAborted() if aborted else ConnectionDone())
            )
            self._serverLost(ConnectionLost() if aborted else ConnectionDone())
            progress = True
        return progress

    def _serverLost(self, exc: BaseException) -> None:
        if self._server is not None:
            self._server.connectionLost(failureOf(exc))

    def __repr__(self) -> str:
        return f"<FakePeer #{self.index} closedBy={self.closedBy}>"


class PluginHarness:
    """
    A plugin under test, driven through the real L{SupervisedConnection}
    machine: a real C{TCP4ClientEndpoint} on a L{MemoryReactorClock}, the
    connection attempts completed (or refused) by the test, and in-memory
    transports whose other end is a L{FakePeer}.

    Nothing here touches the global reactor, and time moves only in
    L{advance}, which stops at every timer on its way so that each fires at
    its own time.

    @ivar reactor: the fake reactor and clock.
    @ivar connection: the L{SupervisedConnection} under test.
    @ivar peers: every accepted attempt's peer, oldest first.
    """

    def __init__(
        self,
        plugin: IProtocolPlugin,
        options: Mapping[str, object] | None = None,
        *,
        heartbeat: HeartbeatSpec | None = None,
        connect_timeout: float = 10.0,
        drain_timeout: float = 30.0,
        backoff: BackoffSpec | None = None,
        flap: FlapSpec | None = None,
        max_retries: int = 0,
        name: str = "plugin-under-test",
        seed: int = 0,
        greeting: bytes = b"",
        **spec: Any,
    ) -> None:
        """
        @param plugin: the plugin under test.
        @param options: the connection's protocol options, as a config gives them.
        @param heartbeat: by default 10 s interval, 5 s timeout, 2 misses.
        @param backoff: by default 1 s initial delay, no jitter (so retry
            times are exact).
        @param flap: the flap guard; by default off, so that a test may drop
            the connection as often as it likes without it being held.
        @param seed: seeds the jitter and the first heartbeat's spread.
        @param greeting: what every peer that L{accept}s sends first, as soon
            as the connection is made, for protocols where the server speaks
            first (a banner, NATS's C{INFO}); by default nothing.
        @param spec: any other field of the connection's
            L{ConnectionSpec} (C{breaker}, C{flap}, C{max_lifetime},
            C{idle_timeout}, ...).
        """
        self.greeting = greeting
        self.reactor = MemoryReactorClock()  # type: ignore[no-untyped-call]
        self.plugin = plugin
        self.spec = ConnectionSpec(
            name=name,
            endpoint=f"tcp:host={HOST}:port={PORT}",
            protocol=str(getattr(plugin, "name", "plugin")),
            connect_timeout=connect_timeout,
            drain_timeout=drain_timeout,
            backoff=backoff if backoff is not None else BackoffSpec(initial=1.0, jitter="none"),
            heartbeat=heartbeat if heartbeat is not None else HeartbeatSpec(),
            flap=flap if flap is not None else FlapSpec(max=0),
            max_retries=max_retries,
            options=dict(options or {}),
            **spec,
        )
        self.connection = SupervisedConnection(
            self.spec,
            TCP4ClientEndpoint(self.reactor, HOST, PORT),
            plugin,
            self.reactor,
            rng=Random(seed),
        )
        self.history: list[Transition] = []
        self.connection.addObserver(self.history.append)
        self.heartbeats: list[float | None] = []
        self.connection.addHeartbeatObserver(lambda name, rtt: self.heartbeats.append(rtt))
        self.peers: list[FakePeer] = []
        self._resolved = 0

    # Reading the connection.

    @property
    def state(self) -> State:
        """
        The user-visible state now.
        """
        return self.connection.state

    @property
    def transitions(self) -> list[Step]:
        """
        Every transition so far as C{(from, to, reason)}.
        """
        return [(t.from_, t.to, t.reason) for t in self.history]

    @property
    def lastError(self) -> str | None:
        return self.connection.lastError

    @property
    def rtt(self) -> float | None:
        return self.connection.rtt

    @property
    def protocol(self) -> ISupervisedProtocol | None:
        """
        The plugin's protocol of the current attempt or connection, if any.
        """
        return self.connection.protocol

    @property
    def peer(self) -> FakePeer:
        """
        The most recently accepted peer.
        """
        assert self.peers, "no attempt was accepted yet"
        return self.peers[-1]

    def now(self) -> float:
        return self.reactor.seconds()

    # Driving it.

    def start(self) -> PluginHarness:
        """
        Start the connection: its first attempt is now pending.
        """
        self.connection.start()
        self.flush()
        return self

    def pending(self) -> bool:
        """
        Whether an attempt waits for L{accept} or L{refuse}.
        """
        connectors = self.reactor.connectors
        while self._resolved < len(connectors) and connectors[self._resolved].stoppedConnecting:
            self._resolved += 1
        return len(self.reactor.tcpClients) > self._resolved

    def _next(self) -> tuple[Any, Any]:
        assert self.pending(), f"no connect attempt is pending (state {self.state})"
        index = self._resolved
        self._resolved += 1
        return self.reactor.tcpClients[index][2], self.reactor.connectors[index]

    def accept(self, respond: Responder | None = None, delay: float = 0.0) -> FakePeer:
        """
        The peer accepts the pending attempt: the plugin's protocol is built
        and connected to a new L{FakePeer}, which sends the harness's
        C{greeting} (if any), then answers with C{respond} if given, and is
        silent otherwise.
        """
        factory, _ = self._next()
        protocol = factory.buildProtocol(IPv4Address("TCP", HOST, PORT))
        if protocol is None:
            # Building the protocol failed (the attempt has failed with it):
            # a real connector closes the new connection at once.
            peer = FakePeer(self, Protocol(), len(self.peers))
            peer.closedBy = "plugin"
            self.peers.append(peer)
            self.flush()
            return peer
        peer = FakePeer(self, protocol, len(self.peers))
        if respond is not None:
            peer._responder, peer._delay = respond, delay
        self.peers.append(peer)
        protocol.makeConnection(peer.transport)
        if self.greeting:
            peer._outbox.append(self.greeting)
        self.flush()
        return peer

    def refuse(self, exc: BaseException | None = None) -> None:
        """
        The pending attempt fails before a transport exists (by default with
        C{ConnectionRefusedError}).
        """
        factory, connector = self._next()
        factory.clientConnectionFailed(connector, failureOf(exc or ConnectionRefusedError()))  # type: ignore[no-untyped-call]
        self.flush()

    def advance(self, seconds: float) -> None:
        """
        Move the clock forward by C{seconds}, stopping at every timer due on
        the way (so each fires at its own time) and moving bytes after each.
        """
        target = self.reactor.seconds() + seconds
        self.flush()
        for _ in range(MAX_STEPS):
            due = [c.getTime() for c in self.reactor.getDelayedCalls() if c.active()]
            when = min(due, default=None)
            if when is None or when > target:
                break
            self.reactor.rightNow = max(when, self.reactor.rightNow)
            self.reactor.advance(0)
            self.flush()
        else:
            raise AssertionError(f"more than {MAX_STEPS} timers fired: a timer loop?")
        self.reactor.rightNow = max(target, self.reactor.rightNow)
        self.reactor.advance(0)
        self.flush()

    def runUntil(self, predicate: Callable[[], object], limit: float, step: float = 0.01) -> float:
        """
        Advance in C{step}s until C{predicate()} holds; return the time taken.

        @raise AssertionError: if it does not hold within C{limit} seconds.
        """
        start = self.now()
        while not predicate():
            if self.now() - start >= limit:
                raise AssertionError(f"still not true after {limit:g}s (state {self.state})")
            self.advance(step)
        return self.now() - start

    def untilWritten(self, peer: FakePeer, limit: float = 3600.0) -> float:
        """
        Advance from timer to timer until the plugin writes to C{peer}, and
        return the time it did. Unlike L{runUntil}, this stops at the very
        moment of the write (a heartbeat's ping, say), so that an answer sent
        after C{advance(d)} has a round-trip time of C{d}, to float rounding
        (the clock's times are sums of floats: compare with C{pytest.approx}).

        @raise AssertionError: if C{peer} already holds bytes (L{FakePeer.take}
            them first), or if nothing is written within C{limit} seconds or
            before the last timer.
        """
        assert not peer.received, f"{peer} already holds {peer.received!r}: take() them first"
        start = self.now()
        while not peer.received:
            due = [c.getTime() for c in self.reactor.getDelayedCalls() if c.active()]
            if not due:
                raise AssertionError(f"no timer left and nothing written (state {self.state})")
            when = min(due)
            if when - start > limit:
                raise AssertionError(f"nothing written within {limit:g}s (state {self.state})")
            self.advance(when - self.now())
        return self.now()

    def flush(self) -> None:
        """
        Deliver every byte and close in flight between the plugin and its
        peers (L{advance}, L{accept} and the peer's methods do this).
        """
        for _ in range(MAX_STEPS):
            if not any([peer._step() for peer in self.peers]):
                return
        raise AssertionError(f"bytes still moving after {MAX_STEPS} rounds: a ping-pong loop?")

    def stop(self) -> Deferred[None]:
        """
        Stop the connection (an ESTABLISHED one drains); fires once CLOSED.
        """
        d = self.connection.stop()
        self.flush()
        return d

    # Asserting.

    def assertState(self, state: State, reason: str | None = None) -> None:
        """
        The connection is in C{state} now, entered for C{reason} if given.
        """
        assert self.state == state, f"state is {self.state}, not {state}; {self._story()}"
        if reason is not None:
            last = self.history[-1].reason if self.history else None
            assert last == reason, f"{state} was entered for {last!r}, not {reason!r}"

    def assertTransitions(self, *expected: Step) -> None:
        """
        The transitions so far are exactly C{expected}.
        """
        assert self.transitions == list(expected), self._story()

    def assertQuiet(self) -> None:
        """
        No timer of any kind is left on the clock.
        """
        calls = self.reactor.getDelayedCalls()
        assert calls == [], f"timers left: {calls!r}; {self._story()}"

    def _story(self) -> str:
        steps = ", ".join(f"{a}->{b} ({r})" for a, b, r in self.transitions) or "none"
        return f"transitions: {steps}; last error: {self.lastError}"

    def __repr__(self) -> str:
        return f"<PluginHarness {self.spec.protocol} {self.state}>"
