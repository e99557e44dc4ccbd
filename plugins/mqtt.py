"""
The C{mqtt} protocol: MQTT 3.1.1, as a client that connects and pings.

- Handshake: C{CONNECT} (clean session, a keep-alive derived from the
  heartbeat, a client identifier, optional user name and password); the
  broker's C{CONNACK} with return code 0 makes the connection ready.
- C{CONNACK} return codes: 1 (protocol version), 2 (identifier rejected),
  4 (bad user name or password) and 5 (not authorised) are permanent
  rejections; 3 (server unavailable) and any other code are transient.
- Heartbeat: C{PINGREQ}, answered by C{PINGRESP}, in order: the tokens of
  the pings in flight are kept first in, first out.
- Drain: C{DISCONNECT}, after which the client closes the connection.

Options: C{client_id} (str, default the connection's name), C{username}
(str), C{password_file} (str: a file holding the password; one trailing
newline is ignored; read at every attempt), C{keep_alive} (int seconds,
default derived from the heartbeat, see L{keepAliveFor}),
C{max_packet_length} (int, default 1 MiB).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from pathlib import Path

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol
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
from supervisor.spec import HeartbeatSpec

CONNECT = 1
CONNACK = 2
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

MAX_KEEP_ALIVE = 65535

CONNACK_CODES: dict[int, tuple[str, bool]] = {
    1: ("unacceptable protocol version", True),
    2: ("identifier rejected", True),
    3: ("server unavailable", False),
    4: ("bad user name or password", True),
    5: ("not authorised", True),
}
"""CONNACK return code: (meaning, permanent)."""


class Incomplete(Exception):
    """
    The buffer does not hold a whole packet yet.
    """


class MalformedPacket(Exception):
    """
    The bytes are not an MQTT packet.
    """


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
    if not 0 <= length <= 268_435_455:
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
    if len(text) > 0xFFFF:
        raise ValueError("field longer than 65535 bytes")
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


def parsePacket(buffer: bytes, maxLength: int) -> tuple[int, int, bytes, int]:
    """
    One packet from the start of C{buffer}: (type, flags, body, length used).

    @raise Incomplete: more bytes are needed.
    @raise MalformedPacket: the remaining length is invalid or above C{maxLength}.
    """
    if len(buffer) < 2:
        raise Incomplete()
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
        raise MalformedPacket("remaining length longer than 4 bytes")
    if length > maxLength:
        raise MalformedPacket(f"packet longer than {maxLength} bytes")
    if len(buffer) < start + length:
        raise Incomplete()
    return buffer[0] >> 4, buffer[0] & 0x0F, buffer[start : start + length], start + length


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


def heartbeatOf(handle: IConnectionHandle) -> HeartbeatSpec:
    """
    The heartbeat settings of the connection behind C{handle}
    (L{IConnectionHandle.heartbeatSpec}), or the defaults for a handle
    that has none (a test double).
    """
    heartbeat = getattr(handle, "heartbeatSpec", None)
    return heartbeat if isinstance(heartbeat, HeartbeatSpec) else HeartbeatSpec()


@implementer(ISupervisedProtocol, IDrainable, IFailureClassifier)
class MqttProtocol(Protocol):
    """
    One MQTT 3.1.1 client connection that only connects and pings.
    """

    def __init__(
        self,
        handle: IConnectionHandle,
        clientId: str,
        username: str | None,
        passwordFile: str,
        keepAlive: int,
        maxLength: int,
    ) -> None:
        self.handle = handle
        self.clientId = clientId
        self.username = username
        self.passwordFile = passwordFile
        self.keepAlive = keepAlive
        self.maxLength = maxLength
        self.buffer = b""
        self.pings: deque[bytes] = deque()
        self.accepted = False
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
        if not self.configError and password is not None and self.username is None:
            self.configError = "password_file needs a username in MQTT 3.1.1"
        if not self.configError and not 0 <= self.keepAlive <= MAX_KEEP_ALIVE:
            self.configError = f"keep_alive must be 0 to {MAX_KEEP_ALIVE}, not {self.keepAlive}"
        if not self.configError:
            try:
                connect = connectPacket(
                    self.clientId.encode("utf-8"),
                    self.keepAlive,
                    None if self.username is None else self.username.encode("utf-8"),
                    password,
                )
            except ValueError as e:
                self.configError = f"bad option: {e}"
        if self.configError:
            # A bad option or an unreadable password file: nothing is sent.
            self.fail(self.configError, self.configPermanent)
            return
        self.write(connect)

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
        while self.buffer and not self.failed:
            try:
                kind, flags, body, used = parsePacket(self.buffer, self.maxLength)
            except Incomplete:
                return
            except MalformedPacket as e:
                self.fail(f"malformed packet: {e}", False)
                return
            self.buffer = self.buffer[used:]
            self.packetReceived(kind, flags, body)

    def packetReceived(self, kind: int, flags: int, body: bytes) -> None:
        if not self.accepted:
            if kind != CONNACK or len(body) != 2:
                self.fail(f"expected CONNACK, got packet type {kind}", False)
                return
            code = body[1]
            if code == 0:
                self.accepted = True
                self.handle.ready()
                return
            meaning, permanent = CONNACK_CODES.get(code, ("unknown return code", False))
            self.fail(f"CONNACK refused: {code} ({meaning})", permanent)
        elif kind == PINGRESP:
            if self.pings:
                self.handle.pong(self.pings.popleft())
        elif kind == CONNACK:
            self.fail("a second CONNACK", False)
        # Anything else (we subscribe to nothing) is ignored, and is no
        # proof of life: the broker's keep-alive wants our PINGREQs.

    def sendPing(self, token: bytes) -> None:
        self.pings.append(token)
        self.write(packet(PINGREQ, 0))

    def drain(self) -> Deferred[None]:
        # After DISCONNECT the client closes the connection; the broker
        # answers nothing.
        self.write(packet(DISCONNECT, 0))
        return succeed(None)

    def classifyFailure(self, failure: Failure) -> Classification | None:
        return None


@implementer(IPlugin, IProtocolPlugin)
class MqttPlugin:
    """
    Builds L{MqttProtocol}s.
    """

    name = "mqtt"

    def buildProtocol(
        self, handle: IConnectionHandle, options: Mapping[str, object]
    ) -> ISupervisedProtocol:
        clientId = options.get("client_id")
        username = options.get("username")
        protocol = MqttProtocol(
            handle,
            clientId=str(handle.name if clientId is None else clientId),
            username=None if username is None else str(username),
            passwordFile=str(options.get("password_file", "")),
            keepAlive=0,
            maxLength=1 << 20,
        )
        try:
            keepAlive = options.get("keep_alive")
            protocol.keepAlive = (
                keepAliveFor(heartbeatOf(handle)) if keepAlive is None else int(str(keepAlive))
            )
            protocol.maxLength = int(str(options.get("max_packet_length", 1 << 20)))
        except ValueError as e:
            protocol.configError = f"bad option: {e}"
        return protocol


mqttPlugin = MqttPlugin()
