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

import attrs
import treq
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import ITransport
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web._newclient import HTTP11ClientProtocol, Request
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from zope.interface import implementer

from plugins._support import BundledPlugin, CheckedOptions, PluginProtocol
from supervisor.interfaces import (
    IConnectionHandle,
    IDrainable,
    ISupervisedProtocol,
    OptionError,
)
from supervisor.options import Flag, Integer, Text, describe, quote, setting

USER_AGENT = b"netsupervisor"

MAX_HEAD_LENGTH = 65536
"""The most bytes of a response before its body: status line and headers."""

SLICE = 4096
"""The most bytes handed to the HTTP parser at once (its cost per call grows
with the lines in it times its length)."""


def _refuse(key: str, expected: str, found: str) -> OptionError:
    return OptionError(key, f"expected {expected}, got {found}")


@attrs.frozen
class Statuses:
    """
    A set of HTTP statuses, written C{200}, C{"200,204"} or C{"200-299, 304"}.
    """

    empty: bool = False

    def expected(self) -> str:
        what = 'a status (200), or statuses and ranges in a string ("200-299, 304")'
        return what + (', or "" for none' if self.empty else "")

    def check(self, value: object, key: str) -> frozenset[int]:
        if isinstance(value, frozenset):
            return value
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise _refuse(key, self.expected(), describe(value))
        codes: set[int] = set()
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            low, _, high = part.partition("-")
            try:
                first, last = int(low), int(high or low)
            except ValueError:
                raise _refuse(key, self.expected(), quote(str(value))) from None
            if not 100 <= first <= last <= 599:
                raise _refuse(key, "statuses from 100 to 599", quote(part))
            codes.update(range(first, last + 1))
        if not (codes or self.empty):
            raise _refuse(key, self.expected(), quote(str(value)))
        return frozenset(codes)


def _text(value: object, key: str) -> str:
    """
    C{value}, a string (or bytes, as a setting's value once checked).
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return Text().check(value, key)


@attrs.frozen
class Token:
    """
    A method name: letters only, upper-cased, as bytes.
    """

    def expected(self) -> str:
        return "a method name (letters only)"

    def check(self, value: object, key: str) -> bytes:
        text = _text(value, key)
        if not (text.isascii() and text.isalpha()):
            raise _refuse(key, self.expected(), quote(text))
        return text.upper().encode("ascii")


@attrs.frozen
class Target:
    """
    A request target: starts with C{/}, no whitespace; as bytes.
    """

    def expected(self) -> str:
        return "a path starting with / (no spaces)"

    def check(self, value: object, key: str) -> bytes:
        text = _text(value, key)
        if not text.startswith("/") or any(c.isspace() for c in text):
            raise _refuse(key, self.expected(), quote(text))
        return text.encode("utf-8")


@attrs.frozen
class HostName:
    """
    A C{Host} header value, as bytes (IDNA for a name that is not ASCII).
    """

    def expected(self) -> str:
        return 'a host name, with an optional :port ("" for the peer\'s address)'

    def check(self, value: object, key: str) -> bytes:
        if isinstance(value, bytes):
            return value
        text = Text().check(value, key)
        try:
            encoded = text.encode("idna")
        except UnicodeError:
            raise _refuse(key, self.expected(), quote(text)) from None
        if any(c in encoded for c in b" \t\r\n/"):
            raise _refuse(key, self.expected(), quote(text))
        return encoded


@attrs.frozen
class Options(CheckedOptions):
    """
    The C{http} plugin's options (see C{docs/plugins/http.md}).
    """

    method: bytes = setting(b"GET", Token())
    path: bytes = setting(b"/", Target())
    host: bytes = setting(b"", HostName())
    expected_status: frozenset[int] = setting(frozenset(range(200, 300)), Statuses())
    permanent_status: frozenset[int] = setting(frozenset((401, 403)), Statuses(empty=True))
    check_on_connect: bool = setting(True, Flag())
    max_body_length: int = setting(1 << 20, Integer(0))
    authorization_file: str = setting("", Text("a file name"))


def _hostOf(transport: ITransport) -> bytes:
    peer = transport.getPeer()
    if isinstance(peer, IPv4Address):
        return f"{peer.host}:{peer.port}".encode("ascii")
    if isinstance(peer, IPv6Address):
        return f"[{peer.host}]:{peer.port}".encode("ascii")
    return b"localhost"


class _TooLong(Exception):
    pass


@implementer(ISupervisedProtocol, IDrainable)
class HttpProtocol(PluginProtocol):
    """
    One supervised HTTP/1.1 connection: HTTP11ClientProtocol on the
    transport, one request at a time.

    @ivar inFlight: whether a request is being answered.
    """

    def __init__(self, handle: IConnectionHandle, options: Options) -> None:
        super().__init__(handle)
        self.options = options
        self.http = HTTP11ClientProtocol()  # type: ignore[no-untyped-call]
        self.inFlight = False
        self.queued: bytes | None = None
        self.ready = False
        self.gone = False
        self.authorization: bytes | None = None
        self._host = b"localhost"
        self._head = 0
        self._drained: list[Deferred[None]] = []

    # The transport's side.

    def makeConnection(self, transport: ITransport) -> None:
        self.http.makeConnection(transport)  # type: ignore[no-untyped-call]
        super().makeConnection(transport)  # type: ignore[no-untyped-call]

    def connectionMade(self) -> None:
        assert self.transport is not None
        options = self.options
        self._host = options.host or _hostOf(self.transport)
        secret = self.secretFrom("authorization_file", options.authorization_file)
        if self.rejected:
            return
        if secret is not None:
            self.authorization = secret.strip()
            self.secrets += (self.authorization,)
        if options.check_on_connect:
            self._request(None)
        else:
            self.ready = True
            self.handle.ready()

    def dataReceived(self, data: bytes) -> None:
        for start in range(0, len(data), SLICE):
            if self.rejected:
                return
            piece = data[start : start + SLICE]
            self.http.dataReceived(piece)  # type: ignore[no-untyped-call]
            if self._head >= 0 and not self.rejected:
                # Still in the status line and headers: all of the piece
                # was theirs, so the head is longer than what is counted.
                self._head += len(piece)
                if self._head > MAX_HEAD_LENGTH:
                    self._reject(f"response head longer than {MAX_HEAD_LENGTH} bytes", False)

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

    # Internals.

    def _request(self, token: bytes | None) -> None:
        options = self.options
        headers = Headers({b"host": [self._host], b"user-agent": [USER_AGENT]})
        if self.authorization is not None:
            headers.setRawHeaders(b"authorization", [self.authorization])
        request = Request(  # type: ignore[no-untyped-call]
            options.method, options.path, headers, None, persistent=True
        )
        self.inFlight = True
        self._head = 0
        sending: Deferred[IResponse] = self.http.request(request)
        reading: Deferred[int] = sending.addCallback(self._read)
        reading.addCallbacks(self._answered, self._failed, callbackArgs=(token,))
        reading.addBoth(self._free)

    def _read(self, response: IResponse) -> Deferred[int]:
        self._head = -1  # the body: bounded by max_body_length
        received = [0]
        limit = self.options.max_body_length

        def collect(data: bytes) -> None:
            received[0] += len(data)
            if received[0] > limit:
                raise _TooLong(f"response body longer than max_body_length {limit}")

        reading: Deferred[None] = treq.collect(response, collect)
        return reading.addCallback(lambda _: int(response.code))

    def _answered(self, code: int, token: bytes | None) -> None:
        if self.gone:
            return
        if code in self.options.expected_status:
            if token is None:
                self.ready = True
                self.handle.ready()
            elif self.queued is None:
                self.handle.pong(token)
            # else: a late answer; the queued ping's request goes out next.
        else:
            permanent = code in self.options.permanent_status
            self._reject(f"HTTP status {code}", permanent)

    def _failed(self, failure: Failure) -> None:
        if self.gone or failure.check(CancelledError):  # type: ignore[no-untyped-call]
            return
        reasons = getattr(failure.value, "reasons", None)
        cause = reasons[0].value if reasons else failure.value
        if isinstance(cause, _TooLong):
            self._reject(str(cause), permanent=False)
        else:
            self._reject(f"HTTP request failed: {cause!r}", permanent=False)

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
        self.reject(message, permanent)


httpPlugin = BundledPlugin("http", Options, HttpProtocol)
