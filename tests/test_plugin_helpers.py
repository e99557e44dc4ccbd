"""
The typed helpers of the bundled plugins, built on C{submit}: line
C{sendLine} and C{sendLines}, int32 C{sendFrame} and C{sendFrames}, redis
C{command}, nats C{publish} and C{subscribe}, mqtt C{publish}; through the
real connection machine on the plugin test kit.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from plugins import int32, line, mqtt, nats, redis
from plugins.mqtt import PUBACK, PUBLISH, packet, parsePacket
from plugins.redis import RedisError, Reply, RespParser
from supervisor import BackoffSpec, HeartbeatSpec, findPlugin
from supervisor.operations import (
    ConnectionClosed,
    ConnectionLost,
    QueueFull,
    QueueTimeout,
    newCounts,
)
from supervisor.spec import QueueSpec
from supervisor.testing import FakePeer, PluginHarness
from tests.test_mqtt_plugin import connack
from tests.test_nats_plugin import INFO
from tests.test_operations import errorOf
from tests.test_operations import outcome as fired
from tests.test_redis_plugin import commands

QUIET = HeartbeatSpec(interval=0)


def established(
    protocol: str, greeting: bytes = b"", heartbeat: HeartbeatSpec = QUIET, **options: object
) -> tuple[PluginHarness, FakePeer]:
    """
    A connection of C{protocol} whose peer accepted; the test completes
    the handshake if the protocol has one.
    """
    h = PluginHarness(
        findPlugin(protocol),
        options,
        heartbeat=heartbeat,
        backoff=BackoffSpec(initial=60.0),
        drain_timeout=2.0,
        name=f"{protocol}-1",
        greeting=greeting,
    )
    h.start()
    return h, h.accept()


def answered(h: PluginHarness, peer: FakePeer, answer: bytes) -> tuple[PluginHarness, FakePeer]:
    """
    The peer sends C{answer} to the handshake: ESTABLISHED ("ready").
    """
    peer.send(answer)
    h.assertState("ESTABLISHED", "ready")
    return h, peer


def pythonCalls(call: Callable[[], object]) -> int:
    """
    How many Python functions and builtins C{call()} calls, all told: the
    Python steps of its work, whatever C code does per item.
    """
    calls = [0]

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event in ("call", "c_call"):
            calls[0] += 1

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return calls[0]


def finish(h: PluginHarness, peer: FakePeer) -> None:
    """
    Stop; the peer closes when asked; nothing is left scheduled.
    """
    done = h.stop()
    h.advance(0)
    if peer.connected:
        peer.close()
    h.advance(2.0)
    assert done.called
    h.assertQuiet()


# line


def test_sendLine() -> None:
    h, peer = established("line")
    d = line.sendLine(h.connection, b"hello world")
    assert fired(d) is None
    assert peer.take() == b"hello world\r\n"
    finish(h, peer)


@pytest.mark.parametrize("bad", [b"two\nlines", b"carriage\rreturn", b"\r\n"])
def test_aLineWithALineBreakIsRefusedAtOnce(bad: bytes) -> None:
    h, peer = established("line")
    with pytest.raises(ValueError, match="must not hold"):
        line.sendLine(h.connection, bad)
    assert peer.take() == b""
    assert sum(h.connection.operations.counts.values()) == 0
    finish(h, peer)


def test_aHelperOnAConnectionOfAnotherProtocolIsAnError() -> None:
    h, peer = established("int32")
    assert errorOf(line.sendLine(h.connection, b"x")) is TypeError
    assert h.connection.operations.counts["error"] == 1
    assert h.state == "ESTABLISHED"
    finish(h, peer)


def test_linesWaitForTheConnectionAndGoInOrder() -> None:
    h = PluginHarness(findPlugin("line"), heartbeat=QUIET, name="line-1")
    h.start()
    sent = [line.sendLine(h.connection, b"%d" % i) for i in range(3)]
    assert not any(d.called for d in sent)
    peer = h.accept()
    h.advance(0)
    assert peer.take() == b"0\r\n1\r\n2\r\n"
    assert all(fired(d) is None for d in sent)
    finish(h, peer)


# line: a batch of lines, one operation


def test_sendLines() -> None:
    """
    The lines go in order, each ending in C{\\r\\n}, in one write; one
    operation is counted for the batch.
    """
    h, peer = established("line")
    peer.clear()
    assert fired(line.sendLines(h.connection, [b"one", b"", b"three"])) is None
    assert peer.writes == [b"one\r\n\r\nthree\r\n"]
    assert h.connection.operations.counts == {"ok": 1}
    finish(h, peer)


def test_sendLinesReadsAnIterableOnce() -> None:
    h, peer = established("line")
    taken: list[int] = []

    def lines() -> Iterator[bytes]:
        for i in range(3):
            taken.append(i)
            yield b"%d" % i

    assert fired(line.sendLines(h.connection, lines())) is None
    assert taken == [0, 1, 2]
    assert peer.take() == b"0\r\n1\r\n2\r\n"
    finish(h, peer)


def test_anEmptyBatchOfLinesFiresAtOnceAndSubmitsNothing() -> None:
    """
    Whatever the connection's state: waiting (nothing queued), ESTABLISHED
    (nothing written), CLOSED (not refused); nothing is counted.
    """
    h = PluginHarness(findPlugin("line"), heartbeat=QUIET, name="line-1")
    h.start()
    assert fired(line.sendLines(h.connection, [])) is None
    assert h.connection.queueDepth == 0
    peer = h.accept()
    peer.clear()
    assert fired(line.sendLines(h.connection, iter(()))) is None
    assert peer.take() == b""
    finish(h, peer)
    assert fired(line.sendLines(h.connection, [])) is None
    assert sum(h.connection.operations.counts.values()) == 0


@pytest.mark.parametrize(
    ("lines", "index"),
    [
        ([b"two\nlines", b"fine"], 0),
        ([b"fine", b"carriage\rreturn", b"fine"], 1),
        ([b"fine", b"fine", b"\r\n"], 2),
        ([b"a\r", b"\nb"], 0),
    ],
)
def test_aLineBreakInABatchRefusesItAllAtOnce(lines: list[bytes], index: int) -> None:
    h, peer = established("line")
    peer.clear()
    with pytest.raises(ValueError, match=rf"must not hold .* \(line {index} of the batch\)"):
        line.sendLines(h.connection, lines)
    assert peer.take() == b""
    assert sum(h.connection.operations.counts.values()) == 0
    finish(h, peer)


@pytest.mark.parametrize("bad", ["text", bytearray(b"mutable"), memoryview(b"view"), None, 7])
def test_aLineThatIsNotBytesRefusesTheBatchAtOnce(bad: object) -> None:
    h, peer = established("line")
    peer.clear()
    with pytest.raises(TypeError, match=r"line 1 of the batch is \w+, not bytes"):
        line.sendLines(h.connection, [b"fine", bad, b"fine"])  # type: ignore[list-item]
    assert peer.take() == b""
    assert sum(h.connection.operations.counts.values()) == 0
    finish(h, peer)


def test_aSubclassOfBytesIsALine() -> None:
    class Line(bytes):
        pass

    h, peer = established("line")
    peer.clear()
    assert fired(line.sendLines(h.connection, [b"a", Line(b"b")])) is None
    assert peer.take() == b"a\r\nb\r\n"
    with pytest.raises(TypeError, match="line 2 of the batch is str, not bytes"):
        line.sendLines(h.connection, [Line(b"a"), b"b", "c"])  # type: ignore[list-item]
    finish(h, peer)


def test_batchesWaitForTheConnectionAndGoInOrder() -> None:
    """
    Until ESTABLISHED a batch waits in the queue as one operation, in turn
    with single lines; then each is written whole, in order.
    """
    h = PluginHarness(findPlugin("line"), heartbeat=QUIET, name="line-1")
    h.start()
    sent = [
        line.sendLine(h.connection, b"a"),
        line.sendLines(h.connection, [b"b", b"c"]),
        line.sendLine(h.connection, b"d"),
        line.sendLines(h.connection, (b"e", b"f", b"g")),
    ]
    assert h.connection.queueDepth == 4
    assert not any(d.called for d in sent)
    peer = h.accept()
    h.advance(0)
    assert peer.writes == [b"a\r\n", b"b\r\nc\r\n", b"d\r\n", b"e\r\nf\r\ng\r\n"]
    assert all(fired(d) is None for d in sent)
    assert h.connection.operations.counts == {"ok": 4}
    finish(h, peer)


def test_aBatchTakesOnePlaceInTheQueueAndEndsAsAnOperationDoes() -> None:
    """
    However many lines it holds, a batch is one operation for C{queue.max}
    and for the counts; it ends C{full}, C{timeout} or C{closed} as one
    does, and none of its lines is written.
    """
    h = PluginHarness(
        findPlugin("line"), heartbeat=QUIET, name="line-1", queue=QueueSpec(max=1, timeout=5)
    )
    h.start()
    waiting = line.sendLines(h.connection, [b"x"] * 1000)
    assert h.connection.queueDepth == 1
    assert errorOf(line.sendLines(h.connection, [b"y"])) is QueueFull
    h.advance(5)
    assert errorOf(waiting) is QueueTimeout
    closing = line.sendLines(h.connection, [b"z"] * 1000)
    h.stop()
    h.advance(0)
    assert errorOf(closing) is ConnectionClosed
    assert errorOf(line.sendLines(h.connection, [b"z"])) is ConnectionClosed
    assert h.connection.operations.counts == {"full": 1, "timeout": 1, "closed": 2}
    assert h.peers == []
    h.assertQuiet()


def test_aHugeBatchIsOneWriteOfBoundedPythonWork() -> None:
    """
    A batch of 100,000 lines is checked, joined and written with as many
    Python steps as one of 10 lines (no step, let alone a quadratic join,
    per line), in one write; while the transport is write-blocked it waits
    as one operation, the queue's bound holding.
    """
    h = PluginHarness(
        findPlugin("line"), heartbeat=QUIET, name="line-1", queue=QueueSpec(max=2, timeout=5)
    )
    h.start()
    peer = h.accept()
    few, many = [b"0123456789abcdef"] * 10, [b"0123456789abcdef"] * 100_000
    line.sendLines(h.connection, few)  # the first count of "ok" makes its key
    peer.clear()
    assert pythonCalls(lambda: line.sendLines(h.connection, many)) == pythonCalls(
        lambda: line.sendLines(h.connection, few)
    )
    assert peer.writes == [b"0123456789abcdef\r\n" * 100_000, b"0123456789abcdef\r\n" * 10]
    peer.clear()
    producer: Any = peer.transport.producer
    producer.pauseProducing()
    waiting = [line.sendLines(h.connection, many), line.sendLine(h.connection, b"after")]
    assert errorOf(line.sendLines(h.connection, many)) is QueueFull
    h.advance(0)
    assert peer.take() == b"" and h.connection.queueDepth == 2
    producer.resumeProducing()
    h.advance(0)
    assert all(fired(d) is None for d in waiting)
    assert peer.writes == [b"0123456789abcdef\r\n" * 100_000, b"after\r\n"]
    assert h.connection.operations.counts == {"ok": 5, "full": 1}
    finish(h, peer)


# int32


def test_sendFrame() -> None:
    h, peer = established("int32")
    assert fired(int32.sendFrame(h.connection, b"\x00payload")) is None
    assert peer.take() == b"\x00\x00\x00\x08\x00payload"
    finish(h, peer)


def test_aFrameOverMaxFrameLengthIsAnError() -> None:
    h, peer = established("int32", max_frame_length=4)
    failure = fired(int32.sendFrame(h.connection, b"12345"))
    assert isinstance(failure, Failure) and failure.check(ValueError)
    assert "longer than max_frame_length 4" in str(failure.value)
    assert peer.take() == b""
    finish(h, peer)


def test_sendFrames() -> None:
    h, peer = established("int32")
    peer.clear()
    assert fired(int32.sendFrames(h.connection, iter([b"\x00payload", b"", b"ab"]))) is None
    assert peer.writes == [b"\x00\x00\x00\x08\x00payload\x00\x00\x00\x00\x00\x00\x00\x02ab"]
    assert h.connection.operations.counts == {"ok": 1}
    peer.clear()
    assert fired(int32.sendFrames(h.connection, [])) is None
    assert peer.take() == b"" and h.connection.operations.counts == {"ok": 1}
    finish(h, peer)


def test_aFrameOverMaxFrameLengthFailsTheWholeBatch() -> None:
    h, peer = established("int32", max_frame_length=4)
    peer.clear()
    failure = fired(int32.sendFrames(h.connection, [b"1234", b"12345", b"1"]))
    assert isinstance(failure, Failure) and failure.check(ValueError)
    assert "frame of 5 bytes is longer than max_frame_length 4" in str(failure.value)
    assert peer.take() == b""
    assert h.connection.operations.counts == {"error": 1}
    finish(h, peer)


def test_aFrameThatIsNotBytesRefusesTheBatchAtOnce() -> None:
    h, peer = established("int32")
    peer.clear()
    with pytest.raises(TypeError, match="frame 2 of the batch is str, not bytes"):
        int32.sendFrames(h.connection, [b"a", b"b", "c"])  # type: ignore[list-item]
    assert peer.take() == b""
    assert sum(h.connection.operations.counts.values()) == 0
    finish(h, peer)


def test_aHugeBatchOfFramesIsOneWriteOfBoundedPythonWork() -> None:
    h, peer = established("int32")
    few, many = [b"0123456789abcdef"] * 10, [b"0123456789abcdef"] * 100_000
    int32.sendFrames(h.connection, few)  # the first count of "ok" makes its key
    peer.clear()
    assert pythonCalls(lambda: int32.sendFrames(h.connection, many)) == pythonCalls(
        lambda: int32.sendFrames(h.connection, few)
    )
    framed = b"\x00\x00\x00\x100123456789abcdef"
    assert peer.writes == [framed * 100_000, framed * 10]
    finish(h, peer)


# redis


def redisEstablished() -> tuple[PluginHarness, FakePeer]:
    h, peer = established("redis")
    assert commands(peer.take()) == [[b"CLIENT", b"SETNAME", b"redis-1"], [b"PING"]]
    return answered(h, peer, b"+OK\r\n+PONG\r\n")


def test_aCommandFiresWithItsReply() -> None:
    h, peer = redisEstablished()
    incr = redis.command(h.connection, "INCR", b"hits")
    setex = redis.command(h.connection, "SETEX", "k", 10, 1.5)
    assert commands(peer.take()) == [[b"INCR", b"hits"], [b"SETEX", b"k", b"10", b"1.5"]]
    assert not incr.called
    peer.send(b":7\r\n+OK")
    assert fired(incr) == 7 and not setex.called
    peer.send(b"\r\n")
    assert fired(setex) == b"OK"
    assert h.connection.operations.counts["ok"] == 2
    finish(h, peer)


def test_anErrorReplyIsTheCommandsOwnError() -> None:
    h, peer = redisEstablished()
    d = redis.command(h.connection, "INCR", "a-string")
    peer.send(b"-ERR value is not an integer or out of range\r\n")
    failure = fired(d)
    assert isinstance(failure, Failure) and failure.check(RedisError)
    assert failure.value.kind == "ERR"
    assert h.state == "ESTABLISHED"
    assert h.connection.operations.counts["error"] == 1
    finish(h, peer)


def test_commandsAndHeartbeatsShareTheReplies() -> None:
    h, peer = established("redis", heartbeat=HeartbeatSpec(interval=1.0, timeout=0.5))
    peer.take()
    peer.send(b"+OK\r\n+PONG\r\n")
    first = redis.command(h.connection, "GET", "a")
    assert commands(peer.take()) == [[b"GET", b"a"]]
    h.untilWritten(peer)
    assert commands(peer.take()) == [[b"PING"]]
    second = redis.command(h.connection, "GET", "b")
    peer.send(b"$1\r\nA\r\n+PONG\r\n$1\r\nB\r\n")
    assert fired(first) == b"A" and fired(second) == b"B"
    assert h.heartbeats and h.heartbeats[-1] is not None
    finish(h, peer)


def test_aCommandInFlightWhenTheConnectionIsLostEndsLost() -> None:
    h, peer = redisEstablished()
    d = redis.command(h.connection, "INCR", "hits")
    peer.lose()
    h.advance(0)
    assert errorOf(d) is ConnectionLost
    assert h.connection.operations.counts == {**newCounts(), "lost": 1}
    h.stop()
    h.assertQuiet()


@pytest.mark.parametrize(
    "words", [("SUBSCRIBE", "news"), ("monitor",), ("QUIT",), ("client", "reply", "off"), ()]
)
def test_commandsThatWouldBreakTheRepliesAreRefused(words: tuple[str, ...]) -> None:
    h, peer = redisEstablished()
    with pytest.raises(ValueError):
        redis.command(h.connection, *words)
    with pytest.raises(TypeError):
        redis.command(h.connection, "SET", "k", True)  # type: ignore[arg-type]
    assert peer.take() == b""
    finish(h, peer)


def test_theDrainWaitsForTheCommandsInFlight() -> None:
    h, peer = redisEstablished()
    d = redis.command(h.connection, "INCR", "hits")
    peer.take()
    stopped = h.stop()
    h.advance(0.5)
    assert peer.take() == b"", "no QUIT before the reply"
    peer.send(b":1\r\n")
    assert fired(d) == 1
    assert commands(peer.take()) == [[b"QUIT"]]
    peer.send(b"+OK\r\n")
    h.advance(0)
    peer.close()
    assert stopped.called
    h.assertQuiet()


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b":-42\r\n", -42),
        (
            b"(3492890328409238509324850943850943825024385\r\n",
            3492890328409238509324850943850943825024385,
        ),
        (b",3.25\r\n", 3.25),
        (b"#t\r\n", True),
        (b"_\r\n", None),
        (b"$-1\r\n", None),
        (b"*-1\r\n", None),
        (b"$5\r\nhe\r\no\r\n", b"he\r\no"),
        (b"=8\r\ntxt:abcd\r\n", b"abcd"),
        (b"*3\r\n:1\r\n$1\r\na\r\n*1\r\n_\r\n", [1, b"a", [None]]),
        (b"%2\r\n+k\r\n:1\r\n*1\r\n:2\r\n~1\r\n:3\r\n", {b"k": 1, (2,): [3]}),
        (b"*2\r\n|1\r\n+ttl\r\n:3\r\n:5\r\n:6\r\n", [5, 6]),
        (b"*0\r\n", []),
    ],
)
def test_replyValues(data: bytes, value: object) -> None:
    replies = list(RespParser(1 << 20).feed(data))
    assert len(replies) == 1 and isinstance(replies[0], Reply)
    assert replies[0].value == value
    byteByByte = RespParser(1 << 20)
    again = [r for b in data for r in byteByByte.feed(bytes([b]))]
    assert isinstance(again[0], Reply) and again[0].value == value


def test_anErrorInsideAnArrayIsAnErrorValue() -> None:
    (reply,) = RespParser(1 << 20).feed(b"*2\r\n+OK\r\n-WRONGTYPE no\r\n")
    assert isinstance(reply, Reply)
    ok, error = reply.value  # type: ignore[misc]
    assert ok == b"OK" and isinstance(error, RedisError) and error.kind == "WRONGTYPE"


@pytest.mark.parametrize("data", [b":x\r\n", b",nope\r\n", b"#x\r\n"])
def test_badScalarsAreProtocolErrors(data: bytes) -> None:
    from plugins._support import ProtocolError

    with pytest.raises(ProtocolError):
        list(RespParser(1 << 20).feed(data))


# nats


def natsEstablished(greeting: bytes = INFO) -> tuple[PluginHarness, FakePeer]:
    h, peer = established("nats", greeting=greeting)
    assert peer.take().endswith(b"PING\r\n")
    return answered(h, peer, b"PONG\r\n")


def test_aPublishIsConfirmedByTheNextPong() -> None:
    h, peer = natsEstablished()
    first = nats.publish(h.connection, "orders.new", b"one\r\nline")
    assert peer.take() == b"PUB orders.new 9\r\none\r\nline\r\nPING\r\n"
    # Published while the flush is in flight: confirmed by the next one.
    second = nats.publish(h.connection, "orders.new", b"2", reply="inbox.1")
    third = nats.publish(h.connection, b"orders.old", b"3")
    assert peer.take() == b"PUB orders.new inbox.1 1\r\n2\r\nPUB orders.old 1\r\n3\r\n"
    peer.send(b"PONG\r\n")
    assert fired(first) is None
    assert not second.called and not third.called
    assert peer.take() == b"PING\r\n"
    peer.send(b"PONG\r\n")
    assert fired(second) is None and fired(third) is None
    assert peer.take() == b"", "nothing more to confirm"
    finish(h, peer)


def test_aRefusedPublishFailsAndTheConnectionStays() -> None:
    h, peer = natsEstablished()
    allowed = nats.publish(h.connection, "a", b"1")
    refused = nats.publish(h.connection, "secret", b"2")
    peer.send(b"-ERR 'Permissions Violation for Publish to \"secret\"'\r\n")
    failure = fired(refused)
    assert isinstance(failure, Failure) and failure.check(nats.NatsError)
    peer.send(b"PONG\r\nPONG\r\n")
    assert fired(allowed) is None
    assert h.state == "ESTABLISHED"
    finish(h, peer)


def test_publishesNotConfirmedWhenTheConnectionIsLostEndLost() -> None:
    h, peer = natsEstablished()
    d = nats.publish(h.connection, "a", b"1")
    peer.lose()
    h.advance(0)
    assert errorOf(d) is ConnectionLost
    h.stop()
    h.assertQuiet()


@pytest.mark.parametrize("subject", ["", "has space", "tab\there", "new\r\nline", "x" * 1025])
def test_badSubjectsAreRefusedAtOnce(subject: str) -> None:
    h, peer = natsEstablished()
    with pytest.raises(ValueError, match="not a NATS subject"):
        nats.publish(h.connection, subject, b"")
    with pytest.raises(ValueError, match="not a NATS subject"):
        nats.subscribe(h.connection, subject, print)
    finish(h, peer)


def test_aPayloadOverTheServersMaxPayloadIsAnError() -> None:
    h, peer = natsEstablished(INFO.replace(b'"max_payload":1048576', b'"max_payload":4'))
    failure = fired(nats.publish(h.connection, "a", b"12345"))
    assert isinstance(failure, Failure) and failure.check(ValueError)
    assert peer.take() == b""
    finish(h, peer)


def test_subscribe() -> None:
    h, peer = natsEstablished()
    got: list[nats.Message] = []
    sid = fired(nats.subscribe(h.connection, "orders.*", got.append, queue="workers"))
    assert sid == 1
    assert peer.take() == b"SUB orders.* workers 1\r\n"
    # A payload may hold line breaks; it may come in pieces.
    peer.send(b"MSG orders.new 1 7\r\nab\r\n")
    peer.send(b"cde\r\nMSG orders.old 1 inbox.9 0\r\n\r\n")
    peer.send(b"HMSG orders.h 1 12 14\r\nNATS/1.0\r\n\r\nhi\r\n")
    peer.send(b"MSG orders.gone 99 1\r\nx\r\n")  # a subscription we do not have
    assert got == [
        nats.Message(b"orders.new", 1, b"", b"ab\r\ncde"),
        nats.Message(b"orders.old", 1, b"inbox.9", b""),
        nats.Message(b"orders.h", 1, b"", b"hi", b"NATS/1.0\r\n\r\n"),
    ]
    protocol: Any = h.protocol
    protocol.unsubscribe(sid)
    assert peer.take() == b"UNSUB 1\r\n"
    peer.send(b"MSG orders.late 1 1\r\nx\r\n")
    assert len(got) == 3
    finish(h, peer)


@pytest.mark.parametrize(
    "data",
    [
        b"MSG a 1 2000000\r\n",  # announced longer than max_line_length
        b"MSG a 1 x\r\nxy\r\n",  # no length
        b"MSG a 1 2\r\nxyz\r\n",  # the payload does not end where it said
        b"MSG a\r\n",  # too few words
    ],
)
def test_badMessagesDropTheConnection(data: bytes) -> None:
    h, peer = natsEstablished()
    nats.subscribe(h.connection, "a", print)
    peer.send(data)
    h.assertState("IDLE", "lost")
    h.stop()
    h.assertQuiet()


# mqtt


def mqttEstablished() -> tuple[PluginHarness, FakePeer]:
    h, peer = established("mqtt")
    peer.take()
    return answered(h, peer, connack(0))


def publishes(data: bytes) -> list[tuple[int, bytes, int | None, bytes]]:
    """
    The PUBLISH packets in C{data}: (qos, topic, packet id, payload).
    """
    out = []
    while data:
        kind, flags, body, used = parsePacket(data, 1 << 20)
        data = data[used:]
        assert kind == PUBLISH
        qos = (flags >> 1) & 3
        size = int.from_bytes(body[:2], "big")
        topic, rest = body[2 : 2 + size], body[2 + size :]
        packetId = int.from_bytes(rest[:2], "big") if qos else None
        out.append((qos, topic, packetId, rest[2:] if qos else rest))
    return out


def puback(packetId: int) -> bytes:
    return packet(PUBACK, 0, packetId.to_bytes(2, "big"))


def test_aQos0PublishIsDoneOnceWritten() -> None:
    h, peer = mqttEstablished()
    assert fired(mqtt.publish(h.connection, "sensors/1", b"21.5")) is None
    assert publishes(peer.take()) == [(0, b"sensors/1", None, b"21.5")]
    finish(h, peer)


def test_aQos1PublishIsDoneOnItsPuback() -> None:
    h, peer = mqttEstablished()
    first = mqtt.publish(h.connection, "t", b"a", qos=1)
    second = mqtt.publish(h.connection, "t", b"b", qos=1)
    assert publishes(peer.take()) == [(1, b"t", 1, b"a"), (1, b"t", 2, b"b")]
    peer.send(puback(2))
    assert fired(second) is None and not first.called
    peer.send(puback(7))  # answers nothing we sent: ignored
    peer.send(puback(1))
    assert fired(first) is None
    assert h.connection.operations.counts["ok"] == 2
    finish(h, peer)


def test_packetIdsSkipThoseInUseAndWrap() -> None:
    h, peer = mqttEstablished()
    protocol: Any = h.protocol
    protocol._lastId = 65534
    held = protocol.unacknowledged[1] = Deferred()
    mqtt.publish(h.connection, "t", b"", qos=1)
    mqtt.publish(h.connection, "t", b"", qos=1)
    assert [p[2] for p in publishes(peer.take())] == [65535, 2]
    del protocol.unacknowledged[1]
    assert not held.called
    for packetId in (65535, 2):
        peer.send(puback(packetId))
    finish(h, peer)


def test_qos1PublishesLostWithTheConnectionEndLost() -> None:
    h, peer = mqttEstablished()
    d = mqtt.publish(h.connection, "t", b"x", qos=1)
    peer.lose()
    h.advance(0)
    assert errorOf(d) is ConnectionLost
    h.stop()
    h.assertQuiet()


@pytest.mark.parametrize("topic", ["", "a/+/b", "a/#", "nul\0"])
def test_badTopicsAreRefusedAtOnce(topic: str) -> None:
    h, peer = mqttEstablished()
    with pytest.raises(ValueError):
        mqtt.publish(h.connection, topic, b"")
    with pytest.raises(ValueError, match="qos"):
        mqtt.publish(h.connection, "t", b"", qos=2)  # type: ignore[arg-type]
    finish(h, peer)


def test_aBadPubackDropsTheConnection() -> None:
    h, peer = mqttEstablished()
    peer.send(packet(PUBACK, 0, b"\x00"))
    h.assertState("IDLE", "lost")
    h.stop()
    h.assertQuiet()


def test_theDrainWaitsForPubacksBeforeDisconnecting() -> None:
    h, peer = mqttEstablished()
    d = mqtt.publish(h.connection, "t", b"x", qos=1)
    peer.take()
    stopped = h.stop()
    h.advance(0.5)
    assert peer.take() == b"", "no DISCONNECT before the PUBACK"
    peer.send(puback(1))
    assert fired(d) is None
    assert peer.take() == packet(14, 0)
    peer.close()
    assert stopped.called
    h.assertQuiet()


def test_aDrainRefusesWhatWaits() -> None:
    h = PluginHarness(findPlugin("mqtt"), heartbeat=QUIET, name="mqtt-1")
    h.start()
    waiting = mqtt.publish(h.connection, "t", b"x", qos=1)
    h.stop()
    h.advance(0)
    assert errorOf(waiting) is ConnectionClosed
    h.assertQuiet()


def test_aLargePayloadTrickledInIsReadWhole() -> None:
    """
    A payload of 256 KiB holding line breaks, in 1,460-byte reads: read by
    its length, delivered once, the connection unharmed.
    """
    h, peer = natsEstablished()
    got: list[nats.Message] = []
    nats.subscribe(h.connection, "big", got.append)
    payload = (b"0123456789\r\n" * 22000)[: 256 * 1024]
    data = b"MSG big 1 %d\r\n" % len(payload) + payload + b"\r\nPING\r\n"
    for start in range(0, len(data), 1460):
        peer.send(data[start : start + 1460])
    assert [m.payload for m in got] == [payload]
    assert peer.take().endswith(b"PONG\r\n")
    assert h.state == "ESTABLISHED"
    finish(h, peer)
