"""
A deterministic world for one supervised connection: a real
C{TCP4ClientEndpoint} on a C{MemoryReactorClock}, a scripted plugin, and
helpers to accept, refuse and drop attempts.
"""

from __future__ import annotations

from collections.abc import Mapping
from random import Random
from typing import Any

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from supervisor import ConnectionSpec, SupervisedConnection, Transition
from supervisor.interfaces import (
    Classification,
    IConnectionHandle,
    IDrainable,
    IFailureClassifier,
    IProtocolPlugin,
    ISupervisedProtocol,
)

ADDRESS = IPv4Address("TCP", "127.0.0.1", 7)


@implementer(ISupervisedProtocol, IDrainable, IFailureClassifier)
class ScriptedProtocol(Protocol):
    """
    A plugin protocol whose handshake, pongs and drain the test controls.
    """

    def __init__(self, handle: IConnectionHandle, plugin: ScriptedPlugin) -> None:
        self.handle = handle
        self.plugin = plugin
        self.pings: list[bytes] = []
        self.drains: list[Deferred[None]] = []
        self.lostReason: Failure | None = None

    def connectionMade(self) -> None:
        if self.plugin.rejectOnConnect is not None:
            self.handle.reject(self.plugin.rejectOnConnect, permanent=True)
        elif self.plugin.readyOnConnect:
            self.handle.ready()

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        self.lostReason = reason

    def sendPing(self, token: bytes) -> None:
        self.pings.append(token)

    def answer(self) -> None:
        """
        Pong the last ping.
        """
        self.handle.pong(self.pings[-1])

    def drain(self) -> Deferred[None]:
        if self.plugin.drainAtOnce:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self.drains.append(d)
        return d

    def classifyFailure(self, failure: Failure) -> Classification | None:
        return self.plugin.classification


@implementer(IProtocolPlugin)
@attrs.define
class ScriptedPlugin:
    """
    Builds L{ScriptedProtocol}s and remembers them.
    """

    name: str = "scripted"
    readyOnConnect: bool = True
    rejectOnConnect: str | None = None
    drainAtOnce: bool = True
    classification: Classification | None = None
    built: list[ScriptedProtocol] = attrs.field(factory=list)

    def buildProtocol(
        self, handle: IConnectionHandle, options: Mapping[str, object]
    ) -> ISupervisedProtocol:
        protocol = ScriptedProtocol(handle, self)
        self.built.append(protocol)
        return protocol


class World:
    """
    One connection on a memory reactor with a fake clock.
    """

    def __init__(self, seed: int = 0, plugin: ScriptedPlugin | None = None, **spec: Any) -> None:
        spec.setdefault("name", "c1")
        spec.setdefault("endpoint", "tcp:host=127.0.0.1:port=7")
        self.reactor = MemoryReactorClock()
        self.plugin = plugin if plugin is not None else ScriptedPlugin()
        self.endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", 7)
        self.connection = SupervisedConnection(
            ConnectionSpec(**spec), self.endpoint, self.plugin, self.reactor, rng=Random(seed)
        )
        self.transitions: list[Transition] = []
        self.connection.addObserver(self.transitions.append)
        self._resolved = 0
        self.transports: list[StringTransport] = []

    @property
    def state(self) -> str:
        return self.connection.state

    def path(self) -> list[tuple[str, str, str]]:
        """
        The transitions so far as (from, to, reason).
        """
        return [(t.from_, t.to, t.reason) for t in self.transitions]

    def pending(self) -> bool:
        """
        Whether a connect is waiting for the test to resolve it (one the
        connection cancelled is not: a stopped connector never connects).
        """
        self._skipCancelled()
        return len(self.reactor.tcpClients) > self._resolved

    def _skipCancelled(self) -> None:
        connectors = self.reactor.connectors
        while self._resolved < len(connectors) and connectors[self._resolved].stoppedConnecting:
            self._resolved += 1

    def _next(self) -> tuple[Any, Any]:
        assert self.pending(), "no connect attempt is pending"
        index = self._resolved
        self._resolved += 1
        return self.reactor.tcpClients[index][2], self.reactor.connectors[index]

    def accept(self) -> tuple[ScriptedProtocol, StringTransport]:
        """
        The peer accepts the pending attempt.
        """
        factory, _ = self._next()
        protocol = factory.buildProtocol(ADDRESS)
        transport = StringTransport()
        self.transports.append(transport)
        protocol.makeConnection(transport)
        return self.plugin.built[-1], transport

    def refuse(self, exc: Exception | None = None) -> None:
        """
        The pending attempt fails before a transport exists.
        """
        factory, connector = self._next()
        factory.clientConnectionFailed(connector, Failure(exc or ConnectionRefusedError()))

    def skip(self) -> None:
        """
        Leave the pending attempt unanswered forever.
        """
        self._next()

    def lose(self, protocol: ScriptedProtocol, exc: Exception | None = None) -> None:
        """
        The transport of C{protocol} goes away.
        """
        link = protocol.handle  # the link is the protocol its transport sees
        link.connectionLost(Failure(exc or ConnectionLost()))  # type: ignore[attr-defined]

    def advance(self, seconds: float) -> None:
        self.reactor.advance(seconds)

    def stop(self) -> Deferred[None]:
        return self.connection.stop()

    def assertQuiet(self) -> None:
        """
        No timer of any kind is left.
        """
        assert self.reactor.getDelayedCalls() == []
