"""A coturn TURN server (Debian's ``turnserver``) on the model internet, and credentials for it
minted the way coturn's ``use-auth-secret`` (the TURN REST API scheme) expects them.

The credential scheme (draft-uberti-behave-turn-rest-00, section 2.2; coturn's
``--use-auth-secret``)::

    username = "<expiry, Unix seconds>:<identity>"
    password = base64(HMAC-SHA1(shared secret, username))

coturn recomputes the password from the username and its own copy of the secret, and refuses a
username whose expiry has passed: nothing but the secret has to be shared, and a credential
stops working on its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import shutil
from dataclasses import dataclass

import pytest

from tests.helpers.certs import TestCA
from tests.helpers.netns import Host, Internet, Proc

REALM = "spatialjam.test"
UDP_PORT = 3478
TLS_PORT = 5349
#: The relay ports coturn allocates from (a small range: one test needs a handful).
RELAY_PORTS = (49152, 49407)
START_TIMEOUT_S = 15.0


def turn_rest_credentials(secret: str, identity: str, expiry_s: int) -> tuple[str, str]:
    """``(username, password)`` valid until ``expiry_s`` (Unix seconds) for ``identity``."""
    username = f"{expiry_s}:{identity}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def require() -> None:
    """Skip the calling test, saying why, where coturn is not installed."""
    if shutil.which("turnserver") is None:
        pytest.skip("`turnserver` is not installed (Debian package coturn; make test installs it)")


@dataclass
class Coturn:
    """A running coturn on ``host``: UDP and TCP on :data:`UDP_PORT`, TLS (and DTLS) on
    :data:`TLS_PORT` with a certificate from ``ca`` for its address."""

    host: Host
    secret: str
    ca: TestCA
    proc: Proc

    @property
    def address(self) -> str:
        return self.host.public

    def credentials(self, identity: str, expiry_s: int) -> tuple[str, str]:
        return turn_rest_credentials(self.secret, identity, expiry_s)

    def urls(self) -> dict[str, str]:
        """Its ICE server URLs (RFC 7065) by the way they reach it."""
        return {"udp": f"turn:{self.address}:{UDP_PORT}?transport=udp",
                "tcp": f"turn:{self.address}:{UDP_PORT}?transport=tcp",
                "tls": f"turns:{self.address}:{TLS_PORT}?transport=tcp"}


def start_coturn(net: Internet, ca: TestCA, host: Host | None = None,
                 secret: str | None = None) -> Coturn:
    """coturn started on ``host`` (the model internet's TURN host by default) with a config
    written to the internet's folder; returns once its TCP and TLS ports answer. Stopped with
    the internet (:meth:`Internet.close`)."""
    require()
    host = host or net.turn
    secret = secret or secrets.token_hex(16)
    folder = net.folder / "coturn"
    folder.mkdir(parents=True, exist_ok=True)
    pem = ca.issue("turn", hosts=(host.public,))
    config = folder / "turnserver.conf"
    config.write_text("\n".join([
        f"listening-ip={host.address}",
        f"relay-ip={host.address}",
        *([f"external-ip={host.public}/{host.address}"] if host.public != host.address else []),
        f"listening-port={UDP_PORT}",
        f"tls-listening-port={TLS_PORT}",
        f"min-port={RELAY_PORTS[0]}",
        f"max-port={RELAY_PORTS[1]}",
        "use-auth-secret",
        f"static-auth-secret={secret}",
        f"realm={REALM}",
        f"cert={pem.cert}",
        f"pkey={pem.key}",
        "no-tlsv1",
        "no-tlsv1_1",
        "no-cli",
        "no-multicast-peers",
        "fingerprint",
        f"pidfile={folder / 'turnserver.pid'}",
        f"userdb={folder / 'turndb'}",
        "log-file=stdout",
        "simple-log",
        "verbose",
        "",
    ]))
    proc = net.start(host, ["turnserver", "-c", str(config)], "coturn")
    for listener in (f"TLS/TCP listener opened on : {host.address}:{TLS_PORT}",
                     f"UDP listener opened on: {host.address}:{UDP_PORT}"):
        proc.wait_for_line(_literal(listener), START_TIMEOUT_S)
    net.wait_tcp(host, host.address, TLS_PORT, START_TIMEOUT_S)
    net.wait_tcp(host, host.address, UDP_PORT, START_TIMEOUT_S)
    return Coturn(host, secret, ca, proc)


def _literal(text: str) -> str:
    """A regular expression matching ``text`` with any run of spaces where it has one."""
    import re

    return r"\s*".join(re.escape(part) for part in text.split())
