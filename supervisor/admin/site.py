"""
The admin site: how many clients it serves at once, and which host names it
answers to.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import Logger
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from supervisor.admin.channel import AdminChannel, AdminRequest
from supervisor.admin.resources import Misdirected

__all__ = ["AdminSite", "isLoopbackHost"]

log = Logger(namespace="netsupervisor.admin")


def isLoopbackHost(host: bytes) -> bool:
    """
    Whether a C{Host} header names this machine's loopback: C{localhost} or
    a name under it (RFC 6761), an address in 127.0.0.0/8, or C{[::1]}; with
    or without a port.
    """
    text = host.decode("ascii", "replace").strip().lower()
    if text.startswith("["):
        literal, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return False
        name = literal
    else:
        name, colon, port = text.rpartition(":")
        if not colon:
            name = text
        elif not port.isdigit():
            return False
    name = name.removesuffix(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def isLoopbackAddress(address: IAddress) -> bool:
    """
    Whether a listener's address is an IP loopback address (a UNIX socket's
    is not an IP address at all).
    """
    host = getattr(address, "host", None)
    if not isinstance(host, str):
        return False
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class AdminSite(Site):
    """
    A site of L{AdminChannel}s: at most C{maxClients()} connections at once;
    one past it is closed as soon as it is accepted.

    @ivar checkHost: whether a request must name a loopback host (see
        L{isLoopbackHost}) or be answered 421: set when the listener is on a
        loopback address, so that a DNS-rebinding page in a browser cannot
        read the API.
    @ivar clients: the connections open now.
    @ivar turnedAway: the connections closed at once because C{clients} was
        at the limit.
    """

    protocol = AdminChannel  # type: ignore[assignment]
    requestFactory = AdminRequest
    checkHost = False

    def __init__(
        self, resource: IResource, clock: IReactorTime, maxClients: Callable[[], int]
    ) -> None:
        """
        @param clock: times each connection's phases (and the access log).
        @param maxClients: the limit, read at each new connection (so that a
            reload changes it at once).
        """
        super().__init__(resource, timeout=None, reactor=clock)  # type: ignore[no-untyped-call]
        self.displayTracebacks = False
        self._maxClients = maxClients
        self.clients = 0
        self.turnedAway = 0
        self._full = False

    def buildProtocol(self, addr: IAddress) -> AdminChannel | None:  # type: ignore[override]
        limit = self._maxClients()
        if self.clients >= limit:
            self.turnedAway += 1
            if not self._full:
                self._full = True
                log.warn(
                    "admin.max_clients ({limit}) admin connections are open: closing new "
                    "ones at once until one ends",
                    limit=limit,
                )
            return None
        channel: AdminChannel = super().buildProtocol(addr)  # type: ignore[no-untyped-call]
        channel.clock = self.reactor
        channel.gone = self._clientGone
        self.clients += 1
        return channel

    def _clientGone(self) -> None:
        self.clients -= 1
        if self._full and self.clients < self._maxClients():
            self._full = False
            log.info(
                "admin connections below admin.max_clients again; {count} were turned away",
                count=self.turnedAway,
            )

    def getResourceFor(self, request: Request) -> IResource:
        if self.checkHost and not _loopbackHosts(request.requestHeaders.getRawHeaders(b"host")):
            return Misdirected()
        resource: IResource = super().getResourceFor(request)  # type: ignore[no-untyped-call]
        return resource


def _loopbackHosts(hosts: Sequence[bytes] | None) -> bool:
    # No Host at all (an HTTP/1.0 probe) is not a browser's request.
    return all(isLoopbackHost(host) for host in hosts or ())
