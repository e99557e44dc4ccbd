"""
What the bundled plugins share: the plugin object (L{BundledPlugin}) and its
options' base class (L{CheckedOptions}); a protocol base that rejects once,
with secrets read from files kept out of every message (L{PluginProtocol});
reading the peer's bytes in linear time with a bound on what is buffered
(L{ReadingProtocol}, L{LineReader}); and requests answered in order, with a
drain that waits for its answer (L{RequestingProtocol}).

Private to the bundled plugins: a third-party plugin may copy from it, but
should not import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, Literal, Self, TypeVar
from typing import Protocol as TypingProtocol

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from supervisor.eagerwrite import eagerWrite
from supervisor.interfaces import (
    IConfigurable,
    IConnectionHandle,
    IDrainable,
    IProtocolPlugin,
    ISupervisedProtocol,
)
from supervisor.operations import ConnectionLost
from supervisor.options import Check, structure
from supervisor.pipeline import Pipeline
from supervisor.policy import failureOf

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
OptionsT = TypeVar("OptionsT", bound="CheckedOptions")

SHOWN = 200
"""The most characters of a rejection's message."""

_parsed: dict[tuple[type[CheckedOptions], frozenset[tuple[str, type, object]]], CheckedOptions] = {}
_PARSED_LIMIT = 4096
_NO_OPTIONS: frozenset[tuple[str, type, object]] = frozenset()


class ProtocolError(Exception):
    """
    The peer's bytes break the protocol; the message says how.
    """


P = TypeVar("P")


def speaking(protocol: object, kind: type[P], plugin: str) -> P:
    """
    C{protocol}, which an operation was given, as the protocol of the
    C{plugin} plugin (a typed helper's operation starts with this).

    @raise TypeError: the connection speaks another protocol.
    """
    if not isinstance(protocol, kind):
        raise TypeError(
            f"expected a connection speaking the {plugin} protocol, got one with "
            f"{type(protocol).__name__}"
        )
    return protocol


def batchOf(items: Iterable[bytes], what: str) -> list[bytes]:
    """
    C{items}, taken once (a generator is not read twice), as a list of
    L{bytes}: a batch a typed helper submits as one operation. Checked in
    time linear in its length, without a Python step per item.

    @param what: what an item is, for the message (C{"line"}, C{"frame"}).
    @raise TypeError: an item is not L{bytes} (C{str}, C{bytearray}, ...).
    """
    batch = list(items)
    # Exactly bytes, the usual case, in one pass in C (a third cheaper than
    # isinstance through map); a subclass of bytes goes the long way.
    if list(map(type, batch)).count(bytes) != len(batch):
        for index, item in enumerate(batch):
            if not isinstance(item, bytes):
                raise TypeError(f"{what} {index} of the batch is {type(item).__name__}, not bytes")
    return batch


class CheckedOptions:
    """
    The base of a plugin's options: a frozen attrs class whose fields are
    L{supervisor.options.setting}s, built from a connection's C{options}
    table by L{fromMapping}.
    """

    @classmethod
    def fromMapping(cls, options: Mapping[str, object]) -> Self:
        """
        The options of one connection.

        @raise supervisor.interfaces.OptionError: naming the key of an
            unknown option or of a value its check refuses.
        """
        return structure(cls, options)


@implementer(IPlugin, IProtocolPlugin, IConfigurable)
@attrs.frozen
class BundledPlugin(Generic[OptionsT]):
    """
    A bundled plugin: its options are checked by C{options.fromMapping},
    and each attempt's protocol is C{protocol(handle, parsedOptions)}.

    @ivar name: the configuration's C{protocol}.
    """

    name: str
    options: type[OptionsT]
    protocol: Callable[[IConnectionHandle, OptionsT], ISupervisedProtocol]

    def parseOptions(self, options: Mapping[str, object]) -> OptionsT:
        # Options are frozen values: connections with equal options (most of
        # a large fleet) share one, parsed once. The key has each value's
        # type, since 1 == 1.0 == True and a check may take one, not another.
        try:
            key = (
                (self.options, _NO_OPTIONS)
                if not options
                else (self.options, frozenset((k, type(v), v) for k, v in options.items()))
            )
            return _parsed[key]  # type: ignore[return-value]
        except TypeError:  # a value that is not hashable (a list): not shared
            return self.options.fromMapping(options)
        except KeyError:
            pass
        parsed = self.options.fromMapping(options)
        if len(_parsed) >= _PARSED_LIMIT:
            _parsed.clear()
        _parsed[key] = parsed
        return parsed

    def buildProtocol(self, handle: IConnectionHandle, options: OptionsT) -> ISupervisedProtocol:
        return self.protocol(handle, options)


@attrs.frozen
class Maybe(Generic[T]):
    """
    A setting that may be left unset: its default is L{None} (which a TOML
    file cannot write), and any value it is given is checked by C{inner}.
    """

    inner: Check[T]

    def expected(self) -> str:
        return self.inner.expected()

    def check(self, value: object, key: str) -> T | None:
        return None if value is None else self.inner.check(value, key)


def readSecret(path: str) -> bytes:
    """
    The secret in the file at C{path}, without one trailing newline
    (C{\\n} or C{\\r\\n}).

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
    return message if len(message) <= SHOWN else message[: SHOWN - 3] + "..."


class PluginProtocol(Protocol):
    """
    A bundled plugin's protocol: it rejects its connection at most once,
    with every secret it read removed from the message.

    @ivar handle: how it talks to the supervisor.
    @ivar secrets: what L{secretFrom} read, kept out of every message.
    @ivar rejected: whether L{reject} was called; nothing the peer sends
        is read after that.
    """

    def __init__(self, handle: IConnectionHandle) -> None:
        self.handle = handle
        # A tuple: most connections read no secret, and ten thousand empty
        # lists are half a megabyte.
        self.secrets: tuple[bytes, ...] = ()
        self.rejected = False

    def reject(self, message: str, permanent: bool, overloaded: bool = False) -> None:
        """
        Reject the connection, once: later calls do nothing.

        @param overloaded: the peer said it is overloaded (see
            L{supervisor.interfaces.IConnectionHandle.reject}).
        """
        if not self.rejected:
            self.rejected = True
            text = redact(message.encode("utf-8", "surrogateescape"), self.secrets)
            self.handle.reject(text, permanent, overloaded)

    def secretFrom(self, key: str, path: str) -> bytes | None:
        """
        The secret in the file at C{path} (named by the option C{key}), kept
        out of every later message; L{None} when C{path} is empty (no
        secret), or after a transient rejection when the file cannot be read
        (the next attempt reads it again, so a secret mounted late is picked
        up): check L{rejected}.
        """
        if not path:
            return None
        try:
            secret = readSecret(path)
        except OSError as e:
            self.reject(f"cannot read {key} {path}: {e.strerror}", permanent=False)
            return None
        self.secrets += (secret,)
        return secret

    def failWaiting(self, waiting: Iterable[Deferred[Any]], why: str) -> None:
        """
        Fail each of C{waiting} with L{supervisor.operations.ConnectionLost}
        saying C{why}: the connection went before the peer answered them.
        """
        for answer in waiting:
            answer.errback(failureOf(ConnectionLost(self.handle.name, why)))

    def write(self, data: bytes) -> None:
        """
        Write C{data} to the peer.
        """
        assert self.transport is not None
        self.transport.write(data)

    def writePing(self, data: bytes) -> None:
        """
        Write a heartbeat ping: at once when nothing waits to be sent before
        it (L{eagerWrite}), which costs less than the transport's round
        through the reactor for one small write. Only pings, one per
        heartbeat: the many writes of one turn (answers to a pipelining
        peer) are better buffered by the transport and sent together.
        """
        assert self.transport is not None
        eagerWrite(self.transport, data)


class Reader(TypingProtocol[T_co]):
    """
    Turns the peer's bytes into the protocol's units (lines, frames,
    replies), in time linear in the bytes, holding a bounded number of them.
    """

    def feed(self, data: bytes) -> Iterator[T_co]:
        """
        The units C{data} completes, in order.

        @raise ProtocolError: the bytes break the protocol (a unit too
            long, nested too deep, malformed).
        """


class ReadingProtocol(PluginProtocol, Generic[T]):
    """
    A L{PluginProtocol} that reads its peer through a L{Reader}: each unit
    goes to L{received}; bytes that break the protocol reject the connection
    (transient) with the reader's message.
    """

    def __init__(self, handle: IConnectionHandle, reader: Reader[T]) -> None:
        super().__init__(handle)
        self.reader = reader

    def dataReceived(self, data: bytes) -> None:
        if self.rejected:
            return
        try:
            for unit in self.reader.feed(data):
                self.received(unit)
                if self.rejected:
                    return
        except ProtocolError as e:
            self.reject(str(e), permanent=False)

    def received(self, unit: T) -> None:
        """
        One unit of the protocol arrived.
        """
        raise NotImplementedError()


Request = tuple[Literal["handshake", "ping", "drain", "command", "flush"], bytes]
"""What an answer answers: a step of the handshake, a ping (with its
token), the drain's goodbye, or an application's request (a command, the
flush that confirms publishes): the protocol handles those itself."""


@implementer(ISupervisedProtocol, IDrainable)
class RequestingProtocol(ReadingProtocol[T]):
    """
    A protocol whose peer answers its requests in order, with answers that
    say nothing of the request (Redis, NATS): what each coming answer
    answers is kept in a L{Pipeline}. A ping is one request; the drain is
    another, done when it is answered or the peer closes.

    @cvar PING: the bytes of a ping.
    @cvar GOODBYE: the bytes of the drain's request.
    """

    PING: bytes
    GOODBYE: bytes

    def __init__(self, handle: IConnectionHandle, reader: Reader[T]) -> None:
        super().__init__(handle, reader)
        self.pipeline: Pipeline[Request] = Pipeline()
        self.draining: Deferred[None] | None = None
        self.ready = False

    def request(self, what: Request, data: bytes) -> None:
        """
        Write C{data}, whose answer answers C{what}.
        """
        self.pipeline.sent(what)
        self.write(data)

    def succeeded(self, what: Request) -> None:
        """
        The answer to C{what} is a success: the last step of the handshake
        makes the connection ready, a ping's answer is its pong, and the
        drain's completes the goodbye.
        """
        kind, detail = what
        if kind == "handshake":
            if not any(step == "handshake" for step, _ in self.pipeline):
                self.ready = True
                self.handle.ready()
        elif kind == "ping":
            self.handle.pong(detail)
        else:
            self.drained()

    def sendPing(self, token: bytes) -> None:
        self.pipeline.sent(("ping", token))
        self.writePing(self.PING)

    def drain(self) -> Deferred[None]:
        if self.draining is None:
            self.draining = Deferred()
            self.request(("drain", b""), self.GOODBYE)
        return self.draining

    def drained(self) -> None:
        """
        The goodbye is complete: the transport may be closed.
        """
        draining, self.draining = self.draining, None
        if draining is not None:
            draining.callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # A peer that closes first has said goodbye too.
        self.drained()


class LineReader:
    """
    Lines ending in C{delimiter}, without it. Each byte is searched once, and
    an unfinished line longer than C{maxLength} is refused as soon as it is.
    """

    def __init__(self, delimiter: bytes, maxLength: int) -> None:
        self.delimiter = delimiter
        self.maxLength = maxLength
        self.buffer = bytearray()
        self._searched = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        delimiter = self.delimiter
        end = len(data) - len(delimiter)
        if not self.buffer and data.find(delimiter) == end >= 0 and end <= self.maxLength:
            # A whole line in one read, as a pong mostly is: not copied
            # through the buffer.
            return iter((data[:end],))
        return self._lines(data)

    def _lines(self, data: bytes) -> Iterator[bytes]:
        buffer, delimiter = self.buffer, self.delimiter
        buffer += data
        while True:
            end = buffer.find(delimiter, self._searched)
            if end < 0:
                break
            if end > self.maxLength:
                raise self._tooLong()
            line = bytes(buffer[:end])
            del buffer[: end + len(delimiter)]
            self._searched = 0
            yield line
        # A delimiter may begin in the last bytes: search them again.
        self._searched = max(0, len(buffer) - len(delimiter) + 1)
        if self._searched > self.maxLength:
            raise self._tooLong()

    def _tooLong(self) -> ProtocolError:
        return ProtocolError(f"line longer than {self.maxLength} bytes")
