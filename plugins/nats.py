"""
The C{nats} protocol: the NATS client protocol, text lines ending in C{\\r\\n}.

- Handshake: the server greets with C{INFO {...}}; we send
  C{CONNECT {...}} (C{verbose} and C{pedantic} false, with optional
  credentials), then C{PING}; the server's C{PONG} makes the connection ready.
- Heartbeat: C{PING}, answered by C{PONG}, in order: what each C{PONG}
  answers is kept in a L{Pipeline}.
- The server's own C{PING} is answered with C{PONG} and proves it alive.
- C{-ERR 'Authorization Violation'} (and the other authentication errors)
  are permanent rejections; other C{-ERR}s are transient.
- An C{INFO} nested deeper than L{MAX_INFO_DEPTH} is refused before it is
  parsed as JSON.
- Drain: flush (C{PING}, wait for its C{PONG}), then the transport is closed.

Options (L{Options}): C{user} (str) with C{pass_file} (str: a file holding the
password), or C{token_file} (str: a file holding the token); secrets lose one
trailing newline and are read at every attempt. C{client_name} (str, default
the connection's name), C{max_line_length} (int, default 1 MiB).
"""

from __future__ import annotations

import json
import re

import attrs
from twisted.internet.interfaces import ISSLTransport

from plugins._support import (
    BundledPlugin,
    CheckedOptions,
    LineReader,
    Maybe,
    RequestingProtocol,
)
from supervisor.interfaces import IConnectionHandle
from supervisor.options import Integer, Text, quote, setting

PERMANENT_ERRORS = (
    "authorization violation",
    "user authentication expired",
    "user authentication revoked",
    "account authentication expired",
)
"""C{-ERR} texts (lower case) that no retry will cure."""

OVERLOADED_ERRORS = ("maximum connections exceeded", "maximum subscriptions exceeded")
"""C{-ERR} texts (lower case) by which the server pushes back: too many clients."""

IGNORED_ERRORS = ("permissions violation",)
"""C{-ERR} texts after which the server keeps the connection open."""

MAX_INFO_DEPTH = 32
"""The deepest nesting of arrays and objects accepted in the server's C{INFO}."""

_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def nestedWithin(document: bytes, depth: int) -> bool:
    """
    Whether the arrays and objects of the JSON C{document} are balanced and
    nest at most C{depth} deep (a document that is not JSON for another
    reason passes: the JSON parser refuses it then). Linear in the length
    of C{document} and free of recursion, so that it can run before
    C{json.loads}, which recurses once per level.
    """
    brackets = _STRING.sub(b"", document).translate(None, _NOT_BRACKETS)
    for _ in range(depth):
        if not brackets:
            return True
        # Remove the innermost pairs, one level: the marker keeps an outer
        # pair from closing over a removed inner one in the same pass.
        inner = brackets.replace(b"[]", b"\0").replace(b"{}", b"\0").replace(b"\0", b"")
        if len(inner) == len(brackets):
            return False  # no innermost pair: unbalanced
        brackets = inner
    return not brackets


@attrs.frozen
class Options(CheckedOptions):
    """
    The C{nats} plugin's options (see C{docs/plugins/nats.md}).
    """

    user: str = setting("", Text())
    pass_file: str = setting("", Text("a file name"))
    token_file: str = setting("", Text("a file name"))
    client_name: str | None = setting(None, Maybe(Text()))
    max_line_length: int = setting(1 << 20, Integer(1))


class NatsProtocol(RequestingProtocol[bytes]):
    """
    One connection speaking the NATS client protocol. Its drain is a flush:
    a C{PING}, whose C{PONG} the server sends after processing all before it.
    """

    PING = GOODBYE = b"PING\r\n"

    def __init__(self, handle: IConnectionHandle, options: Options) -> None:
        super().__init__(handle, LineReader(b"\r\n", options.max_line_length))
        self.options = options
        self.clientName = handle.name if options.client_name is None else options.client_name
        self.greeted = False
        self.serverInfo: dict[str, object] = {}

    def send(self, line: bytes) -> None:
        self.write(line + b"\r\n")

    def received(self, line: bytes) -> None:
        verb, _, rest = line.partition(b" ")
        verb = verb.upper()
        if verb == b"PONG":
            self.pongReceived()
        elif verb == b"PING":
            self.send(b"PONG")
            if self.ready:
                self.handle.activity()
        elif verb == b"INFO":
            self.infoReceived(rest)
        elif verb == b"-ERR":
            self.errorReceived(rest.decode("utf-8", "replace").strip().strip("'"))
        elif verb == b"+OK" or verb == b"MSG" or verb == b"HMSG":
            if self.ready:
                self.handle.activity()
        else:
            self.reject(f"unexpected line {quote(line.decode('utf-8', 'replace'))}", False)

    def infoReceived(self, payload: bytes) -> None:
        if not nestedWithin(payload, MAX_INFO_DEPTH):
            message = f"the server's INFO is unbalanced or nested deeper than {MAX_INFO_DEPTH}"
            self.reject(message, False)
            return
        try:
            info = json.loads(payload)
        except ValueError:
            self.reject("the server's INFO is not JSON", False)
            return
        if not isinstance(info, dict):
            self.reject("the server's INFO is not a JSON object", False)
            return
        self.serverInfo = info
        if self.greeted:
            return  # a later INFO: cluster topology, nothing to do
        self.greeted = True
        if info.get("tls_required") and not ISSLTransport.providedBy(self.transport):
            self.reject("the server requires TLS (use a tls: endpoint)", True)
            return
        connect: dict[str, object] = {
            "verbose": False,
            "pedantic": False,
            "tls_required": ISSLTransport.providedBy(self.transport),
            "name": self.clientName,
            "lang": "python-twisted",
            "version": "netsupervisor",
            "protocol": 1,
            "echo": False,
        }
        options = self.options
        if options.user:
            connect["user"] = options.user
        for key, path, field in (
            ("pass_file", options.pass_file, "pass"),
            ("token_file", options.token_file, "auth_token"),
        ):
            secret = self.secretFrom(key, path)
            if self.rejected:
                return
            if secret is not None:
                try:
                    connect[field] = secret.decode("utf-8")
                except UnicodeDecodeError:
                    self.reject(f"the secret in {key} {path} is not UTF-8", False)
                    return
        self.send(b"CONNECT " + json.dumps(connect, separators=(",", ":")).encode("utf-8"))
        self.request(("handshake", b""), b"PING\r\n")

    def pongReceived(self) -> None:
        answered = self.pipeline.answered()
        if answered is not None:  # else an answer to nothing we sent: harmless
            self.succeeded(answered)

    def errorReceived(self, text: str) -> None:
        lowered = text.lower()
        if lowered.startswith(IGNORED_ERRORS):
            return
        permanent = lowered.startswith(PERMANENT_ERRORS)
        overloaded = lowered.startswith(OVERLOADED_ERRORS)
        self.reject(f"server error: {text}", permanent, overloaded)


natsPlugin = BundledPlugin("nats", Options, NatsProtocol)
