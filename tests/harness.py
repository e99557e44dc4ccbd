"""
A deterministic world for one supervised connection: a real
C{TCP4ClientEndpoint} on a C{MemoryReactorClock}, a scripted plugin, and
helpers to accept, refuse and drop attempts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer

from supervisor.interfaces import (
    Classification,
    IConnectionHandle,
    IDrainable,
    IFailureClassifier,
    IProtocolPlugin,
    ISupervisedProtocol,
)
from supervisor.spec import BackoffSpec
from supervisor.testing import PluginHarness

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
    One connection of a scripted plugin on a memory reactor with a fake
    clock: a L{PluginHarness} (its reactor, connection and pending attempts)
    driven by hand, with raw transports instead of fake peers, and time that
    jumps (C{reactor.advance}) rather than stepping from timer to timer.
    """

    def __init__(self, seed: int = 0, plugin: ScriptedPlugin | None = None, **spec: Any) -> None:
        spec.setdefault("name", "c1")
        # The spec's own default backoff (full jitter), where the kit's is exact.
        spec.setdefault("backoff", BackoffSpec())
        self.plugin = plugin if plugin is not None else ScriptedPlugin()
        self.harness = PluginHarness(self.plugin, seed=seed, **spec)
        self.reactor = self.harness.reactor
        self.connection = self.harness.connection
        self.transitions = self.harness.history
        self.transports: list[StringTransport] = []

    @property
    def state(self) -> str:
        return self.connection.state

    def path(self) -> list[tuple[str, str, str]]:
        """
        The transitions so far as (from, to, reason).
        """
        return self.harness.transitions

    def pending(self) -> bool:
        """
        Whether a connect is waiting for the test to resolve it (one the
        connection cancelled is not: a stopped connector never connects).
        """
        return self.harness.pending()

    def _next(self) -> tuple[Any, Any]:
        return self.harness._next()

    def accept(self, tls: bool = False) -> tuple[ScriptedProtocol, StringTransport]:
        """
        The peer accepts the pending attempt (over TLS, if C{tls}: the
        protocol is connected before the TLS handshake, which completes when
        the test calls C{handle.handshakeCompleted()}).
        """
        factory, _ = self._next()
        protocol = factory.buildProtocol(ADDRESS)
        transport = StringTransport()
        if tls:
            directlyProvides(transport, ISSLTransport)
        self.transports.append(transport)
        protocol.makeConnection(transport)
        return self.plugin.built[-1], transport

    def refuse(self, exc: Exception | None = None) -> None:
        """
        The pending attempt fails before a transport exists.
        """
        self.harness.refuse(exc)

    def skip(self) -> None:
        """
        Leave the pending attempt unanswered forever.
        """
        self._next()

    def lose(self, protocol: ScriptedProtocol, exc: Exception | None = None) -> None:
        """
        The transport of C{protocol} goes away.
        """
        attempt = protocol.handle  # the attempt is the protocol its transport sees
        attempt.connectionLost(Failure(exc or ConnectionLost()))  # type: ignore[attr-defined]

    def advance(self, seconds: float) -> None:
        self.reactor.advance(seconds)

    def stop(self) -> Deferred[None]:
        return self.connection.stop()

    def assertQuiet(self) -> None:
        """
        No timer of any kind is left.
        """
        self.harness.assertQuiet()
