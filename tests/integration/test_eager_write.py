"""
L{supervisor.eagerwrite.eagerWrite} on real TCP connections on 127.0.0.1:
sent at once when nothing waits, through the transport's buffer otherwise,
and always in order.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.tcp import Client

from supervisor.eagerwrite import eagerWrite
from tests.integration.conftest import HOST, theReactor, waitFor


class Sink(Protocol):
    """
    Keeps what it receives.
    """

    def __init__(self) -> None:
        self.received = bytearray()

    def dataReceived(self, data: bytes) -> None:
        self.received += data


@pytest_twisted.inlineCallbacks
def test_writtenAtOnceOrInOrder() -> Generator[Deferred[Any], Any, None]:
    reactor: Any = theReactor()
    sinks: list[Sink] = []

    def sink() -> Sink:
        sinks.append(Sink())
        return sinks[-1]

    port = yield TCP4ServerEndpoint(reactor, 0, interface=HOST).listen(Factory.forProtocol(sink))
    try:
        client = yield TCP4ClientEndpoint(reactor, HOST, port.getHost().port).connect(
            Factory.forProtocol(Protocol)
        )
        transport = client.transport
        assert type(transport) is Client
        yield waitFor(lambda: sinks, 5, "the connection")

        # Nothing buffered: sent at once, the socket never registered for writing.
        eagerWrite(transport, b"ping 1\r\n")
        assert transport not in reactor.getWriters()
        assert not transport.dataBuffer and not transport._tempDataLen
        yield waitFor(lambda: sinks[0].received == b"ping 1\r\n", 5, "the first ping")

        # Something waits in the transport's buffer: behind it, in order.
        transport.write(b"a")
        eagerWrite(transport, b"b")
        assert transport in reactor.getWriters()
        yield waitFor(lambda: sinks[0].received.endswith(b"ab"), 5, "a then b")

        # More than the socket takes at once: the rest through the buffer.
        big = bytes(range(256)) * 40_000
        eagerWrite(transport, big)
        assert transport in reactor.getWriters()
        expected = b"ping 1\r\nab" + big
        yield waitFor(lambda: len(sinks[0].received) >= len(expected), 10, "all of it")
        assert sinks[0].received == expected

        # Closing: through the transport, which still sends it before the
        # close; once closed, it is dropped.
        transport.loseConnection()
        eagerWrite(transport, b"last")
        yield waitFor(lambda: not transport.connected, 5, "the close")
        eagerWrite(transport, b"dropped")
        yield waitFor(lambda: sinks[0].received.endswith(b"last"), 5, "the last write")
        assert sinks[0].received == expected + b"last"
    finally:
        yield port.stopListening()
