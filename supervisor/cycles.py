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
