"""
The C{redis} protocol: RESP, as spoken by Redis (and servers compatible with it).

- Handshake, pipelined in one write: an optional C{HELLO <protover>} (option
  C{hello}) or C{AUTH} (when a C{password_file} is set), an optional
  C{CLIENT SETNAME}, and a C{PING}. The connection is ready when every one
  of them has been answered without an error.
- Heartbeat: C{PING}, answered by C{+PONG}. Replies come in order, so the
  tokens of the pings in flight are kept first in, first out.
- Errors: C{-WRONGPASS}, C{-NOAUTH} and C{-NOPERM} are permanent
  rejections; any other error reply during the handshake is transient. The
  password is never logged and is removed from any error text.
- Drain: C{QUIT}, then wait for its C{+OK} (or for the server to close).

Options: C{username} (str, ACL user), C{password_file} (str: a file holding
the password; one trailing newline is ignored; read at every attempt),
C{hello} (int: 0 for none, 2 or 3), C{client_name} (str, default the
connection's name; C{""} for none), C{max_reply_length} (int, default 1 MiB).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.plugin import IPlugin
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

PERMANENT_ERRORS = (b"WRONGPASS", b"NOAUTH", b"NOPERM")
"""Error prefixes that no retry will cure."""


class Incomplete(Exception):
    """
    The buffer does not hold a whole reply yet.
    """


class ProtocolError(Exception):
    """
    The bytes are not RESP.
    """


class Reply:
    """
    One RESP reply, reduced to what the plugin needs: whether it is an error,
    and the text of a simple string or an error.
    """

    __slots__ = ("error", "text")

    def __init__(self, text: bytes, error: bool = False) -> None:
        self.text = text
        self.error = error

    def __repr__(self) -> str:
        return f"Reply({self.text!r}, error={self.error})"


_LINE_TYPES = frozenset(b"+-:_#,(")
_BULK_TYPES = frozenset(b"$!=")
_AGGREGATE_TYPES = frozenset(b"*%~>|")


def parseReply(buffer: bytes, start: int = 0) -> tuple[Reply | None, int]:
    """
    Parse one RESP2 or RESP3 value from C{buffer} at C{start}.

    @return: the reply (L{None} for an attribute or push, which is no answer
        to a command) and the offset after it.
    @raise Incomplete: more bytes are needed.
    @raise ProtocolError: the bytes are not RESP.
    """
    if start >= len(buffer):
        raise Incomplete()
    kind = buffer[start]
    end = buffer.find(b"\r\n", start)
    if end < 0:
        raise Incomplete()
    line = buffer[start + 1 : end]
    after = end + 2
    if kind in _LINE_TYPES:
        if kind == ord("-"):
            return Reply(line, error=True), after
        return Reply(line), after
    try:
        length = int(line)
    except ValueError:
        raise ProtocolError(f"bad length {line[:20]!r}") from None
    if kind in _BULK_TYPES:
        if length < 0:
            return Reply(b""), after
        if len(buffer) < after + length + 2:
            raise Incomplete()
        body = buffer[after : after + length]
        return Reply(body, error=kind == ord("!")), after + length + 2
    if kind in _AGGREGATE_TYPES:
        count = max(length, 0) * (2 if kind in b"%|" else 1)
        for _ in range(count):
            _, after = parseReply(buffer, after)
        if kind == ord("|"):
            # An attribute annotates the reply that follows it.
            return parseReply(buffer, after)
        return (None if kind == ord(">") else Reply(b"")), after
    raise ProtocolError(f"unknown RESP type byte {bytes([kind])!r}")


def command(*words: bytes) -> bytes:
    """
    One command as a RESP array of bulk strings.
    """
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        parts.append(b"$%d\r\n%s\r\n" % (len(word), word))
    return b"".join(parts)


def readSecret(path: str) -> bytes:
    """
    The secret in the file at C{path}, without one trailing newline.

    @raise OSError: it cannot be read.
    """
    data = Path(path).read_bytes()
    if data.endswith(b"\r\n"):
        return data[:-2]
    if data.endswith(b"\n"):
        return data[:-1]
    return data


def redact(text: bytes, secrets: Sequence[bytes]) -> str:
    """
    C{text} as a short message, with every secret in it replaced by C{***}.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, b"***")
    message = text.decode("utf-8", "replace")
    return message if len(message) <= 200 else message[:197] + "..."


# What a reply in the FIFO answers.
_HANDSHAKE = "handshake"
_PING = "ping"
_QUIT = "quit"


@implementer(ISupervisedProtocol, IDrainable, IFailureClassifier)
class RedisProtocol(Protocol):
    """
    One connection speaking RESP.
    """

    def __init__(
        self,
        handle: IConnectionHandle,
        username: str,
        passwordFile: str,
        hello: int,
        clientName: str,
        maxReplyLength: int,
    ) -> None:
        self.handle = handle
        self.username = username
        self.passwordFile = passwordFile
        self.hello = hello
        self.clientName = clientName
        self.maxReplyLength = maxReplyLength
        self.ready = False
        self.expected: deque[tuple[str, bytes]] = deque()
        self.buffer = b""
        self.secrets: list[bytes] = []
        self.quitting: Deferred[None] | None = None
        self.failed = False
        self.configError = ""
        self.configPermanent = True

    def connectionMade(self) -> None:
        password: bytes | None = None
        if not self.configError and self.passwordFile:
            try:
                password = readSecret(self.passwordFile)
            except OSError as e:
                self.configError = f"cannot read password_file {self.passwordFile}: {e.strerror}"
                self.configPermanent = False
            else:
                self.secrets.append(password)
        if self.configError:
            # A bad option or an unreadable password file: nothing is sent.
            self.fail(self.configError, self.configPermanent)
            return
        commands: list[tuple[bytes, ...]] = []
        if self.hello:
            words: tuple[bytes, ...] = (b"HELLO", b"%d" % self.hello)
            if password is not None:
                user = self.username.encode("utf-8") or b"default"
                words += (b"AUTH", user, password)
            if self.clientName:
                words += (b"SETNAME", self.clientName.encode("utf-8"))
            commands.append(words)
        else:
            if password is not None:
                if self.username:
                    commands.append((b"AUTH", self.username.encode("utf-8"), password))
                else:
                    commands.append((b"AUTH", password))
            if self.clientName:
                commands.append((b"CLIENT", b"SETNAME", self.clientName.encode("utf-8")))
        commands.append((b"PING",))
        for words in commands:
            self.expected.append((_HANDSHAKE, words[0]))
        self.write(b"".join(command(*words) for words in commands))

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def fail(self, message: str, permanent: bool) -> None:
        """
        Reject the connection once; nothing is read after that.
        """
        if not self.failed:
            self.failed = True
            self.handle.reject(message, permanent)

    def dataReceived(self, data: bytes) -> None:
        if self.failed:
            return
        self.buffer += data
        offset = 0
        try:
            while offset < len(self.buffer) and not self.failed:
                reply, offset = parseReply(self.buffer, offset)
                if reply is not None:
                    self.replyReceived(reply)
        except Incomplete:
            pass
        except ProtocolError as e:
            self.fail(f"not a RESP reply: {e}", False)
            return
        self.buffer = self.buffer[offset:]
        if len(self.buffer) > self.maxReplyLength and not self.failed:
            self.fail(f"reply longer than {self.maxReplyLength} bytes", False)

    def replyReceived(self, reply: Reply) -> None:
        if not self.expected:
            self.fail(f"unexpected reply {redact(reply.text, self.secrets)!r}", False)
            return
        what, detail = self.expected.popleft()
        if reply.error:
            message = redact(reply.text, self.secrets)
            permanent = reply.text.startswith(PERMANENT_ERRORS)
            if what == _HANDSHAKE:
                verb = detail.decode("ascii", "replace")
                self.fail(f"{verb} failed: {message}", permanent)
            elif what == _PING:
                self.fail(f"PING failed: {message}", permanent)
            else:
                self.quitDone()
            return
        if what == _HANDSHAKE:
            if not any(kind == _HANDSHAKE for kind, _ in self.expected):
                self.ready = True
                self.handle.ready()
        elif what == _PING:
            self.handle.pong(detail)
        else:
            self.quitDone()

    def sendPing(self, token: bytes) -> None:
        self.expected.append((_PING, token))
        self.write(command(b"PING"))

    def drain(self) -> Deferred[None]:
        if self.quitting is None:
            self.quitting = Deferred()
            self.expected.append((_QUIT, b""))
            self.write(command(b"QUIT"))
        return self.quitting

    def quitDone(self) -> None:
        quitting, self.quitting = self.quitting, None
        if quitting is not None:
            quitting.callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # The server closes after answering QUIT: the goodbye is complete.
        self.quitDone()

    def classifyFailure(self, failure: Failure) -> Classification | None:
        return None


@implementer(IPlugin, IProtocolPlugin)
class RedisPlugin:
    """
    Builds L{RedisProtocol}s.
    """

    name = "redis"

    def buildProtocol(
        self, handle: IConnectionHandle, options: Mapping[str, object]
    ) -> ISupervisedProtocol:
        clientName = options.get("client_name")
        protocol = RedisProtocol(
            handle,
            username=str(options.get("username", "")),
            passwordFile=str(options.get("password_file", "")),
            hello=0,
            clientName=str(handle.name if clientName is None else clientName),
            maxReplyLength=1 << 20,
        )
        try:
            protocol.hello = int(str(options.get("hello", 0)))
            protocol.maxReplyLength = int(str(options.get("max_reply_length", 1 << 20)))
        except ValueError as e:
            protocol.configError = f"bad option: {e}"
        if protocol.hello not in (0, 2, 3):
            protocol.configError = f"option hello must be 0, 2 or 3, not {protocol.hello}"
        return protocol


redisPlugin = RedisPlugin()
