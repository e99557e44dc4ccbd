"""
One attempt's connection, from the first connect to the last byte: the
protocol the transport sees (it wraps the plugin's protocol) and the handle
the plugin talks back through. It routes what happens on the wire to the
machine as inputs, according to the phase of the attempt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IHandshakeListener,
    IProtocol,
    IProtocolFactory,
    ISSLTransport,
    ITransport,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from supervisor.interfaces import Classification, IConnectionHandle, ISupervisedProtocol
from supervisor.policy import (
    ConnectTimeout,
    PluginRejection,
    classify,
    failureOf,
)
from supervisor.states.core import log
from supervisor.states.records import Cause

if TYPE_CHECKING:
    from supervisor.heartbeat import Heartbeat
    from supervisor.states.core import Core, Inputs

Phase = Literal["connecting", "ready", "closing", "gone"]


@implementer(IProtocolFactory)
class _LinkFactory:
    """
    Builds the single protocol of one attempt: the link itself.
    """

    __slots__ = ("_link",)

    def __init__(self, link: Link) -> None:
        self._link = link

    def buildProtocol(self, addr: IAddress) -> Link:
        self._link.build()
        return self._link

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass


@implementer(IConnectionHandle, IProtocol, IHandshakeListener)
class Link:
    """
    The transport, the plugin's protocol and the phase of one attempt.

    On a TLS transport the plugin's protocol is connected before the TLS
    handshake (that is how Twisted's TLS works, so the plugin may write its
    own handshake early); its C{ready()} takes effect only once TLS has
    completed, so a certificate that fails verification fails the attempt.

    Once L{abort} is called (the machine left the states that keep the
    attempt), every later event from the transport or the plugin is ignored:
    this link is no longer the connection's.
    """

    __slots__ = (
        "_connecting",
        "_core",
        "_drainDeadline",
        "_draining",
        "_inputs",
        "_readyAsked",
        "_tlsPending",
        "_transportLost",
        "heartbeat",
        "heartbeatSpec",
        "name",
        "phase",
        "protocol",
        "transport",
    )

    def __init__(self, inputs: Inputs, core: Core) -> None:
        self._inputs = inputs
        self._core = core
        self.name = core.spec.name
        self.heartbeatSpec = core.spec.heartbeat
        self.phase: Phase = "connecting"
        self.protocol: ISupervisedProtocol | None = None
        self.transport: ITransport | None = None
        self.heartbeat: Heartbeat | None = None
        self._connecting: Deferred[IProtocol] | None = None
        self._draining: Deferred[None] | None = None
        self._drainDeadline: float | None = None
        self._transportLost = False
        self._tlsPending = False
        self._readyAsked = False

    # Driven by the machine's states.

    def connect(self) -> None:
        """
        Start connecting the endpoint.
        """
        connecting = self._connecting = self._core.endpoint.connect(_LinkFactory(self))
        connecting.addCallbacks(self._connected, self._connectFailed)

    def build(self) -> None:
        """
        Build the plugin's protocol for this attempt.
        """
        self.protocol = self._core.plugin.buildProtocol(self, self._core.options)

    def sendPing(self, token: bytes) -> None:
        """
        Ask the plugin to send a heartbeat ping.
        """
        assert self.protocol is not None
        self.protocol.sendPing(token)

    def drain(self, deadline: float) -> float:
        """
        Start the graceful close (once) and return its deadline.
        """
        if self._drainDeadline is not None:
            return self._drainDeadline
        self._drainDeadline = deadline
        self.phase = "closing"
        self.heartbeat = None
        drain = getattr(self.protocol, "drain", None)
        draining = self._draining = maybeDeferred(drain) if drain is not None else succeed(None)
        draining.addErrback(self._drainFailed)
        draining.addBoth(self._drained)
        return deadline

    def failAttempt(self, failure: Failure) -> None:
        """
        The attempt failed: classify the failure and tell the machine.
        """
        if self.phase != "connecting":
            return
        self.phase = "gone"
        c = self._classify(failure)
        detail = failure.getErrorMessage()
        if c.permanent:
            self._inputs.attemptAbandoned(Cause(c.reason, detail, permanent=True))
        elif self._core.policy.failed():
            self._inputs.attemptAbandoned(Cause(c.reason, f"{detail} (retries exhausted)"))
        else:
            self._inputs.attemptFailed(Cause(c.reason, detail))

    def timedOut(self) -> None:
        """
        C{connect_timeout} passed before the plugin was ready.
        """
        timeout = self._core.spec.connect_timeout
        self.failAttempt(failureOf(ConnectTimeout(f"not ready within {timeout:g}s")))

    def abort(self) -> None:
        """
        This link is done: cancel whatever is pending and abort the transport.
        """
        self.phase = "gone"
        self.heartbeat = None
        connecting, self._connecting = self._connecting, None
        if connecting is not None and self.transport is None:
            # Only a connect still in flight is cancelled. Once the transport
            # exists (the plugin may reject inside connectionMade, before the
            # endpoint fires this Deferred), aborting the transport is enough.
            connecting.cancel()
        draining, self._draining = self._draining, None
        if draining is not None:
            draining.cancel()
        if self.transport is not None and not self._transportLost:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # IProtocol, as the transport sees it.

    def makeConnection(self, transport: ITransport) -> None:
        self.transport = transport
        self._tlsPending = ISSLTransport.providedBy(transport)
        assert self.protocol is not None
        self.protocol.makeConnection(transport)

    def connectionMade(self) -> None:
        """
        Not called: L{makeConnection} hands the transport to the plugin's protocol.
        """

    def dataReceived(self, data: bytes) -> None:
        assert self.protocol is not None
        self.protocol.dataReceived(data)

    def handshakeCompleted(self) -> None:
        """
        TLS is up: a C{ready()} the plugin asked for takes effect now.
        """
        self._tlsPending = False
        if self._readyAsked:
            self.ready()

    def connectionLost(self, reason: Failure) -> None:
        self._transportLost = True
        try:
            assert self.protocol is not None
            self.protocol.connectionLost(reason)
        finally:
            self._lost(reason)

    # IConnectionHandle, as the plugin sees it.

    def ready(self) -> None:
        if self.phase != "connecting" or self.transport is None:
            return
        if self._tlsPending:
            self._readyAsked = True
            return
        self.phase = "ready"
        self._inputs.ready()

    def pong(self, token: bytes) -> None:
        if self.heartbeat is not None:
            self.heartbeat.pong(token)

    def activity(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.activity()

    def reject(self, message: str, permanent: bool = True) -> None:
        rejection = failureOf(PluginRejection(message, permanent))
        if self.phase == "connecting":
            self.failAttempt(rejection)
        elif self.phase == "ready":
            self.phase = "gone"
            self._inputs.lost(Cause("lost", message))

    # Internals.

    def _classify(self, failure: Failure) -> Classification:
        # The protocol knows most (it exists once the transport is up); the
        # plugin may classify failures that happen before that.
        for source in (self.protocol, self._core.plugin):
            override = getattr(source, "classifyFailure", None)
            if override is not None:
                chosen: Classification | None = override(failure)
                if chosen is not None:
                    return chosen
        return classify(failure)

    def _connected(self, protocol: object) -> None:
        self._connecting = None

    def _connectFailed(self, failure: Failure) -> None:
        self._connecting = None
        self.failAttempt(failure)

    def _lost(self, reason: Failure) -> None:
        phase = self.phase
        if phase == "connecting":
            self.failAttempt(reason)
        elif phase == "ready":
            self.phase = "gone"
            self._inputs.lost(Cause("lost", reason.getErrorMessage()))
        elif phase == "closing":
            self.phase = "gone"
            self._inputs.closed(Cause("closed"))

    def _drainFailed(self, failure: Failure) -> None:
        if self.phase != "closing":
            return  # cancelled by abort() at the deadline
        log.failure("{connection} drain failed; closing anyway", failure, connection=self.name)

    def _drained(self, result: object) -> None:
        self._draining = None
        if self.phase == "closing" and self.transport is not None:
            self.transport.loseConnection()
