"""
The contract between the supervisor and protocol plugins.

A plugin knows bytes: it frames, handshakes, formats a ping, recognises a
pong, classifies its own errors and says goodbye. The supervisor knows time:
it schedules heartbeats, times them out, decides to reconnect and counts.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface

from supervisor.policy import Classification


class IConnectionHandle(Interface):
    """
    What a protocol built by a plugin can tell the supervisor about its
    connection. Calls that no longer apply (a late C{ready} after the
    attempt timed out, a pong after the connection was dropped) are ignored.
    """

    name = Attribute("The connection's name (str), for the plugin's own log messages.")
    heartbeatSpec = Attribute(
        "The connection's L{supervisor.spec.HeartbeatSpec}, for protocols that must tell"
        " the peer how often to expect a ping (an MQTT keep-alive)."
    )

    def ready() -> None:
        """
        The plugin's handshake is complete: the connection becomes
        ESTABLISHED and heartbeats start.
        """

    def pong(token: bytes) -> None:
        """
        The peer answered the ping carrying C{token}.
        """

    def activity() -> None:
        """
        A frame arrived; the supervisor counts it as proof of life in place
        of a pong. Plugins call this only for frames that prove the peer is
        alive.
        """

    def reject(message: str, permanent: bool = True) -> None:
        """
        The plugin refuses this connection (bad credentials, a protocol
        error). During the handshake this fails the attempt, and a permanent
        rejection closes the connection for good; once ESTABLISHED it drops
        the connection, which is then retried. The transport is aborted.
        """


class ISupervisedProtocol(IProtocol):
    """
    The protocol a plugin builds for one connection.
    """

    def sendPing(token: bytes) -> None:
        """
        Send one heartbeat ping identified by C{token}; report the answer
        with L{IConnectionHandle.pong} and the same token.
        """

    def drain() -> Deferred[None]:
        """
        Finish in-flight work and say goodbye; fire when the transport may be
        closed. The supervisor closes the transport after this fires, and
        aborts it if C{drain_timeout} passes first.
        """

    def classifyFailure(failure: Failure) -> Classification | None:
        """
        Override the default transient/permanent classification of a
        failure of this connection's attempt, or return L{None} to keep it.
        """


class IProtocolPlugin(Interface):
    """
    A protocol plugin, found by C{twisted.plugin.getPlugins} in the
    C{plugins} package. Provide C{twisted.plugin.IPlugin} as well.
    """

    name = Attribute("The name a configuration's C{protocol} key uses (str).")

    # Optional: a plugin may also define C{classifyFailure(failure)}, with the
    # meaning of L{ISupervisedProtocol.classifyFailure}, for failures that
    # happen before its protocol exists (refused, DNS, TLS before connect).

    def buildProtocol(
        handle: IConnectionHandle, options: Mapping[str, object]
    ) -> ISupervisedProtocol:
        """
        Build the protocol for one connection attempt.

        @param handle: how the protocol talks back to the supervisor.
        @param options: the connection's protocol options from its spec.
        """
