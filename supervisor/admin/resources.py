"""
The twisted.web resources of the admin API. Paths, methods and answers are
in C{docs/admin-api.md}.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources as packageData
from typing import TYPE_CHECKING, Literal

from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from supervisor.admin import views
from supervisor.admin.auth import checkBearer
from supervisor.metrics import CONTENT_TYPE, SupervisorMetrics, exposition
from supervisor.spec import NAME_PATTERN

if TYPE_CHECKING:
    from supervisor.service import Supervisor

__all__ = ["AdminRoot"]

log = Logger(namespace="netsupervisor.admin")

JSON = b"application/json; charset=utf-8"
HTML = b"text/html; charset=utf-8"
JAVASCRIPT = b"text/javascript; charset=utf-8"
CSS = b"text/css; charset=utf-8"

PAGE_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    b"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
    b"require-trusted-types-for 'script'; trusted-types 'none'"
)
"""
The C{Content-Security-Policy} of the status page: its script and style
only from this origin, its data only from this origin, no plugin, no frame,
no form, and (where the browser supports Trusted Types) no HTML parsed from
strings at all.
"""

POLICY = b"default-src 'none'; frame-ancestors 'none'"
"""
The C{Content-Security-Policy} of every other answer: nothing in it may run
or load, should a browser ever render it.
"""

MAX_TRANSITIONS = 50
"""The most transitions C{GET /connections?transitions=K} may ask for."""

Action = Literal["reconnect", "drain"]
ACTIONS: tuple[Action, ...] = ("reconnect", "drain")


def _setHeader(request: Request, name: bytes, value: bytes) -> None:
    request.setHeader(name, value)  # type: ignore[no-untyped-call]


_REASONS = {421: b"Misdirected Request"}
"""Reason phrases twisted.web does not know."""


def _answer(
    request: Request, code: int, body: bytes, contentType: bytes = JSON, policy: bytes = POLICY
) -> bytes:
    request.setResponseCode(code, _REASONS.get(code))
    _setHeader(request, b"content-type", contentType)
    _setHeader(request, b"cache-control", b"no-store")
    _setHeader(request, b"x-content-type-options", b"nosniff")
    _setHeader(request, b"content-security-policy", policy)
    _setHeader(request, b"content-length", b"%d" % (len(body),))
    if request.method == b"HEAD":
        return b""
    return body


def _json(request: Request, code: int, value: object) -> bytes:
    return _answer(request, code, views.dumps(value))


def _error(request: Request, code: int, message: str) -> bytes:
    return _json(request, code, {"error": message})


class _Endpoint(Resource):
    """
    One path: dispatches on the method to C{GET}/C{POST} methods, answers
    405 (with C{Allow}) for the others, 404 for any path below it, and JSON
    500 for an exception (which is logged: it is a bug).
    """

    methods: tuple[bytes, ...] = (b"GET", b"HEAD")

    def __init__(self) -> None:
        Resource.__init__(self)  # type: ignore[no-untyped-call]

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"":
            return self  # a trailing slash
        return NotFound()

    def render(self, request: Request) -> bytes:
        method = request.method
        if method not in self.methods:
            _setHeader(request, b"allow", b", ".join(self.methods))
            return _error(
                request,
                405,
                f"method {method.decode('latin-1')} not allowed; "
                f"allowed: {b', '.join(self.methods).decode()}",
            )
        handler: Callable[[Request], bytes] = self.POST if method == b"POST" else self.GET
        try:
            return handler(request)
        except Exception:
            log.failure("admin request {method} {path} failed", method=method, path=request.path)
            return _error(request, 500, "internal error")

    def GET(self, request: Request) -> bytes:
        raise NotImplementedError

    def POST(self, request: Request) -> bytes:
        raise NotImplementedError


class NotFound(_Endpoint):
    """
    Any path the API does not have.
    """

    methods = (b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS")

    def __init__(self, message: str = "not found") -> None:
        super().__init__()
        self.message = message

    def getChild(self, path: bytes, request: Request) -> IResource:
        return self

    def render(self, request: Request) -> bytes:
        return _error(request, 404, self.message)


class Misdirected(NotFound):
    """
    Any path, asked with a C{Host} that is not a loopback name or address
    on a loopback listener: a page of another site, which a DNS-rebinding
    attack points at this port, may not read it.
    """

    def render(self, request: Request) -> bytes:
        return _error(
            request,
            421,
            "this admin API answers only requests for a loopback host "
            "(localhost, 127.0.0.1 or [::1])",
        )


PATHS = (
    "/metrics",
    "/healthz",
    "/readyz",
    "/connections",
    "/connections/NAME",
    "/connections/NAME/reconnect",
    "/connections/NAME/drain",
    "/breakers",
)


def _quality(parameters: list[bytes]) -> float:
    for parameter in parameters:
        key, _, value = parameter.partition(b"=")
        if key.strip().lower() == b"q":
            try:
                return min(max(float(value.strip()), 0.0), 1.0)
            except ValueError:
                return 0.0
    return 1.0


def wantsHTML(accept: bytes | None) -> bool:
    """
    Whether a client with this C{Accept} header should get the status page
    rather than JSON: only when it names C{text/html} (or XHTML) and prefers
    it to C{application/json}. A browser does; C{curl} (C{*/*}), a script
    without C{Accept} and a client asking for JSON get JSON, as they did
    before the page existed. Wildcards count for neither.

    @param accept: the request's C{Accept} header, if any.
    """
    if not accept:
        return False
    html = json = 0.0
    for item in accept.split(b","):
        mediaType, *parameters = item.split(b";")
        mediaType = mediaType.strip().lower()
        if mediaType in (b"text/html", b"application/xhtml+xml"):
            html = max(html, _quality(parameters))
        elif mediaType == b"application/json":
            json = max(json, _quality(parameters))
    return html > json


def _packageData(name: str) -> bytes:
    return packageData.files("supervisor.admin").joinpath(name).read_bytes()


class Index(_Endpoint):
    """
    C{/}: the status page for a browser, the paths of the API for anyone
    else (see L{wantsHTML}).
    """

    def __init__(self) -> None:
        super().__init__()
        self._page = _packageData("status.html")

    def GET(self, request: Request) -> bytes:
        _setHeader(request, b"vary", b"Accept")
        if wantsHTML(request.getHeader(b"accept")):
            _setHeader(request, b"referrer-policy", b"no-referrer")
            return _answer(request, 200, self._page, HTML, PAGE_POLICY)
        return _json(request, 200, {"paths": list(PATHS)})


class Asset(_Endpoint):
    """
    A file of the status page (its script, its style sheet), from the
    package's data.
    """

    def __init__(self, name: str, contentType: bytes) -> None:
        super().__init__()
        self._body = _packageData(name)
        self._contentType = contentType

    def GET(self, request: Request) -> bytes:
        return _answer(request, 200, self._body, self._contentType, PAGE_POLICY)


class Metrics(_Endpoint):
    """
    C{/metrics}: the Prometheus text exposition.
    """

    def __init__(self, metrics: SupervisorMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def GET(self, request: Request) -> bytes:
        return _answer(request, 200, exposition(self._metrics), CONTENT_TYPE.encode())


class Health(_Endpoint):
    """
    C{/healthz}: the process and its reactor answer.
    """

    def GET(self, request: Request) -> bytes:
        return _json(request, 200, {"status": "ok"})


class Ready(_Endpoint):
    """
    C{/readyz}: 200 when the supervisor is ready for work, else 503.
    """

    def __init__(self, supervisor: Supervisor) -> None:
        super().__init__()
        self._supervisor = supervisor

    def GET(self, request: Request) -> bytes:
        answer = self._supervisor.readiness()
        return _json(request, 200 if answer.ready else 503, views.readiness(answer))


class Breakers(_Endpoint):
    """
    C{/breakers}: the circuit breakers, counted by state, and those open
    or half-open.
    """

    def __init__(self, supervisor: Supervisor) -> None:
        super().__init__()
        self._supervisor = supervisor

    def GET(self, request: Request) -> bytes:
        return _json(request, 200, views.breakers(self._supervisor.fleet.breakers))


def _unknown(name: str) -> str:
    shown = repr(name) if NAME_PATTERN.fullmatch(name) else "of that name"
    return f"no connection {shown}"


def _decode(segment: bytes) -> str:
    return segment.decode("utf-8", "replace")


class Connections(_Endpoint):
    """
    C{/connections}: every connection; C{/connections/NAME} below it.
    """

    def __init__(self, supervisor: Supervisor) -> None:
        super().__init__()
        self._supervisor = supervisor

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"":
            return self
        return Connection(self._supervisor, _decode(path))

    def GET(self, request: Request) -> bytes:
        everyone = self._supervisor.connections.values()
        _setHeader(request, b"netsupervisor-time", repr(self._supervisor.scheduler.now()).encode())
        _setHeader(request, b"netsupervisor-shard", str(self._supervisor.shard).encode())
        asked = request.args.get(b"transitions") if request.args else None
        if asked is None:
            return _json(request, 200, [views.connectionSummary(c) for c in everyone])
        count = _transitionCount(asked)
        if count is None:
            return _error(
                request,
                400,
                f"transitions must be one integer from 0 to {MAX_TRANSITIONS}",
            )
        return _json(request, 200, [views.connectionSummary(c, count) for c in everyone])


def _transitionCount(values: list[bytes]) -> int | None:
    """
    The value of C{?transitions=K}, or L{None} if it is not one integer
    from 0 to L{MAX_TRANSITIONS} written in decimal digits.
    """
    if len(values) != 1:
        return None
    [value] = values
    if not value.isdigit() or len(value) > 3:
        return None
    count = int(value)
    return count if count <= MAX_TRANSITIONS else None


class Connection(_Endpoint):
    """
    C{/connections/NAME}: one connection and its last transitions; its
    actions below it.
    """

    def __init__(self, supervisor: Supervisor, name: str) -> None:
        super().__init__()
        self._supervisor = supervisor
        self._name = name

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"":
            return self
        action = _decode(path)
        for known in ACTIONS:
            if action == known:
                return ConnectionAction(self._supervisor, self._name, known)
        return NotFound()

    def GET(self, request: Request) -> bytes:
        try:
            connection = self._supervisor.connection(self._name)
        except KeyError:
            return _error(request, 404, _unknown(self._name))
        return _json(request, 200, views.connectionDetail(connection))


class ConnectionAction(_Endpoint):
    """
    C{POST /connections/NAME/reconnect} and C{POST /connections/NAME/drain}:
    need the bearer token; checked before the name, so that a caller
    without the token learns nothing.
    """

    methods = (b"POST",)

    def __init__(self, supervisor: Supervisor, name: str, action: Action) -> None:
        super().__init__()
        self._supervisor = supervisor
        self._name = name
        self._action: Action = action

    def POST(self, request: Request) -> bytes:
        refusal = checkBearer(
            self._supervisor.config.admin.token_file, request.getHeader(b"authorization")
        )
        if refusal is not None:
            if refusal.challenge is not None:
                _setHeader(request, b"www-authenticate", refusal.challenge)
            return _error(request, refusal.code, refusal.error)
        try:
            connection = self._supervisor.connection(self._name)
        except KeyError:
            return _error(request, 404, _unknown(self._name))
        before = connection.state
        if self._action == "reconnect":
            if not connection.reconnect():
                return _error(
                    request,
                    409,
                    f"{self._name} is {before}, not started or closing for good: "
                    "it does not reconnect",
                )
        else:
            # Idempotent: a connection closing or closed for good stays so.
            connection.drain()
        address = request.getClientAddress()  # type: ignore[no-untyped-call]
        peer = getattr(address, "host", None) or str(address)
        log.info(
            "admin: {action} {connection} ({before} -> {after}) requested by {peer}",
            action=self._action,
            connection=self._name,
            before=before,
            after=connection.state,
            peer=peer,
        )
        return _json(
            request,
            202,
            {"name": self._name, "action": self._action, "state": connection.state},
        )


class AdminRoot(Resource):
    """
    The root of the admin API.
    """

    def __init__(self, supervisor: Supervisor, metrics: SupervisorMetrics) -> None:
        Resource.__init__(self)  # type: ignore[no-untyped-call]
        self.putChild(b"metrics", Metrics(metrics))
        self.putChild(b"healthz", Health())
        self.putChild(b"readyz", Ready(supervisor))
        self.putChild(b"connections", Connections(supervisor))
        self.putChild(b"breakers", Breakers(supervisor))
        self.putChild(b"status.js", Asset("status.js", JAVASCRIPT))
        self.putChild(b"status.css", Asset("status.css", CSS))
        self._index = Index()

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"":
            return self._index
        return NotFound()

    def render(self, request: Request) -> bytes:
        return self._index.render(request)
