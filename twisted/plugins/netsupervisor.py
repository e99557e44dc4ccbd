"""
The C{twistd netsupervisor} subcommand, and the reactor it runs on offered
to any twistd application (C{twistd --reactor=bounded-epoll}). Kept tiny:
the real modules are imported only when they are used.
"""

from twisted.application.reactors import Reactor
from twisted.application.service import ServiceMaker

netsupervisor = ServiceMaker(
    "netsupervisor",
    "supervisor.daemon",
    "Keep long-lived outbound connections healthy and observable.",
    "netsupervisor",
)

boundedEpoll = Reactor(
    "bounded-epoll",
    "supervisor.reactor",
    "epoll(7) handling at most 256 ready descriptors per poll, so that timers "
    "run between batches (the default of twistd netsupervisor)",
)
