"""
A test certificate authority, made by the suite with C{cryptography}: a CA
that issues server and client certificates (valid, expired, for other
names) as PEM files in a directory the test owns.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = datetime.timedelta(days=1)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def keyPEM(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    """
    C{key} as PKCS#8 PEM, encrypted with C{password} if given.
    """
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


@attrs.frozen
class Issued:
    """
    A certificate and its key, and the files they were written to.
    """

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    certPath: Path
    keyPath: Path

    @property
    def pem(self) -> bytes:
        """
        The certificate followed by its key, as one PEM file would hold them.
        """
        return _pem(self.cert) + keyPEM(self.key)


class Authority:
    """
    A self-signed CA writing what it issues into C{directory}.

    @ivar path: its own certificate (PEM): what a client or server trusts.
    """

    def __init__(self, directory: Path, name: str = "netsupervisor test CA") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - DAY)
            .not_valid_after(now + 30 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / f"{self._slug(name)}.pem"
        self.path.write_bytes(_pem(self.cert))

    @staticmethod
    def _slug(name: str) -> str:
        return "".join(ch if ch.isalnum() else "-" for ch in name)

    def issue(
        self,
        name: str,
        *,
        dns: Sequence[str] = ("localhost",),
        ips: Sequence[str] = ("127.0.0.1", "::1"),
        client: bool = False,
        expired: bool = False,
    ) -> Issued:
        """
        A certificate for C{name} signed by this CA, its key, both written
        to files named after C{name}.

        @param dns: the DNS names it carries.
        @param ips: the IP addresses it carries.
        @param client: for a client (else for a server).
        @param expired: it expired yesterday.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start, end = (now - 3 * DAY, now - DAY) if expired else (now - DAY, now + 30 * DAY)
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        slug = self._slug(name)
        certPath, keyPath = self.directory / f"{slug}.crt", self.directory / f"{slug}.key"
        certPath.write_bytes(_pem(cert))
        keyPath.write_bytes(keyPEM(key))
        keyPath.chmod(0o600)
        return Issued(cert, key, certPath, keyPath)
