"""
TLS as configuration: the files of a C{tls} table read and checked when the
configuration loads, refused with their key path and never shown; a changed
file is a changed connection on reload; the client TLS each endpoint gets;
and a certificate refused after the handshake (TLS 1.3) is the permanent
reason C{tls} too.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from random import Random
from typing import Any

import pytest
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.testing import MemoryReactorClock, StringTransport

from supervisor.attempt import attemptFor
from supervisor.config import ConfigError, loadConfig, parseConfig
from supervisor.connection import SupervisedConnection
from supervisor.service import Supervisor
from supervisor.spec import ConnectionSpec, TLSSpec
from supervisor.tls import MAX_FILE_SIZE, ClientCreators, MaterialError, readMaterial
from supervisor.transport import clientEndpoints
from tests.harness import ADDRESS, ScriptedPlugin
from tests.test_endpoints import parse, refusal
from tests.tlsca import Authority, Issued, keyPEM

PASSPHRASE = b"correct horse battery staple"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def client(ca: Authority) -> Issued:
    return ca.issue("client-1", client=True)


def keyText(issued: Issued) -> str:
    """
    The base64 body of a private key's PEM: what must never be shown.
    """
    lines = keyPEM(issued.key).decode().splitlines()
    return "".join(lines[1:-1])


# Reading the files.


def test_noFilesIsTheSystemTrustStoreAndNoClientCertificate() -> None:
    material = readMaterial()
    assert material.authorities == () and material.chain == () and material.privateKey is None
    assert material == readMaterial()


def test_theFilesAreReadAndChecked(ca: Authority, client: Issued) -> None:
    material = readMaterial(str(ca.path), str(client.certPath), str(client.keyPath))
    assert material.authorities == (ca.cert,)
    assert material.chain == (client.cert,)
    assert material.privateKey is not None
    assert repr(material) == "<TLSMaterial>"
    assert keyText(client) not in repr(TLSSpec(enabled=True, material=material))


def test_theKeyMayBeInTheCertificateFile(ca: Authority, client: Issued, tmp_path: Path) -> None:
    both = tmp_path / "both.pem"
    both.write_bytes(client.pem)
    material = readMaterial(str(ca.path), str(both))
    assert material.chain == (client.cert,)


def test_intermediatesFollowTheCertificate(ca: Authority, client: Issued, tmp_path: Path) -> None:
    chain = tmp_path / "chain.pem"
    chain.write_bytes(client.certPath.read_bytes() + ca.path.read_bytes())
    material = readMaterial("", str(chain), str(client.keyPath))
    assert material.chain == (client.cert, ca.cert)


def test_equalContentsAreEqualMaterialAndAChangeIsNot(
    ca: Authority, client: Issued, tmp_path: Path
) -> None:
    copy = tmp_path / "ca-copy.pem"
    copy.write_bytes(ca.path.read_bytes())
    assert readMaterial(str(ca.path)) == readMaterial(str(copy))
    other = Authority(tmp_path / "other")
    copy.write_bytes(other.path.read_bytes())
    assert readMaterial(str(ca.path)) != readMaterial(str(copy))


def refusedMaterial(**files: str) -> MaterialError:
    with pytest.raises(MaterialError) as info:
        readMaterial(**files)
    return info.value


def test_unusableFiles(ca: Authority, client: Issued, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    error = refusedMaterial(ca=missing)
    assert (error.key, error.problem) == (
        "ca",
        f'expected a PEM bundle of trusted certificates, got the file "{missing}", '
        "which cannot be read: No such file or directory",
    )
    error = refusedMaterial(ca=str(tmp_path))
    assert error.problem.endswith("which cannot be read: Is a directory")
    notPEM = tmp_path / "not.pem"
    notPEM.write_text("hello\n")
    error = refusedMaterial(cert=str(notPEM), key=str(client.keyPath))
    assert (error.key, error.problem) == (
        "cert",
        f'expected a PEM client certificate, got the file "{notPEM}", '
        "which holds no PEM certificate",
    )
    error = refusedMaterial(cert=str(client.certPath), key=str(ca.path))
    assert error.key == "key"
    assert error.problem.endswith("which holds no PEM private key that can be loaded")
    error = refusedMaterial(cert=str(client.certPath))
    assert error.key == "cert", "no tls.key: the key is looked for in the cert file"
    assert "followed by an unencrypted PEM private key (tls.key is empty)" in error.problem
    other = ca.issue("someone-else", client=True)
    error = refusedMaterial(cert=str(client.certPath), key=str(other.keyPath))
    assert error.problem.endswith("which holds another key")
    error = refusedMaterial(key=str(client.keyPath))
    assert error.key == "key"


def test_aFifoDoesNotHoldTheLoaderUp(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    error = refusedMaterial(ca=str(fifo))
    assert error.problem.endswith("which is not a regular file")


def test_aHugeFileIsRefusedWithoutReadingItAll(tmp_path: Path) -> None:
    huge = tmp_path / "huge.pem"
    with huge.open("wb") as f:
        f.truncate(50 * MAX_FILE_SIZE)
    error = refusedMaterial(ca=str(huge))
    assert error.problem == (
        f"expected a PEM bundle of trusted certificates of at most {MAX_FILE_SIZE} bytes, "
        f'got the file "{huge}", which is larger'
    )
    error = refusedMaterial(ca="/dev/zero")
    assert error.problem.endswith("which is not a regular file")


def test_anEncryptedKeyIsRefusedAndNeverShown(client: Issued, tmp_path: Path) -> None:
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(keyPEM(client.key, PASSPHRASE))
    error = refusedMaterial(cert=str(client.certPath), key=str(encrypted))
    assert error.problem == (
        f'expected an unencrypted PEM private key, got the file "{encrypted}", '
        "which holds an encrypted key (the configuration gives no passphrase)"
    )
    body = "".join(encrypted.read_text().splitlines()[1:-1])
    assert body[:40] not in str(error)


# The configuration.

CONN = '[[connection]]\nname = "{name}"\nendpoint = "tcp:host=localhost:port={port}"\n'


def test_tlsMergesKeyByKeyAndCarriesWhatTheFilesHeld(ca: Authority, client: Issued) -> None:
    config = parse(
        f'[defaults]\ntls = {{ enabled = true, ca = "{ca.path}", server_name = "db.internal" }}\n'
        + CONN.format(name="a", port=1)
        + f'tls = {{ cert = "{client.certPath}", key = "{client.keyPath}" }}\n'
        + CONN.format(name="b", port=2)
        + "tls.verify = false\n"
        + CONN.format(name="c", port=3)
        + "tls.enabled = false\n"
    )
    a, b, c = config.connections
    assert (a.tls.ca, a.tls.cert, a.tls.server_name, a.tls.verify) == (
        str(ca.path),
        str(client.certPath),
        "db.internal",
        True,
    )
    assert a.tls.material is not None and a.tls.material.chain == (client.cert,)
    assert b.tls.material is not None and b.tls.material.chain == ()
    assert (b.tls.verify, b.tls.ca) == (False, str(ca.path))
    assert c.tls.material is None, "TLS off: no file is read"


def test_aFileIsReadOncePerLoadHoweverManyShareIt(
    ca: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    import supervisor.config

    reads: list[tuple[str, ...]] = []

    def counting(*files: str) -> Any:
        reads.append(files)
        return readMaterial(*files)

    monkeypatch.setattr(supervisor.config, "readMaterial", counting)
    text = f'[defaults]\ntls = {{ enabled = true, ca = "{ca.path}" }}\n'
    text += "".join(CONN.format(name=f"c{i}", port=i + 1) for i in range(50))
    config = parse(text)
    assert len(reads) == 1
    assert len({id(spec.tls.material) for spec in config.connections}) == 1


@pytest.mark.parametrize("where", ["defaults", "connection"])
def test_anUnusableFileIsRefusedWhereItIsSet(where: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    table = f'tls = {{ enabled = true, ca = "{missing}" }}\n'
    if where == "defaults":
        text = "[defaults]\n" + table + CONN.format(name="a", port=1)
        keyPath = "defaults.tls.ca"
    else:
        text = CONN.format(name="a", port=1) + table
        keyPath = "connection[0].tls.ca"
    error = refusal(text)
    assert error.keyPath == keyPath
    assert error.problem.startswith("expected a PEM bundle of trusted certificates, got the file")


def test_noKeyMaterialInAnyRefusal(client: Issued, tmp_path: Path) -> None:
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(keyPEM(client.key, PASSPHRASE))
    for key in (encrypted, client.certPath):
        error = refusal(
            CONN.format(name="a", port=1)
            + f'tls = {{ enabled = true, cert = "{client.certPath}", key = "{key}" }}\n'
        )
        assert error.keyPath == "connection[0].tls.key"
        for secret in (keyText(client), PASSPHRASE.decode(), encrypted.read_text()[40:80]):
            assert secret not in str(error)


@pytest.mark.parametrize(
    ("endpoint", "kind"),
    [("tls:host=a:port=1", "tls"), ("ssl:host=a:port=1", "ssl"), ("unix:path=/tmp/s", "unix")],
)
def test_tlsSettingsAndAnEndpointOfItsOwnAreRefused(endpoint: str, kind: str) -> None:
    error = refusal(
        f'[defaults]\ntls.enabled = true\n[[connection]]\nname = "a"\nendpoint = "{endpoint}"\n'
    )
    assert (error.keyPath, error.problem) == (
        "connection[0].endpoint",
        "expected tcp: endpoint strings when tls.enabled is true (only those are wrapped "
        f'in TLS), got "{kind}:..."',
    )
    error = refusal(
        '[[connection]]\nname = "a"\ntls.enabled = true\n'
        f'endpoints = ["tcp:host=a:port=1", "{endpoint}"]\n'
    )
    assert error.keyPath == "connection[0].endpoints"


def test_aKeyWithoutACertificateIsRefused(client: Issued) -> None:
    error = refusal(CONN.format(name="a", port=1) + f'tls.key = "{client.keyPath}"\n')
    assert (error.keyPath, error.problem) == (
        "connection[0].tls.key",
        f'expected no key file without tls.cert, got "{client.keyPath}"',
    )


def test_unknownTlsKey() -> None:
    error = refusal(CONN.format(name="a", port=1) + "tls.passphrase = 'x'\n")
    assert error.keyPath == "connection[0].tls.passphrase"
    assert error.problem.startswith(
        "expected one of enabled, ca, cert, key, server_name, verify, got an unknown key"
    )


# Reloads: a changed file is a changed connection.


def test_aChangedCertificateFileRestartsOnlyTheConnectionsThatUseIt(
    ca: Authority, client: Issued, tmp_path: Path
) -> None:
    certPath, keyPath = tmp_path / "client.crt", tmp_path / "client.key"
    certPath.write_bytes(client.certPath.read_bytes())
    keyPath.write_bytes(client.keyPath.read_bytes())
    path = tmp_path / "netsupervisor.toml"
    path.write_text(
        f'[defaults]\ntls = {{ enabled = true, ca = "{ca.path}" }}\n'
        + CONN.format(name="mtls", port=1)
        + f'tls = {{ cert = "{certPath}", key = "{keyPath}" }}\n'
        + CONN.format(name="server-only", port=2)
        + CONN.format(name="plain", port=3)
        + "tls.enabled = false\n"
    )
    config = loadConfig(str(path), protocols=["line"])
    supervisor = Supervisor(
        config, MemoryReactorClock(), plugins=lambda name: ScriptedPlugin(), rng=Random(0)
    )
    report = supervisor.reload(loadConfig(str(path), protocols=["line"]))
    assert report.changed == () and len(report.unchanged) == 3
    # A renewed certificate and key in the same files: the paths did not change.
    renewed = ca.issue("client-1-renewed", client=True)
    certPath.write_bytes(renewed.certPath.read_bytes())
    keyPath.write_bytes(renewed.keyPath.read_bytes())
    report = supervisor.reload(loadConfig(str(path), protocols=["line"]))
    assert report.changed == ("mtls",)
    assert report.unchanged == ("server-only", "plain")


def test_aBadFileOnReloadKeepsTheRunningConfig(ca: Authority, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(ca.path.read_bytes())
    path = tmp_path / "netsupervisor.toml"
    path.write_text(
        CONN.format(name="a", port=1) + f'tls = {{ enabled = true, ca = "{bundle}" }}\n'
    )
    loadConfig(str(path), protocols=["line"])
    bundle.write_text("garbage\n")
    with pytest.raises(ConfigError) as info:
        loadConfig(str(path), protocols=["line"])
    assert info.value.keyPath == "connection[0].tls.ca"


# The client TLS each endpoint gets.


def clientHello(spec: ConnectionSpec) -> bytes:
    """
    What a connection with C{spec} writes first on its (memory) transport.
    """
    reactor = MemoryReactorClock()
    connection = SupervisedConnection(
        spec, clientEndpoints(reactor, spec), ScriptedPlugin(), reactor, rng=Random(0)
    )
    connection.start()
    factory = reactor.tcpClients[-1][2]
    transport = StringTransport()
    factory.buildProtocol(ADDRESS).makeConnection(transport)
    return transport.value()


@pytest.mark.parametrize("verify", [True, False])
def test_theServerNameIsSentAsSNI(verify: bool, ca: Authority) -> None:
    spec = parseConfig(
        CONN.format(name="a", port=1).replace("localhost", "127.0.0.1")
        + f'tls = {{ enabled = true, ca = "{ca.path}", server_name = "db.internal", '
        f"verify = {str(verify).lower()} }}\n",
        "f.toml",
        protocols=["line"],
    ).connections[0]
    hello = clientHello(spec)
    assert hello[:1] == b"\x16", "a TLS handshake record"
    assert b"db.internal" in hello


def test_anAddressIsNotSentAsSNI(ca: Authority) -> None:
    spec = ConnectionSpec(
        "a", "tcp:host=127.0.0.1:port=1", tls=TLSSpec(enabled=True, ca=str(ca.path))
    )
    hello = clientHello(spec)
    assert hello[:1] == b"\x16"
    assert b"127.0.0.1" not in hello


def test_endpointsWithTheSameFilesAndServerShareTheirTLSSettings(
    ca: Authority, client: Issued
) -> None:
    material = readMaterial(str(ca.path), str(client.certPath), str(client.keyPath))
    equal = readMaterial(str(ca.path), str(client.certPath), str(client.keyPath))
    creators = ClientCreators()
    first = creators.creator(material, "db.internal")
    assert creators.creator(equal, "db.internal") is first, "equal files, the same settings"
    assert creators.creator(material, "other.internal") is not first
    assert creators.creator(material, "db.internal", verify=False) is not first
    unverified = creators.creator(material, "db.internal", verify=False)
    assert creators.creator(material, "db.internal", verify=False) is unverified
    # Kept only while in use.
    key = (material, "db.internal", True)
    assert key in creators._made
    del first
    gc.collect()
    assert key not in creators._made


@pytest.mark.parametrize(
    ("text", "keyPath", "problem"),
    [
        ("keepalive.idle = -1", "keepalive.idle", "expected a number from 0 to 32767, got -1"),
        (
            "keepalive.idle = 1e9",
            "keepalive.idle",
            "expected a number from 0 to 32767, got 1000000000.0",
        ),
        (
            "keepalive.interval = inf",
            "keepalive.interval",
            "expected a number from 0 to 32767, got inf",
        ),
        ("keepalive.count = 128", "keepalive.count", "expected an integer from 0 to 127, got 128"),
        (
            "keepalive.count = 2.0",
            "keepalive.count",
            "expected an integer from 0 to 127, got the float 2.0",
        ),
        ("tls.enabled = 1", "tls.enabled", "expected a boolean (true or false), got the integer 1"),
        (
            "tls.verify = 'no'",
            "tls.verify",
            'expected a boolean (true or false), got the string "no"',
        ),
        (
            f"tls.server_name = '{'a' * 254}'",
            "tls.server_name",
            "expected a string (a host name, or empty) of at most 253 characters, got "
            f'"{"a" * 60}..."',
        ),
        ("tls.ca = 7", "tls.ca", "expected a string (a file path, or empty), got the integer 7"),
    ],
)
def test_keepaliveAndTlsValuesAreChecked(text: str, keyPath: str, problem: str) -> None:
    for where, prefix in (
        ("[defaults]\n", "defaults"),
        (CONN.format(name="a", port=1), "connection[0]"),
    ):
        error = refusal(where + text + "\n")
        assert (error.keyPath, error.problem) == (f"{prefix}.{keyPath}", problem)


@pytest.mark.parametrize(
    ("endpoint", "tls", "hears"),
    [
        ("tcp:host=127.0.0.1:port=1", TLSSpec(), False),
        ("tcp:host=::1:port=1", TLSSpec(), False),
        ("tcp:host=example.com:port=1", TLSSpec(), False),
        ("unix:/tmp/ns.sock", TLSSpec(), False),
        ("tcp:host=127.0.0.1:port=1", TLSSpec(enabled=True), True),
        ("tls:host=127.0.0.1:port=1", TLSSpec(), True),
    ],
)
def test_onlyAnAttemptThatMayMeetTLSHearsOfHandshakes(
    endpoint: str, tls: TLSSpec, hears: bool
) -> None:
    """
    Twisted's endpoint declares the handshake listener again on every
    connection's wrapper of a protocol that is one: a plain TCP or UNIX
    connect gets an attempt that is not; a TLS endpoint, or one of the
    application's (which may make a TLS transport), one that is.
    """
    [made] = clientEndpoints(MemoryReactorClock(), ConnectionSpec("c", endpoint, tls=tls))
    assert IHandshakeListener.implementedBy(attemptFor(made)) is hears

    class Theirs:
        pass

    assert IHandshakeListener.implementedBy(attemptFor(Theirs()))  # type: ignore[arg-type]
