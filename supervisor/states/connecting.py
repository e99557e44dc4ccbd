"""
CONNECTING: an attempt is in flight (transport, TLS, the plugin's handshake),
bounded as a whole by C{connect_timeout}.
"""

from __future__ import annotations

from supervisor.link import Link
from supervisor.scheduler import Timer
from supervisor.states.core import Core, Inputs, StateData


class Attempting(StateData):
    """
    The attempt's deadline; the attempt itself is the core's link.
    """

    __slots__ = ("deadline",)
    state = "CONNECTING"
    internal = "CONNECTING"
    keepsLink = True

    def __init__(self, deadline: Timer) -> None:
        self.deadline = deadline

    def leave(self) -> None:
        self.deadline.cancel()


def attempt(inputs: Inputs, core: Core) -> Attempting:
    """
    Enter CONNECTING: start an attempt and its deadline.
    """
    core.attempts += 1
    link = core.link = Link(inputs, core)
    data = Attempting(core.scheduler.callLater(core.spec.connect_timeout, link.timedOut))
    core.enter(data)
    link.connect()
    return data
