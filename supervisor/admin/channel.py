"""
One admin client's connection: what it may send, how long it may take, and
how many answers it may leave unread.

Monitoring traffic must never take down the connections being supervised,
which share the reactor with it. So a client is answered one request at a
time: the next request it pipelined is parsed only once the previous answer
has left the process, and nothing more is read from it meanwhile. A client
that never reads its answers therefore costs one answer and one read's worth
of buffered requests, until L{ANSWER_TIMEOUT} closes it. Every phase of a
connection is bounded in time (L{IDLE_TIMEOUT}, L{REQUEST_TIMEOUT},
L{ANSWER_TIMEOUT}) and every request in size (L{MAX_BODY}, L{MAX_HEADERS},
and twisted.web's bounds on a line and on the whole head).
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any, Literal

from twisted.internet.interfaces import IConsumer, IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Request

from supervisor.admin.resources import JSON, POLICY
from supervisor.admin.views import dumps

__all__ = [
    "ANSWER_TIMEOUT",
    "IDLE_TIMEOUT",
    "MAX_BODY",
    "MAX_HEADERS",
    "REQUEST_TIMEOUT",
    "AdminChannel",
    "AdminRequest",
]

MAX_BODY = 1024
"""
The largest request body accepted, in bytes. No admin path needs a body; a
larger one is refused with 413 before any of it is read.
"""

MAX_HEADERS = 100
"""The most header lines in one request (twisted.web allows 500)."""

IDLE_TIMEOUT = 15.0
"""
Seconds a connection may wait for the first byte of a request: after it is
made, and after each answer has been sent (an idle keep-alive).
"""

REQUEST_TIMEOUT = 10.0
"""Seconds from the first byte of a request to its last (head and body)."""

ANSWER_TIMEOUT = 30.0
"""
Seconds from the end of a request until its answer has left the process
(handed to the kernel): a client that stops reading is closed after this.
"""

Phase = Literal["idle", "request", "answer"]

_STATUS = {413: b"Content Too Large"}


def _closingAnswer(code: int, message: str) -> bytes:
    """
    A whole HTTP/1.1 answer with a JSON error body, for a connection that is
    closed right after it: the headers every admin answer has, and
    C{Connection: close}.
    """
    body = dumps({"error": message})
    head = [
        b"HTTP/1.1 %d %s" % (code, _STATUS[code]),
        b"Content-Type: " + JSON,
        b"Content-Length: %d" % (len(body),),
        b"Cache-Control: no-store",
        b"X-Content-Type-Options: nosniff",
        b"Content-Security-Policy: " + POLICY,
        b"Connection: close",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class AdminRequest(Request):
    """
    A request whose body is kept in memory and refused past L{MAX_BODY}
    (twisted.web would spool a large or chunked body to a temporary file).
    """

    _body: BytesIO

    def gotLength(self, length: int | None) -> None:
        # The channel refuses a Content-Length over MAX_BODY before this.
        self.content = self._body = BytesIO()

    def _handleStar(self) -> None:
        # twisted.web answers a request for "*" itself (405, or 200 for
        # OPTIONS), past the site's Host check and without the headers of
        # every admin answer: the API answers it as a path it does not have.
        self.postpath = [b"*"]
        site: Any = self.channel.site  # type: ignore[attr-defined]
        try:
            self.render(site.getResourceFor(self))  # type: ignore[no-untyped-call]
        except BaseException:
            self.processingFailed(Failure())  # type: ignore[no-untyped-call]

    def handleContentChunk(self, data: bytes) -> None:
        if self._body.tell() + len(data) > MAX_BODY:
            channel = self.channel
            if isinstance(channel, AdminChannel):
                channel.refuseBody()
            return
        self._body.write(data)


class AdminChannel(HTTPChannel):
    """
    An HTTP/1.1 connection of the admin site, bounded as the module says.

    The channel registers with its transport as a pull producer: the
    transport then calls L{resumeProducing} each time it has handed every
    byte written to it to the kernel. After each answer the channel stops
    reading and parsing until that call.

    @ivar clock: times the phases of the connection.
    @ivar phase: C{"idle"} (waiting for a request), C{"request"} (receiving
        one) or C{"answer"} (answering it, until the answer is sent).
    @ivar gone: called once the connection is closed.
    """

    maxHeaders = MAX_HEADERS
    idleTimeout = IDLE_TIMEOUT
    requestTimeout = REQUEST_TIMEOUT
    answerTimeout = ANSWER_TIMEOUT

    clock: IReactorTime
    gone: Callable[[], None] = staticmethod(lambda: None)
    phase: Phase = "idle"
    _deadline: IDelayedCall | None = None
    _paced = False
    _unsent = False
    _refused = False

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[no-untyped-call]
        transport = self.transport
        if IConsumer.providedBy(transport) and IPushProducer.providedBy(transport):
            # HTTPChannel registered as a push producer, told only when more
            # than the transport's buffer size (64 KiB) is unsent.
            transport.unregisterProducer()
            transport.registerProducer(self, False)
            self._paced = True
        self._enter("idle")

    def _enter(self, phase: Phase) -> None:
        self.phase = phase
        seconds = {
            "idle": self.idleTimeout,
            "request": self.requestTimeout,
            "answer": self.answerTimeout,
        }[phase]
        if self._deadline is not None and self._deadline.active():
            self._deadline.reset(seconds)
        else:
            self._deadline = self.clock.callLater(seconds, self._expired)

    def _expired(self) -> None:
        self._deadline = None
        transport = self.transport
        if transport is None:
            return
        if self.phase == "idle":
            self.loseConnection()  # type: ignore[no-untyped-call]
        else:
            transport.abortConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        if data and self.phase == "idle":
            self._enter("request")
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def lineLengthExceeded(self, line: bytes) -> None:
        # LineReceiver would close the transport itself, with this channel
        # still registered as its producer.
        self.loseConnection()  # type: ignore[no-untyped-call]

    def allHeadersReceived(self) -> None:
        if self.length is not None and self.length > MAX_BODY:
            self.refuseBody()
            return
        super().allHeadersReceived()  # type: ignore[no-untyped-call]

    def allContentReceived(self) -> None:
        if self._refused:
            return
        self._enter("answer")
        super().allContentReceived()  # type: ignore[no-untyped-call]

    def requestDone(self, request: Request) -> None:
        # The answer is written: read and parse nothing more until it is sent.
        transport = self.transport
        if self._paced and transport is not None:
            self._unsent = True
            self.paused = True  # LineReceiver parses no further line
            super().pauseProducing()  # type: ignore[no-untyped-call]
            transport.pauseProducing()  # type: ignore[attr-defined]
        else:
            self._enter("idle")
        super().requestDone(request)  # type: ignore[no-untyped-call]

    def resumeProducing(self) -> None:
        """
        The transport has sent everything: if an answer was waiting to be
        sent, read again and parse the next request, if one was pipelined.
        """
        if not self._unsent:
            return
        self._unsent = False
        self.paused = False
        super().resumeProducing()  # type: ignore[no-untyped-call]
        # Bytes of a pipelined request already read: it is under way, with
        # the time a request has, not the idle connection's.
        self._enter("request" if getattr(self, "_buffer", b"") else "idle")
        LineReceiver.dataReceived(self, b"")  # type: ignore[no-untyped-call]

    def refuseBody(self) -> None:
        """
        Answer 413 for a body over L{MAX_BODY} and close, reading nothing more.
        """
        if self._refused:
            return
        self._refused = True
        transport = self.transport
        if transport is None:
            return
        transport.write(_closingAnswer(413, f"a request body may have at most {MAX_BODY} bytes"))
        self._enter("answer")
        self.loseConnection()  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
        self.gone()
