"""
Where the admin site listens: loopback unless an interface is named, and
what follows from the address it is bound to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor
from twisted.logger import Logger
from zope.interface import implementer

from supervisor.admin.site import AdminSite, isLoopbackAddress

__all__ = ["ListeningWatcher", "loopbackByDefault", "onListening"]

log = Logger(namespace="netsupervisor.admin")

LOOPBACK = "127.0.0.1"


def loopbackByDefault(listen: str) -> str:
    """
    C{listen} (C{admin.listen}) with C{interface=127.0.0.1} added when it
    would otherwise bind every IPv4 interface: a bare port number, and
    C{tcp:} or C{ssl:} without an interface. Anything else is returned as it
    is (C{tcp6:} binds what Twisted says, C{::} by default).
    """
    text = listen.strip()
    if text.isdigit():
        return f"tcp:{text}:interface={LOOPBACK}"
    recorder = MemoryReactor()  # type: ignore[no-untyped-call]
    try:
        endpoint = serverFromString(recorder, text)  # type: ignore[no-untyped-call]
        endpoint.listen(Factory())
    except Exception:
        return listen  # the real listen reports what is wrong with it
    bound: list[tuple[Any, ...]] = [*recorder.tcpServers, *recorder.sslServers]
    if len(bound) == 1 and bound[0][-1] == "":
        return f"{text}:interface={LOOPBACK}"
    return listen


def onListening(site: AdminSite, tokenFile: Callable[[], str]) -> Callable[[IListeningPort], None]:
    """
    What to do once the site listens: check C{Host} if the address is a
    loopback one; warn if it is not and no token file is set.

    @param tokenFile: the running C{admin.token_file}.
    """

    def listening(port: IListeningPort) -> None:
        address = port.getHost()
        site.checkHost = isLoopbackAddress(address)
        host = getattr(address, "host", None)
        if isinstance(host, str) and not site.checkHost and not tokenFile():
            log.warn(
                "the admin API listens on {host}, not a loopback address, and "
                "admin.token_file is not set: anyone who can reach port {port} can read "
                "/connections and /metrics",
                host=host,
                port=getattr(address, "port", "?"),
            )

    return listening


@implementer(IStreamServerEndpoint)
@attrs.frozen
class ListeningWatcher:
    """
    An endpoint that calls C{watcher} with the port that C{endpoint} listens
    on, once it does.
    """

    endpoint: IStreamServerEndpoint
    watcher: Callable[[IListeningPort], None]

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        listening = self.endpoint.listen(protocolFactory)
        return listening.addCallback(self._listening)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.watcher(port)
        return port
