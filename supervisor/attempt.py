"""
One attempt's connection, from the connect to the last byte: a thin proxy
between the transport, the plugin's protocol and the connection machine.

It decides nothing. What happens on the wire and what the plugin says
through its handle are forwarded to the machine as inputs (L{AttemptEvents});
what the machine wants done (send a ping, drain, close) is forwarded to the
transport or the plugin. It holds one flag, L{Attempt.current}: once the
machine is done with it, or once it has reported a failure (the last thing
an attempt can report), nothing it hears reaches the machine any more.

Twisted's C{ClientService} wraps its protocols the same way
(C{_ReconnectingProtocolProxy}).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Protocol

from twisted.internet import tcp
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.error import ConnectionAborted, NotConnectingError
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IHandshakeListener,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    ISSLTransport,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from supervisor.automaton import idle
from supervisor.cycles import ConnectParts, connectParts, releaseFailedConnect, releaseTransport
from supervisor.heartbeat import Heartbeat
from supervisor.interfaces import (
    IConnectionHandle,
    IDrainable,
    IProtocolPlugin,
    ISupervisedProtocol,
)
from supervisor.policy import PluginRejection, failureOf
from supervisor.spec import HeartbeatSpec, KeepaliveSpec
from supervisor.transport import setKeepalive, tcpParameters


class AttemptEvents(Protocol):
    """
    What an attempt reports, each as it happens (the connection machine's
    inputs of the same names).
    """

    def securing(self) -> None:
        "The transport is up and is a TLS transport whose handshake is under way."

    def ready(self) -> None:
        "The plugin declared the connection ready."

    def handshakeCompleted(self) -> None:
        "The TLS handshake completed."

    def failed(self, failure: Failure) -> None:
        "The connect failed, the transport went away, or the plugin rejected it."

    def pong(self, token: bytes) -> None:
        "The plugin recognised the answer to the ping carrying C{token}."

    def activity(self) -> None:
        "The plugin saw a frame that proves the peer alive."


class Writer(Protocol):
    """
    What writes on an attempt and waits while its writes are blocked.
    """

    def writable(self) -> None:
        """
        Whether the attempt takes writes changed: L{Attempt.writeBlocked} was
        set or cleared, or the transport is gone.
        """


@implementer(IProtocolFactory)
class _AttemptFactory:
    """
    Builds the single protocol of one attempt: the attempt itself.
    """

    __slots__ = ("_attempt",)

    def __init__(self, attempt: Attempt) -> None:
        self._attempt: Attempt | None = attempt

    def buildProtocol(self, addr: IAddress) -> Attempt:
        assert self._attempt is not None
        self._attempt.build()
        return self._attempt

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        # Not the end of the attempt: a HostnameEndpoint stops one connector
        # (an address refused) and starts the next with this same factory.
        pass

    def release(self) -> None:
        """
        The attempt's connect is over: let the attempt go, since a failed
        connect leaves Twisted's connector and the endpoint's factory (which
        holds this one) in a cycle.
        """
        self._attempt = None


class _TCPFactory(_AttemptFactory):
    """
    The client factory of an attempt that connects with C{connectTCP}
    itself (see L{Attempt.connect}): what the endpoint's wrapping factory
    and wrapping protocol would do, without them.
    """

    __slots__ = ()

    def startedConnecting(self, connector: IConnector) -> None:
        pass

    def buildProtocol(self, addr: IAddress) -> Attempt | None:  # type: ignore[override]
        attempt = self._attempt
        if attempt is None:
            return None
        try:
            attempt.build()
        except BaseException:
            # As the endpoint's factory does: the connect fails, and Twisted
            # closes the connection it made.
            attempt._connectFailed(Failure())  # type: ignore[no-untyped-call]
            return None
        return attempt

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        attempt = self._attempt
        if attempt is not None:
            attempt._connectFailed(reason)

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:
        pass


@implementer(IConnectionHandle, IProtocol, IPushProducer)
class Attempt:
    """
    The transport and the plugin's protocol of one attempt.

    On a TLS transport the plugin's protocol is connected before the TLS
    handshake (that is how Twisted's TLS works, so the plugin may write its
    own handshake early); the machine holds a C{ready} back until the
    handshake completes. Only a L{SecureAttempt} hears of the handshake:
    L{attemptFor} says which an endpoint needs.

    The attempt is the transport's producer: when what is written to the
    peer and not yet sent passes the transport's buffer size, it stops
    reading from the peer until that is sent. A peer that does not read
    cannot make the connection write (answer pings, say) without bound: it
    gets nothing read, so its pongs are not read either, and heartbeats drop
    it within their bound. (Plugins must not register a producer of their
    own on the transport.)

    @ivar current: the machine still listens to this attempt.
    @ivar protocol: the plugin's protocol, once the transport is being made.
    @ivar transport: the transport, from C{makeConnection} until it is lost.
    @ivar lastInbound: when bytes last arrived, on the connection's clock.
    @ivar writeBlocked: what is written waits for the peer to read it.
    @ivar writer: told when whether the transport takes writes changes:
        L{writeBlocked} is set or cleared, or the transport is gone (the
        connection's operations wait, or go on).
    @ivar pongTo: while ESTABLISHED with heartbeats, the heartbeat that the
        plugin's pongs go to straight when the machine is not handling
        another input: what the machine's C{pong} input does in
        ESTABLISHED, without its dispatch, on every heartbeat's path.
    """

    __slots__ = (
        "_clock",
        "_connecting",
        "_connector",
        "_detached",
        "_events",
        "_factory",
        "_keepalive",
        "_options",
        "_parts",
        "_plugin",
        "_producing",
        "current",
        "heartbeatSpec",
        "lastInbound",
        "name",
        "pongTo",
        "protocol",
        "transport",
        "writeBlocked",
        "writer",
    )

    def __init__(
        self,
        events: AttemptEvents,
        name: str,
        heartbeatSpec: HeartbeatSpec,
        plugin: IProtocolPlugin,
        options: object,
        clock: Callable[[], float],
        keepalive: KeepaliveSpec | None = None,
    ) -> None:
        """
        @param clock: the connection's time (for L{lastInbound}).
        @param keepalive: TCP keepalive to set on the transport's socket.
        """
        self._events = events
        self._clock = clock
        self._keepalive = keepalive
        self.lastInbound = clock()
        self.writeBlocked = False
        self._producing = False
        self.writer: Writer | None = None
        self._plugin = plugin
        self._options = options
        self.name = name
        self.heartbeatSpec = heartbeatSpec
        self.current = True
        self.pongTo: Heartbeat | None = None
        self._detached = False
        self.protocol: ISupervisedProtocol | None = None
        self.transport: ITransport | None = None
        self._connecting: Deferred[IProtocol] | None = None
        # The connector of a connect made with connectTCP itself, while it
        # is under way.
        self._connector: IConnector | None = None
        self._factory: _AttemptFactory | None = None
        # What the connect would leave in cycles if it failed.
        self._parts: ConnectParts | None = None

    # Driven by the machine.

    def connect(self, endpoint: IStreamClientEndpoint) -> None:
        """
        Start connecting C{endpoint}.

        Through Twisted's C{TCP4ClientEndpoint}, the attempt calls the
        reactor's C{connectTCP} as the endpoint would, with a factory of its
        own: the endpoint's wrapping factory, its L{Deferred} and its
        wrapping protocol (which would relay every read of the connection's
        life) are left out, along with the cycles they leave when the
        connect fails.
        """
        if type(endpoint) is TCP4ClientEndpoint and self._connectTCP(endpoint):
            return
        factory = self._factory = _AttemptFactory(self)
        connecting = self._connecting = endpoint.connect(factory)
        self._parts = connectParts(connecting)
        connecting.addCallbacks(self._connected, self._report)

    def _connectTCP(self, endpoint: TCP4ClientEndpoint) -> bool:
        """
        Connect as C{endpoint.connect} would, with a factory of this
        attempt's own; false (nothing done) if the endpoint is not made as
        this Twisted's is.
        """
        parameters = tcpParameters(endpoint)
        reactor = getattr(endpoint, "_reactor", None)
        if parameters is None or reactor is None:
            return False
        factory = self._factory = _TCPFactory(self)
        try:
            connector = reactor.connectTCP(
                parameters.host,
                parameters.port,
                factory,
                timeout=parameters.timeout,
                bindAddress=parameters.bindAddress,
            )
        except BaseException:
            # As the endpoint would: its Deferred fails.
            self._connectFailed(Failure())  # type: ignore[no-untyped-call]
            return True
        if self._factory is factory:
            self._connector = connector
            # Twisted's client, which holds itself while it connects.
            self._parts = (None, getattr(connector, "transport", None))
        return True

    def _connectFailed(self, reason: Failure) -> None:
        """
        A connect made with C{connectTCP} itself failed (or was stopped).
        """
        self._connector = None
        parts, self._parts = self._parts, None
        if parts is not None:
            # Called by Twisted's connector, which uses neither link again.
            releaseFailedConnect(parts)
        self._report(reason)

    def build(self) -> None:
        """
        Build the plugin's protocol for this attempt.
        """
        self.protocol = self._plugin.buildProtocol(self, self._options)

    def sendPing(self, token: bytes) -> None:
        """
        Ask the plugin to send a heartbeat ping.
        """
        assert self.protocol is not None
        self.protocol.sendPing(token)

    def drain(self) -> Deferred[None]:
        """
        Ask the plugin to finish its work: fires when the transport may be
        closed (at once for a plugin that does not provide L{IDrainable}).
        """
        if IDrainable.providedBy(self.protocol):
            return maybeDeferred(IDrainable(self.protocol).drain)
        return succeed(None)

    def loseConnection(self) -> None:
        """
        Close the transport once what is written has been sent.
        """
        if self.transport is not None:
            if self._producing:
                # Twisted's TLS shuts down only once no producer is registered.
                self._producing = False
                self.transport.unregisterProducer()  # type: ignore[attr-defined]
            self.transport.loseConnection()

    def detach(self) -> bool:
        """
        The machine is done with this attempt: it hears nothing more from
        it, and nothing more is read from its transport; a connect in flight
        is cancelled.

        @return: whether a live transport is left for L{abort}.
        """
        self.current = False
        self._detached = True
        connector, self._connector = self._connector, None
        if connector is not None and self.transport is None:
            with suppress(NotConnectingError):
                connector.stopConnecting()
            # Twisted's connector reports the failure (L{_connectFailed});
            # a connector in memory may not.
            self._parts = None
            self._releaseFactory()
        connecting, self._connecting = self._connecting, None
        if connecting is not None and self.transport is None:
            # Once the transport exists (the plugin may reject inside
            # connectionMade, before the endpoint fires this Deferred),
            # aborting the transport is enough.
            parts, self._parts = self._parts, None
            connecting.cancel()
            # The endpoint's canceller fails the Deferred first, then stops
            # the connector: unlinked only once both are done.
            if parts is not None:
                releaseFailedConnect(parts)
        if self.transport is not None:
            return True
        self.protocol = None
        return False

    def abort(self) -> None:
        """
        Abort the transport of a detached attempt, unless it is gone already.
        """
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def abortNow(self) -> None:
        """
        As L{abort}, but a TCP client's C{connectionLost}, which Twisted's
        C{abortConnection} leaves to a C{callLater(0)}, runs now. Only for
        work the scheduler handed on (L{Scheduler.soon} during a wake-up),
        where none of the transport's own calls is under way: a teardown
        then costs its time within the scheduler's slice, instead of as
        much again at the reactor's next turn, ahead of the timers due then.
        Any other transport, or one already closing, is aborted as
        L{abort} does.
        """
        transport = self.transport
        if (
            type(transport) is not tcp.Client
            or transport.disconnected
            or getattr(transport, "_aborting", True)
        ):
            self.abort()
            return
        # What abortConnection does, but the callLater.
        transport._aborting = True
        transport.stopReading()
        transport.stopWriting()
        transport.connectionLost(failureOf(ConnectionAborted()))

    # IProtocol, as the transport sees it.

    def makeConnection(self, transport: ITransport) -> None:
        if self._connector is not None:
            # Connected with connectTCP itself: the connect is over.
            self._connector = self._parts = None
            self._releaseFactory()
        self.transport = transport
        self.lastInbound = self._clock()
        if self._keepalive is not None:
            setKeepalive(transport, self._keepalive, self.name)
        if ISSLTransport.providedBy(transport):
            # Twisted's TLS pauses a producer until its handshake is done:
            # the attempt becomes the producer once TLS is up.
            if self.current:
                self._events.securing()
        else:
            self._produceFor()
        assert self.protocol is not None
        self.protocol.makeConnection(transport)

    def connectionMade(self) -> None:
        """
        Not called: L{makeConnection} hands the transport to the plugin's protocol.
        """

    def dataReceived(self, data: bytes) -> None:
        if self._detached:
            # Its abort waits its turn (L{Core.settle}): what arrives
            # meanwhile is dropped, as an aborted transport drops it.
            return
        self.lastInbound = self._clock()
        assert self.protocol is not None
        self.protocol.dataReceived(data)

    def handshakeCompleted(self) -> None:
        if self.current:
            self._produceFor()
            self._events.handshakeCompleted()

    def connectionLost(self, reason: Failure) -> None:
        transport, self.transport = self.transport, None
        releaseTransport(transport)
        if self.writer is not None:
            self.writer.writable()
        try:
            assert self.protocol is not None
            self.protocol.connectionLost(reason)
        finally:
            self._report(reason)
            if self._detached:
                # Nothing needs the plugin's protocol any more; it holds this
                # attempt (its handle), so keeping it would be a cycle.
                self.protocol = None

    # IPushProducer, as the transport sees it.

    def _produceFor(self) -> None:
        if self.transport is not None and not self._producing:
            self._producing = True
            self.transport.registerProducer(self, True)  # type: ignore[attr-defined]

    def pauseProducing(self) -> None:
        """
        Unsent bytes passed the transport's buffer size: read nothing more
        from the peer until they are sent.
        """
        self.writeBlocked = True
        if self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]
        if self.writer is not None:
            self.writer.writable()

    def resumeProducing(self) -> None:
        """
        The peer read what was owed: read again.
        """
        self.writeBlocked = False
        if self.transport is not None:
            self.transport.resumeProducing()  # type: ignore[attr-defined]
        if self.writer is not None:
            self.writer.writable()

    def stopProducing(self) -> None:
        """
        The transport is going away; C{connectionLost} follows.
        """

    # IConnectionHandle, as the plugin sees it.

    def ready(self) -> None:
        if self.current and self.transport is not None:
            self._events.ready()

    def pong(self, token: bytes) -> None:
        if self.current:
            heartbeat = self.pongTo
            # Automat marks the machine busy with the list of inputs it
            # postponed; while it is (or if that mark is not found), the
            # pong goes through the machine, to be handled in its turn.
            if heartbeat is not None and idle(self._events):
                heartbeat.pong(token)
            else:
                self._events.pong(token)

    def activity(self) -> None:
        if self.current:
            self._events.activity()

    def reject(self, message: str, permanent: bool = True, overloaded: bool = False) -> None:
        self._report(failureOf(PluginRejection(message, permanent, overloaded)))

    # Internals.

    def _releaseFactory(self) -> None:
        factory, self._factory = self._factory, None
        if factory is not None:
            factory.release()

    def _connected(self, protocol: object) -> None:
        self._connecting = self._parts = None
        self._releaseFactory()

    def _report(self, failure: Failure) -> None:
        self._connecting = None
        parts, self._parts = self._parts, None
        if parts is not None and not self._detached:
            # Failed inside Twisted's connector, which uses neither link
            # again (the client forgets its connector once this returns).
            releaseFailedConnect(parts)
        self._releaseFactory()
        if self.current:
            self.current = False
            self._events.failed(failure)


@implementer(IHandshakeListener)
class SecureAttempt(Attempt):
    """
    An attempt whose transport may be TLS: Twisted tells it when the
    handshake completes (L{Attempt.handshakeCompleted}).
    """

    __slots__ = ()


_PLAIN_ENDPOINTS: frozenset[type] = frozenset(
    {TCP4ClientEndpoint, TCP6ClientEndpoint, HostnameEndpoint, UNIXClientEndpoint}
)
"""Twisted's endpoints that never make a TLS transport."""


def attemptFor(endpoint: IStreamClientEndpoint) -> type[Attempt]:
    """
    The kind of attempt that connects through C{endpoint}: a plain
    L{Attempt} for one of Twisted's TCP and UNIX endpoints, else a
    L{SecureAttempt} (a C{tls:} string, C{tls.enabled}, or an endpoint of
    the application's, which may make a TLS transport).

    A protocol that hears of handshakes costs Twisted's endpoint a
    declaration of its own on every connection's wrapper (two microseconds,
    a tenth of what the supervisor adds to a connect): a plain connect does
    without it.
    """
    return Attempt if type(endpoint) in _PLAIN_ENDPOINTS else SecureAttempt
