"""
The C{mqtt} protocol: MQTT 3.1.1, as a client that connects and pings.

- Handshake: C{CONNECT} (clean session, a keep-alive derived from the
  heartbeat, a client identifier, optional user name and password); the
  broker's C{CONNACK} with return code 0 makes the connection ready.
- C{CONNACK} return codes: 1 (protocol version), 2 (identifier rejected),
  4 (bad user name or password) and 5 (not authorised) are permanent
  rejections; 3 (server unavailable) and any other code are transient.
- Heartbeat: C{PINGREQ}, answered by C{PINGRESP}, which carries no
  identifier but comes in order: the tokens of the pings in flight are kept
  in a L{Pipeline}, so a late answer is credited to the ping it answers.
- Packets are read in time linear in the bytes received, at most
  C{max_packet_length} bytes each.
- Drain: C{DISCONNECT}, after which the client closes the connection.

Options (L{Options}): C{client_id} (str, default the connection's name),
C{username} (str), C{password_file} (str: a file holding the password; one
trailing newline is ignored; read at every attempt), C{keep_alive} (int
seconds, 0 to 65535, default derived from the heartbeat, see
L{keepAliveFor}), C{max_packet_length} (int, default 1 MiB).

Applications publish with L{publish} on a supervised connection or pool: QoS
0 (done once written) or 1 (done on the broker's C{PUBACK}).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from plugins._support import (
    BundledPlugin,
    CheckedOptions,
    Maybe,
    ProtocolError,
    ReadingProtocol,
    speaking,
)
from supervisor.interfaces import (
    IConnectionHandle,
    IDrainable,
    ISupervisedProtocol,
    OptionError,
)
from supervisor.operations import Submitter
from supervisor.options import Integer, Text, setting
from supervisor.pipeline import Pipeline
from supervisor.spec import HeartbeatSpec

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

MAX_KEEP_ALIVE = 65535
MAX_FIELD = 65535
MAX_REMAINING_LENGTH = 268_435_455

CONNACK_CODES: dict[int, tuple[str, bool]] = {
    1: ("unacceptable protocol version", True),
    2: ("identifier rejected", True),
    3: ("server unavailable", False),
    4: ("bad user name or password", True),
    5: ("not authorised", True),
}
"""CONNACK return code: (meaning, permanent)."""

OVERLOADED_CODES = frozenset({3})
"""CONNACK return codes by which the broker pushes back (server unavailable)."""


class Incomplete(Exception):
    """
    The buffer does not hold a whole packet yet.
    """


def _utf8Field(key: str, value: str | None) -> None:
    if value is not None and len(value.encode("utf-8")) > MAX_FIELD:
        raise OptionError(key, f"expected at most {MAX_FIELD} bytes in UTF-8, got more")


@attrs.frozen
class Options(CheckedOptions):
    """
    The C{mqtt} plugin's options (see C{docs/plugins/mqtt.md}).
    """

    client_id: str | None = setting(None, Maybe(Text(maxLength=MAX_FIELD)))
    username: str | None = setting(None, Maybe(Text(maxLength=MAX_FIELD)))
    password_file: str = setting("", Text("a file name"))
    keep_alive: int | None = setting(None, Maybe(Integer(0, MAX_KEEP_ALIVE)))
    max_packet_length: int = setting(1 << 20, Integer(2, MAX_REMAINING_LENGTH))

    def __attrs_post_init__(self) -> None:
        _utf8Field("client_id", self.client_id)
        _utf8Field("username", self.username)
        if self.password_file and self.username is None:
            raise OptionError("password_file", "needs a username (MQTT 3.1.1)")


def keepAliveFor(heartbeat: HeartbeatSpec) -> int:
    """
    The keep-alive to announce in C{CONNECT} for a connection whose
    supervisor pings as C{heartbeat} says: C{ceil(interval * misses +
    timeout)} seconds, at most 65535; 0 (no keep-alive) when heartbeats are
    off. The broker drops a client silent for 1.5 keep-alives, so this is
    well above the longest gap between our pings (the interval, or the
    timeout when that is longer).
    """
    if not heartbeat.enabled:
        return 0
    seconds = math.ceil(heartbeat.interval * heartbeat.misses + heartbeat.timeout)
    return max(1, min(MAX_KEEP_ALIVE, seconds))


def encodeLength(length: int) -> bytes:
    """
    The variable-length encoding of a remaining length.
    """
    if not 0 <= length <= MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length {length} out of range")
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def packet(kind: int, flags: int, body: bytes = b"") -> bytes:
    """
    One packet: fixed header, remaining length, body.
    """
    return bytes([kind << 4 | flags]) + encodeLength(len(body)) + body


def utf8(text: bytes) -> bytes:
    """
    A length-prefixed string or binary field.
    """
    if len(text) > MAX_FIELD:
        raise ValueError(f"field longer than {MAX_FIELD} bytes")
    return len(text).to_bytes(2, "big") + text


def connectPacket(
    clientId: bytes, keepAlive: int, username: bytes | None, password: bytes | None
) -> bytes:
    """
    A 3.1.1 C{CONNECT} with a clean session.
    """
    flags = 0x02
    payload = utf8(clientId)
    if username is not None:
        flags |= 0x80
        payload += utf8(username)
        if password is not None:
            flags |= 0x40
            payload += utf8(password)
    header = utf8(b"MQTT") + bytes([4, flags]) + keepAlive.to_bytes(2, "big")
    return packet(CONNECT, 0, header + payload)


MAX_PACKET_ID = 65535


class MqttError(Exception):
    """
    A publish the protocol cannot make: no packet identifier is free
    (65535 QoS 1 publishes wait for their C{PUBACK}).
    """


def checkTopic(topic: bytes) -> None:
    """
    @raise ValueError: C{topic} is no topic to publish to: empty, longer
        than 65535 bytes, not UTF-8, or holding a wildcard (C{+}, C{#}) or
        a NUL.
    """
    if not topic or len(topic) > MAX_FIELD:
        raise ValueError(f"a topic has 1 to {MAX_FIELD} bytes, got {len(topic)}")
    if b"+" in topic or b"#" in topic or b"\0" in topic:
        raise ValueError(f"a topic to publish to holds no wildcard or NUL: {topic[:80]!r}")
    try:
        topic.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"a topic is UTF-8: {topic[:80]!r}") from None


def publishPacket(topic: bytes, payload: bytes, qos: int, packetId: int, retain: bool) -> bytes:
    """
    A C{PUBLISH}: with a packet identifier for QoS 1.

    @raise ValueError: the packet would be longer than MQTT allows.
    """
    header = utf8(topic) + (packetId.to_bytes(2, "big") if qos else b"")
    return packet(PUBLISH, (qos << 1) | int(retain), header + payload)


def parsePacket(buffer: bytes | bytearray, maxLength: int) -> tuple[int, int, bytes, int]:
    """
    One packet from the start of C{buffer}: (type, flags, body, length used).
    Reads at most the five header bytes until the whole packet is there.

    @raise Incomplete: more bytes are needed.
    @raise ProtocolError: the remaining length is invalid or above C{maxLength}.
    """
    length = 0
    for i in range(4):
        if len(buffer) < 2 + i:
            raise Incomplete()
        byte = buffer[1 + i]
        length |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            start = 2 + i
            break
    else:
        raise ProtocolError("malformed packet: remaining length longer than 4 bytes")
    if length > maxLength:
        raise ProtocolError(f"malformed packet: packet longer than {maxLength} bytes")
    if len(buffer) < start + length:
        raise Incomplete()
    return buffer[0] >> 4, buffer[0] & 0x0F, bytes(buffer[start : start + length]), start + length


class PacketReader:
    """
    MQTT packets as C{(type, flags, body)}, in time linear in the bytes
    received, at most C{maxLength} bytes of body each.
    """

    def __init__(self, maxLength: int) -> None:
        self.maxLength = maxLength
        self.buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, int, bytes]]:
        buffer = self.buffer
        buffer += data
        while True:
            try:
                kind, flags, body, used = parsePacket(buffer, self.maxLength)
            except Incomplete:
                return
            del buffer[:used]
            yield kind, flags, body


def heartbeatOf(handle: IConnectionHandle) -> HeartbeatSpec:
    """
    The heartbeat settings of the connection behind C{handle}
    (L{IConnectionHandle.heartbeatSpec}), or the defaults for a handle
    that has none (a test double).
    """
    heartbeat = getattr(handle, "heartbeatSpec", None)
    return heartbeat if isinstance(heartbeat, HeartbeatSpec) else HeartbeatSpec()


@implementer(ISupervisedProtocol, IDrainable)
class MqttProtocol(ReadingProtocol[tuple[int, int, bytes]]):
    """
    One MQTT 3.1.1 client connection: it connects, pings and publishes.

    @ivar unacknowledged: the QoS 1 publishes waiting for their C{PUBACK},
        by packet identifier.
    """

    def __init__(self, handle: IConnectionHandle, options: Options) -> None:
        super().__init__(handle, PacketReader(options.max_packet_length))
        self.options = options
        self.clientId = handle.name if options.client_id is None else options.client_id
        keepAlive = options.keep_alive
        self.keepAlive = keepAliveFor(heartbeatOf(handle)) if keepAlive is None else keepAlive
        self.pings: Pipeline[bytes] = Pipeline()
        self.accepted = False
        self.unacknowledged: dict[int, Deferred[None]] = {}
        self._lastId = 0

    def publish(
        self, topic: bytes | str, payload: bytes, qos: Literal[0, 1] = 0, retain: bool = False
    ) -> Deferred[None]:
        """
        Publish C{payload} to C{topic}: with QoS 0, done once written; with
        QoS 1, done on the broker's C{PUBACK} (or failed with
        L{supervisor.operations.ConnectionLost} when the connection goes
        away first: the broker may or may not have it; it is not sent
        again).

        @raise ValueError: a bad topic (see L{checkTopic}), a QoS other than
            0 or 1, or a payload too long for one packet.
        @raise MqttError: no packet identifier is free.
        """
        topicBytes = topic.encode("utf-8") if isinstance(topic, str) else topic
        checkTopic(topicBytes)
        if qos not in (0, 1):
            raise ValueError(f"qos is 0 or 1, got {qos!r}")
        if qos == 0:
            self.write(publishPacket(topicBytes, payload, 0, 0, retain))
            return succeed(None)
        packetId = self._freeId()
        self.write(publishPacket(topicBytes, payload, 1, packetId, retain))
        acknowledged: Deferred[None] = Deferred()
        self.unacknowledged[packetId] = acknowledged
        return acknowledged

    def _freeId(self) -> int:
        if len(self.unacknowledged) >= MAX_PACKET_ID:
            raise MqttError(f"no packet identifier free: {MAX_PACKET_ID} publishes wait for PUBACK")
        packetId = self._lastId
        while True:
            packetId = packetId % MAX_PACKET_ID + 1
            if packetId not in self.unacknowledged:
                self._lastId = packetId
                return packetId

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        waiting, self.unacknowledged = self.unacknowledged, {}
        self.failWaiting(waiting.values(), "lost before the broker's PUBACK")
        super().connectionLost(reason)

    def connectionMade(self) -> None:
        options = self.options
        password = self.secretFrom("password_file", options.password_file)
        if self.rejected:
            return  # nothing is sent
        username = None if options.username is None else options.username.encode("utf-8")
        try:
            connect = connectPacket(
                self.clientId.encode("utf-8"), self.keepAlive, username, password
            )
        except ValueError as e:
            # A connection name (the default client_id) or a password too long.
            self.reject(f"cannot send CONNECT: {e}", permanent=True)
            return
        self.write(connect)

    def received(self, unit: tuple[int, int, bytes]) -> None:
        kind, _, body = unit
        if not self.accepted:
            if kind != CONNACK or len(body) != 2:
                self.reject(f"expected CONNACK, got packet type {kind}", False)
                return
            code = body[1]
            if code == 0:
                self.accepted = True
                self.handle.ready()
                return
            meaning, permanent = CONNACK_CODES.get(code, ("unknown return code", False))
            self.reject(f"CONNACK refused: {code} ({meaning})", permanent, code in OVERLOADED_CODES)
        elif kind == PINGRESP:
            token = self.pings.answered()
            if token is not None:
                self.handle.pong(token)
        elif kind == PUBACK:
            if len(body) != 2:
                self.reject(f"a PUBACK of {len(body)} bytes", False)
                return
            acknowledged = self.unacknowledged.pop(int.from_bytes(body, "big"), None)
            self.handle.activity()
            if acknowledged is not None:
                acknowledged.callback(None)
        elif kind == CONNACK:
            self.reject("a second CONNACK", False)
        # Anything else (we subscribe to nothing) is ignored, and is no
        # proof of life: the broker's keep-alive wants our PINGREQs.

    def sendPing(self, token: bytes) -> None:
        self.pings.sent(token)
        self.writePing(packet(PINGREQ, 0))

    def drain(self) -> Deferred[None]:
        # After DISCONNECT the client closes the connection; the broker
        # answers nothing.
        self.write(packet(DISCONNECT, 0))
        return succeed(None)


mqttPlugin = BundledPlugin("mqtt", Options, MqttProtocol)


def publish(
    connection: Submitter,
    topic: bytes | str,
    payload: bytes,
    qos: Literal[0, 1] = 0,
    retain: bool = False,
) -> Deferred[None]:
    """
    Publish C{payload} to C{topic} on a supervised C{mqtt} connection or
    pool, in turn with what was submitted before it.

    @return: with QoS 0, fires once the C{PUBLISH} is written; with QoS 1,
        once the broker's C{PUBACK} for it arrives. Fails as any submitted
        operation (L{supervisor.operations}):
        L{supervisor.operations.ConnectionLost} when the connection went
        away before the C{PUBACK} (the broker may or may not have it: it is
        not sent again); with L{MqttError} when 65535 publishes wait for
        their C{PUBACK} on that connection.
    @raise ValueError: a bad topic (see L{checkTopic}), or a QoS other than
        0 or 1; nothing is submitted.
    """
    topicBytes = topic.encode("utf-8") if isinstance(topic, str) else topic
    checkTopic(topicBytes)
    if qos not in (0, 1):
        raise ValueError(f"qos is 0 or 1, got {qos!r}")

    def send(protocol: object) -> Deferred[None]:
        return speaking(protocol, MqttProtocol, "mqtt").publish(topicBytes, payload, qos, retain)

    return connection.submit(send)
