"""
The C{twistd netsupervisor} subcommand. Kept tiny: the real module is
imported only when the command runs.
"""

from twisted.application.service import ServiceMaker

netsupervisor = ServiceMaker(
    "netsupervisor",
    "supervisor.daemon",
    "Keep long-lived outbound connections healthy and observable.",
    "netsupervisor",
)
