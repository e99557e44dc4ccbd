"""
netsupervisor: keeps many long-lived outbound connections healthy and
observable, on Twisted.
"""

from supervisor.config import AdminSpec, Config, ConfigError, loadConfig
from supervisor.connection import SupervisedConnection
from supervisor.interfaces import IConnectionHandle, IProtocolPlugin, ISupervisedProtocol
from supervisor.plugin import findPlugin
from supervisor.scheduler import Scheduler
from supervisor.service import Supervisor
from supervisor.spec import BackoffSpec, ConnectionSpec, HeartbeatSpec
from supervisor.states import STATES, State, Transition

__all__ = [
    "STATES",
    "AdminSpec",
    "BackoffSpec",
    "Config",
    "ConfigError",
    "ConnectionSpec",
    "HeartbeatSpec",
    "IConnectionHandle",
    "IProtocolPlugin",
    "ISupervisedProtocol",
    "Scheduler",
    "State",
    "SupervisedConnection",
    "Supervisor",
    "Transition",
    "findPlugin",
    "loadConfig",
]
