"""
What a dropped connection leaves is freed by reference counting: the
attempt lets its plugin's protocol go, its factory lets the attempt go, and
Twisted's TCP client objects are unlinked (L{releaseTransport}); so is what
a failed connect leaves (L{releaseFailedConnect}).
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python.failure import Failure

from supervisor.attempt import Attempt, _AttemptFactory
from supervisor.cycles import connectParts, releaseFailedConnect, releaseTransport
from supervisor.interfaces import IConnectionHandle
from supervisor.spec import HeartbeatSpec
from tests.harness import ADDRESS


class Events:
    """
    The machine, as far as an attempt can tell: records what it reports.
    """

    def __init__(self) -> None:
        self.reported: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.reported.append(name)


class Plugin:
    """
    Builds protocols that keep their handle, as every plugin's does.
    """

    name = "kept"

    def buildProtocol(self, handle: IConnectionHandle, options: object) -> Protocol:
        protocol = Protocol()
        protocol.handle = handle  # type: ignore[attr-defined]
        return protocol


@pytest.fixture
def noCollector() -> Iterator[None]:
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def attemptOn(transport: StringTransport) -> tuple[Attempt, Events]:
    events = Events()
    attempt = Attempt(events, "c", HeartbeatSpec(), Plugin(), None, lambda: 0.0)  # type: ignore[arg-type]
    _AttemptFactory(attempt).buildProtocol(ADDRESS)
    attempt.makeConnection(transport)
    return attempt, events


@pytest.mark.parametrize("order", ["lost-then-detached", "detached-then-lost"])
def test_aDoneAttemptLetsItsProtocolGo(order: str, noCollector: None) -> None:
    attempt, events = attemptOn(StringTransport())
    protocol = weakref.ref(attempt.protocol)  # type: ignore[arg-type]
    if order == "lost-then-detached":
        attempt.connectionLost(Failure(ConnectionError("lost")))
        assert attempt.protocol is not None, "the machine may still ask it"
        attempt.detach()
    else:
        attempt.detach()
        assert attempt.protocol is not None, "its transport is still being closed"
        attempt.connectionLost(Failure(ConnectionError("aborted")))
    assert attempt.protocol is None
    assert protocol() is None
    assert events.reported == (["failed"] if order == "lost-then-detached" else [])


def test_theFactoryLetsTheAttemptGoOnceItsConnectIsOver() -> None:
    """
    Once the connect has failed, the factory holds the attempt no more
    (after a failed connect, Twisted's connector and the endpoint's factory,
    which holds this one, stay in a cycle).
    """
    attempt = Attempt(Events(), "c", HeartbeatSpec(), Plugin(), None, lambda: 0.0)  # type: ignore[arg-type]
    endpoint = Endpoint()
    attempt.connect(endpoint)  # type: ignore[arg-type]
    factory = endpoint.factories[0]
    assert factory._attempt is attempt
    endpoint.connecting[0].errback(ConnectionRefusedError())
    assert factory._attempt is None


def test_aStoppedFactoryStillBuildsTheNextAddresssProtocol() -> None:
    """
    A HostnameEndpoint stops the connector of a refused address and starts
    the next address's with the same factory: stopping is not the end of
    the attempt.
    """
    attempt = Attempt(Events(), "c", HeartbeatSpec(), Plugin(), None, lambda: 0.0)  # type: ignore[arg-type]
    endpoint = Endpoint()
    attempt.connect(endpoint)  # type: ignore[arg-type]
    factory = endpoint.factories[0]
    factory.doStart()
    factory.doStop()
    factory.doStart()
    assert factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1)) is attempt
    assert attempt.protocol is not None


class Endpoint:
    def __init__(self) -> None:
        self.factories: list[Any] = []
        self.connecting: list[Deferred[Any]] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        self.factories.append(factory)
        self.connecting.append(Deferred())
        return self.connecting[-1]


class Connector:
    transport: object
    factory: object


class WrappingFactory:
    _connector: object


class Client:
    connector: object


class TLSLayer:
    transport: object


def linked() -> tuple[Client, Connector, WrappingFactory]:
    client, connector, factory = Client(), Connector(), WrappingFactory()
    client.connector = connector
    connector.transport = client
    connector.factory = factory
    factory._connector = connector
    return client, connector, factory


def test_releaseUnlinksTheClientItsConnectorAndTheEndpointsFactory() -> None:
    client, connector, factory = linked()
    releaseTransport(client)
    assert connector.transport is None
    assert factory._connector is None
    assert client.connector is connector, "Twisted still reads it to finish the close"
    assert connector.factory is factory


def test_releaseLooksThroughATLSLayer() -> None:
    client, connector, factory = linked()
    tls = TLSLayer()
    tls.transport = client
    releaseTransport(tls)
    assert connector.transport is None
    assert factory._connector is None


def test_releaseLeavesOthersAlone() -> None:
    client, connector, _ = linked()
    other = Client()
    other.connector = connector  # not the connector's transport
    releaseTransport(other)
    assert connector.transport is client
    releaseTransport(None)
    releaseTransport(StringTransport())


class ConnectingClient:
    """
    Twisted's TCP client while it connects, as far as its cycle goes: its
    C{doRead} and C{doWrite} are its own C{doConnect}.
    """

    def __init__(self) -> None:
        self.doRead = self.doConnect
        self.doWrite = self.doConnect

    def doConnect(self) -> None:
        "Called by the reactor."


class ClientReactor(MemoryReactor):
    """
    A memory reactor whose connectors have a client connecting, as Twisted's
    TCP connectors do.
    """

    def connectTCP(self, *args: Any, **kwargs: Any) -> Any:
        connector = super().connectTCP(*args, **kwargs)
        connector.transport = ConnectingClient()
        return connector


def connecting(endpoint: str) -> tuple[Attempt, Events, Any, Any, ConnectingClient]:
    """
    An attempt connecting through Twisted's TCP endpoint for IPv4 (C{"tcp4"}:
    the attempt calls C{connectTCP} itself) or IPv6 (C{"tcp6"}: through the
    endpoint's wrapping factory); the factory the reactor was given, its
    connector, and the client the connector makes.
    """
    reactor = ClientReactor()
    events = Events()
    attempt = Attempt(events, "c", HeartbeatSpec(), Plugin(), None, lambda: 0.0)  # type: ignore[arg-type]
    if endpoint == "tcp4":
        attempt.connect(TCP4ClientEndpoint(reactor, "127.0.0.1", 1))
    else:
        attempt.connect(TCP6ClientEndpoint(reactor, "::1", 1))
    factory = reactor.tcpClients[0][2]
    connector = reactor.connectors[0]
    return attempt, events, factory, connector, connector.transport


def unlinked(client: ConnectingClient) -> bool:
    """
    Whether the client's C{doRead} and C{doWrite} no longer hold it (the
    reactor may still call them once: they do nothing).
    """
    return (
        getattr(client.doRead, "__self__", None) is None
        and getattr(client.doWrite, "__self__", None) is None
        and client.doRead() is None
        and client.doWrite() is None
    )


@pytest.mark.parametrize("endpoint", ["tcp4", "tcp6"])
def test_aRefusedConnectIsUnlinked(endpoint: str) -> None:
    """
    A connect that fails inside Twisted's connector leaves no cycle: the
    endpoint's factory (if any) forgets the connector, the client is
    unlinked, and the attempt's factory lets the attempt go.
    """
    attempt, events, factory, connector, client = connecting(endpoint)
    factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
    assert events.reported == ["failed"]
    assert getattr(factory, "_connector", None) is None
    assert unlinked(client)
    assert attempt._factory is None


@pytest.mark.parametrize("endpoint", ["tcp4", "tcp6"])
def test_aConnectCancelledAtItsDeadlineIsUnlinkedOnceStopped(endpoint: str) -> None:
    """
    Detaching a connecting attempt stops its connector. Through the
    endpoint, its canceller fails the connect's Deferred, then stops the
    connector it still holds: the links are broken only after both.
    """
    attempt, events, factory, connector, client = connecting(endpoint)
    stopped: list[object] = []

    def stopConnecting() -> None:
        stopped.append(getattr(factory, "_connector", connector))
        # What Twisted's connector does when stopped.
        factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))

    connector.stopConnecting = stopConnecting
    assert attempt.detach() is False
    assert stopped == [connector], "the connector was found, and stopped"
    assert getattr(factory, "_connector", None) is None
    assert unlinked(client)
    assert events.reported == [], "a detached attempt reports nothing"


def test_aConnectorThatDoesNotReportItsStopStillLetsTheAttemptGo() -> None:
    attempt, events, factory, connector, _ = connecting("tcp4")
    assert attempt.detach() is False
    assert connector.stoppedConnecting
    assert factory._attempt is None
    assert events.reported == []


@pytest.mark.parametrize("endpoint", ["tcp4", "tcp6"])
def test_aConnectThatSucceededIsLeftToTwisted(endpoint: str) -> None:
    attempt, events, factory, connector, client = connecting(endpoint)
    protocol = factory.buildProtocol(ADDRESS)
    protocol.makeConnection(StringTransport())
    if endpoint == "tcp4":
        assert protocol is attempt, "no wrapping protocol"
    assert attempt.transport is not None
    assert getattr(factory, "_connector", connector) is connector, "released once lost"
    assert client.doRead == client.doConnect
    assert attempt.detach() is True
    assert events.reported == []


def test_aPluginThatCannotBuildFailsTheAttempt() -> None:
    """
    Connected with C{connectTCP} itself, a plugin whose C{buildProtocol}
    raises fails the attempt, and Twisted is given no protocol (it closes
    the connection), as the endpoint's factory would do.
    """
    attempt, events, factory, _, _ = connecting("tcp4")
    attempt._plugin = Broken()  # type: ignore[assignment]
    assert factory.buildProtocol(ADDRESS) is None
    assert events.reported == ["failed"]
    assert attempt._factory is None


def test_aConnectTCPThatRaisesFailsTheAttempt() -> None:
    class Refusing(MemoryReactor):
        def connectTCP(self, *args: Any, **kwargs: Any) -> Any:
            raise OSError("no such interface")

    events = Events()
    attempt = Attempt(events, "c", HeartbeatSpec(), Plugin(), None, lambda: 0.0)  # type: ignore[arg-type]
    attempt.connect(TCP4ClientEndpoint(Refusing(), "127.0.0.1", 1))
    assert events.reported == ["failed"]
    assert attempt.detach() is False


class Broken:
    name = "broken"

    def buildProtocol(self, handle: IConnectionHandle, options: object) -> Protocol:
        raise ValueError("cannot")


def test_otherEndpointsHaveNoPartsToRelease() -> None:
    """
    An endpoint of another kind (its own Deferred, no wrapping factory):
    nothing is noted, and its failure is reported as before.
    """
    assert connectParts(Deferred()) is None
    assert connectParts(None) is None
    events = Events()
    attempt = Attempt(events, "c", HeartbeatSpec(), Plugin(), None, lambda: 0.0)  # type: ignore[arg-type]
    endpoint = Endpoint()
    attempt.connect(endpoint)  # type: ignore[arg-type]
    endpoint.connecting[0].errback(ConnectionRefusedError())
    assert events.reported == ["failed"]


def test_releasingAFailedConnectTwiceIsHarmless() -> None:
    client, connector, factory = linked()
    releaseFailedConnect((factory, client))
    releaseFailedConnect((factory, client))
    releaseFailedConnect((factory, None))
    assert factory._connector is None
    assert connector.factory is factory


def test_anEndpointNotMadeAsExpectedConnectsItsOwnWay() -> None:
    """
    A C{TCP4ClientEndpoint} without the attributes the attempt reads (another
    Twisted's, say) is connected through its own C{connect}.
    """
    reactor = ClientReactor()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", 1)
    del endpoint._timeout
    factories: list[object] = []

    def connect(factory: object) -> Deferred[Any]:
        factories.append(factory)
        return Deferred()

    endpoint.connect = connect  # type: ignore[method-assign]
    events = Events()
    attempt = Attempt(events, "c", HeartbeatSpec(), Plugin(), None, lambda: 0.0)  # type: ignore[arg-type]
    attempt.connect(endpoint)
    assert reactor.tcpClients == []
    assert len(factories) == 1 and attempt._factory is factories[0]
