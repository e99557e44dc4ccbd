"""
An MQTT subscriber for the integration tests, as a supervised connection:
it subscribes (QoS 1) as part of its handshake, is ready once the broker's
C{SUBACK} says so, acknowledges every message, and records it.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.endpoints import clientFromString
from zope.interface import implementer

from plugins import mqtt
from plugins.mqtt import CONNACK, PUBACK, PUBLISH, MqttProtocol, packet, utf8
from supervisor import ConnectionSpec, SupervisedConnection
from supervisor.interfaces import IConnectionHandle, IProtocolPlugin, ISupervisedProtocol
from tests.integration.conftest import HOST, theReactor
from tests.integration.scenarios import BACKOFF, HEARTBEAT

SUBSCRIBE = 8
SUBACK = 9


class SubscribingProtocol(MqttProtocol):
    """
    Subscribes to C{topic} once connected; each message's (topic, payload)
    goes to C{received}.
    """

    def __init__(
        self, handle: IConnectionHandle, topic: bytes, received: list[tuple[bytes, bytes]]
    ) -> None:
        super().__init__(handle, mqtt.Options.fromMapping({}))
        self.topic = topic
        self.got = received

    def received(self, unit: tuple[int, int, bytes]) -> None:
        kind, flags, body = unit
        if kind == CONNACK and not self.accepted and len(body) == 2 and body[1] == 0:
            self.accepted = True
            self.write(packet(SUBSCRIBE, 0b0010, b"\x00\x01" + utf8(self.topic) + b"\x01"))
        elif kind == SUBACK:
            if body[2:] == b"\x01":
                self.handle.ready()
            else:
                self.reject(f"SUBACK {body!r}", False)
        elif kind == PUBLISH:
            size = int.from_bytes(body[:2], "big")
            topic, rest = body[2 : 2 + size], body[2 + size :]
            if (flags >> 1) & 3:
                self.write(packet(PUBACK, 0, rest[:2]))
                rest = rest[2:]
            self.got.append((topic, rest))
            self.handle.activity()
        else:
            super().received(unit)


@implementer(IProtocolPlugin)
@attrs.define
class SubscribingPlugin:
    topic: bytes
    received: list[tuple[bytes, bytes]] = attrs.field(factory=list)
    name: str = "mqtt-subscriber"

    def buildProtocol(self, handle: IConnectionHandle, options: object) -> ISupervisedProtocol:
        return SubscribingProtocol(handle, self.topic, self.received)


def supervised(
    port: int, plugin: Any, protocol: str, name: str = "subscriber"
) -> SupervisedConnection:
    """
    A connection of the test's own to C{port}, with the integration tests'
    quick timings.
    """
    reactor: Any = theReactor()
    spec = ConnectionSpec(
        name,
        f"tcp:host={HOST}:port={port}",
        protocol=protocol,
        connect_timeout=1.0,
        backoff=BACKOFF,
        heartbeat=HEARTBEAT,
    )
    return SupervisedConnection(spec, clientFromString(reactor, spec.endpoint), plugin, reactor)
