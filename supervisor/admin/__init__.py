"""
The admin HTTP API: a status page, metrics, health, readiness, connections and the
actions on them, as a twisted.web site.

Nothing here imports the global reactor: the caller passes it in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.application import strports
from twisted.application.service import IService
from twisted.internet.interfaces import IReactorTime
from twisted.web.server import Site

from supervisor.admin.resources import AdminRoot

if TYPE_CHECKING:
    from supervisor.metrics import SupervisorMetrics
    from supervisor.service import Supervisor

__all__ = ["AdminRoot", "adminService", "adminSite"]


def adminSite(supervisor: Supervisor, metrics: SupervisorMetrics, clock: IReactorTime) -> Site:
    """
    The admin API of C{supervisor} as a site.

    @param metrics: what C{/metrics} shows.
    @param clock: the site's time source (request timeouts, access log dates).
    """
    site = Site(AdminRoot(supervisor, metrics), reactor=clock)  # type: ignore[no-untyped-call]
    site.displayTracebacks = False
    return site


def adminService(
    supervisor: Supervisor, metrics: SupervisorMetrics, listen: str, reactor: Any
) -> IService:
    """
    A service that serves L{adminSite} on C{listen} while it runs.

    @param listen: a Twisted server endpoint string (C{admin.listen}). A bare
        port number means that port on 127.0.0.1 (Twisted alone would take
        every interface).
    @param reactor: the reactor to listen on and to time requests with.
    """
    if listen.strip().isdigit():
        listen = f"tcp:{listen.strip()}:interface=127.0.0.1"
    return strports.service(listen, adminSite(supervisor, metrics, reactor), reactor=reactor)
