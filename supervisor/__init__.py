"""
netsupervisor: keeps many long-lived outbound connections healthy and
observable, on Twisted.
"""

from supervisor.config import AdminSpec, Config, ConfigError, loadConfig
from supervisor.connection import SupervisedConnection
from supervisor.interfaces import (
    Classification,
    IConfigurable,
    IConnectionHandle,
    IDrainable,
    IFailureClassifier,
    IProtocolPlugin,
    ISupervisedProtocol,
    OptionError,
)
from supervisor.operations import (
    ConnectionClosed,
    ConnectionLost,
    OperationError,
    QueueFull,
    QueueTimeout,
)
from supervisor.plugin import findPlugin
from supervisor.pool import Pool
from supervisor.service import Supervisor
from supervisor.spec import (
    BackoffSpec,
    BreakerSpec,
    ConnectionSpec,
    FlapSpec,
    HeartbeatSpec,
    PoolSpec,
    QueueSpec,
)
from supervisor.states import STATES, State, Transition

__all__ = [
    "STATES",
    "AdminSpec",
    "BackoffSpec",
    "BreakerSpec",
    "Classification",
    "Config",
    "ConfigError",
    "ConnectionClosed",
    "ConnectionLost",
    "ConnectionSpec",
    "FlapSpec",
    "HeartbeatSpec",
    "IConfigurable",
    "IConnectionHandle",
    "IDrainable",
    "IFailureClassifier",
    "IProtocolPlugin",
    "ISupervisedProtocol",
    "OperationError",
    "OptionError",
    "Pool",
    "PoolSpec",
    "QueueFull",
    "QueueSpec",
    "QueueTimeout",
    "State",
    "SupervisedConnection",
    "Supervisor",
    "Transition",
    "findPlugin",
    "loadConfig",
]
