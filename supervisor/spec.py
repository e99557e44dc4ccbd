"""
The values that describe one supervised connection: what to connect to, with
which protocol, and how to time attempts, heartbeats and closes.

Specs are frozen: two equal specs describe the same connection, which is what
a configuration reload compares. Each field that the configuration file sets
declares what it accepts (L{supervisor.options.setting}); the loader derives
its checks from these classes, so a new key is one new field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from random import Random
from typing import ClassVar, Final, Literal, get_args

import attrs

from supervisor.interfaces import OptionError
from supervisor.options import (
    Choice,
    Conflict,
    Flag,
    Integer,
    Number,
    Table,
    Text,
    checked,
    quote,
    refuse,
    renderNumber,
    setting,
)
from supervisor.shard import Shard, ShardError
from supervisor.tls import TLSMaterial

Jitter = Literal["none", "full", "equal", "decorrelated"]
JITTERS: Final[tuple[Jitter, ...]] = get_args(Jitter)

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:-]+")
PATH_SEGMENTS = frozenset({".", ".."})
"""
Names that C{NAME_PATTERN} matches but a connection may not have: in a URL
(C{/connections/NAME}) they mean this or the parent path.
"""


@attrs.frozen
class _Name:
    """
    A connection's name: C{NAME_PATTERN}, and not a path segment.
    """

    text: ClassVar[Text] = Text("a string matching [A-Za-z0-9_.:-]+", pattern=NAME_PATTERN)

    def expected(self) -> str:
        return self.text.expected()

    def check(self, value: object, key: str) -> str:
        name = self.text.check(value, key)
        if name in PATH_SEGMENTS:
            raise refuse(key, f"{self.expected()} other than . and ..", quote(name))
        return name


_NAME = _Name()


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

    initial: float = setting(1.0, Number(0, strict=True))
    multiplier: float = setting(1.6, Number(1))
    max: float = setting(120.0, Number(0, strict=True))
    jitter: Jitter = setting("full", Choice(JITTERS))
    reset_after: float = setting(10.0, Number(0))

    def __attrs_post_init__(self) -> None:
        if self.max < self.initial:
            initial, maximum = renderNumber(self.initial), renderNumber(self.max)
            raise Conflict(
                {
                    "max": f"expected a number >= backoff.initial ({initial}), got {maximum}",
                    "initial": f"expected a number <= backoff.max ({maximum}), got {initial}",
                }
            )


@attrs.frozen
class HeartbeatSpec:
    """
    Supervisor-owned pings.

    @ivar interval: seconds between pings on a quiet connection; 0 turns
        heartbeats off.
    @ivar timeout: seconds to wait for each pong.
    @ivar misses: consecutive unanswered pings that drop the connection.
    """

    interval: float = setting(10.0, Number(0))
    timeout: float = setting(5.0, Number(0, strict=True))
    misses: int = setting(2, Integer(1))

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
BREAKER_SCOPES: Final[tuple[BreakerScope, ...]] = get_args(BreakerScope)


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

    scope: BreakerScope = setting("endpoint", Choice(BREAKER_SCOPES))
    failures: int = setting(5, Integer(1))
    probe_interval: float = setting(0.5, Number(0, strict=True))
    probe_max: float = setting(0.5, Number(0, strict=True))
    release_rate: float = setting(4000.0, Number(0, strict=True))

    def __attrs_post_init__(self) -> None:
        if self.probe_max < self.probe_interval:
            low, high = renderNumber(self.probe_interval), renderNumber(self.probe_max)
            raise Conflict(
                {
                    "probe_max": f"expected a number >= breaker.probe_interval ({low}), got {high}",
                    "probe_interval": (
                        f"expected a number <= breaker.probe_max ({high}), got {low}"
                    ),
                }
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

    max: int = setting(1, Integer(0))
    within: float = setting(10.0, Number(0, strict=True))
    hold: float = setting(60.0, Number(0))

    @property
    def enabled(self) -> bool:
        """
        Whether the guard counts losses at all.
        """
        return self.max > 0


@attrs.frozen
class QueueSpec:
    """
    The bounded queue of operations submitted while the connection is not
    ESTABLISHED (or while its peer does not read what it was sent).

    @ivar max: the most operations that wait; one more fails at once with
        C{QueueFull}. 0: nothing waits.
    @ivar timeout: seconds an operation may wait before it fails with
        C{QueueTimeout}.
    """

    max: int = setting(1000, Integer(0, 1_000_000))
    timeout: float = setting(10.0, Number(0, strict=True))


@attrs.frozen
class KeepaliveSpec:
    """
    TCP keepalive on the connection's socket (for TLS, the TCP socket under
    it): C{SO_KEEPALIVE}, C{TCP_KEEPIDLE}, C{TCP_KEEPINTVL}, C{TCP_KEEPCNT}.
    The kernel takes whole seconds: a fraction is rounded up.

    @ivar idle: seconds of silence before the first probe; 0 leaves the
        socket as it is (and the other two unused).
    @ivar interval: seconds between probes; 0 keeps the system's default.
    @ivar count: unanswered probes that drop the connection; 0 keeps the
        system's default.
    """

    idle: float = setting(0.0, Number(0, high=32767))
    interval: float = setting(0.0, Number(0, high=32767))
    count: int = setting(0, Integer(0, high=127))

    @property
    def enabled(self) -> bool:
        """
        Whether keepalive is set on the socket at all.
        """
        return self.idle > 0


_PATH = Text("a string (a file path, or empty)")


@attrs.frozen
class TLSSpec:
    """
    TLS around a connection's C{tcp:} endpoints.

    @ivar enabled: wrap the C{tcp:} endpoints in TLS with these settings.
    @ivar ca: a PEM bundle of the certificates trusted to sign the server's;
        C{""}: the system's trust store.
    @ivar cert: the client certificate (PEM, its intermediates after it),
        for mutual TLS; C{""}: none.
    @ivar key: the unencrypted PEM key of C{cert}; C{""}: it is in C{cert}.
    @ivar server_name: sent as SNI and the name the server's certificate
        must carry; C{""}: the endpoint's host.
    @ivar verify: check the server's certificate (against C{ca} and the
        name); off accepts any certificate.
    @ivar material: what the files held when the configuration was loaded
        (the loader reads them); not a key of the file, never shown.
    """

    enabled: bool = setting(False, Flag())
    ca: str = setting("", _PATH)
    cert: str = setting("", _PATH)
    key: str = setting("", _PATH)
    server_name: str = setting("", Text("a string (a host name, or empty)", maxLength=253))
    verify: bool = setting(True, Flag())
    material: TLSMaterial | None = attrs.field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.key and not self.cert:
            raise Conflict(
                {
                    "key": f"expected no key file without tls.cert, got {quote(self.key)}",
                    "cert": "expected a client certificate file with tls.key, got nothing",
                }
            )


Failover = Literal["ordered", "round_robin"]
FAILOVERS: Final[tuple[Failover, ...]] = get_args(Failover)

MAX_ENDPOINTS = 64
"""The most endpoints one connection may list."""

TLS_WRAPPED_SCHEMES = ("tcp",)
"""The endpoint types that C{tls.enabled} wraps in TLS."""


def endpointType(description: str) -> str:
    """
    The type of a Twisted endpoint string (before its first C{:}), in lower case.
    """
    return description.partition(":")[0].lower()


def _endpointList(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise OptionError("endpoints", "expected a sequence of endpoint strings, got a string")
    return tuple(value)


Pairs = tuple[tuple[str, object], ...]


def _pairs(value: Mapping[str, object] | Pairs) -> Pairs:
    if value == ():
        # The default, and most connections' options: no sorting to do.
        return ()
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted((str(k), v) for k, v in items))


def _labels(value: Mapping[str, object] | Pairs) -> Pairs:
    if type(value) is dict:
        # Labels as a program writes them (keys and values text): sorted as
        # they are, without the general path's copies.
        items = value.items()
        if all(type(k) is str and type(v) is str for k, v in items):
            return _sharedLabels(tuple(sorted(items)))
    pairs = _pairs(value)
    if all(type(v) is str for _, v in pairs):
        # Text only: 1, 1.0 and True are equal, not the same label value.
        return _sharedLabels(pairs)
    return pairs


@lru_cache(maxsize=4096)
def _sharedLabels(pairs: Pairs) -> Pairs:
    """
    The first of the equal label sets seen lately: the connections of a
    group share one tuple of labels, not one each.
    """
    return pairs


@attrs.frozen
class ConnectionSpec:
    """
    Everything that describes one supervised connection.

    The configuration loader checks C{endpoint} (with Twisted's parser),
    C{protocol} (against the installed plugins), C{options} and C{labels}
    itself; the other fields declare their checks here.

    Exactly one of C{endpoint} and C{endpoints} is given.

    @ivar name: unique, C{[A-Za-z0-9_.:-]+}; the metric label.
    @ivar endpoint: a Twisted client endpoint string (C{tcp:}, C{tls:},
        C{unix:}), or C{""} when C{endpoints} are given.
    @ivar protocol: the name of the protocol plugin.
    @ivar connect_timeout: seconds for a whole attempt: transport connect,
        TLS and the plugin's handshake.
    @ivar drain_timeout: seconds a graceful close may take before the
        transport is aborted.
    @ivar max_retries: 0 retries forever; N closes the connection for good
        after N consecutive failed attempts.
    @ivar breaker: the circuit breaker of its target.
    @ivar flap: the flap guard.
    @ivar endpoints: several endpoint strings, instead of C{endpoint}: each
        attempt uses one of them, as C{failover} says.
    @ivar failover: C{ordered}: the next attempt stays on the endpoint that
        worked and moves to the next after a failed attempt; C{round_robin}:
        each attempt uses the next.
    @ivar keepalive: TCP keepalive on the socket.
    @ivar tls: TLS around the C{tcp:} endpoints.
    @ivar max_lifetime: seconds an ESTABLISHED connection lives before it
        rotates (a graceful close, then a new attempt at once); 0 for ever.
    @ivar lifetime_jitter: each connection's lifetime is drawn from
        C{[max_lifetime * (1 - lifetime_jitter), max_lifetime]}, so that a
        fleet does not rotate at once.
    @ivar idle_timeout: seconds with no inbound byte while ESTABLISHED after
        which the connection is dropped (reason C{idle}); 0 turns it off.
    @ivar queue: the operations waiting for the connection (L{QueueSpec}).
    @ivar options: protocol-specific options for the plugin.
    @ivar labels: extra labels; C{group} is used by aggregate metrics.
    """

    name: str = attrs.field(**checked(_NAME))
    endpoint: str = ""
    protocol: str = "line"
    connect_timeout: float = setting(10.0, Number(0, strict=True))
    drain_timeout: float = setting(30.0, Number(0))
    backoff: BackoffSpec = setting(BackoffSpec(), Table(BackoffSpec))
    heartbeat: HeartbeatSpec = setting(HeartbeatSpec(), Table(HeartbeatSpec))
    max_retries: int = setting(0, Integer(0))
    breaker: BreakerSpec = setting(BreakerSpec(), Table(BreakerSpec))
    flap: FlapSpec = setting(FlapSpec(), Table(FlapSpec))
    endpoints: tuple[str, ...] = attrs.field(default=(), converter=_endpointList)
    failover: Failover = setting("ordered", Choice(FAILOVERS))
    keepalive: KeepaliveSpec = setting(KeepaliveSpec(), Table(KeepaliveSpec))
    tls: TLSSpec = setting(TLSSpec(), Table(TLSSpec))
    max_lifetime: float = setting(0.0, Number(0))
    lifetime_jitter: float = setting(0.1, Number(0, high=1))
    idle_timeout: float = setting(0.0, Number(0))
    queue: QueueSpec = setting(QueueSpec(), Table(QueueSpec))
    options: Pairs = attrs.field(default=(), converter=_pairs)
    labels: Pairs = attrs.field(default=(), converter=_labels)

    def __attrs_post_init__(self) -> None:
        if self.endpoint and self.endpoints:
            raise Conflict(
                {
                    "endpoints": "expected no endpoints when endpoint is set (one or the "
                    "other), got an array",
                    "endpoint": "expected no endpoint when endpoints is set (one or the "
                    f"other), got {quote(self.endpoint)}",
                }
            )
        if not (self.endpoint or self.endpoints):
            raise Conflict(
                {
                    "endpoint": "expected a Twisted client endpoint string (tcp:, tls:, "
                    "unix:), or endpoints, got nothing (missing)",
                }
            )
        if self.tls.enabled:
            # Checked here, not on tls: the endpoint is always the
            # connection's own key, so it is where the fix goes.
            for description in self.targets:
                kind = endpointType(description)
                if kind not in TLS_WRAPPED_SCHEMES:
                    key = "endpoint" if self.endpoint else "endpoints"
                    raise Conflict(
                        {
                            key: "expected tcp: endpoint strings when tls.enabled is true "
                            f"(only those are wrapped in TLS), got {quote(kind + ':...')}",
                        }
                    )

    @property
    def targets(self) -> tuple[str, ...]:
        """
        Every endpoint string of this connection, in order: C{endpoints},
        or C{endpoint} alone.
        """
        return self.endpoints or (self.endpoint,)

    TUNABLE: ClassVar[tuple[str, ...]] = (
        "breaker",
        "flap",
        "max_lifetime",
        "lifetime_jitter",
        "idle_timeout",
        "queue",
    )
    """The fields a running connection takes on in place, without reconnecting
    (a lifetime from its next connection on)."""

    def sameConnectionAs(self, other: ConnectionSpec) -> bool:
        """
        Whether C{self} and C{other} differ at most in L{TUNABLE} fields.
        """
        mine = {name: getattr(self, name) for name in self.TUNABLE}
        return attrs.evolve(other, **mine) == self

    def drawLifetime(self, rng: Random) -> float | None:
        """
        A connection's lifetime, drawn from
        C{[max_lifetime * (1 - lifetime_jitter), max_lifetime]}; L{None}
        when connections live for ever.
        """
        if self.max_lifetime <= 0:
            return None
        return rng.uniform(self.max_lifetime * (1 - self.lifetime_jitter), self.max_lifetime)

    @property
    def group(self) -> str:
        """
        The C{group} label, or C{""}.
        """
        return str(dict(self.labels).get("group", ""))


MAX_POOL_SIZE: Final = 1024
"""The most members one C{[[pool]]} may have."""


@attrs.frozen
class PoolSpec:
    """
    A C{[[pool]]}: C{size} connections built from one connection's keys,
    named C{NAME.0} to C{NAME.<size-1>} (their L{ConnectionSpec}s are in
    the configuration's connections).

    @ivar name: the pool's name; its members' names add C{.0}, C{.1}...
    @ivar size: how many members.
    @ivar queue: the pool's own queue, for operations submitted while no
        member is ESTABLISHED (the members' C{queue} setting).
    """

    name: str = attrs.field(**checked(_NAME))
    size: int = setting(1, Integer(1, MAX_POOL_SIZE))
    queue: QueueSpec = setting(QueueSpec(), Table(QueueSpec))

    @property
    def members(self) -> tuple[str, ...]:
        """
        The names of its members, in order.
        """
        return tuple(memberName(self.name, index) for index in range(self.size))


def memberName(pool: str, index: int) -> str:
    """
    The name of member C{index} of the pool called C{pool}.
    """
    return f"{pool}.{index}"


@attrs.frozen
class _ShardCheck:
    """
    C{I/N}: shard I (0-based) of N.
    """

    text: ClassVar[Text] = Text('a string I/N (like "0/4")')

    def expected(self) -> str:
        return self.text.expected()

    def check(self, value: object, key: str) -> Shard | None:
        if value is None or isinstance(value, Shard):
            return value
        try:
            return Shard.fromString(self.text.check(value, key))
        except ShardError as e:
            raise OptionError(key, str(e)) from None


@attrs.frozen
class SupervisorSpec:
    """
    The process as a whole (C{[supervisor]}).

    @ivar shard: the share of the connections this process keeps, if set.
        C{twistd netsupervisor} applies it (its C{--shard} wins); a library
        passes it to L{Supervisor}.
    @ivar connect_rate: the global connect budget: attempts per second
        across all connections (a token bucket every attempt takes a token
        from, the first ones included); 0 turns it off.
    @ivar connect_burst: the bucket's size: attempts that may start at once.
    """

    shard: Shard | None = setting(None, _ShardCheck())
    connect_rate: float = setting(0.0, Number(0))
    connect_burst: int = setting(100, Integer(1))

    @property
    def budgeted(self) -> bool:
        """
        Whether attempts are budgeted at all.
        """
        return self.connect_rate > 0
