"""
ESTABLISHED: the plugin declared the connection ready; heartbeats run.
"""

from __future__ import annotations

from supervisor.heartbeat import Heartbeat
from supervisor.states.core import Core, Inputs, StateData
from supervisor.states.records import Cause


class Established(StateData):
    """
    The running heartbeat, if heartbeats are on.
    """

    __slots__ = ("heartbeat",)
    state = "ESTABLISHED"
    internal = "ESTABLISHED"
    keepsLink = True

    def __init__(self, heartbeat: Heartbeat | None) -> None:
        self.heartbeat = heartbeat

    def leave(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()


def establish(inputs: Inputs, core: Core) -> Established:
    """
    Enter ESTABLISHED: note the success and start heartbeats.
    """
    core.policy.established(core.now())
    link = core.link
    assert link is not None, "ESTABLISHED is entered only from an attempt"
    spec = core.spec.heartbeat
    heartbeat = None
    if spec.enabled:

        def dead(misses: int) -> None:
            inputs.lost(Cause("heartbeat", f"{misses} heartbeats unanswered"))

        heartbeat = Heartbeat(spec, core.scheduler, link.sendPing, dead, core.heartbeat)
        heartbeat.start(spec.interval * (0.5 + 0.5 * core.rng.random()))
    link.heartbeat = heartbeat
    data = Established(heartbeat)
    core.enter(data)
    return data
