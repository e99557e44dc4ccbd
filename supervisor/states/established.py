"""
ESTABLISHED: the plugin declared the connection ready; heartbeats run.
"""

from __future__ import annotations

from supervisor.heartbeat import Heartbeat
from supervisor.link import Link
from supervisor.states.core import Core, Inputs, StateData
from supervisor.states.records import Cause


class Established(StateData):
    """
    The running heartbeat, if heartbeats are on, and what it drives.
    """

    __slots__ = ("_core", "_inputs", "_link", "heartbeat")
    state = "ESTABLISHED"
    internal = "ESTABLISHED"
    keepsLink = True

    def __init__(self, inputs: Inputs, core: Core, link: Link) -> None:
        self._inputs = inputs
        self._core = core
        self._link = link
        self.heartbeat: Heartbeat | None = None

    def leave(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()

    def sendPing(self, token: bytes) -> None:
        self._link.sendPing(token)

    def heartbeatObserved(self, rtt: float | None) -> None:
        self._core.heartbeat(rtt)

    def heartbeatDead(self, misses: int) -> None:
        self._inputs.lost(Cause("heartbeat", f"{misses} heartbeats unanswered"))


def establish(inputs: Inputs, core: Core) -> Established:
    """
    Enter ESTABLISHED: note the success and start heartbeats.
    """
    core.policy.established(core.now())
    link = core.link
    assert link is not None, "ESTABLISHED is entered only from an attempt"
    data = Established(inputs, core, link)
    spec = core.spec.heartbeat
    if spec.enabled:
        heartbeat = data.heartbeat = Heartbeat(spec, core.scheduler, data)
        heartbeat.start(spec.interval * (0.5 + 0.5 * core.rng.random()))
        link.heartbeat = heartbeat
    core.enter(data)
    return data
