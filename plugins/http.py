"""
The C{http} protocol: the connection is one persistent HTTP/1.1 connection
to the configured endpoint, and the heartbeat is a request on it.

- Handshake: one request as soon as the transport is up (C{check_on_connect},
  default true); an expected status makes the connection ready.
- Heartbeat: every ping is the same request (C{method} C{path}, C{Host}
  header); an expected status answers the ping, with the round trip
  measured from request to the end of the response body.
- Failures: a status in C{permanent_status} (default 401, 403) rejects the
  connection permanently; any other unexpected status (5xx included) is a
  transient rejection; a request that takes longer than the heartbeat
  timeout is a missed heartbeat (the supervisor drops the connection after
  C{misses}); a malformed response is a transient rejection.
- Drain: waits for the request in flight, if any.

The requests are written by twisted.web's C{HTTP11ClientProtocol} on the
supervised transport itself (no connection pool: the supervised connection
I{is} the HTTP connection), and each response body is read (and discarded,
up to C{max_body_length}) with C{treq.collect}. See C{docs/plugins/http.md}.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import attrs
import treq
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import ITransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from twisted.web._newclient import HTTP11ClientProtocol, Request
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from zope.interface import implementer

from supervisor.interfaces import (
    Classification,
    IConnectionHandle,
    IDrainable,
    IFailureClassifier,
    IProtocolPlugin,
    ISupervisedProtocol,
)

USER_AGENT = b"netsupervisor"


class HttpOptionError(ValueError):
    """
    A connection's C{http} options are wrong; retrying cannot help.
    """


def _statuses(key: str, value: object) -> frozenset[int]:
    """
    Parse C{200}, C{"200,204"} or C{"200-299, 304"} into a set of statuses.
    """
    codes: set[int] = set()
    for part in str(value).split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise HttpOptionError(f"http: option {key!r}: bad status {part!r}") from None
        if not 100 <= first <= last <= 599:
            raise HttpOptionError(f"http: option {key!r}: bad status range {part!r}")
        codes.update(range(first, last + 1))
    if not codes:
        raise HttpOptionError(f"http: option {key!r} names no status")
    return frozenset(codes)


def _bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


@attrs.frozen
class HttpOptions:
    """
    The C{http} plugin's options, parsed.
    """

    method: bytes = b"GET"
    path: bytes = b"/"
    host: bytes | None = None
    expected: frozenset[int] = frozenset(range(200, 300))
    permanent: frozenset[int] = frozenset((401, 403))
    checkOnConnect: bool = True
    maxBodyLength: int = 1 << 20
    authorization: bytes | None = None

    @classmethod
    def fromMapping(cls, options: Mapping[str, object]) -> HttpOptions:
        """
        Parse a connection's protocol options.

        @raise HttpOptionError: for an unknown option or a bad value.
        """
        values: dict[str, object] = {}
        for key, value in options.items():
            text = str(value)
            if key == "method":
                if not text.isalpha():
                    raise HttpOptionError(f"http: option 'method': bad method {text!r}")
                values["method"] = text.upper().encode("ascii")
            elif key == "path":
                if not text.startswith("/") or any(c in text for c in " \r\n"):
                    raise HttpOptionError("http: option 'path' must start with / (no spaces)")
                values["path"] = text.encode("utf-8")
            elif key == "host":
                values["host"] = text.encode("idna") if text else None
            elif key == "expected_status":
                values["expected"] = _statuses(key, value)
            elif key == "permanent_status":
                values["permanent"] = _statuses(key, value) if text.strip() else frozenset()
            elif key == "check_on_connect":
                values["checkOnConnect"] = _bool(value)
            elif key == "max_body_length":
                try:
                    values["maxBodyLength"] = int(text)
                except ValueError:
                    raise HttpOptionError("http: option 'max_body_length': not an int") from None
            elif key == "authorization_file":
                try:
                    secret = Path(text).read_text(encoding="utf-8").strip()
                except OSError as e:
                    raise HttpOptionError(
                        f"http: option 'authorization_file': cannot read it ({e.strerror})"
                    ) from None
                values["authorization"] = secret.encode("latin-1")
            else:
                raise HttpOptionError(f"http: unknown option {key!r}")
        return cls(**values)  # type: ignore[arg-type]


def _hostOf(transport: ITransport) -> bytes:
    peer = transport.getPeer()
    if isinstance(peer, IPv4Address):
        return f"{peer.host}:{peer.port}".encode("ascii")
    if isinstance(peer, IPv6Address):
        return f"[{peer.host}]:{peer.port}".encode("ascii")
    return b"localhost"


class _TooLong(Exception):
    pass


@implementer(ISupervisedProtocol, IDrainable, IFailureClassifier)
class HttpProtocol(Protocol):
    """
    One supervised HTTP/1.1 connection: HTTP11ClientProtocol on the
    transport, one request at a time.

    @ivar inFlight: whether a request is being answered.
    """

    def __init__(self, handle: IConnectionHandle, options: HttpOptions) -> None:
        self.handle = handle
        self.options = options
        self.http = HTTP11ClientProtocol()  # type: ignore[no-untyped-call]
        self.inFlight = False
        self.queued: bytes | None = None
        self.ready = False
        self.gone = False
        self._host = b"localhost"
        self._drained: list[Deferred[None]] = []

    # The transport's side.

    def makeConnection(self, transport: ITransport) -> None:
        self.http.makeConnection(transport)  # type: ignore[no-untyped-call]
        super().makeConnection(transport)  # type: ignore[no-untyped-call]

    def connectionMade(self) -> None:
        assert self.transport is not None
        self._host = self.options.host or _hostOf(self.transport)
        if self.options.checkOnConnect:
            self._request(None)
        else:
            self.ready = True
            self.handle.ready()

    def dataReceived(self, data: bytes) -> None:
        self.http.dataReceived(data)  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.gone = True
        self.http.connectionLost(reason)  # type: ignore[no-untyped-call]

    # The supervisor's side.

    def sendPing(self, token: bytes) -> None:
        if self.inFlight:
            # HTTP/1.1 answers in order: the next request waits for the
            # slow one, and the supervisor's timeout counts the miss.
            self.queued = token
            return
        self._request(token)

    def drain(self) -> Deferred[None]:
        self.queued = None
        if not self.inFlight:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        return d

    def classifyFailure(self, failure: Failure) -> Classification | None:
        return None

    # Internals.

    def _request(self, token: bytes | None) -> None:
        options = self.options
        headers = Headers({b"host": [self._host], b"user-agent": [USER_AGENT]})
        if options.authorization is not None:
            headers.setRawHeaders(b"authorization", [options.authorization])
        request = Request(  # type: ignore[no-untyped-call]
            options.method, options.path, headers, None, persistent=True
        )
        self.inFlight = True
        sending: Deferred[IResponse] = self.http.request(request)
        reading: Deferred[int] = sending.addCallback(self._read)
        reading.addCallbacks(self._answered, self._failed, callbackArgs=(token,))
        reading.addBoth(self._free)

    def _read(self, response: IResponse) -> Deferred[int]:
        received = [0]
        limit = self.options.maxBodyLength

        def collect(data: bytes) -> None:
            received[0] += len(data)
            if received[0] > limit:
                raise _TooLong(f"response body longer than max_body_length {limit}")

        reading: Deferred[None] = treq.collect(response, collect)
        return reading.addCallback(lambda _: int(response.code))

    def _answered(self, code: int, token: bytes | None) -> None:
        if self.gone:
            return
        if code in self.options.expected:
            if token is None:
                self.ready = True
                self.handle.ready()
            elif self.queued is None:
                self.handle.pong(token)
            # else: a late answer; the queued ping's request goes out next.
        else:
            permanent = code in self.options.permanent
            self._reject(f"HTTP status {code}", permanent)

    def _failed(self, failure: Failure) -> None:
        if self.gone or failure.check(CancelledError):  # type: ignore[no-untyped-call]
            return
        reasons = getattr(failure.value, "reasons", None)
        cause = reasons[0].value if reasons else failure.value
        if isinstance(cause, _TooLong):
            self._reject(str(cause), permanent=False)
        else:
            self._reject(f"HTTP request failed: {cause!r}"[:200], permanent=False)

    def _free(self, result: object) -> None:
        self.inFlight = False
        drained, self._drained = self._drained, []
        for d in drained:
            d.callback(None)
        if self.queued is not None and not self.gone and not drained:
            token, self.queued = self.queued, None
            self._request(token)

    def _reject(self, message: str, permanent: bool) -> None:
        self.gone = True
        self.queued = None
        self.handle.reject(message, permanent=permanent)


@implementer(IPlugin, IProtocolPlugin, IFailureClassifier)
class HttpPlugin:
    """
    Builds L{HttpProtocol}s.
    """

    name = "http"

    def buildProtocol(
        self, handle: IConnectionHandle, options: Mapping[str, object]
    ) -> ISupervisedProtocol:
        return HttpProtocol(handle, HttpOptions.fromMapping(options))

    def classifyFailure(self, failure: Failure) -> Classification | None:
        """
        Bad options fail the attempt permanently: no retry can fix them.
        """
        if isinstance(failure.value, HttpOptionError):
            return Classification("other", permanent=True)
        return None


httpPlugin = HttpPlugin()
