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
the connection's name), C{max_line_length} (int, default 1 MiB: the longest
line, and the longest message payload, accepted).

Applications publish with L{publish} (confirmed once the server has the
message: a C{PING} after it is answered) and subscribe with L{subscribe}, on
a supervised connection or pool.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Iterator

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from plugins._support import (
    BundledPlugin,
    CheckedOptions,
    Maybe,
    ProtocolError,
    RequestingProtocol,
    speaking,
)
from supervisor.interfaces import IConnectionHandle
from supervisor.operations import Submitter
from supervisor.options import Integer, Text, quote, setting
from supervisor.policy import failureOf

log = Logger(namespace="netsupervisor.plugins.nats")

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


DEFAULT_MAX_PAYLOAD = 1 << 20
"""The largest payload to publish when the server's C{INFO} names none."""

_SUBJECT = re.compile(rb"[^\x00-\x20\x7f]{1,1024}")
_PERMISSION_TO_PUBLISH = re.compile(r'permissions violation for publish to "?([^"\s]*)"?', re.I)


class NatsError(Exception):
    """
    The server refused a publish (C{-ERR 'Permissions Violation for
    Publish to ...'}): the publish's own error.
    """


@attrs.frozen
class Message:
    """
    One message of a subscription.

    @ivar subject: the subject it was published to.
    @ivar sid: the subscription's id.
    @ivar reply: its reply subject, or C{b""}.
    @ivar payload: its bytes.
    @ivar headers: the raw header block of an C{HMSG} (C{b""} for a C{MSG}).
    """

    subject: bytes
    sid: int
    reply: bytes
    payload: bytes
    headers: bytes = b""


class NatsReader:
    """
    The server's lines, and each C{MSG}/C{HMSG} with its payload read by
    its byte count (it may hold line breaks), in time linear in the bytes
    received; a line, or a payload, longer than C{maxLength} is refused as
    soon as it is announced.
    """

    def __init__(self, maxLength: int) -> None:
        self.maxLength = maxLength
        self.buffer = bytearray()
        self._searched = 0
        self._expected: tuple[bytes, int] | None = None

    def feed(self, data: bytes) -> Iterator[bytes | tuple[bytes, bytes]]:
        """
        The lines and the C{(header line, payload)} of messages C{data}
        completes, in order.
        """
        buffer = self.buffer
        buffer += data
        while True:
            if self._expected is not None:
                header, size = self._expected
                if len(buffer) < size + 2:
                    return
                if buffer[size : size + 2] != b"\r\n":
                    raise ProtocolError("a message's payload does not end in CRLF")
                payload = bytes(buffer[:size])
                del buffer[: size + 2]
                self._expected = None
                yield header, payload
                continue
            end = buffer.find(b"\r\n", self._searched)
            if end < 0:
                self._searched = max(0, len(buffer) - 1)
                if self._searched > self.maxLength:
                    raise ProtocolError(f"line longer than {self.maxLength} bytes")
                return
            if end > self.maxLength:
                raise ProtocolError(f"line longer than {self.maxLength} bytes")
            line = bytes(buffer[:end])
            del buffer[: end + 2]
            self._searched = 0
            verb = line.split(b" ", 1)[0].upper()
            if verb in (b"MSG", b"HMSG"):
                size = _lastNumber(line)
                if size > self.maxLength:
                    raise ProtocolError(f"message of {size} bytes is longer than {self.maxLength}")
                self._expected = (line, size)
            else:
                yield line


def _lastNumber(line: bytes) -> int:
    last = line.rsplit(b" ", 1)[-1]
    if not last.isdigit() or len(last) > 12:
        raise ProtocolError(f"bad message length in {line[:80]!r}")
    return int(last)


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


class _Publish:
    """
    One publish waiting for its confirmation.
    """

    __slots__ = ("confirmed", "subject")

    def __init__(self, subject: bytes) -> None:
        self.subject = subject
        self.confirmed: Deferred[None] = Deferred()


class NatsProtocol(RequestingProtocol[bytes | tuple[bytes, bytes]]):
    """
    One connection speaking the NATS client protocol. Its drain is a flush:
    a C{PING}, whose C{PONG} the server sends after processing all before it.

    Publishes are confirmed the same way: at most one flush C{PING} is in
    flight; the publishes written before it are confirmed by its C{PONG},
    and those written meanwhile by the next flush, sent then.

    @ivar unconfirmed: publishes written and waiting for the next flush.
    @ivar confirming: publishes waiting for the flush in flight.
    @ivar subscriptions: the callback of each subscription, by id.
    """

    PING = GOODBYE = b"PING\r\n"

    def __init__(self, handle: IConnectionHandle, options: Options) -> None:
        super().__init__(handle, NatsReader(options.max_line_length))
        self.options = options
        self.clientName = handle.name if options.client_name is None else options.client_name
        self.greeted = False
        self.serverInfo: dict[str, object] = {}
        self.unconfirmed: list[_Publish] = []
        self.confirming: deque[_Publish] = deque()
        self.subscriptions: dict[int, Callable[[Message], object]] = {}
        self._sids = 0

    def send(self, line: bytes) -> None:
        self.write(line + b"\r\n")

    # The application's.

    def publish(
        self, subject: bytes | str, payload: bytes, reply: bytes | str = b""
    ) -> Deferred[None]:
        """
        Publish C{payload} to C{subject}; fire once the server has it (the
        C{PONG} of a C{PING} sent after it), fail with L{NatsError} when the
        server refuses it, or with L{supervisor.operations.ConnectionLost}
        when the connection goes away first.

        @raise ValueError: a subject (or reply subject) that is empty or
            holds white space or control characters, or a payload larger
            than the server's C{max_payload}.
        """
        subjectBytes = _subject(subject)
        replyBytes = _subject(reply) if reply else b""
        limit = self.serverInfo.get("max_payload", DEFAULT_MAX_PAYLOAD)
        if isinstance(limit, int) and len(payload) > limit:
            raise ValueError(f"a payload of {len(payload)} bytes is over max_payload {limit}")
        words = [b"PUB", subjectBytes, *([replyBytes] if replyBytes else []), b"%d" % len(payload)]
        self.write(b" ".join(words) + b"\r\n" + payload + b"\r\n")
        waiting = _Publish(subjectBytes)
        self.unconfirmed.append(waiting)
        if not self.confirming:
            self._flush()
        return waiting.confirmed

    def _flush(self) -> None:
        self.confirming.extend(self.unconfirmed)
        self.unconfirmed = []
        self.request(("flush", b""), b"PING\r\n")

    def subscribe(
        self, subject: bytes | str, onMessage: Callable[[Message], object], queue: bytes | str = b""
    ) -> int:
        """
        Subscribe to C{subject} (in the queue group C{queue}, if given) on
        this connection: C{onMessage} is called with each L{Message}. A
        subscription ends with the connection: subscribe again on the next.

        @return: the subscription's id (for L{unsubscribe}).
        @raise ValueError: a subject or queue group that is empty or holds
            white space or control characters.
        """
        subjectBytes = _subject(subject)
        queueBytes = _subject(queue) if queue else b""
        self._sids += 1
        sid = self._sids
        self.subscriptions[sid] = onMessage
        words = [b"SUB", subjectBytes, *([queueBytes] if queueBytes else []), b"%d" % sid]
        self.send(b" ".join(words))
        return sid

    def unsubscribe(self, sid: int) -> None:
        """
        End the subscription C{sid}.
        """
        if self.subscriptions.pop(sid, None) is not None:
            self.send(b"UNSUB %d" % sid)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        waiting = [*self.confirming, *self.unconfirmed]
        self.confirming, self.unconfirmed = deque(), []
        self.failWaiting(
            (publish.confirmed for publish in waiting), "lost before the server confirmed it"
        )
        super().connectionLost(reason)

    # The server's.

    def received(self, unit: bytes | tuple[bytes, bytes]) -> None:
        if isinstance(unit, tuple):
            self.messageReceived(*unit)
            return
        line = unit
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
        elif verb == b"+OK":
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

    def messageReceived(self, header: bytes, payload: bytes) -> None:
        """
        A C{MSG} or C{HMSG}: to its subscription, if it still has one.
        """
        words = header.split()
        if words[0].upper() == b"HMSG":
            # HMSG subject sid [reply] header-size total-size
            if len(words) not in (5, 6) or not words[-2].isdigit():
                self.reject(f"bad HMSG line {quote(header.decode('utf-8', 'replace'))}", False)
                return
            split = int(words[-2])
            headers, payload = payload[:split], payload[split:]
            words = words[:-1]
        else:
            headers = b""
        if len(words) not in (4, 5) or not words[2].isdigit():
            self.reject(f"bad MSG line {quote(header.decode('utf-8', 'replace'))}", False)
            return
        if self.ready:
            self.handle.activity()
        sid = int(words[2])
        onMessage = self.subscriptions.get(sid)
        if onMessage is None:
            return  # unsubscribed: the server had sent it already
        message = Message(words[1], sid, words[3] if len(words) == 5 else b"", payload, headers)
        try:
            onMessage(message)
        except Exception:
            log.failure(
                "subscription {sid} of {connection} failed", sid=sid, connection=self.handle.name
            )

    def pongReceived(self) -> None:
        answered = self.pipeline.answered()
        if answered is None:
            return  # an answer to nothing we sent: harmless
        if answered[0] != "flush":
            self.succeeded(answered)
            return
        confirmed, self.confirming = self.confirming, deque()
        if self.unconfirmed:
            self._flush()
        for publish in confirmed:
            if not publish.confirmed.called:
                publish.confirmed.callback(None)

    def errorReceived(self, text: str) -> None:
        lowered = text.lower()
        refused = _PERMISSION_TO_PUBLISH.match(text)
        if refused is not None:
            self.publishRefused(refused.group(1).encode("utf-8"), text)
            return
        if lowered.startswith(IGNORED_ERRORS):
            return
        permanent = lowered.startswith(PERMANENT_ERRORS)
        overloaded = lowered.startswith(OVERLOADED_ERRORS)
        self.reject(f"server error: {text}", permanent, overloaded)

    def publishRefused(self, subject: bytes, text: str) -> None:
        """
        The server refused a publish to C{subject}: the oldest publish to it
        that waits fails (the server answers in order).
        """
        for publish in [*self.confirming, *self.unconfirmed]:
            if publish.subject == subject and not publish.confirmed.called:
                publish.confirmed.errback(failureOf(NatsError(text)))
                return


def _subject(subject: bytes | str) -> bytes:
    """
    C{subject} (or a reply subject, or a queue group) as bytes.

    @raise ValueError: empty, longer than 1024 bytes, or holding white
        space or control characters (which would end it, or the line).
    """
    data = subject.encode("utf-8") if isinstance(subject, str) else subject
    if not _SUBJECT.fullmatch(data):
        raise ValueError(f"not a NATS subject: {data[:80]!r}")
    return data


natsPlugin = BundledPlugin("nats", Options, NatsProtocol)


def publish(
    connection: Submitter, subject: bytes | str, payload: bytes, reply: bytes | str = b""
) -> Deferred[None]:
    """
    Publish C{payload} to C{subject} on a supervised C{nats} connection or
    pool, in turn with what was submitted before it.

    @return: fires once the server has the message (it answered a C{PING}
        sent after it: it has processed the message, and passed it on to
        the subscriptions it knows); fails with L{NatsError} when the server
        refuses it, or as any submitted operation (L{supervisor.operations}):
        L{supervisor.operations.ConnectionLost} when the connection went
        away before the confirmation (the server may or may not have it).
    @raise ValueError: a subject that is empty or holds white space or
        control characters; nothing is submitted.
    """
    subjectBytes = _subject(subject)
    replyBytes = _subject(reply) if reply else b""

    def send(protocol: object) -> Deferred[None]:
        return speaking(protocol, NatsProtocol, "nats").publish(subjectBytes, payload, replyBytes)

    return connection.submit(send)


def subscribe(
    connection: Submitter,
    subject: bytes | str,
    onMessage: Callable[[Message], object],
    queue: bytes | str = b"",
) -> Deferred[int]:
    """
    Subscribe to C{subject} on a supervised C{nats} connection (or one
    member of a pool), in turn with what was submitted before it. The
    subscription lives as long as the connection it was made on: to keep
    one, subscribe again each time the connection becomes ESTABLISHED (see
    C{docs/library.md}).

    @return: fires with the subscription's id once C{SUB} is written.
    @raise ValueError: a subject or queue group that is empty or holds
        white space or control characters; nothing is submitted.
    """
    subjectBytes = _subject(subject)
    queueBytes = _subject(queue) if queue else b""

    def send(protocol: object) -> int:
        return speaking(protocol, NatsProtocol, "nats").subscribe(
            subjectBytes, onMessage, queueBytes
        )

    return connection.submit(send)
