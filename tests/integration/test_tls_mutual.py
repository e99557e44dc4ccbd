"""
TLS and mutual TLS as configuration, over real loopback sockets, with a CA
the suite makes: a TLS server that requires a client certificate accepts the
right one (ESTABLISHED, and the server saw it); no certificate, one from an
untrusted CA, an expired one, a server certificate from an untrusted CA, for
another name, or expired: each is CLOSED with the reason C{tls} after one
attempt.

Under TLS 1.3 the server refuses the client's certificate after the client's
handshake completed, so a plugin ready at once (C{line}) is briefly
ESTABLISHED first; under TLS 1.2 the attempt fails in the handshake.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import attrs
import pytest
import pytest_twisted
from OpenSSL import crypto
from twisted.internet import ssl
from twisted.internet.defer import Deferred

from supervisor import SupervisedConnection, findPlugin
from supervisor.config import parseConfig
from supervisor.spec import ConnectionSpec
from supervisor.transport import clientEndpoints
from tests.integration.conftest import theReactor, waitFor
from tests.integration.pong import PongServer
from tests.integration.scenarios import Recorder, answeredAtFirstAttempt, stopAtLast
from tests.tlsca import Authority, Issued

pytestmark = pytest.mark.integration

TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3


@attrs.frozen
class PKI:
    """
    The trusted CA and a stranger CA, and what each issued.
    """

    trusted: Authority
    stranger: Authority
    server: Issued
    serverForAnotherName: Issued
    expiredServer: Issued
    strangerServer: Issued
    client: Issued
    strangerClient: Issued
    expiredClient: Issued


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    directory = tmp_path_factory.mktemp("pki")
    trusted = Authority(directory / "trusted", "trusted CA")
    stranger = Authority(directory / "stranger", "stranger CA")
    return PKI(
        trusted=trusted,
        stranger=stranger,
        server=trusted.issue("server"),
        serverForAnotherName=trusted.issue("other", dns=("other.example",), ips=()),
        expiredServer=trusted.issue("expired-server", expired=True),
        strangerServer=stranger.issue("stranger-server"),
        client=trusted.issue("client-1", client=True),
        strangerClient=stranger.issue("client-1", client=True),
        expiredClient=trusted.issue("expired-client", client=True, expired=True),
    )


def serverOptions(ca: Authority, issued: Issued, maximum: Any = None) -> ssl.CertificateOptions:
    """
    A TLS server with C{issued}'s certificate that requires a client
    certificate C{ca} signed.
    """
    return ssl.CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(issued.key),
        certificate=crypto.X509.from_cryptography(issued.cert),
        verify=True,
        requireCertificate=True,
        caCerts=[crypto.X509.from_cryptography(ca.cert)],
        lowerMaximumSecurityTo=maximum,
    )


@pytest.fixture
def serve(pki: PKI) -> Iterator[Any]:
    """
    Starts TLS line servers for a test; stops them all after it.
    """
    started: list[PongServer] = []

    def start(issued: Issued | None = None, maximum: Any = None) -> PongServer:
        server = PongServer(tls=serverOptions(pki.trusted, issued or pki.server, maximum))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def connection(port: int, tls: str, name: str = "mtls") -> SupervisedConnection:
    """
    A line connection to C{localhost:port} (a name: resolved per attempt)
    with the C{tls} table C{tls}, loaded as a configuration file is.
    """
    text = (
        f'[[connection]]\nname = "{name}"\nendpoint = "tcp:host=localhost:port={port}"\n'
        f"connect_timeout = 5.0\nbackoff = {{ initial = 0.1, max = 0.5 }}\n"
        f"heartbeat = {{ interval = 0.3, timeout = 1.0 }}\ntls = {tls}\n"
    )
    spec: ConnectionSpec = parseConfig(text, "mtls.toml").connections[0]
    reactor = theReactor()
    return SupervisedConnection(spec, clientEndpoints(reactor, spec), findPlugin("line"), reactor)


def tlsTable(ca: Authority, client: Issued | None = None, more: str = "") -> str:
    """
    A C{tls} table: enabled, trusting C{ca}, with C{client}'s certificate
    if given, and C{more} settings.
    """
    settings = f'enabled = true, ca = "{ca.path}"'
    if client is not None:
        settings += f', cert = "{client.certPath}", key = "{client.keyPath}"'
    if more:
        settings += f", {more}"
    return f"{{ {settings} }}"


@pytest_twisted.inlineCallbacks
def test_theRightClientCertificateEstablishes(
    pki: PKI, serve: Any
) -> Generator[Deferred[Any], Any, None]:
    server = serve()
    c = connection(server.port, tlsTable(pki.trusted, pki.client))
    try:
        yield answeredAtFirstAttempt(c, "a heartbeat answered over mutual TLS")
        assert server.certificates and set(server.certificates) == {"client-1"}
    finally:
        yield stopAtLast(c)


@pytest_twisted.inlineCallbacks
def closedWithTls(
    c: SupervisedConnection, seen: Recorder
) -> Generator[Deferred[Any], Any, list[tuple[str, str]]]:
    """
    Start C{c} and wait for CLOSED; it must be CLOSED with C{tls} after one
    attempt. Return its path.
    """
    c.start()
    try:
        yield waitFor(lambda: c.state == "CLOSED", 10, f"CLOSED\n{seen}")
        assert seen.transitions[-1].reason == "tls", str(seen)
        assert c.attempts == 1, str(seen)
        assert c.lastError is not None and c.lastError.startswith("tls: ")
        return seen.pairs()
    finally:
        yield stopAtLast(c)


@pytest.mark.parametrize("maximum", [TLS12, TLS13], ids=["TLSv1.2", "TLSv1.3"])
@pytest.mark.parametrize("client", ["none", "strangerClient", "expiredClient"])
@pytest_twisted.inlineCallbacks
def test_aClientCertificateTheServerRefusesClosesWithTls(
    pki: PKI, serve: Any, client: str, maximum: Any
) -> Generator[Deferred[Any], Any, None]:
    server = serve(maximum=maximum)
    issued = None if client == "none" else getattr(pki, client)
    c = connection(server.port, tlsTable(pki.trusted, issued))
    seen = Recorder(c)
    path = yield closedWithTls(c, seen)
    if maximum == TLS12:
        assert path == [("IDLE", "CONNECTING"), ("CONNECTING", "CLOSED")], str(seen)
    else:
        # The server's refusal comes after the client's handshake completed.
        assert path == [
            ("IDLE", "CONNECTING"),
            ("CONNECTING", "ESTABLISHED"),
            ("ESTABLISHED", "CLOSED"),
        ], str(seen)
    assert server.certificates == [], "no line reached the server"


@pytest.mark.parametrize(
    ("server", "error"),
    [
        ("strangerServer", "certificate verify failed"),
        ("expiredServer", "certificate verify failed"),
        ("serverForAnotherName", "VerificationError"),
    ],
)
@pytest_twisted.inlineCallbacks
def test_aServerCertificateThatFailsVerificationClosesWithTls(
    pki: PKI, serve: Any, server: str, error: str
) -> Generator[Deferred[Any], Any, None]:
    listening = serve(getattr(pki, server))
    c = connection(listening.port, tlsTable(pki.trusted, pki.client))
    seen = Recorder(c)
    path = yield closedWithTls(c, seen)
    assert path == [("IDLE", "CONNECTING"), ("CONNECTING", "CLOSED")], str(seen)
    assert c.lastError is not None and error in c.lastError, c.lastError
    assert listening.certificates == []


@pytest.mark.parametrize(
    ("server", "setting"),
    [
        # server_name is the name the certificate must carry.
        ("serverForAnotherName", 'server_name = "other.example"'),
        # Without verification, any certificate will do.
        ("strangerServer", "verify = false"),
    ],
)
@pytest_twisted.inlineCallbacks
def test_aServerCertificateAcceptedByTheSettings(
    pki: PKI, serve: Any, server: str, setting: str
) -> Generator[Deferred[Any], Any, None]:
    listening = serve(getattr(pki, server))
    c = connection(listening.port, tlsTable(pki.trusted, pki.client, setting))
    try:
        yield answeredAtFirstAttempt(c, "ESTABLISHED with a heartbeat")
        assert set(listening.certificates) == {"client-1"}
    finally:
        yield stopAtLast(c)


def test_noKeyContentsInTheSpecOrItsRepr(pki: PKI) -> None:
    c = connection(1, tlsTable(pki.trusted, pki.client))
    text = pki.client.keyPath.read_text()
    body = "".join(text.splitlines()[1:-1])
    assert body[:32] not in repr(c.spec)


@pytest.mark.parametrize("trusted", [False, True], ids=["system-store", "CA-in-system-store"])
@pytest_twisted.inlineCallbacks
def test_withoutCaTheSystemTrustStoreDecides(
    pki: PKI, serve: Any, trusted: bool, monkeypatch: pytest.MonkeyPatch
) -> Generator[Deferred[Any], Any, None]:
    """
    C{ca = ""} verifies against the system's trust store (OpenSSL's default
    paths, which C{SSL_CERT_FILE} names): it does not know the suite's CA,
    so verification, on by default, fails; once the store holds that CA,
    the same settings establish.
    """
    if trusted:
        monkeypatch.setenv("SSL_CERT_FILE", str(pki.trusted.path))
        monkeypatch.setenv("SSL_CERT_DIR", str(pki.trusted.path.parent / "no-such-dir"))
    server = serve()
    table = f'{{ enabled = true, cert = "{pki.client.certPath}", key = "{pki.client.keyPath}" }}'
    c = connection(server.port, table)
    seen = Recorder(c)
    if not trusted:
        path = yield closedWithTls(c, seen)
        assert path == [("IDLE", "CONNECTING"), ("CONNECTING", "CLOSED")], str(seen)
        assert "certificate verify failed" in (c.lastError or "")
        return
    c.start()
    try:
        yield waitFor(lambda: c.rtt is not None, 10, f"ESTABLISHED with a heartbeat\n{seen}")
    finally:
        yield stopAtLast(c)
