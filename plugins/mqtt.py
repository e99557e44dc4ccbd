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
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import attrs
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from plugins._support import (
    BundledPlugin,
    CheckedOptions,
    Maybe,
    ProtocolError,
    ReadingProtocol,
)
from supervisor.interfaces import (
    IConnectionHandle,
    IDrainable,
    ISupervisedProtocol,
    OptionError,
)
from supervisor.options import Integer, Text, setting
from supervisor.pipeline import Pipeline
from supervisor.spec import HeartbeatSpec

CONNECT = 1
CONNACK = 2
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
    One MQTT 3.1.1 client connection that only connects and pings.
    """

    def __init__(self, handle: IConnectionHandle, options: Options) -> None:
        super().__init__(handle, PacketReader(options.max_packet_length))
        self.options = options
        self.clientId = handle.name if options.client_id is None else options.client_id
        keepAlive = options.keep_alive
        self.keepAlive = keepAliveFor(heartbeatOf(handle)) if keepAlive is None else keepAlive
        self.pings: Pipeline[bytes] = Pipeline()
        self.accepted = False

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
