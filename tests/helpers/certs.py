"""A test certificate authority and the certificates it issues, written as PEM files.

A client that trusts the CA's file (``SSL_CERT_FILE`` for Python's default context, or the
``cafile`` of an ``ssl.SSLContext``; Chromium through its own store) accepts a leaf issued for a
name or an IP address, as it would a certificate from a public CA, with no verification turned
off anywhere.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: How long the certificates are valid, from an hour before they are made (clock skew).
VALID_DAYS = 7


@dataclass(frozen=True)
class Pem:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(folder: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pem:
    folder.mkdir(parents=True, exist_ok=True)
    pem = Pem(folder / f"{stem}.crt", folder / f"{stem}.key")
    pem.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    pem.key.chmod(0o600)
    return pem


class TestCA:
    """A self-signed CA (P-256) that issues server certificates for names and IP addresses."""

    __test__ = False  # not a pytest test class

    def __init__(self, folder: Path, name: str = "spatialjam test CA") -> None:
        self.folder = folder
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        #: The CA's own certificate and key; clients trust ``pem.cert``.
        self.pem = _write(folder, "ca", self._cert, self._key)

    def issue(self, stem: str, *names: str, days: float = VALID_DAYS) -> Pem:
        """A server certificate for ``names`` (DNS names or IP addresses, the first also the
        common name), valid from an hour ago for ``days`` (negative: already expired)."""
        if not names:
            raise ValueError("a certificate needs at least one name or IP address")
        sans: list[x509.GeneralName] = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        not_after = now + datetime.timedelta(days=days)
        not_before = min(now - datetime.timedelta(hours=1), not_after - datetime.timedelta(days=1))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0])).issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return _write(self.folder, stem, cert, key)
