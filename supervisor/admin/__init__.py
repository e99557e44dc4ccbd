"""
The admin HTTP API: a status page, metrics, health, readiness, connections and the
actions on them, as a twisted.web site.

Nothing here imports the global reactor: the caller passes it in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.application import strports
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService
from twisted.internet.interfaces import IReactorTime

from supervisor.admin.listener import ListeningWatcher, loopbackByDefault, onListening
from supervisor.admin.resources import AdminRoot
from supervisor.admin.site import AdminSite

if TYPE_CHECKING:
    from supervisor.metrics import SupervisorMetrics
    from supervisor.service import Supervisor

__all__ = ["AdminRoot", "AdminSite", "adminService", "adminSite"]


def adminSite(supervisor: Supervisor, metrics: SupervisorMetrics, clock: IReactorTime) -> AdminSite:
    """
    The admin API of C{supervisor} as a site, serving at most
    C{admin.max_clients} connections at once.

    @param metrics: what C{/metrics} shows.
    @param clock: the site's time source (the bounds on each connection,
        access log dates).
    """
    return AdminSite(
        AdminRoot(supervisor, metrics), clock, lambda: supervisor.config.admin.max_clients
    )


def adminService(
    supervisor: Supervisor, metrics: SupervisorMetrics, listen: str, reactor: Any
) -> IService:
    """
    A service that serves L{adminSite} on C{listen} while it runs.

    @param listen: a Twisted server endpoint string (C{admin.listen}). A bare
        port number, or C{tcp:}/C{ssl:} without C{interface=}, means
        127.0.0.1 (Twisted alone would take every interface). On a loopback
        address the site answers only requests for a loopback host; on
        another without C{admin.token_file} a warning is logged.
    @param reactor: the reactor to listen on and to time requests with.
    """
    site = adminSite(supervisor, metrics, reactor)
    service = strports.service(loopbackByDefault(listen), site, reactor=reactor)
    assert isinstance(service, StreamServerEndpointService)
    service.endpoint = ListeningWatcher(
        service.endpoint, onListening(site, lambda: supervisor.config.admin.token_file)
    )
    return service
