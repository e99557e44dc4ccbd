"""
TLS as configuration: the certificate files a connection's C{tls} table
names, read and checked once (L{readMaterial}), and the client TLS settings
built from them (L{clientCreator}).

The configuration loader reads the files and puts the L{TLSMaterial} on the
spec. Two materials are equal when the files' contents are, so that a reload
after a certificate changed on disk sees a changed connection, and one whose
files did not change sees an equal one. Nothing here ever shows what a file
holds: not in a C{repr}, not in an error.
"""

from __future__ import annotations

import hashlib
import os
import stat
from typing import TYPE_CHECKING, Any, Literal
from weakref import WeakKeyDictionary, WeakValueDictionary

import attrs
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

from supervisor.options import escape

if TYPE_CHECKING:
    from twisted.internet._sslverify import IOpenSSLTrustRoot
    from twisted.protocols.tls import TLSMemoryBIOProtocol

__all__ = ["ClientCreators", "MaterialError", "TLSMaterial", "clientCreator", "readMaterial"]

MAX_FILE_SIZE = 1024 * 1024
"""The largest certificate or key file read (a system CA bundle is some 200 KiB)."""

MaterialKey = Literal["ca", "cert", "key"]

_BUNDLE = "a PEM bundle of trusted certificates"
_CERT = "a PEM client certificate"
_KEY = "an unencrypted PEM private key"


class MaterialError(Exception):
    """
    A file named in a C{tls} table cannot be used.

    @ivar key: the setting that names it: C{ca}, C{cert} or C{key}.
    @ivar problem: C{expected ..., got ...}, naming the file but never
        showing what it holds.
    """

    def __init__(self, key: MaterialKey, problem: str) -> None:
        super().__init__(f"tls.{key}: {problem}")
        self.key = key
        self.problem = problem


@attrs.frozen(repr=False)
class TLSMaterial:
    """
    The certificates and key of one C{tls} table, as read from its files.

    Equal when the files held the same bytes (a digest of them); the parsed
    values take no part in equality and are never shown.

    @ivar authorities: the trusted certificates of C{ca}; empty for the
        system's trust store.
    @ivar chain: the client certificate of C{cert} followed by the
        intermediates found after it; empty without mutual TLS.
    @ivar privateKey: the client certificate's key, if any.
    """

    digest: bytes
    authorities: tuple[x509.Certificate, ...] = attrs.field(default=(), eq=False)
    chain: tuple[x509.Certificate, ...] = attrs.field(default=(), eq=False)
    privateKey: PrivateKeyTypes | None = attrs.field(default=None, eq=False)

    def __repr__(self) -> str:
        return "<TLSMaterial>"


def _shown(path: str) -> str:
    # Whole (a path is no secret, and the loader bounds its length), on one line.
    quoted = escape(path.replace("\\", "\\\\").replace('"', '\\"'))
    return f'the file "{quoted}"'


def _read(key: MaterialKey, path: str, what: str) -> bytes:
    try:
        # Non-blocking, so that a FIFO cannot hold the loader up; only a
        # regular file is read.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise MaterialError(
                    key, f"expected {what}, got {_shown(path)}, which is not a regular file"
                )
            data = f.read(MAX_FILE_SIZE + 1)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise MaterialError(
            key, f"expected {what}, got {_shown(path)}, which cannot be read: {reason}"
        ) from None
    if len(data) > MAX_FILE_SIZE:
        raise MaterialError(
            key,
            f"expected {what} of at most {MAX_FILE_SIZE} bytes, got {_shown(path)}, "
            "which is larger",
        )
    return data


def _certificates(key: MaterialKey, path: str, data: bytes, what: str) -> list[x509.Certificate]:
    try:
        found = x509.load_pem_x509_certificates(data)
    except ValueError:
        found = []
    if not found:
        raise MaterialError(
            key, f"expected {what}, got {_shown(path)}, which holds no PEM certificate"
        )
    return found


def _privateKey(key: MaterialKey, path: str, data: bytes) -> PrivateKeyTypes:
    try:
        return load_pem_private_key(data, password=None)
    except TypeError:
        problem = "which holds an encrypted key (the configuration gives no passphrase)"
    except Exception:
        # Neither the library's message (it may quote the data) nor the
        # cause is kept.
        problem = "which holds no PEM private key that can be loaded"
    what = _KEY if key == "key" else f"{_CERT} followed by {_KEY} (tls.key is empty)"
    raise MaterialError(key, f"expected {what}, got {_shown(path)}, {problem}")


def _publicDER(value: x509.Certificate | PrivateKeyTypes) -> bytes:
    public = value.public_key()
    return public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def readMaterial(ca: str = "", cert: str = "", key: str = "") -> TLSMaterial:
    """
    Read and check the files of a C{tls} table.

    @param ca: a PEM bundle of trusted certificates; C{""} for the system's
        trust store.
    @param cert: the client certificate (PEM), optionally followed by its
        intermediates; C{""} for none.
    @param key: the client certificate's unencrypted PEM key; C{""} when it
        is in the C{cert} file (or there is no C{cert}).
    @raise MaterialError: a file cannot be read or holds nothing usable, the
        key is encrypted, or it is not the certificate's key.
    """
    if key and not cert:
        raise MaterialError("key", f"expected no key without tls.cert, got {_shown(key)}")
    # Each file is length-prefixed, so that no two sets of files digest alike.
    digest = hashlib.sha256()
    authorities: list[x509.Certificate] = []
    chain: list[x509.Certificate] = []
    privateKey: PrivateKeyTypes | None = None
    if ca:
        data = _read("ca", ca, _BUNDLE)
        digest.update(b"ca %d:" % len(data) + data)
        authorities = _certificates("ca", ca, data, _BUNDLE)
    if cert:
        data = _read("cert", cert, _CERT)
        digest.update(b"cert %d:" % len(data) + data)
        chain = _certificates("cert", cert, data, _CERT)
        if key:
            data = _read("key", key, _KEY)
            digest.update(b"key %d:" % len(data) + data)
        keyPath = key or cert
        keySetting: MaterialKey = "key" if key else "cert"
        privateKey = _privateKey(keySetting, keyPath, data)
        if _publicDER(privateKey) != _publicDER(chain[0]):
            raise MaterialError(
                keySetting,
                f"expected the private key of tls.cert, got {_shown(keyPath)}, "
                "which holds another key",
            )
    return TLSMaterial(digest.digest(), tuple(authorities), tuple(chain), privateKey)


@attrs.frozen
class _Converted:
    """
    What Twisted's TLS needs of one material: its client certificate as
    arguments of C{CertificateOptions}, and its trust root.
    """

    options: dict[str, Any]
    trustRoot: IOpenSSLTrustRoot


def _convert(material: TLSMaterial) -> _Converted:
    options: dict[str, Any] = {}
    if material.chain:
        assert material.privateKey is not None
        leaf, *intermediates = material.chain
        options["certificate"] = crypto.X509.from_cryptography(leaf)
        options["privateKey"] = crypto.PKey.from_cryptography_key(material.privateKey)  # type: ignore[arg-type]
        if intermediates:
            options["extraCertChain"] = [crypto.X509.from_cryptography(c) for c in intermediates]
    trustRoot: IOpenSSLTrustRoot
    if material.authorities:
        trustRoot = ssl.trustRootFromCertificates(  # type: ignore[no-untyped-call]
            [
                ssl.Certificate(crypto.X509.from_cryptography(c))  # type: ignore[no-untyped-call]
                for c in material.authorities
            ]
        )
    else:
        trustRoot = ssl.platformTrust()  # type: ignore[no-untyped-call]
    return _Converted(options, trustRoot)


def _creator(
    converted: _Converted, serverName: str, verify: bool
) -> IOpenSSLClientConnectionCreator:
    if not verify:
        return _Unverified(ssl.CertificateOptions(verify=False, **converted.options), serverName)
    # A copy: Twisted adds to the dict it is given.
    options = dict(converted.options)
    return ssl.optionsForClientTLS(serverName, converted.trustRoot, extraCertificateOptions=options)


def clientCreator(
    material: TLSMaterial, serverName: str, verify: bool = True
) -> IOpenSSLClientConnectionCreator:
    """
    The client TLS settings of one endpoint.

    @param material: what the C{tls} table's files hold.
    @param serverName: sent as SNI (unless it is an IP address) and, when
        verifying, the name the server's certificate must carry.
    @param verify: check the server's certificate against C{material}'s
        authorities (the system's trust store when it has none) and
        C{serverName}; without it, any certificate is accepted.
    """
    return _creator(_convert(material), serverName, verify)


class ClientCreators:
    """
    L{clientCreator}, made once for each material, server name and
    C{verify} while an endpoint uses it: the members of a pool, or the
    connections to one server, share their TLS settings (and OpenSSL
    context). Nothing is kept once no endpoint uses it.
    """

    def __init__(self) -> None:
        self._converted: WeakKeyDictionary[TLSMaterial, _Converted] = WeakKeyDictionary()
        self._made: WeakValueDictionary[
            tuple[TLSMaterial, str, bool], IOpenSSLClientConnectionCreator
        ] = WeakValueDictionary()

    def creator(
        self, material: TLSMaterial, serverName: str, verify: bool = True
    ) -> IOpenSSLClientConnectionCreator:
        """
        As L{clientCreator}.
        """
        key = (material, serverName, verify)
        made = self._made.get(key)
        if made is None:
            converted = self._converted.get(material)
            if converted is None:
                converted = self._converted[material] = _convert(material)
            made = self._made[key] = _creator(converted, serverName, verify)
        return made


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """
    Client TLS that accepts any server certificate (C{verify = false}), still
    sending the server name (SNI).
    """

    def __init__(self, options: ssl.CertificateOptions, serverName: str) -> None:
        self._options = options
        isAddress = isIPAddress(serverName) or isIPv6Address(serverName)
        self._serverName = None if isAddress else serverName.encode("idna")

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        connection = SSL.Connection(self._options.getContext(), None)
        connection.set_app_data(tlsProtocol)
        if self._serverName is not None:
            connection.set_tlsext_host_name(self._serverName)
        return connection
