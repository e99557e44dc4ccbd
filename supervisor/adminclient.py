"""
The admin APIs of a sharded fleet, seen as one: what C{netsupervisor-ctl}
asks and how it merges the answers.

L{AdminClient} talks to one admin URL at a time over treq, bounded in time
(one deadline for the whole exchange: connect, headers and body) and in
size (the body, and every byte the connection reads, headers included), so
that an admin endpoint that is hostile, broken or merely stuck can neither
hang the caller nor fill its memory. L{fleetStatus} asks every shard for its
connections in parallel and merges them, unhealthy first; L{act} sends
C{reconnect} or C{drain} to the shard that owns the connection, found by
the same rendezvous hash the daemons use (L{supervisor.shard.owner}).

Nothing here imports the global reactor: the caller passes it in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, Protocol

import attrs
from treq.client import HTTPClient
from twisted.internet import error as internetError
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as WireProtocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.client import URI, Agent, HTTPConnectionPool, ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IResponse
from zope.interface import implementer

from supervisor.shard import Shard, ShardError, owner
from supervisor.spec import NAME_PATTERN

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TIMEOUT",
    "ActionResult",
    "AdminClient",
    "Answer",
    "FleetStatus",
    "Row",
    "ShardStatus",
    "Unreachable",
    "act",
    "boundedHTTP",
    "fleetStatus",
]

DEFAULT_TIMEOUT: Final = 5.0
"""Seconds one exchange with an admin URL may take, all included."""

DEFAULT_MAX_BYTES: Final = 16 * 1024 * 1024
"""The largest answer body read from an admin URL (about 40,000 connections)."""

HEADER_ALLOWANCE: Final = 64 * 1024
"""What a connection may read beyond the body limit: the status line and headers."""

STATES: Final = ("IDLE", "CONNECTING", "ESTABLISHED", "CLOSING", "CLOSED")

# Unhealthy first, as on the status page: waiting to retry, trying,
# closing, closed; then the good ones. An unknown state sorts before all.
_RANK: Final = {"IDLE": 0, "CONNECTING": 1, "CLOSING": 2, "CLOSED": 3, "ESTABLISHED": 4}

Action = Literal["reconnect", "drain"]


class HTTP(Protocol):
    """
    What L{AdminClient} needs of treq: L{treq.client.HTTPClient.request}, as
    L{boundedHTTP} and C{treq.testing.StubTreq} both provide it.
    """

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Headers,
        allow_redirects: bool,
        unbuffered: bool,
        reactor: Any,
    ) -> Deferred[Any]: ...


class Unreachable(Exception):
    """
    An admin URL gave no usable answer: refused, timed out, too large, or
    not what the admin API answers. C{str()} says why in a few words.
    """


class AnswerTooLarge(Exception):
    """
    An answer (or the bytes of its connection) went past the limit.
    """

    def __init__(self, limit: int, what: str = "answer") -> None:
        super().__init__(f"{what} larger than {limit:,} bytes")
        self.limit = limit


@attrs.frozen
class Answer:
    """
    One HTTP answer of an admin URL.

    @ivar code: the status code.
    @ivar headers: the response headers.
    @ivar body: the whole body, at most the client's C{maxBytes}.
    """

    code: int
    headers: Headers
    body: bytes

    def header(self, name: bytes) -> str | None:
        """
        The first value of header C{name}, decoded (Latin-1), if any.
        """
        values = self.headers.getRawHeaders(name)
        return values[0].decode("latin-1") if values else None

    def json(self) -> object:
        """
        The body as JSON.

        @raise Unreachable: if it is not (a nesting too deep for Python's
            parser included).
        """
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError) as e:
            raise Unreachable(f"not a JSON answer ({type(e).__name__})") from None


class _BoundedWire(ProtocolWrapper):
    """
    Counts every byte a connection reads; past the limit, aborts it and
    tells the HTTP protocol why.
    """

    factory: _BoundedWireFactory

    def __init__(self, factory: _BoundedWireFactory, wrappedProtocol: IProtocol) -> None:
        super().__init__(factory, wrappedProtocol)
        self._received = 0
        self._exceeded = False

    def dataReceived(self, data: bytes) -> None:
        if self._exceeded:
            return
        self._received += len(data)
        if self._received > self.factory.limit:
            self._exceeded = True
            tooLarge = AnswerTooLarge(self.factory.limit, "headers and body")
            reason = Failure(tooLarge)  # type: ignore[no-untyped-call]
            self.transport.abortConnection()  # type: ignore[union-attr]
            ProtocolWrapper.connectionLost(self, reason)  # type: ignore[no-untyped-call]
            return
        ProtocolWrapper.dataReceived(self, data)  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure = internetError.ConnectionDone) -> None:  # type: ignore[assignment]
        if not self._exceeded:
            ProtocolWrapper.connectionLost(self, reason)  # type: ignore[no-untyped-call]


class _BoundedWireFactory(WrappingFactory[_BoundedWire]):
    protocol = _BoundedWire

    def __init__(self, wrappedFactory: Factory, limit: int) -> None:
        super().__init__(wrappedFactory)  # type: ignore[no-untyped-call]
        self.limit = limit


@implementer(IStreamClientEndpoint)
class _BoundedEndpoint:
    """
    An endpoint whose connections read at most C{limit} bytes.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, limit: int) -> None:
        self._endpoint = endpoint
        self._limit = limit

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        assert isinstance(protocolFactory, Factory)
        connected = self._endpoint.connect(_BoundedWireFactory(protocolFactory, self._limit))

        def unwrap(wire: IProtocol) -> IProtocol:
            # The HTTP connection pool wants the HTTP protocol itself.
            assert isinstance(wire, _BoundedWire)
            return wire.wrappedProtocol

        return connected.addCallback(unwrap)


@implementer(IAgentEndpointFactory)
@attrs.frozen
class _BoundedEndpoints:
    reactor: Any
    limit: int
    connectTimeout: float

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii")
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self.reactor, host, uri.port, timeout=self.connectTimeout
        )
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
        return _BoundedEndpoint(endpoint, self.limit)


def boundedHTTP(reactor: Any, maxBytes: int, timeout: float) -> HTTPClient:
    """
    A treq client for admin URLs (C{http} and C{https}) whose every
    connection reads at most C{maxBytes} plus L{HEADER_ALLOWANCE} bytes, is
    not kept for reuse, and is given up if not connected within C{timeout}
    seconds.
    """
    pool = HTTPConnectionPool(reactor, persistent=False)  # type: ignore[no-untyped-call]
    agent = Agent.usingEndpointFactory(  # type: ignore[no-untyped-call]
        reactor, _BoundedEndpoints(reactor, maxBytes + HEADER_ALLOWANCE, timeout), pool=pool
    )
    return HTTPClient(agent)


class _BoundedBody(WireProtocol):
    """
    Collects a response body of at most C{limit} bytes into C{finished};
    stops the transport as soon as the limit is passed or C{finished} is
    cancelled.
    """

    def __init__(self, limit: int, expected: int | object) -> None:
        self._limit = limit
        self._expected = expected
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False
        self.finished: Deferred[bytes] = Deferred(self._cancel)

    def _cancel(self, d: Deferred[bytes]) -> None:
        self._stop()

    def _stop(self) -> None:
        self._done = True
        self._chunks = []
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def connectionMade(self) -> None:
        if isinstance(self._expected, int) and self._expected > self._limit:
            self._stop()
            self.finished.errback(AnswerTooLarge(self._limit))

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._stop()
            self.finished.errback(AnswerTooLarge(self._limit))
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = internetError.ConnectionDone) -> None:  # type: ignore[assignment]
        if self._done:
            return
        self._done = True
        if isinstance(reason.value, ResponseDone | PotentialDataLoss):
            self.finished.callback(b"".join(self._chunks))
        else:
            self.finished.errback(reason)


def _why(failure: Failure, timeout: float) -> str:
    """
    Why an exchange failed, in a few words, without a traceback.
    """
    reasons = [failure]
    while reasons:
        f = reasons.pop(0)
        if isinstance(f.value, ResponseFailed):
            reasons.extend(f.value.reasons)
            continue
        value = f.value
        if isinstance(value, AnswerTooLarge | Unreachable):
            return str(value)
        if isinstance(value, CancelledError | internetError.TimeoutError):
            return f"no answer within {timeout:g} s"
        if isinstance(value, internetError.ConnectionRefusedError):
            return "connection refused"
        if isinstance(value, internetError.DNSLookupError):
            return "host name not found"
        if isinstance(value, internetError.ConnectError):
            return "cannot connect"
        if isinstance(value, internetError.ConnectionLost | internetError.ConnectionDone):
            return "connection lost before a whole answer"
    return f"{type(failure.value).__name__}"


class AdminClient:
    """
    Requests to admin URLs, each bounded in time and size; failures become
    L{Unreachable}, never another exception.

    @ivar timeout: seconds for a whole exchange.
    @ivar maxBytes: the largest body read.
    """

    def __init__(
        self,
        http: HTTP,
        clock: IReactorTime,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        maxBytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        """
        @param http: treq's client (L{boundedHTTP} in production, a
            C{StubTreq} in tests).
        @param clock: times the deadline.
        """
        self._http = http
        self._clock = clock
        self.timeout = timeout
        self.maxBytes = maxBytes

    def request(self, method: str, url: str, token: str | None = None) -> Deferred[Answer]:
        """
        Send C{method} to C{url} (with C{Authorization: Bearer token} if a
        token is given) and read the whole answer.

        @return: fires with the L{Answer}, whatever its status code, or
            fails with L{Unreachable}.
        """
        headers = {b"accept": [b"application/json"], b"user-agent": [b"netsupervisor-ctl"]}
        if token is not None:
            headers[b"authorization"] = [b"Bearer " + token.encode("latin-1")]
        exchange = Deferred.fromCoroutine(self._exchange(method, url, Headers(headers)))
        exchange.addTimeout(self.timeout, self._clock)

        def explain(failure: Failure) -> Answer:
            raise Unreachable(_why(failure, self.timeout))

        return exchange.addErrback(explain)

    async def _exchange(self, method: str, url: str, headers: Headers) -> Answer:
        response: IResponse = await self._http.request(
            method,
            url,
            headers=headers,
            allow_redirects=False,
            unbuffered=True,
            reactor=self._clock,
        )
        body = _BoundedBody(self.maxBytes, response.length)
        response.deliverBody(body)  # type: ignore[no-untyped-call]
        content = await body.finished
        return Answer(response.code, response.headers, content)


@attrs.frozen
class Row:
    """
    One connection of the fleet, as its shard reported it.

    @ivar shard: the index of the URL that reported it.
    @ivar age: seconds in this state, by the shard's own clock, if known.
    """

    shard: int
    name: str
    state: str
    age: float | None
    attempts: int | None
    rtt: float | None
    lastError: str | None
    endpoint: str
    protocol: str

    @property
    def healthy(self) -> bool:
        """
        Whether the connection is ESTABLISHED.
        """
        return self.state == "ESTABLISHED"

    def sortKey(self) -> tuple[int, int, str]:
        """
        Unhealthy first (as the status page orders them), then by shard and name.
        """
        return (_RANK.get(self.state, -1), self.shard, self.name)

    def asJSON(self) -> dict[str, Any]:
        """
        The row as C{netsupervisor-ctl --json} shows it.
        """
        return {
            "shard": self.shard,
            "name": self.name,
            "state": self.state,
            "seconds_in_state": self.age,
            "attempts": self.attempts,
            "rtt_seconds": self.rtt,
            "last_error": self.lastError,
            "endpoint": self.endpoint,
            "protocol": self.protocol,
        }


def _stateCounts(rows: Sequence[Row]) -> dict[str, int]:
    """
    How many C{rows} are in each state: the five known states first, in
    their order, then any other a shard reported; none at 0.
    """
    counts = dict.fromkeys(STATES, 0)
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    return {state: n for state, n in counts.items() if n}


@attrs.frozen
class ShardStatus:
    """
    What one admin URL answered to C{GET /connections}.

    @ivar index: the URL's place in the list, which is the shard it should be.
    @ivar error: why it gave no usable answer, or L{None}.
    @ivar reported: the shard it says it is (C{Netsupervisor-Shard}), if it says.
    @ivar warning: a problem with an answer that was usable, or L{None}.
    """

    index: int
    url: str
    rows: tuple[Row, ...] = ()
    error: str | None = None
    reported: str | None = None
    warning: str | None = None

    @property
    def reachable(self) -> bool:
        return self.error is None

    def states(self) -> dict[str, int]:
        """
        How many of its connections are in each state.
        """
        return _stateCounts(self.rows)

    def asJSON(self) -> dict[str, Any]:
        return {
            "shard": self.index,
            "url": self.url,
            "reachable": self.reachable,
            "error": self.error,
            "reported_shard": self.reported,
            "warning": self.warning,
            "connections": len(self.rows) if self.reachable else None,
            "states": self.states() if self.reachable else None,
        }


@attrs.frozen
class FleetStatus:
    """
    Every shard's answer, and their connections merged, unhealthy first.
    """

    shards: tuple[ShardStatus, ...]
    rows: tuple[Row, ...]

    @property
    def allReachable(self) -> bool:
        return all(s.reachable for s in self.shards)

    @property
    def healthy(self) -> bool:
        """
        Every connection ESTABLISHED, and no shard with a warning.
        """
        return all(r.healthy for r in self.rows) and not any(s.warning for s in self.shards)

    def states(self) -> dict[str, int]:
        """
        How many of the fleet's connections are in each state.
        """
        return _stateCounts(self.rows)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _serverTime(answer: Answer) -> float | None:
    """
    The shard's own clock when it answered (C{Netsupervisor-Time}), if it said.
    """
    try:
        now = float(answer.header(b"netsupervisor-time") or "nan")
    except ValueError:
        return None
    return now if math.isfinite(now) else None


def _rows(index: int, answer: Answer) -> tuple[Row, ...]:
    """
    The connections in an answer of C{GET /connections}.

    @raise Unreachable: if it is not a list of connection objects.
    """
    value = answer.json()
    if not isinstance(value, list):
        raise Unreachable("not an answer of the admin API (expected a JSON array)")
    serverTime = _serverTime(answer)
    rows = []
    for item in value:
        if not isinstance(item, Mapping):
            raise Unreachable("not an answer of the admin API (expected connection objects)")
        name, state = item.get("name"), item.get("state")
        if not isinstance(name, str) or not isinstance(state, str):
            raise Unreachable("not an answer of the admin API (a connection without name or state)")
        since = _number(item.get("since"))
        attempts = item.get("attempts")
        rows.append(
            Row(
                shard=index,
                name=name,
                state=state,
                age=None if since is None or serverTime is None else max(0.0, serverTime - since),
                attempts=attempts
                if isinstance(attempts, int) and not isinstance(attempts, bool)
                else None,
                rtt=_number(item.get("rtt_seconds")),
                lastError=_text(item.get("last_error")),
                endpoint=_text(item.get("endpoint")) or "",
                protocol=_text(item.get("protocol")) or "",
            )
        )
    return tuple(rows)


def _placeWarning(index: int, count: int, reported: str | None) -> str | None:
    """
    What is wrong if the shard at URL C{index} of C{count} says it is another.
    """
    if reported is None:
        return None
    try:
        shard = Shard.fromString(reported)
    except ShardError:
        return "its Netsupervisor-Shard header is not I/N"
    if shard != Shard(index, count):
        return (
            f"it says it is shard {shard}, not {index}/{count}: "
            "give every shard's URL, in shard order"
        )
    return None


async def _shardStatus(client: AdminClient, index: int, count: int, url: str) -> ShardStatus:
    try:
        answer = await client.request("GET", url + "/connections")
        if answer.code != 200:
            raise Unreachable(f"GET /connections answered HTTP {answer.code}")
        rows = _rows(index, answer)
    except Unreachable as e:
        return ShardStatus(index, url, error=str(e))
    reported = answer.header(b"netsupervisor-shard")
    return ShardStatus(
        index, url, rows, reported=reported, warning=_placeWarning(index, count, reported)
    )


async def fleetStatus(client: AdminClient, urls: Sequence[str]) -> FleetStatus:
    """
    Ask every admin URL (in shard order) for its connections, in parallel.
    A shard that cannot be asked is reported in its L{ShardStatus}, never
    raised.
    """
    shards: list[ShardStatus] = await gatherResults(
        [
            Deferred.fromCoroutine(_shardStatus(client, i, len(urls), url))
            for i, url in enumerate(urls)
        ]
    )
    rows = sorted((r for s in shards for r in s.rows), key=Row.sortKey)
    return FleetStatus(tuple(shards), tuple(rows))


@attrs.frozen
class ActionResult:
    """
    What a shard answered to C{POST /connections/NAME/ACTION}.

    @ivar shard: the index of the shard that owns the name, by the hash.
    @ivar code: its HTTP status, or L{None} if it gave no usable answer.
    @ivar state: the connection's state after the action, if accepted.
    @ivar message: the shard's error message, or why it gave no answer.
    """

    name: str
    action: Action
    shard: int
    url: str
    code: int | None
    state: str | None = None
    message: str | None = None

    @property
    def accepted(self) -> bool:
        return self.code == 202

    def asJSON(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "action": self.action,
            "shard": self.shard,
            "url": self.url,
            "accepted": self.accepted,
            "http_status": self.code,
            "state": self.state,
            "error": self.message,
        }


async def act(
    client: AdminClient, urls: Sequence[str], name: str, action: Action, token: str
) -> ActionResult:
    """
    Send C{action} for connection C{name} to the shard that owns it: the
    URL at index C{owner(name, len(urls))}.

    @param urls: every shard's admin URL, in shard order.
    @raise ValueError: if C{name} is not a connection name.
    """
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError("a connection name matches [A-Za-z0-9_.:-]+")
    index = owner(name, len(urls))
    url = urls[index]
    try:
        answer = await client.request("POST", f"{url}/connections/{name}/{action}", token)
    except Unreachable as e:
        return ActionResult(name, action, index, url, None, message=str(e))
    try:
        body = answer.json()
    except Unreachable:
        body = None
    state = message = None
    if isinstance(body, Mapping):
        state = _text(body.get("state"))
        message = _text(body.get("error"))
    if answer.code != 202 and message is None:
        message = f"HTTP {answer.code}"
    return ActionResult(name, action, index, url, answer.code, state, message)
