# mypy: disallow-untyped-calls=False, disallow-untyped-decorators=False
"""
Every bundled plugin against a hostile peer: what the peer sends is parsed
in time linear in its length however it is split, with a bound on what is
buffered and on nesting, and bytes that break the protocol end in one clean
rejection through the handle, never in an exception (which Twisted would log
as a traceback).

The protocols are driven directly, on a L{StringTransport}, with a handle
that records what they report.
"""

from __future__ import annotations

import itertools
import json
import time
import tracemalloc
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.interfaces import IProtocol
from twisted.internet.testing import StringTransport
from zope.interface import implementer

import plugins
from plugins.int32 import frame
from plugins.mqtt import packet
from supervisor import HeartbeatSpec, findPlugin
from supervisor.interfaces import IConnectionHandle

MSS = 1460
"""The bytes of one read from a peer sending full TCP segments."""

SMALL, LARGE = 1 << 16, 1 << 20
"""A small and a large input: their costs should be in the ratio of their sizes."""

FLOOR = 1e-3
"""Costs below a millisecond are mostly noise: they count as one."""

PLUGINS = Path(plugins.__file__).parent


@implementer(IConnectionHandle)
@attrs.define
class Handle:
    """
    Records what a protocol tells the supervisor.
    """

    name: str = "hostile-1"
    heartbeatSpec: HeartbeatSpec = attrs.field(factory=HeartbeatSpec)
    readies: int = 0
    pongs: list[bytes] = attrs.field(factory=list)
    activities: int = 0
    rejections: list[tuple[str, bool]] = attrs.field(factory=list)

    def ready(self) -> None:
        self.readies += 1

    def pong(self, token: bytes) -> None:
        self.pongs.append(token)

    def activity(self) -> None:
        self.activities += 1

    def reject(self, message: str, permanent: bool = True, overloaded: bool = False) -> None:
        self.rejections.append((message, permanent))


class Discarding(StringTransport):
    """
    The transport of a peer that never reads: what is written goes nowhere
    (bounding it is the supervisor's business, not the plugin's).
    """

    def write(self, data: bytes) -> None:
        pass

    def writeSequence(self, data: Any) -> None:
        pass


def connect(
    protocol: str,
    options: Mapping[str, object] | None = None,
    transport: StringTransport | None = None,
) -> tuple[IProtocol, Handle]:
    """
    A protocol of the plugin named C{protocol}, connected.
    """
    plugin = findPlugin(protocol)
    handle = Handle()
    built = plugin.buildProtocol(handle, plugin.parseOptions(dict(options or {})))  # type: ignore[attr-defined]
    built.makeConnection(transport or StringTransport())
    return built, handle


def feed(protocol: IProtocol, data: bytes, size: int = MSS) -> None:
    for start in range(0, len(data), size):
        protocol.dataReceived(data[start : start + size])


# What each plugin is given to parse: options, what the peer says first to
# get past the handshake, and a stream of a given size.

CONNACK = b"\x20\x02\x00\x00"
INFO = b'INFO {"server_id":"X","max_payload":1048576}\r\n'
BIG = {
    "line": {"max_line_length": 8 * LARGE},
    "int32": {"max_frame_length": 8 * LARGE},
    "redis": {"max_reply_length": 8 * LARGE},
    "nats": {"max_line_length": 8 * LARGE},
    "mqtt": {"max_packet_length": 8 * LARGE},
    "http": {"max_body_length": 8 * LARGE},
}


def oneLongUnit(protocol: str, size: int) -> bytes:
    """
    One line, frame, reply, packet or body of C{size} bytes.
    """
    payload = b"x" * size
    if protocol == "line":
        return payload + b"\n"
    if protocol == "int32":
        return frame(payload)
    if protocol == "redis":
        return b"$%d\r\n%s\r\n" % (size, payload)
    if protocol == "nats":
        return INFO + b'INFO {"x":"' + payload + b'"}\r\n'
    if protocol == "mqtt":
        return CONNACK + packet(3, 0, payload)
    assert protocol == "http"
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (size, payload)


def manySmallUnits(protocol: str, size: int) -> bytes:
    """
    About C{size} bytes of small lines, frames, elements or packets.
    """
    if protocol == "line":
        return b"status=ok\n" * (size // 10)
    if protocol == "int32":
        return frame(b"event!") * (size // 10)
    if protocol == "redis":
        return b"*%d\r\n" % (size // 4) + b":1\r\n" * (size // 4)
    if protocol == "nats":
        return INFO + b"+OK\r\n" * (size // 5)
    if protocol == "mqtt":
        return CONNACK + b"\xd0\x00" * (size // 2)
    assert protocol == "http"
    chunks = b"1\r\nx\r\n" * (size // 6)
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"


def cost(protocol: str, stream: Callable[[str, int], bytes], size: int, read: int) -> float:
    """
    The least CPU time, of three runs, taken to parse C{stream(protocol,
    size)} delivered in reads of C{read} bytes.
    """
    data = stream(protocol, size)
    best = float("inf")
    for _ in range(3):
        built, handle = connect(protocol, BIG[protocol])
        started = time.process_time()
        feed(built, data, read)
        best = min(best, time.process_time() - started)
        assert handle.rejections == [], handle.rejections
    return best


ALL = sorted(BIG)


@pytest.mark.parametrize("protocol", ALL)
@pytest.mark.parametrize(
    "stream, small, large",
    [(oneLongUnit, 4 * SMALL, 4 * LARGE), (manySmallUnits, SMALL // 4, LARGE // 4)],
)
def test_parsingIsLinearInTheBytesReceived(
    protocol: str, stream: Callable[[str, int], bytes], small: int, large: int
) -> None:
    """
    Sixteen times the bytes, in reads of 1,460 bytes, cost about sixteen
    times as much: an incomplete unit is not parsed again from its start at
    each read, and consumed bytes are not copied again. (Quadratic parsing
    costs hundreds of times more; the bound leaves room for a busy machine.)
    """
    assert cost(protocol, stream, large, MSS) < 48 * max(cost(protocol, stream, small, MSS), FLOOR)


def test_aMegabyteRedisReplyInSegmentsIsParsedOnce() -> None:
    """
    A reply of a megabyte (an array of small values) arriving in 1,460-byte
    reads costs about sixteen times one of 64 KiB: the parser resumes where
    it stopped, instead of parsing the reply again from its start at every
    read (which cost minutes of CPU).
    """
    small = cost("redis", manySmallUnits, SMALL, MSS)
    large = cost("redis", manySmallUnits, LARGE, MSS)
    assert large < 48 * max(small, FLOOR), (small, large)


@pytest.mark.parametrize("protocol", ALL)
def test_manySmallUnitsInOneReadAreLinearToo(protocol: str) -> None:
    """
    Small units in one big read: each consumed unit is not copied again
    with the rest of the buffer.
    """
    small = cost(protocol, manySmallUnits, SMALL // 4, SMALL // 4)
    large = cost(protocol, manySmallUnits, LARGE // 4, LARGE // 4)
    assert large < 48 * max(small, FLOOR), (small, large)


# Bounds: what one unit may hold, how deep it may nest.


@pytest.mark.parametrize(
    "protocol, data",
    [
        ("line", b"x" * 20000),
        ("int32", b"\x7f\xff\xff\xff"),
        ("redis", b"$99999999\r\n"),
        ("redis", b"+" + b"x" * (1 << 20) + b"x"),
        ("redis", b"*1\r\n" * 5000),
        ("redis", b"*3\r\n" + b"%1\r\n" * 5000),
        ("nats", b"INFO " + b"x" * (1 << 20) + b"x"),
        ("nats", b"INFO " + b"[" * 5000 + b"]" * 5000 + b"\r\n"),
        ("nats", b"INFO " + b'{"a":' * 5000 + b"\r\n"),
        ("mqtt", b"\x30\xff\xff\xff\x7f"),
        ("mqtt", b"\x30\xff\xff\xff\xff\x01"),
    ],
)
def test_unitsTooLongOrTooDeepAreOneCleanTransientRejection(protocol: str, data: bytes) -> None:
    built, handle = connect(protocol)
    feed(built, data)
    feed(built, data)  # nothing is read after the rejection
    assert len(handle.rejections) == 1, handle.rejections
    message, permanent = handle.rejections[0]
    assert not permanent
    assert "\n" not in message and len(message) <= 200


def test_anEndlessHttpHeadIsOneCleanTransientRejection() -> None:
    built, handle = connect("http")
    feed(built, b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 20000)
    assert handle.rejections == [("response head longer than 65536 bytes", False)]


# A peer that pings and never reads.


@pytest.mark.parametrize(
    "protocol, ping",
    [
        ("line", b"PING abc\r\n"),
        ("int32", frame(b"PING abc")),
        ("nats", b"PING\r\n"),
    ],
)
def test_answersToAPeerThatNeverReadsAreNotKeptByThePlugin(protocol: str, ping: bytes) -> None:
    """
    Twenty thousand pings from a peer that reads nothing: every answer
    is handed to the transport at once (whose bound is the supervisor's),
    and the plugin keeps nothing of them: what its code still holds
    afterwards is a few kilobytes, not megabytes.
    """
    built, handle = connect(protocol, transport=Discarding())
    greeting = INFO if protocol == "nats" else b""
    burst = ping * 1000
    tracemalloc.start()
    try:
        feed(built, greeting)
        before = tracemalloc.take_snapshot()
        for _ in range(20):
            built.dataReceived(burst)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    mine = [tracemalloc.Filter(True, str(PLUGINS / "*"))]
    grown = sum(
        stat.size_diff
        for stat in after.filter_traces(mine).compare_to(before.filter_traces(mine), "filename")
    )
    assert grown < 64 * 1024, grown
    assert handle.rejections == []


# Generated byte streams.

TOKENS: dict[str, list[bytes]] = {
    "line": [b"PING", b"PONG", b" ", b"1", b"\r", b"\n", b"\r\n", b"x" * 100],
    "int32": [
        frame(b"PING 1"),
        frame(b"PONG 1"),
        frame(b""),
        b"\x00\x00\x00",
        b"\x00\x01\x00\x00",
        b"\xff\xff\xff\xff",
    ],
    "redis": [
        *(bytes([c]) for c in b"*$%|>~+-:!=_#,("),
        b"\r\n",
        b"0",
        b"1",
        b"2",
        b"-1",
        b"99",
        b"PONG",
        b"OK",
        b"WRONGPASS",
    ],
    "nats": [
        b"INFO ",
        b"{}",
        b'{"tls_required":false}',
        b"[",
        b"]",
        b"{",
        b"}",
        b'"',
        b"\\",
        b"PING",
        b"PONG",
        b"+OK",
        b"-ERR ",
        b"'Stale Connection'",
        b"MSG a 1 2",
        b"\r\n",
    ],
    "mqtt": [
        CONNACK,
        b"\x20\x02\x00\x05",
        b"\xd0\x00",
        packet(3, 0, b"\x00\x01tx"),
        b"\x30",
        b"\xff",
        b"\x7f",
        b"\x80",
    ],
    "http": [
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 503 Down\r\n",
        b"HTTP/1.0 401 No\r\n",
        b"Content-Length: 3\r\n",
        b"Content-Length: x\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Connection: close\r\n",
        b"\r\n",
        b"3\r\nabc\r\n",
        b"0\r\n\r\n",
        b"ffffffffffffffff\r\n",
        b"abc",
    ],
}


def streams(protocol: str) -> st.SearchStrategy[bytes]:
    """
    Byte strings made of the protocol's own tokens and of random bytes.
    """
    pieces = st.one_of(st.sampled_from(TOKENS[protocol]), st.binary(max_size=12))
    return st.lists(pieces, max_size=60).map(b"".join)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """
    C{data} split at the offsets in C{cuts}.
    """
    offsets = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(offsets)]


PERMANENT = {
    "line": (),
    "int32": (),
    "redis": ("failed: WRONGPASS",),
    "nats": (),
    "mqtt": ("CONNACK refused: 5",),
    "http": ("HTTP status 401",),
}


def endsCleanlyOrNotAtAll(protocol: str, stream: bytes, cuts: list[int]) -> None:
    """
    Whatever the peer sends, split however it is: no exception leaves the
    protocol, it rejects at most once, and a rejection is transient unless
    it is one of the protocol's known refusals.
    """
    options = {"max_frame_length": 64} if protocol == "int32" else {}
    built, handle = connect(protocol, options)
    for chunk in chunked(stream, cuts):
        built.dataReceived(chunk)
    assert len(handle.rejections) <= 1, handle.rejections
    for message, permanent in handle.rejections:
        assert permanent == any(known in message for known in PERMANENT[protocol]), message
        assert "\n" not in message and len(message) <= 200


def generatedStreams(protocol: str) -> Callable[..., None]:
    """
    A Hypothesis test of L{endsCleanlyOrNotAtAll} for C{protocol} (one per
    plugin, rather than parametrized: pytest-twisted wraps test functions in
    a way that parametrized Hypothesis tests do not survive).
    """

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(stream=streams(protocol), cuts=st.lists(st.integers(0, 1 << 16), max_size=8))
    def test(stream: bytes, cuts: list[int]) -> None:
        endsCleanlyOrNotAtAll(protocol, stream, cuts)

    test.__doc__ = f"Generated byte streams into the {protocol} plugin end cleanly or not at all."
    return test


test_generatedStreamsIntoLine = generatedStreams("line")
test_generatedStreamsIntoInt32 = generatedStreams("int32")
test_generatedStreamsIntoRedis = generatedStreams("redis")
test_generatedStreamsIntoNats = generatedStreams("nats")
test_generatedStreamsIntoMqtt = generatedStreams("mqtt")
test_generatedStreamsIntoHttp = generatedStreams("http")


def test_theNatsInfoScannerHandlesEscapesInStrings() -> None:
    """
    Brackets inside JSON strings, escaped quotes included, do not count.
    """
    built, handle = connect("nats")
    info = {"server_id": '[[[["\\', "urls": [["a"]]}
    built.dataReceived(b"INFO " + json.dumps(info).encode() + b"\r\n")
    assert handle.rejections == []
    assert built.serverInfo == info  # type: ignore[attr-defined]
