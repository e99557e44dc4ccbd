"""
The C{nats} protocol: the NATS client protocol, text lines ending in C{\\r\\n}.

- Handshake: the server greets with C{INFO {...}}; we send
  C{CONNECT {...}} (C{verbose} and C{pedantic} false, with optional
  credentials), then C{PING}; the server's C{PONG} makes the connection ready.
- Heartbeat: C{PING}, answered by C{PONG}, in order: the tokens of the pings
  in flight are kept first in, first out.
- The server's own C{PING} is answered with C{PONG} and proves it alive.
- C{-ERR 'Authorization Violation'} (and the other authentication errors)
  are permanent rejections; other C{-ERR}s are transient.
- Drain: flush (C{PING}, wait for its C{PONG}), then the transport is closed.

Options: C{user} (str) with C{pass_file} (str: a file holding the password),
or C{token_file} (str: a file holding the token); secrets lose one trailing
newline and are read at every attempt. C{client_name} (str, default the
connection's name), C{max_line_length} (int, default 1 MiB).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import connectionDone
from twisted.plugin import IPlugin
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from supervisor.interfaces import (
    Classification,
    IConnectionHandle,
    IDrainable,
    IFailureClassifier,
    IProtocolPlugin,
    ISupervisedProtocol,
)

PERMANENT_ERRORS = (
    "authorization violation",
    "user authentication expired",
    "user authentication revoked",
    "account authentication expired",
)
"""C{-ERR} texts (lower case) that no retry will cure."""

IGNORED_ERRORS = ("permissions violation",)
"""C{-ERR} texts after which the server keeps the connection open."""


def readSecret(path: str) -> str:
    """
    The secret in the file at C{path}, without one trailing newline.

    @raise OSError: it cannot be read.
    @raise UnicodeDecodeError: it is not UTF-8.
    """
    data = Path(path).read_bytes().decode("utf-8")
    if data.endswith("\r\n"):
        return data[:-2]
    if data.endswith("\n"):
        return data[:-1]
    return data


def redact(text: str, secrets: list[str]) -> str:
    """
    C{text} shortened, with every secret in it replaced by C{***}.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text if len(text) <= 200 else text[:197] + "..."


# What a PONG in the FIFO answers.
_HANDSHAKE = b""
_FLUSH = b"\x00flush"


@implementer(ISupervisedProtocol, IDrainable, IFailureClassifier)
class NatsProtocol(LineOnlyReceiver):
    """
    One connection speaking the NATS client protocol.
    """

    delimiter = b"\r\n"

    def __init__(
        self,
        handle: IConnectionHandle,
        user: str,
        passFile: str,
        tokenFile: str,
        clientName: str,
        maxLength: int,
    ) -> None:
        self.handle = handle
        self.user = user
        self.passFile = passFile
        self.tokenFile = tokenFile
        self.clientName = clientName
        self.MAX_LENGTH = maxLength
        self.greeted = False
        self.ready = False
        self.failed = False
        self.pongs: deque[bytes] = deque()
        self.flushing: Deferred[None] | None = None
        self.secrets: list[str] = []
        self.serverInfo: dict[str, object] = {}
        self.configError = ""

    def fail(self, message: str, permanent: bool) -> None:
        """
        Reject the connection once; nothing is read after that.
        """
        if not self.failed:
            self.failed = True
            self.handle.reject(redact(message, self.secrets), permanent)

    def send(self, line: bytes) -> None:
        assert self.transport is not None
        self.transport.write(line + b"\r\n")

    def lineReceived(self, line: bytes) -> None:
        if self.failed:
            return
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
            self.fail(f"unexpected line {line[:40]!r}", False)

    def infoReceived(self, payload: bytes) -> None:
        try:
            info = json.loads(payload)
        except ValueError:
            self.fail("the server's INFO is not JSON", False)
            return
        if not isinstance(info, dict):
            self.fail("the server's INFO is not a JSON object", False)
            return
        self.serverInfo = info
        if self.greeted:
            return  # a later INFO: cluster topology, nothing to do
        self.greeted = True
        if self.configError:
            self.fail(self.configError, True)
            return
        if info.get("tls_required") and not ISSLTransport.providedBy(self.transport):
            self.fail("the server requires TLS (use a tls: endpoint)", True)
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
        try:
            if self.user:
                connect["user"] = self.user
            if self.passFile:
                connect["pass"] = password = readSecret(self.passFile)
                self.secrets.append(password)
            if self.tokenFile:
                connect["auth_token"] = token = readSecret(self.tokenFile)
                self.secrets.append(token)
        except (OSError, UnicodeDecodeError) as e:
            detail = e.strerror if isinstance(e, OSError) else "not UTF-8"
            self.fail(f"cannot read a secret file: {detail}", False)
            return
        self.pongs.append(_HANDSHAKE)
        self.send(b"CONNECT " + json.dumps(connect, separators=(",", ":")).encode("utf-8"))
        self.send(b"PING")

    def pongReceived(self) -> None:
        if not self.pongs:
            return  # an answer to nothing we sent: harmless
        token = self.pongs.popleft()
        if token == _HANDSHAKE:
            self.ready = True
            self.handle.ready()
        elif token == _FLUSH:
            self.flushed()
        else:
            self.handle.pong(token)

    def errorReceived(self, text: str) -> None:
        lowered = text.lower()
        if lowered.startswith(IGNORED_ERRORS):
            return
        permanent = lowered.startswith(PERMANENT_ERRORS)
        self.fail(f"server error: {text}", permanent)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.fail(f"line longer than {self.MAX_LENGTH} bytes", False)

    def sendPing(self, token: bytes) -> None:
        self.pongs.append(token)
        self.send(b"PING")

    def drain(self) -> Deferred[None]:
        if self.flushing is None:
            self.flushing = Deferred()
            self.pongs.append(_FLUSH)
            self.send(b"PING")
        return self.flushing

    def flushed(self) -> None:
        flushing, self.flushing = self.flushing, None
        if flushing is not None:
            flushing.callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.flushed()

    def classifyFailure(self, failure: Failure) -> Classification | None:
        return None


@implementer(IPlugin, IProtocolPlugin)
class NatsPlugin:
    """
    Builds L{NatsProtocol}s.
    """

    name = "nats"

    def buildProtocol(
        self, handle: IConnectionHandle, options: Mapping[str, object]
    ) -> ISupervisedProtocol:
        clientName = options.get("client_name")
        protocol = NatsProtocol(
            handle,
            user=str(options.get("user", "")),
            passFile=str(options.get("pass_file", "")),
            tokenFile=str(options.get("token_file", "")),
            clientName=str(handle.name if clientName is None else clientName),
            maxLength=1 << 20,
        )
        try:
            protocol.MAX_LENGTH = int(str(options.get("max_line_length", 1 << 20)))
        except ValueError as e:
            protocol.configError = f"bad option max_line_length: {e}"
        return protocol


natsPlugin = NatsPlugin()
