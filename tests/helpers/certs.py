"""Real X.509 certificates for the TLS tests: a test CA of their own and server certificates
it signs (for 127.0.0.1 and ``localhost`` unless told otherwise), made with ``cryptography``
and written as PEM files. Nothing leaves the test's temporary folder."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key as PEM files, and the certificate's serial number."""

    cert: Path
    key: Path
    serial: int


class TestCA:
    """A certificate authority made for one test run, with its certificate at :attr:`cert`."""

    __test__ = False  # not a test class, for pytest

    def __init__(self, folder: Path, name: str = "spatialjam test CA") -> None:
        self.folder = folder
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                      .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                      .not_valid_before(now - DAY).not_valid_after(now + 30 * DAY)
                      .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                      .sign(self._key, hashes.SHA256()))
        self.cert = folder / "ca.pem"
        self.cert.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def client_context(self) -> ssl.SSLContext:
        """A client's context that trusts this CA alone."""
        return ssl.create_default_context(cafile=str(self.cert))

    def issue(self, name: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
              valid_from: datetime.timedelta = -DAY,
              valid_for: datetime.timedelta = 30 * DAY) -> Issued:
        """A server certificate for ``hosts`` valid from now + ``valid_from`` for
        ``valid_for``, as ``NAME.pem`` and ``NAME.key``."""
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        start = datetime.datetime.now(datetime.UTC) + valid_from
        serial = x509.random_serial_number()
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
                .issuer_name(self._cert.subject).public_key(key.public_key())
                .serial_number(serial).not_valid_before(start)
                .not_valid_after(start + valid_for)
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .sign(self._key, hashes.SHA256()))
        issued = Issued(self.folder / f"{name}.pem", self.folder / f"{name}.key", serial)
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                                + self._cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                 serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
        return issued
