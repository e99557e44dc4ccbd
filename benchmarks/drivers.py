"""
The two implementations under test, behind one small interface.

- L{NetsupervisorDriver}: a L{supervisor.Supervisor} of N C{line}
  connections with its metrics collector, as a user of the library runs it.
- L{BaselineDriver}: stock Twisted, hand-rolled: one
  L{twisted.application.internet.ClientService} per connection, and in each
  protocol a L{LoopingCall} that sends C{PING <n>} every interval with a
  C{callLater} pong timeout; after C{misses} consecutive timeouts the
  transport is aborted and C{ClientService} reconnects.

Both report the same events to an L{Events} object: attempts, ESTABLISHED
entered and left, and pings sent.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.application.internet import ClientService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from benchmarks.common import HEARTBEAT_INTERVAL, HEARTBEAT_MISSES, HEARTBEAT_TIMEOUT


class Events(Protocol):
    """
    What a driver reports, with times in C{reactor.seconds()}.
    """

    def attempt(self, name: str, when: float, reason: str = "") -> None: ...

    def established(self, name: str, when: float) -> None: ...

    def left(self, name: str, when: float, reason: str = "") -> None: ...

    def pingSent(self) -> None: ...


def connectionName(index: int) -> str:
    """
    The name of connection number C{index}.
    """
    return f"c{index:05d}"


class Driver(Protocol):
    """
    One implementation holding N connections.
    """

    def start(self) -> None: ...


# --- netsupervisor ---------------------------------------------------------


class NetsupervisorDriver:
    """
    A L{Supervisor} of C{n} C{line} connections to C{127.0.0.1:port}, with
    every default but the heartbeat's (and, when given, the connect budget
    and the flap guard's C{max}).
    """

    def __init__(
        self,
        events: Events,
        n: int,
        port: int,
        reactor: Any,
        *,
        connectRate: float = 0.0,
        connectBurst: int = 100,
        flapGuard: bool = True,
    ) -> None:
        from supervisor.config import AdminSpec, Config
        from supervisor.metrics import SupervisorMetrics
        from supervisor.service import Supervisor
        from supervisor.spec import ConnectionSpec, FlapSpec, HeartbeatSpec, SupervisorSpec

        self.events = events
        self.port = port
        heartbeat = HeartbeatSpec(
            interval=HEARTBEAT_INTERVAL, timeout=HEARTBEAT_TIMEOUT, misses=HEARTBEAT_MISSES
        )
        # One of each for all, as the configuration loader shares the tables
        # that [defaults] sets.
        flap = FlapSpec() if flapGuard else FlapSpec(max=0)
        endpoint = self.endpointString()
        specs = tuple(
            ConnectionSpec(
                name=connectionName(i),
                endpoint=endpoint,
                protocol="line",
                heartbeat=heartbeat,
                labels={"group": "bench"},
                flap=flap,
            )
            for i in range(n)
        )
        self.budget = SupervisorSpec(connect_rate=connectRate, connect_burst=connectBurst)
        self.flapGuard = flapGuard
        config = Config(
            path="<benchmark>", admin=AdminSpec(), connections=specs, supervisor=self.budget
        )
        # Full collections held off while the connections start, and what
        # start-up built frozen, as twistd netsupervisor does.
        self.supervisor = Supervisor(config, reactor, freezeAfterStart=True)
        self.metrics = SupervisorMetrics(self.supervisor)
        self.supervisor.addObserver(self._transition)
        self.supervisor.addHeartbeatObserver(self._heartbeat)

    def endpointString(self) -> str:
        """
        The endpoint string of every connection.
        """
        return f"tcp:host=127.0.0.1:port={self.port}"

    def configText(self, n: int, changed: int) -> str:
        """
        The TOML text of the running configuration, with connection number
        C{changed} given another C{group} label.
        """
        budget = self.budget
        parts = [
            "[supervisor]\n",
            f"connect_rate = {budget.connect_rate!r}\n",
            f"connect_burst = {budget.connect_burst}\n",
            "[defaults]\n",
            'protocol = "line"\n',
            f"heartbeat = {{ interval = {HEARTBEAT_INTERVAL!r}, timeout = {HEARTBEAT_TIMEOUT!r},"
            f" misses = {HEARTBEAT_MISSES} }}\n",
        ]
        if not self.flapGuard:
            parts.append("flap = { max = 0 }\n")
        endpoint = self.endpointString()
        for i in range(n):
            group = "changed" if i == changed else "bench"
            parts.append(
                f'\n[[connection]]\nname = "{connectionName(i)}"\nendpoint = "{endpoint}"\n'
                f'labels = {{ group = "{group}" }}\n'
            )
        return "".join(parts)

    def _transition(self, record: Any) -> None:
        if record.to == "CONNECTING":
            self.events.attempt(record.connection, record.time, record.reason)
        elif record.to == "ESTABLISHED":
            self.events.established(record.connection, record.time)
        if record.from_ == "ESTABLISHED":
            self.events.left(record.connection, record.time, record.reason)

    def _heartbeat(self, name: str, rtt: float | None) -> None:
        # One call per ping: an answer (rtt) or a miss (None).
        self.events.pingSent()

    def start(self) -> None:
        """
        Start every connection.
        """
        self.supervisor.startService()

    def flapHolds(self) -> int:
        """
        How many times the flap guard held a connection, all together.
        """
        return sum(c.flapHolds for c in self.supervisor.connections.values())


# --- baseline: stock Twisted ------------------------------------------------


@implementer(IStreamClientEndpoint)
class CountingEndpoint:
    """
    An endpoint that reports every C{connect} (one per attempt) and delegates.
    """

    def __init__(
        self, inner: IStreamClientEndpoint, name: str, events: Events, reactor: Any
    ) -> None:
        self.inner = inner
        self.name = name
        self.events = events
        self.reactor = reactor

    def connect(self, factory: Any) -> Deferred[Any]:
        self.events.attempt(self.name, self.reactor.seconds())
        return self.inner.connect(factory)


class PingProtocol(LineOnlyReceiver):
    """
    The line protocol with a hand-rolled heartbeat: a L{LoopingCall} pings
    every interval unless a ping is outstanding; a C{callLater} timeout
    counts a miss; C{misses} consecutive misses abort the transport.
    """

    delimiter = b"\n"

    def __init__(self, factory: PingFactory) -> None:
        self.pingFactory = factory
        self.reactor = factory.reactor
        self.seq = 0
        self.misses = 0
        self.awaiting: bytes | None = None
        self.timeoutCall: IDelayedCall | None = None
        self.loop: LoopingCall | None = None

    def connectionMade(self) -> None:
        self.loop = LoopingCall(self.ping)
        self.loop.clock = self.reactor
        self.loop.start(HEARTBEAT_INTERVAL, now=False)
        self.pingFactory.events.established(self.pingFactory.name, self.reactor.seconds())

    def ping(self) -> None:
        if self.awaiting is not None or self.transport is None:
            return
        self.seq += 1
        self.awaiting = token = b"%d" % (self.seq,)
        self.transport.write(b"PING " + token + b"\r\n")
        self.pingFactory.events.pingSent()
        self.timeoutCall = self.reactor.callLater(HEARTBEAT_TIMEOUT, self.pongTimeout)

    def lineReceived(self, line: bytes) -> None:
        verb, _, payload = line.rstrip(b"\r").partition(b" ")
        if verb == b"PONG" and payload == self.awaiting:
            self.awaiting = None
            self.misses = 0
            if self.timeoutCall is not None:
                self.timeoutCall.cancel()
                self.timeoutCall = None
        elif verb == b"PING" and self.transport is not None:
            self.transport.write(b"PONG " + payload + b"\r\n")

    def pongTimeout(self) -> None:
        self.timeoutCall = None
        self.awaiting = None
        self.misses += 1
        if self.misses >= HEARTBEAT_MISSES and self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()
        if self.timeoutCall is not None:
            self.timeoutCall.cancel()
            self.timeoutCall = None
        self.pingFactory.events.left(self.pingFactory.name, self.reactor.seconds())


class PingFactory(Factory):
    """
    Builds the L{PingProtocol} of one named connection.
    """

    noisy = False

    def __init__(self, name: str, events: Events, reactor: Any) -> None:
        self.name = name
        self.events = events
        self.reactor = reactor

    def buildProtocol(self, addr: Any) -> PingProtocol:
        protocol = PingProtocol(self)
        protocol.factory = self
        return protocol


class BaselineDriver:
    """
    C{n} L{ClientService}s (default retry policy) in one L{MultiService}.
    """

    def __init__(self, events: Events, n: int, port: int, reactor: Any) -> None:
        self.parent = MultiService()  # type: ignore[no-untyped-call]
        for i in range(n):
            name = connectionName(i)
            endpoint = CountingEndpoint(
                TCP4ClientEndpoint(reactor, "127.0.0.1", port), name, events, reactor
            )
            service = ClientService(endpoint, PingFactory(name, events, reactor), clock=reactor)
            service.setServiceParent(self.parent)  # type: ignore[no-untyped-call]

    def start(self) -> None:
        """
        Start every connection.
        """
        self.parent.startService()  # type: ignore[no-untyped-call]
