"""
CONNECTING: an attempt is in flight (transport, TLS, the plugin's handshake),
bounded as a whole by C{connect_timeout}.

Four internal states show as CONNECTING, so that the TLS rule is in the
transition table: the plugin's C{ready} takes effect only once TLS has
completed, so a certificate that fails verification fails the attempt.

    CONNECTING      the connect is in flight, or the plugin's handshake runs
                    on a plain transport
    SECURING        a TLS transport is up; its handshake is under way
    SECURING_READY  the plugin is ready; the TLS handshake is still under way
    HANDSHAKING     TLS completed; the plugin's handshake runs

The attempt's deadline is handed from one to the next, never restarted.
"""

from __future__ import annotations

from supervisor.attempt import attemptFor
from supervisor.policy import ConnectTimeout, failureOf
from supervisor.scheduler import Timer
from supervisor.states.core import Core, Inputs, StateData
from supervisor.states.records import Cause


class Attempting(StateData):
    """
    The attempt's deadline; the attempt itself is the core's.
    """

    __slots__ = ("deadline",)
    state = "CONNECTING"
    internal = "CONNECTING"
    keepsAttempt = True

    def __init__(self, deadline: Timer) -> None:
        self.deadline = deadline

    def leave(self) -> None:
        self.deadline.cancel()


class Securing(Attempting):
    __slots__ = ()
    internal = "SECURING"


class SecuringReady(Attempting):
    __slots__ = ()
    internal = "SECURING_READY"


class Handshaking(Attempting):
    __slots__ = ()
    internal = "HANDSHAKING"


def attempt(inputs: Inputs, core: Core, cause: Cause) -> Attempting:
    """
    Enter CONNECTING: start an attempt and its deadline.
    """
    core.attempts += 1
    spec = core.spec
    endpoint = core.endpoints.pick()
    attempt = core.attempt = attemptFor(endpoint)(
        inputs,
        spec.name,
        spec.heartbeat,
        core.plugin,
        core.options,
        core.scheduler.now,
        spec.keepalive,
    )
    timeout = spec.connect_timeout

    def expire() -> None:
        inputs.failed(failureOf(ConnectTimeout(f"not ready within {timeout:g}s")))

    data = Attempting(core.scheduler.callLater(timeout, expire))
    core.enter(data)
    attempt.connect(endpoint)
    return data


def _handOver(core: Core, kind: type[Attempting]) -> Attempting:
    previous = core.current
    assert isinstance(previous, Attempting), "entered only from another attempt state"
    data = kind(previous.deadline)
    core.enter(data)
    return data


def secure(inputs: Inputs, core: Core) -> Attempting:
    """
    Enter SECURING: the same attempt, waiting for TLS.
    """
    return _handOver(core, Securing)


def readyWhenSecure(inputs: Inputs, core: Core) -> Attempting:
    """
    Enter SECURING_READY: the plugin is ready; ESTABLISHED waits for TLS.
    """
    return _handOver(core, SecuringReady)


def handshake(inputs: Inputs, core: Core) -> Attempting:
    """
    Enter HANDSHAKING: TLS is up; the plugin's handshake goes on.
    """
    return _handOver(core, Handshaking)
