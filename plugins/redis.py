"""
The C{redis} protocol: RESP, as spoken by Redis (and servers compatible with it).

- Handshake, pipelined in one write: an optional C{HELLO <protover>} (option
  C{hello}) or C{AUTH} (when a C{password_file} is set), an optional
  C{CLIENT SETNAME}, and a C{PING}. The connection is ready when every one
  of them has been answered without an error.
- Heartbeat: C{PING}, answered by C{+PONG}. Replies come in order, so what
  each reply answers is kept in a L{Pipeline}.
- Errors: C{-WRONGPASS}, C{-NOAUTH} and C{-NOPERM} are permanent
  rejections; any other error reply during the handshake is transient. The
  password is never logged and is removed from any error text.
- Replies are parsed incrementally and without recursion (L{RespParser}):
  linear in the bytes received, at most C{max_reply_length} bytes per reply
  and L{MAX_DEPTH} levels of nesting.
- Drain: C{QUIT}, then wait for its C{+OK} (or for the server to close).

Options (L{Options}): C{username} (str, ACL user), C{password_file} (str: a
file holding the password; one trailing newline is ignored; read at every
attempt), C{hello} (int: 0 for none, 2 or 3), C{client_name} (str, default
the connection's name; C{""} for none), C{max_reply_length} (int, default
1 MiB).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterator
from typing import Literal

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from plugins._support import (
    BundledPlugin,
    CheckedOptions,
    Maybe,
    ProtocolError,
    RequestingProtocol,
    speaking,
)
from supervisor.interfaces import IConnectionHandle, OptionError
from supervisor.operations import Submitter
from supervisor.options import Integer, Text, describe, setting
from supervisor.policy import failureOf

PERMANENT_ERRORS = (b"WRONGPASS", b"NOAUTH", b"NOPERM")

OVERLOADED_ERRORS = (b"ERR max number of clients reached", b"LOADING", b"BUSY")
"""Error replies by which the server pushes back: too many clients, loading
its dataset, or busy running a script."""
"""Error prefixes that no retry will cure."""

MAX_DEPTH = 32
"""The deepest nesting of aggregates accepted in one reply."""

_TEXT = object()

_MAX_LENGTH_DIGITS = 20


@attrs.frozen
class HelloVersion:
    """
    The C{hello} option: 0 (no C{HELLO}), or the RESP version to ask for.
    """

    def expected(self) -> str:
        return "0, 2 or 3"

    def check(self, value: object, key: str) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value in (0, 2, 3):
            return value
        raise OptionError(key, f"expected {self.expected()}, got {describe(value)}")


@attrs.frozen
class Options(CheckedOptions):
    """
    The C{redis} plugin's options (see C{docs/plugins/redis.md}).
    """

    username: str = setting("", Text())
    password_file: str = setting("", Text("a file name"))
    hello: int = setting(0, HelloVersion())
    client_name: str | None = setting(None, Maybe(Text()))
    max_reply_length: int = setting(1 << 20, Integer(1))


class RedisError(Exception):
    """
    An error reply of the server to a command (C{-ERR ...}, C{-WRONGTYPE
    ...}): the command's own error. The connection goes on.

    @ivar kind: the error's first word (C{"ERR"}, C{"WRONGTYPE"}, ...).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.kind = message.split(" ", 1)[0]


class Reply:
    """
    One RESP reply: whether it is an error, the text of a simple string or
    an error (empty for other types), and its value.

    The value is what the reply says, in Python: C{bytes} for simple,
    bulk and verbatim strings, C{int} for integers and big numbers,
    C{float} for doubles, C{bool} for booleans, L{None} for nulls, a
    C{list} for arrays and sets, a C{dict} for maps (with keys made
    hashable: a list becomes a tuple), and a L{RedisError} for an error
    inside an aggregate (the text for an error reply). Equality compares
    the text and whether it is an error.
    """

    __slots__ = ("error", "text", "value")

    def __init__(self, text: bytes, error: bool = False, value: object = _TEXT) -> None:
        self.text = text
        self.error = error
        self.value: object = text if value is _TEXT else value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Reply):
            return NotImplemented
        return (self.text, self.error) == (other.text, other.error)

    def __hash__(self) -> int:
        return hash((self.text, self.error))

    def __repr__(self) -> str:
        return f"Reply({self.text!r}, error={self.error})"


class _Step(enum.Enum):
    WAIT = "more bytes are needed"
    OPENED = "an aggregate or a bulk string has begun"
    ATTRIBUTE = "an attribute ended; it annotates the next value"


_LINE_TYPES = frozenset(b"+-:_#,(")
_BULK_TYPES = frozenset(b"$!=")
_AGGREGATE_TYPES = frozenset(b"*%~>|")
_PUSH, _ATTRIBUTE, _ERROR, _BLOB_ERROR, _MAP, _VERBATIM = b">|-!%="
_NULL = Reply(b"", value=None)


def _lineValue(kind: int, line: bytes) -> object:
    """
    The value of a one-line reply of type C{kind}.

    @raise ProtocolError: the line is not a value of that type.
    """
    try:
        if kind == 0x3A or kind == 0x28:  # ':' integer, '(' big number
            return int(line)
        if kind == 0x2C:  # ',' double
            return float(line)
    except ValueError:
        raise ProtocolError(f"bad number {line[:40]!r}") from None
    if kind == 0x5F:  # '_' null
        return None
    if kind == 0x23:  # '#' boolean
        if line not in (b"t", b"f"):
            raise ProtocolError(f"bad boolean {line[:40]!r}")
        return line == b"t"
    return line


def _hashable(value: object) -> object:
    if isinstance(value, list):
        return tuple(_hashable(item) for item in value)
    if isinstance(value, dict):
        return tuple((_hashable(k), _hashable(v)) for k, v in value.items())
    return value


@attrs.define
class _Open:
    """
    An aggregate being parsed: its type byte, how many values it still
    needs, and those it has.
    """

    kind: int
    remaining: int
    items: list[object] = attrs.field(factory=list)


class RespParser:
    """
    RESP2 and RESP3 replies from a byte stream, parsed incrementally: what
    is consumed of an unfinished reply is never parsed again, so the cost is
    linear in the bytes received however they are split. Nesting is tracked
    on an explicit stack, not by recursion.

    A push (C{>}) at the top is no answer to a command: it is given as
    L{None}. An attribute (C{|}) annotates the value after it and is dropped.
    """

    def __init__(self, maxReplyLength: int, maxDepth: int = MAX_DEPTH) -> None:
        self.maxReplyLength = maxReplyLength
        self.maxDepth = maxDepth
        self.buffer = bytearray()
        self._searched = 0
        self._stack: list[_Open] = []
        self._bulk: tuple[int, int] | None = None
        self._used = 0

    def feed(self, data: bytes) -> Iterator[Reply | None]:
        """
        The replies C{data} completes, in order.

        @raise ProtocolError: the bytes are not RESP, a reply is longer than
            C{maxReplyLength} or nested deeper than C{maxDepth}.
        """
        self.buffer += data
        while True:
            value = self._element()
            if value is _Step.WAIT:
                if self._used + len(self.buffer) > self.maxReplyLength:
                    raise self._tooLong()
                return
            if value is _Step.OPENED:
                continue
            reply = self._complete(value)
            if reply is not _Step.WAIT:
                yield reply

    def _element(self) -> Reply | _Step | None:
        """
        Consume one element (or the header of one) from the buffer.
        """
        buffer = self.buffer
        if self._bulk is not None:
            kind, length = self._bulk
            if len(buffer) < length + 2:
                return _Step.WAIT
            if buffer[length : length + 2] != b"\r\n":
                raise ProtocolError("a bulk string does not end in CRLF")
            body = bytes(buffer[:length])
            self._consume(length + 2)
            self._bulk = None
            if kind == _VERBATIM:
                # Three bytes of format and a colon, then the text.
                return Reply(body, value=body[4:])
            return Reply(body, error=kind == _BLOB_ERROR)
        end = buffer.find(b"\r\n", self._searched)
        if end < 0:
            self._searched = max(0, len(buffer) - 1)
            return _Step.WAIT
        kind = buffer[0]
        line = bytes(buffer[1:end])
        self._consume(end + 2)
        if kind in _LINE_TYPES:
            if kind == _ERROR:
                return Reply(line, error=True)
            return Reply(line, value=_lineValue(kind, line))
        if kind not in _BULK_TYPES and kind not in _AGGREGATE_TYPES:
            raise ProtocolError(f"unknown RESP type byte {bytes([kind])!r}")
        if len(line) > _MAX_LENGTH_DIGITS:
            raise ProtocolError(f"bad length {line[:_MAX_LENGTH_DIGITS]!r}...")
        try:
            length = int(line)
        except ValueError:
            raise ProtocolError(f"bad length {line!r}") from None
        if kind in _BULK_TYPES:
            if length < 0:
                return _NULL
            if self._used + length + 2 > self.maxReplyLength:
                raise self._tooLong()
            self._bulk = (kind, length)
            return _Step.OPENED
        if length < 0:
            return _NULL
        count = length * (2 if kind in b"%|" else 1)
        if count == 0:
            return self._closed(_Open(kind, 0))
        if len(self._stack) >= self.maxDepth:
            raise ProtocolError(f"a reply nested deeper than {self.maxDepth} levels")
        self._stack.append(_Open(kind, count))
        return _Step.OPENED

    def _complete(self, value: Reply | _Step | None) -> Reply | Literal[_Step.WAIT] | None:
        """
        Count a finished value in the aggregates that hold it; return the
        reply it finishes, or L{_Step.WAIT} when it finishes none.
        """
        stack = self._stack
        while stack:
            top = stack[-1]
            if value is not _Step.ATTRIBUTE:
                top.remaining -= 1
                top.items.append(_inner(value))
            if top.remaining:
                return _Step.WAIT
            stack.pop()
            value = self._closed(top)
        if isinstance(value, _Step):
            return _Step.WAIT  # an attribute: the reply is the value after it
        self._used = 0
        return value

    def _closed(self, aggregate: _Open) -> Reply | _Step | None:
        kind = aggregate.kind
        if kind == _PUSH:
            return None
        if kind == _ATTRIBUTE:
            return _Step.ATTRIBUTE
        items = aggregate.items
        if kind == _MAP:
            pairs = zip(items[::2], items[1::2], strict=True)
            return Reply(b"", value={_hashable(k): v for k, v in pairs})
        return Reply(b"", value=items)

    def _consume(self, count: int) -> None:
        del self.buffer[:count]
        self._searched = 0
        self._used += count
        if self._used > self.maxReplyLength:
            raise self._tooLong()

    def _tooLong(self) -> ProtocolError:
        return ProtocolError(f"reply longer than {self.maxReplyLength} bytes")


def _inner(value: Reply | _Step | None) -> object:
    """
    What a finished element stands for inside an aggregate.
    """
    if isinstance(value, Reply):
        if value.error:
            return RedisError(value.text.decode("utf-8", "replace"))
        return value.value
    return None


def encodeCommand(*words: bytes) -> bytes:
    """
    One command as a RESP array of bulk strings.
    """
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        parts.append(b"$%d\r\n%s\r\n" % (len(word), word))
    return b"".join(parts)


Word = bytes | str | int | float
"""One word of a command: bytes as they are, a string in UTF-8, a number
in decimal."""

REFUSED_COMMANDS = frozenset(
    {
        b"SUBSCRIBE",
        b"PSUBSCRIBE",
        b"SSUBSCRIBE",
        b"MONITOR",
        b"QUIT",
        b"RESET",
        b"HELLO",
        b"SYNC",
        b"PSYNC",
    }
)
"""Commands an application may not send through L{RedisProtocol.command}:
their replies do not come one per command (subscriptions, MONITOR,
replication), or they change the connection under the supervisor (QUIT,
RESET, HELLO)."""


def encodeWord(word: Word) -> bytes:
    """
    C{word} as the bytes of a command's argument.

    @raise TypeError: not bytes, a string or a number (a bool is refused:
        C{True} is no Redis value).
    """
    if isinstance(word, bytes):
        return word
    if isinstance(word, str):
        return word.encode("utf-8")
    if isinstance(word, int | float) and not isinstance(word, bool):
        return repr(word).encode("ascii")
    raise TypeError(f"a command's words are bytes, str, int or float, got {type(word).__name__}")


def checkedCommand(words: tuple[Word, ...] | list[bytes]) -> list[bytes]:
    """
    The words of a command an application may send, encoded.

    @raise ValueError: no words, or a command in L{REFUSED_COMMANDS} (or
        C{CLIENT REPLY}).
    @raise TypeError: a word that is not bytes, str, int or float.
    """
    encoded = [encodeWord(word) for word in words]
    if not encoded:
        raise ValueError("a command has at least one word")
    verb = encoded[0].upper()
    if verb in REFUSED_COMMANDS or (
        verb == b"CLIENT" and len(encoded) > 1 and encoded[1].upper() == b"REPLY"
    ):
        raise ValueError(f"{verb.decode('ascii', 'replace')} cannot be sent as a command")
    return encoded


class RedisProtocol(RequestingProtocol[Reply | None]):
    """
    One connection speaking RESP.

    @ivar commands: the Deferreds of the application's commands in flight,
        oldest first (their replies come in order, among the others in
        L{pipeline}).
    """

    PING = encodeCommand(b"PING")
    GOODBYE = encodeCommand(b"QUIT")

    def __init__(self, handle: IConnectionHandle, options: Options) -> None:
        super().__init__(handle, RespParser(options.max_reply_length))
        self.options = options
        self.clientName = handle.name if options.client_name is None else options.client_name
        self.commands: deque[Deferred[object]] = deque()

    def command(self, *words: Word) -> Deferred[object]:
        """
        Send one command; fire with its reply's value (see L{Reply}), or
        fail with L{RedisError} for an error reply, or with
        L{supervisor.operations.ConnectionLost} when the connection goes
        away first.

        @raise ValueError: no words, or a command in L{REFUSED_COMMANDS}.
        @raise TypeError: a word that is not bytes, str, int or float.
        """
        encoded = checkedCommand(words)
        reply: Deferred[object] = Deferred()
        self.commands.append(reply)
        self.request(("command", b""), encodeCommand(*encoded))
        return reply

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        commands, self.commands = self.commands, deque()
        self.failWaiting(commands, "lost with the command in flight")
        super().connectionLost(reason)

    def connectionMade(self) -> None:
        options = self.options
        password = self.secretFrom("password_file", options.password_file)
        if self.rejected:
            return  # nothing is sent
        user = options.username.encode("utf-8")
        name = self.clientName.encode("utf-8")
        commands: list[tuple[bytes, ...]] = []
        if options.hello:
            words: tuple[bytes, ...] = (b"HELLO", b"%d" % options.hello)
            if password is not None:
                words += (b"AUTH", user or b"default", password)
            if name:
                words += (b"SETNAME", name)
            commands.append(words)
        else:
            if password is not None:
                commands.append((b"AUTH", user, password) if user else (b"AUTH", password))
            if name:
                commands.append((b"CLIENT", b"SETNAME", name))
        commands.append((b"PING",))
        for words in commands:
            self.pipeline.sent(("handshake", words[0]))
        self.write(b"".join(encodeCommand(*words) for words in commands))

    def received(self, reply: Reply | None) -> None:
        if reply is None:
            return  # a push: no answer to a command
        answered = self.pipeline.answered()
        if answered is None:
            self.reject(f"unexpected reply {reply.text.decode('utf-8', 'replace')!r}", False)
            return
        what, detail = answered
        if what == "command":
            waiting = self.commands.popleft()
            if reply.error:
                waiting.errback(failureOf(RedisError(reply.text.decode("utf-8", "replace"))))
            else:
                waiting.callback(reply.value)
        elif not reply.error:
            self.succeeded(answered)
        elif what == "drain":
            self.drained()
        else:
            message = reply.text.decode("utf-8", "replace")
            permanent = reply.text.startswith(PERMANENT_ERRORS)
            overloaded = reply.text.startswith(OVERLOADED_ERRORS)
            verb = detail.decode("ascii", "replace") if what == "handshake" else "PING"
            self.reject(f"{verb} failed: {message}", permanent, overloaded)


redisPlugin = BundledPlugin("redis", Options, RedisProtocol)


def command(connection: Submitter, *words: Word) -> Deferred[object]:
    """
    Send one command on a supervised C{redis} connection or pool, in turn
    with what was submitted before it: C{command(pool, "INCR", "hits")}.

    @return: fires with the reply's value (C{int}, C{bytes}, C{list}, ...:
        see L{Reply}); fails with L{RedisError} for an error reply (the
        command's own error), or as any submitted operation
        (L{supervisor.operations}): L{supervisor.operations.ConnectionLost}
        when the connection went away before the reply came (the command
        may or may not have been executed).
    @raise ValueError: no words, or a command that cannot be sent this way
        (L{REFUSED_COMMANDS}); nothing is submitted.
    @raise TypeError: a word that is not bytes, str, int or float.
    """
    encoded = checkedCommand(words)

    def send(protocol: object) -> Deferred[object]:
        return speaking(protocol, RedisProtocol, "redis").command(*encoded)

    return connection.submit(send)
