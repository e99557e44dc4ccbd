"""
A connection's endpoints built from its spec, and the TCP keepalive set on
their sockets.

A C{tcp:} endpoint string whose host is a name becomes Twisted's
C{HostnameEndpoint}: the name is resolved on every attempt and every address
it resolves to (IPv4 and IPv6) is tried, as RFC 8305 ("happy eyeballs")
says; a name that resolves to nothing fails the attempt with
C{DNSLookupError}, the reason C{dns}. A host that is an address connects to
it directly. With C{tls.enabled}, each C{tcp:} endpoint is wrapped in TLS
with the connection's C{tls} settings. Any other endpoint string is what
Twisted's C{clientFromString} makes of it.
"""

from __future__ import annotations

import math
import socket
from typing import Any, NamedTuple

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    clientFromString,
    wrapClientTLS,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger

from supervisor.spec import ConnectionSpec, KeepaliveSpec, TLSSpec
from supervisor.tls import ClientCreators, readMaterial

__all__ = ["clientEndpoint", "clientEndpoints", "setKeepalive", "tcpSocket"]

log = Logger(namespace="netsupervisor.transport")

_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)
# Linux and most BSDs name it TCP_KEEPIDLE; macOS TCP_KEEPALIVE.
_KEEPIDLE: int | None = getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None))
_KEEPINTVL: int | None = getattr(socket, "TCP_KEEPINTVL", None)
_KEEPCNT: int | None = getattr(socket, "TCP_KEEPCNT", None)
# How many transports deep the TCP socket may be (TLS over TCP is two).
_LAYERS = 4


def clientEndpoints(
    reactor: Any, spec: ConnectionSpec, creators: ClientCreators | None = None
) -> tuple[IStreamClientEndpoint, ...]:
    """
    The endpoint of each of C{spec}'s endpoint strings (L{clientEndpoint}).
    """
    if creators is None:
        creators = ClientCreators()
    return tuple(
        clientEndpoint(reactor, spec.tls, description, creators) for description in spec.targets
    )


class TCPParameters(NamedTuple):
    """
    What a C{TCP4ClientEndpoint} connects with.
    """

    host: str
    port: int
    timeout: float
    # As the endpoint keeps it, for the connect or an endpoint made from it.
    bindAddress: Any


def tcpParameters(endpoint: TCP4ClientEndpoint) -> TCPParameters | None:
    """
    The parameters of C{endpoint}, which Twisted keeps private (its parser
    too), or L{None} if this Twisted's endpoint does not keep them so.
    """
    try:
        return TCPParameters(
            endpoint._host, endpoint._port, endpoint._timeout, endpoint._bindAddress
        )
    except AttributeError:
        return None


def clientEndpoint(
    reactor: Any, tls: TLSSpec, description: str, creators: ClientCreators | None = None
) -> IStreamClientEndpoint:
    """
    The endpoint of one endpoint string of a connection.

    @param reactor: provides C{IReactorTCP}, C{IReactorTime} and
        C{IReactorPluggableNameResolver} (whose C{nameResolver} resolves the
        names), and what other endpoint types need.
    @param tls: the connection's TLS settings; when enabled, C{description}
        is a C{tcp:} string (the spec checks that).
    @param description: a Twisted client endpoint string.
    @param creators: where the TLS settings of endpoints with the same
        files and server name are shared (by default, nowhere).
    """
    endpoint: IStreamClientEndpoint = clientFromString(reactor, description)  # type: ignore[no-untyped-call]
    # Twisted parses tcp: into a TCP4ClientEndpoint, which connects to the
    # first IPv4 address of a name only.
    parameters = tcpParameters(endpoint) if isinstance(endpoint, TCP4ClientEndpoint) else None
    if parameters is None:
        return endpoint
    host, port, timeout, bindAddress = parameters
    if isIPv6Address(host):
        endpoint = TCP6ClientEndpoint(  # type: ignore[no-untyped-call]
            reactor, host, port, timeout, bindAddress
        )
    elif not isIPAddress(host):
        endpoint = HostnameEndpoint(reactor, host, port, timeout, bindAddress)
    if not tls.enabled:
        return endpoint
    material = tls.material
    if material is None:  # a spec built in code, not by the loader
        material = readMaterial(tls.ca, tls.cert, tls.key)
    if creators is None:
        creators = ClientCreators()
    creator = creators.creator(material, tls.server_name or host, tls.verify)
    return wrapClientTLS(creator, endpoint)


def tcpSocket(transport: object) -> socket.socket | None:
    """
    The TCP socket under C{transport} (for TLS, its TCP transport's), or
    L{None} when there is none (a UNIX socket, a transport in memory).
    """
    for _ in range(_LAYERS):
        getHandle = getattr(transport, "getHandle", None)
        handle = getHandle() if callable(getHandle) else None
        if isinstance(handle, socket.socket):
            return handle if handle.family in _TCP_FAMILIES else None
        transport = getattr(transport, "transport", None)
        if transport is None:
            break
    return None


def setKeepalive(transport: object, spec: KeepaliveSpec, connection: str = "") -> bool:
    """
    Set TCP keepalive as C{spec} says on the TCP socket under C{transport}.

    @param connection: the connection's name, for the log.
    @return: whether it was set: false when C{spec} leaves the socket as it
        is, there is no TCP socket, or the system refused (logged).
    """
    if not spec.enabled:
        return False
    sock = tcpSocket(transport)
    if sock is None:
        return False
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for option, value in ((_KEEPIDLE, spec.idle), (_KEEPINTVL, spec.interval)):
        if option is not None and value > 0:
            options.append((socket.IPPROTO_TCP, option, math.ceil(value)))
    if _KEEPCNT is not None and spec.count > 0:
        options.append((socket.IPPROTO_TCP, _KEEPCNT, spec.count))
    try:
        for level, option, value in options:
            sock.setsockopt(level, option, value)
    except OSError as e:
        log.warn(
            "{connection}: TCP keepalive not set: {error}",
            connection=connection,
            error=e.strerror or str(e),
        )
        return False
    return True
