"""
The contract between the supervisor and protocol plugins.

A plugin knows bytes: it frames, handshakes, formats a ping, recognises a
pong, classifies its own errors and says goodbye. The supervisor knows time:
it schedules heartbeats, times them out, decides to reconnect and counts.

Required: L{IProtocolPlugin} (with C{twisted.plugin.IPlugin}) for the plugin,
L{ISupervisedProtocol} for the protocol it builds. Optional, each checked with
C{providedBy}: L{IConfigurable} (the plugin checks its options when the
configuration loads), L{IDrainable} (the protocol says goodbye before the
supervisor closes the transport), L{IFailureClassifier} (the plugin or its
protocol overrides the default classification of failures).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface

from supervisor.states.records import ConnectFailureReason


@attrs.frozen
class Classification:
    """
    What a failure means for the reconnect loop.

    @ivar reason: the C{reason} label of C{connect_failures_total}.
    @ivar permanent: retrying will not help; the connection goes to CLOSED.
    @ivar overloaded: the peer said itself that it is overloaded (too many
        clients, server busy): the target's circuit breaker opens at once,
        whatever its count of failures.
    """

    reason: ConnectFailureReason
    permanent: bool = False
    overloaded: bool = False


class OptionError(ValueError):
    """
    A plugin refused one of its options; raised by
    L{IConfigurable.parseOptions}. The configuration loader turns it into a
    C{ConfigError} naming C{connection[N].options.KEY}.

    @ivar key: the option's key (a dotted path below C{options} for a nested
        one), or C{""} when the problem is not one key's.
    @ivar problem: what was expected and what was found, like
        C{"expected an integer >= 1, got the string \\"abc\\""}.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


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

    def reject(message: str, permanent: bool = True, overloaded: bool = False) -> None:
        """
        The plugin refuses this connection (bad credentials, a protocol
        error). During the handshake this fails the attempt, and a permanent
        rejection closes the connection for good; once ESTABLISHED it drops
        the connection, which is then retried. The transport is aborted.

        @param overloaded: the peer said itself that it is overloaded (too
            many clients, server busy): the target's circuit breaker opens
            at once, so that the fleet stops pushing.
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


class IDrainable(Interface):
    """
    Optional, for an L{ISupervisedProtocol}: it has work to finish or a
    goodbye to say before its transport is closed. A protocol that does not
    provide it is closed at once when the connection closes gracefully.
    """

    def drain() -> Deferred[None]:
        """
        Finish in-flight work and say goodbye; fire when the transport may be
        closed. The supervisor closes the transport after this fires, and
        aborts it if C{drain_timeout} passes first.
        """


class IFailureClassifier(Interface):
    """
    Optional, for an L{ISupervisedProtocol} (failures once its transport
    exists) or an L{IProtocolPlugin} (failures before that: refused, DNS,
    TLS). The protocol is asked first, then the plugin, then the default
    classification applies.
    """

    def classifyFailure(failure: Failure) -> Classification | None:
        """
        Classify a failure of this connection's attempt, or return L{None}
        to leave it to the next in line.
        """


class IProtocolPlugin(Interface):
    """
    A protocol plugin, found by C{twisted.plugin.getPlugins} in the
    C{plugins} package. Provide C{twisted.plugin.IPlugin} as well.
    """

    name = Attribute("The name a configuration's C{protocol} key uses (str).")

    def buildProtocol(handle: IConnectionHandle, options: Any) -> ISupervisedProtocol:
        """
        Build the protocol for one connection attempt.

        @param handle: how the protocol talks back to the supervisor.
        @param options: what L{IConfigurable.parseOptions} returned for the
            connection's options when the plugin provides L{IConfigurable};
            otherwise the options themselves, a C{Mapping[str, object]}.
        """


class IConfigurable(Interface):
    """
    Optional, for an L{IProtocolPlugin}: it checks its options when the
    configuration is loaded (at start and on every reload), so that a bad
    option refuses the file instead of failing every attempt.
    """

    def parseOptions(options: Mapping[str, object]) -> object:
        """
        Check a connection's protocol options and return them parsed (a
        frozen value, given to every L{IProtocolPlugin.buildProtocol} of
        that connection). Must not read files or the network: it runs for
        every connection at every load.

        @param options: the merged C{options} table of one connection.
        @raise OptionError: naming the key and the problem.
        """
