"""
Breaking the reference cycles a lost TCP client connection leaves behind.

Twisted's TCP client keeps its transport and its connector pointing at each
other (C{Client.connector}, C{Connector.transport}), and an endpoint's
wrapping factory and the connector do the same (C{Connector.factory},
C{_WrappingFactory._connector}); neither is cleared when the connection is
lost. Every dropped connection is then garbage only the cyclic collector can
free, and a fleet that reconnects makes a lot of it: the collector has to
run over every object of the process to find it (a pause of hundreds of
milliseconds at ten thousand connections), and objects frozen with
C{gc.freeze()} would never be freed at all.

L{releaseTransport} clears those references once the connection is lost, so
that reference counting alone frees what the connection used.

A connect that fails (refused, timed out, cancelled at the attempt's
deadline) leaves cycles too: the wrapping factory and the connector still
point at each other, and Twisted's client holds its own C{doConnect} as its
C{doRead} and C{doWrite}. While full collections are held off (start-up, a
reconnect wave: L{supervisor.garbage}), an attempt that waited long enough
to reach the old generation (a blackholed peer's, waiting for its deadline)
would be frozen with that garbage and never freed: some ten objects for each
failed attempt. L{connectParts} notes those objects when the connect starts
(an attempt that calls C{connectTCP} itself notes its client, and has no
wrapping factory), and L{releaseFailedConnect} unlinks them once it has
failed. Not through Twisted's C{HostnameEndpoint} (a C{tcp:} string whose
host is a name): its connects to each address are its own, hidden from the
attempt, and its C{connect} makes a class each time (a class is a cycle);
what those leave is the cyclic collector's.
"""

from __future__ import annotations

from typing import Any


def releaseTransport(transport: object) -> None:
    """
    Break the cycles between C{transport} (a lost TCP client connection,
    or a TLS layer on one) and its connector. Anything else is left alone.
    """
    client: Any = transport
    connector = getattr(client, "connector", None)
    if connector is None:
        client = getattr(transport, "transport", None)
        connector = getattr(client, "connector", None)
        if connector is None:
            return
    if getattr(connector, "transport", None) is client:
        connector.transport = None
    factory: Any = getattr(connector, "factory", None)
    if getattr(factory, "_connector", None) is connector:
        factory._connector = None


ConnectParts = tuple[Any, Any]
"""The wrapping factory of a connect under way, and Twisted's client (or
L{None})."""


def _nothing(*args: object, **kwargs: object) -> None:
    "What a failed client's C{doRead} and C{doWrite} become."


def connectParts(connecting: object) -> ConnectParts | None:
    """
    What a connect through one of Twisted's TCP or UNIX endpoints would leave
    in cycles if it failed: the endpoint's wrapping factory (the canceller of
    C{connecting}, the L{Deferred} its C{connect} returned) and the client its
    connector is making. L{None} for any other endpoint, or a connect that is
    over already.
    """
    factory = getattr(getattr(connecting, "_canceller", None), "__self__", None)
    connector = getattr(factory, "_connector", None)
    if connector is None:
        return None
    return factory, getattr(connector, "transport", None)


def releaseFailedConnect(parts: ConnectParts) -> None:
    """
    Break the cycles of a connect that failed, from what L{connectParts}
    noted when it started. Call it once Twisted is done with the failure
    (the connect's Deferred has failed and no cancellation is under way).
    """
    factory, client = parts
    if getattr(factory, "_connector", None) is not None:
        factory._connector = None
    state = getattr(client, "__dict__", None)
    if state is not None:
        # Set on the instance while connecting, deleted by Twisted only when
        # the connect succeeds. The reactor may still call one (a refusal
        # is found by doRead; the same event's doWrite follows): it finds
        # nothing to do, as Twisted's own client does after a failed start.
        for name in ("doRead", "doWrite"):
            if name in state:
                state[name] = _nothing
