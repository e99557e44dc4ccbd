"""
CLOSED: terminal. No more attempts; the final cause is kept.
"""

from __future__ import annotations

from supervisor.states.core import Core, Inputs, StateData
from supervisor.states.records import Cause


class Closed(StateData):
    """
    Why the connection ended for good.
    """

    __slots__ = ("cause",)
    state = "CLOSED"
    internal = "CLOSED"
    takesOperations = "refuse"

    def __init__(self, cause: Cause) -> None:
        self.cause = cause


def close(inputs: Inputs, core: Core, cause: Cause) -> Closed:
    """
    Enter CLOSED.
    """
    data = Closed(cause)
    core.gate.close()
    core.enter(data)
    core.operations.closed()
    return data
