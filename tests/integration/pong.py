"""
An in-process line server on a real loopback socket, plain or TLS, that
answers the C{line} plugin's pings and remembers who connected.
"""

from __future__ import annotations

from typing import Any

from cryptography.x509.oid import NameOID
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver

from tests.integration.conftest import HOST, theReactor


class _Pong(LineOnlyReceiver):
    delimiter = b"\n"
    server: PongServer

    def connectionMade(self) -> None:
        self.server.peers.append(self.transport.getPeer().host)  # type: ignore[union-attr]
        self.server.live.append(self)

    def connectionLost(self, reason: Any = None) -> None:
        self.server.live.remove(self)

    def lineReceived(self, line: bytes) -> None:
        getPeerCertificate = getattr(self.transport, "getPeerCertificate", None)
        if getPeerCertificate is not None:
            peer = getPeerCertificate()
            names = (
                []
                if peer is None
                else peer.to_cryptography().subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            )
            self.server.certificates.append(str(names[0].value) if names else "")
        if line.startswith(b"PING "):
            self.sendLine(b"PONG " + line[5:].rstrip(b"\r"))


class PongServer:
    """
    Answers C{PING t} with C{PONG t}.

    @ivar peers: the address of every client that connected, in order.
    @ivar certificates: for each line received over TLS, the common name of
        the client's certificate (C{""}: none).
    @ivar live: the connections open now.
    """

    def __init__(self, interface: str = HOST, tls: Any = None, port: int = 0) -> None:
        """
        @param tls: the server's TLS options (a C{CertificateOptions}); plain
            TCP without.
        """
        self.peers: list[str] = []
        self.certificates: list[str] = []
        self.live: list[_Pong] = []
        factory = Factory.forProtocol(_Pong)
        build = factory.buildProtocol

        def buildProtocol(addr: Any) -> Any:
            protocol = build(addr)
            protocol.server = self
            return protocol

        factory.buildProtocol = buildProtocol  # type: ignore[method-assign]
        reactor: Any = theReactor()
        if tls is None:
            self.listening: IListeningPort = reactor.listenTCP(port, factory, interface=interface)
        else:
            self.listening = reactor.listenSSL(port, factory, tls, interface=interface)

    @property
    def port(self) -> int:
        return int(self.listening.getHost().port)

    def stop(self) -> None:
        """
        Stop listening and drop every connection.
        """
        self.listening.stopListening()
        for protocol in list(self.live):
            protocol.transport.abortConnection()  # type: ignore[union-attr]
