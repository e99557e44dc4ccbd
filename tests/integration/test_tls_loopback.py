"""
TLS over real loopback sockets: a certificate that fails verification is a
permanent failure (CONNECTING -> CLOSED, reason tls), a trusted one reaches
ESTABLISHED only after the TLS handshake.
"""

from __future__ import annotations

import datetime
from collections.abc import Generator, Iterator
from pathlib import Path
from random import Random

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver

from supervisor import ConnectionSpec, HeartbeatSpec, SupervisedConnection, findPlugin
from supervisor.spec import BackoffSpec
from tests.integration.conftest import theReactor, waitFor
from tests.integration.scenarios import answeredAtFirstAttempt

pytestmark = pytest.mark.integration


def _selfSigned(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certPath, keyPath = directory / "cert.pem", directory / "key.pem"
    certPath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyPath.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certPath, keyPath


class Pong(LineOnlyReceiver):
    delimiter = b"\n"

    def lineReceived(self, line: bytes) -> None:
        if line.startswith(b"PING "):
            self.sendLine(b"PONG " + line[5:].rstrip(b"\r"))


@pytest.fixture
def tlsServer(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """
    A TLS line server on 127.0.0.1 with a fresh self-signed certificate;
    yields its port and a directory holding only that certificate.
    """
    certPath, keyPath = _selfSigned(tmp_path)
    options = ssl.PrivateCertificate.loadPEM(certPath.read_text() + keyPath.read_text()).options()
    port: IListeningPort = theReactor().listenSSL(  # type: ignore[attr-defined]
        0, Factory.forProtocol(Pong), options, interface="127.0.0.1"
    )
    trust = tmp_path / "trust"
    trust.mkdir()
    (trust / "cert.pem").write_bytes(certPath.read_bytes())
    try:
        yield port.getHost().port, trust
    finally:
        port.stopListening()


def _connection(endpoint: str) -> SupervisedConnection:
    spec = ConnectionSpec(
        "tls-1",
        endpoint,
        connect_timeout=5.0,
        backoff=BackoffSpec(initial=0.2, max=0.5),
        heartbeat=HeartbeatSpec(interval=0.2, timeout=1.0, misses=2),
    )
    reactor = theReactor()
    return SupervisedConnection(
        spec, clientFromString(reactor, endpoint), findPlugin("line"), reactor, rng=Random(0)
    )


@pytest_twisted.inlineCallbacks
def test_anUntrustedCertificateClosesForGood(
    tlsServer: tuple[int, Path],
) -> Generator[Deferred[object], object, None]:
    port, _ = tlsServer
    connection = _connection(f"tls:host=localhost:port={port}")
    connection.start()
    try:
        yield waitFor(lambda: connection.state == "CLOSED", 10, "CLOSED")
        path = [(t.from_, t.to, t.reason) for t in connection.history]
        assert path == [("IDLE", "CONNECTING", "start"), ("CONNECTING", "CLOSED", "tls")]
        assert "certificate verify failed" in (connection.lastError or "")
        assert connection.attempts == 1
    finally:
        yield connection.stop()


@pytest_twisted.inlineCallbacks
def test_aTrustedCertificateEstablishesAfterTheHandshake(
    tlsServer: tuple[int, Path],
) -> Generator[Deferred[object], object, None]:
    port, trust = tlsServer
    connection = _connection(f"tls:host=localhost:port={port}:trustRoots={trust}")
    try:
        yield answeredAtFirstAttempt(connection, "a heartbeat over TLS")
        assert connection.state == "ESTABLISHED"
    finally:
        yield connection.stop()
    assert connection.state == "CLOSED"
