"""
The values that describe one supervised connection: what to connect to, with
which protocol, and how to time attempts, heartbeats and closes.

Specs are frozen: two equal specs describe the same connection, which is what
a configuration reload compares.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from supervisor.options import Choice, Integer, Number, setting

Jitter = Literal["none", "full", "equal", "decorrelated"]

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:-]+")


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _nonNegative(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _atLeastOne(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value!r}")


@attrs.frozen
class BackoffSpec:
    """
    Exponential backoff between attempts.

    The delay before retry M{n} (counting from 0 since the last reset) is
    C{min(max, initial * multiplier ** n)}, jittered as C{jitter} says:
    C{none} leaves it, C{full} draws uniformly from C{[0, delay]}, C{equal}
    from C{[delay/2, delay]}, and C{decorrelated} draws from
    C{[initial, previous * 3]} capped at C{max} (AWS's definitions).

    @ivar reset_after: the backoff starts over only once a connection has
        stayed ESTABLISHED this long.
    """

    initial: float = attrs.field(default=1.0, validator=_positive)
    multiplier: float = attrs.field(default=1.6, validator=_atLeastOne)
    max: float = attrs.field(default=120.0, validator=_positive)
    jitter: Jitter = attrs.field(
        default="full", validator=attrs.validators.in_(("none", "full", "equal", "decorrelated"))
    )
    reset_after: float = attrs.field(default=10.0, validator=_nonNegative)

    def __attrs_post_init__(self) -> None:
        if self.max < self.initial:
            raise ValueError(f"max ({self.max!r}) must be >= initial ({self.initial!r})")


@attrs.frozen
class HeartbeatSpec:
    """
    Supervisor-owned pings.

    @ivar interval: seconds between pings on a quiet connection; 0 turns
        heartbeats off.
    @ivar timeout: seconds to wait for each pong.
    @ivar misses: consecutive unanswered pings that drop the connection.
    """

    interval: float = attrs.field(default=10.0, validator=_nonNegative)
    timeout: float = attrs.field(default=5.0, validator=_positive)
    misses: int = attrs.field(default=2, validator=_atLeastOne)

    @property
    def enabled(self) -> bool:
        """
        Whether heartbeats run at all.
        """
        return self.interval > 0

    @property
    def detectionBound(self) -> float:
        """
        The longest a silent peer can stay ESTABLISHED after its last answer:
        C{interval + timeout * misses} (plus the shared scheduler's resolution,
        10 ms by default, per timer in the chain).
        """
        return self.interval + self.timeout * self.misses


BreakerScope = Literal["endpoint", "connection", "off"]


@attrs.frozen
class BreakerSpec:
    """
    The circuit breaker of a connection's target.

    @ivar scope: C{endpoint}: connections whose endpoints are the same
        target share one breaker; C{connection}: each has its own; C{off}.
    @ivar failures: consecutive failed attempts against the target, with no
        success between them, that open the breaker.
    @ivar probe_interval: seconds from opening to the first probe; the
        delay between probes backs off (doubling, jittered) up to
        C{probe_max}.
    @ivar probe_max: the longest delay between probes, in seconds.
    @ivar release_rate: the most held attempts a half-open breaker
        releases per second.
    """

    scope: BreakerScope = setting("endpoint", Choice(("endpoint", "connection", "off")))
    failures: int = setting(5, Integer(1))
    probe_interval: float = setting(0.5, Number(0, strict=True))
    probe_max: float = setting(2.0, Number(0, strict=True))
    release_rate: float = setting(3000.0, Number(0, strict=True))

    def __attrs_post_init__(self) -> None:
        if self.probe_max < self.probe_interval:
            raise ValueError(
                f"probe_max ({self.probe_max!r}) must be >= probe_interval "
                f"({self.probe_interval!r})"
            )

    @property
    def enabled(self) -> bool:
        """
        Whether there is a breaker at all.
        """
        return self.scope != "off"


@attrs.frozen
class FlapSpec:
    """
    The flap guard (Erlang/OTP's restart intensity).

    @ivar max: more than this many losses from ESTABLISHED within C{within}
        seconds hold the connection; 0 turns the guard off.
    @ivar within: the window, in seconds.
    @ivar hold: how long the connection is held IDLE; 0 closes it instead.
    """

    max: int = setting(10, Integer(0))
    within: float = setting(60.0, Number(0, strict=True))
    hold: float = setting(60.0, Number(0))

    @property
    def enabled(self) -> bool:
        """
        Whether the guard counts losses at all.
        """
        return self.max > 0


Pairs = tuple[tuple[str, object], ...]


def _pairs(value: Mapping[str, object] | Pairs) -> Pairs:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted((str(k), v) for k, v in items))


def _validName(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not NAME_PATTERN.fullmatch(value):
        raise ValueError(f"name must match [A-Za-z0-9_.:-]+, got {value!r}")


@attrs.frozen
class ConnectionSpec:
    """
    Everything that describes one supervised connection.

    @ivar name: unique, C{[A-Za-z0-9_.:-]+}; the metric label.
    @ivar endpoint: a Twisted client endpoint string (C{tcp:}, C{tls:}, C{unix:}).
    @ivar protocol: the name of the protocol plugin.
    @ivar connect_timeout: seconds for a whole attempt: transport connect,
        TLS and the plugin's handshake.
    @ivar drain_timeout: seconds a graceful close may take before the
        transport is aborted.
    @ivar max_retries: 0 retries forever; N closes the connection for good
        after N consecutive failed attempts.
    @ivar breaker: the circuit breaker of its target.
    @ivar flap: the flap guard.
    @ivar labels: extra labels; C{group} is used by aggregate metrics.
    @ivar options: protocol-specific options for the plugin.
    """

    name: str = attrs.field(validator=_validName)
    endpoint: str
    protocol: str = "line"
    connect_timeout: float = attrs.field(default=10.0, validator=_positive)
    drain_timeout: float = attrs.field(default=30.0, validator=_nonNegative)
    backoff: BackoffSpec = BackoffSpec()
    heartbeat: HeartbeatSpec = HeartbeatSpec()
    max_retries: int = attrs.field(default=0, validator=_nonNegative)
    breaker: BreakerSpec = BreakerSpec()
    flap: FlapSpec = FlapSpec()
    labels: Pairs = attrs.field(default=(), converter=_pairs)
    options: Pairs = attrs.field(default=(), converter=_pairs)

    @property
    def group(self) -> str:
        """
        The C{group} label, or C{""}.
        """
        return str(dict(self.labels).get("group", ""))


@attrs.frozen
class BudgetSpec:
    """
    The global connect budget: a token bucket every attempt of every
    connection takes a token from (the first attempts included).

    @ivar connect_rate: attempts per second across all connections; 0 turns
        the budget off.
    @ivar connect_burst: the bucket's size: attempts that may start at once.
    """

    connect_rate: float = setting(0.0, Number(0))
    connect_burst: int = setting(100, Integer(1))

    @property
    def enabled(self) -> bool:
        """
        Whether attempts are budgeted at all.
        """
        return self.connect_rate > 0
