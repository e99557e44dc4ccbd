"""
The vocabulary of the connection machine: the five states users see, the
fixed set of reasons a transition can carry, and the immutable records that
observers receive.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

import attrs

State = Literal["IDLE", "CONNECTING", "ESTABLISHED", "CLOSING", "CLOSED"]
"""The five states a user can see, everywhere a user can look."""

STATES: Final[tuple[State, ...]] = get_args(State)

ConnectFailureReason = Literal["refused", "timeout", "dns", "tls", "handshake", "other"]
"""Why an attempt failed; the C{reason} label of C{connect_failures_total}."""

DisconnectReason = Literal["lost", "heartbeat", "idle", "drain", "rotation", "removed", "stopped"]
"""Why an ESTABLISHED connection ended; the C{reason} label of C{disconnects_total}."""

CloseReason = Literal["drain", "removed", "stopped"]
"""Why a connection was asked to close for good."""

LifecycleReason = Literal["start", "retry", "probe", "release", "ready", "closed", "deadline"]
"""The remaining reasons: an attempt began (the first, a retry, a circuit
breaker's probe, or an attempt a half-open breaker released), the plugin
declared the connection ready, or a graceful close finished (C{closed}) or
was cut short at C{drain_timeout} (C{deadline})."""

Held = Literal["backoff", "breaker", "budget", "flapping"]
"""What keeps an IDLE connection from attempting: its backoff delay, its
target's circuit breaker, the global connect budget, or the flap guard."""

BreakerState = Literal["closed", "open", "half_open"]
"""The state of a circuit breaker, as C{/connections} and metrics show it."""

BREAKER_STATES: Final[tuple[BreakerState, ...]] = get_args(BreakerState)

Reason = Literal[ConnectFailureReason, DisconnectReason, LifecycleReason]

CONNECT_FAILURE_REASONS: Final[tuple[ConnectFailureReason, ...]] = get_args(ConnectFailureReason)
DISCONNECT_REASONS: Final[tuple[DisconnectReason, ...]] = get_args(DisconnectReason)
REASONS: Final[frozenset[str]] = frozenset(
    CONNECT_FAILURE_REASONS + DISCONNECT_REASONS + get_args(LifecycleReason)
)


@attrs.frozen
class Cause:
    """
    Why an input was given to the machine.

    @ivar reason: one of the fixed vocabulary; this is what metrics and the
        transition history show.
    @ivar detail: free text for logs and C{last_error} (an error message);
        never used as a metric label.
    @ivar permanent: the failure will not go away by retrying.
    """

    reason: Reason
    detail: str = ""
    permanent: bool = False


@attrs.frozen
class Transition:
    """
    One change of the user-visible state of one connection.

    @ivar connection: the connection's name.
    @ivar time: when, in the seconds of the connection's clock.
    @ivar from_: the state left (C{"from"} in JSON).
    @ivar to: the state entered.
    @ivar reason: why, from the fixed vocabulary.
    @ivar detail: free text (an error message), possibly empty.
    """

    connection: str
    time: float
    from_: State
    to: State
    reason: Reason
    detail: str = ""

    def asJSON(self) -> dict[str, object]:
        """
        The record as the admin API shows it.
        """
        return {"time": self.time, "from": self.from_, "to": self.to, "reason": self.reason}
