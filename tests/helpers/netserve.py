"""``spatialjam serve`` on a host of the model internet (tests/helpers/netns.py), ready when its
``/healthz`` answers from inside that host; over HTTPS when given a certificate."""

from __future__ import annotations

import os
import secrets
import ssl
import time
import urllib.request
from dataclasses import dataclass

from tests.helpers.certs import Issued, TestCA
from tests.helpers.coturn import Coturn
from tests.helpers.netns import CLOUD_PUBLIC, Host, Internet, Proc

PORT = 8080
#: The recipe's server: HTTPS on this port, media on these UDP ports (docs/DEPLOYMENT.md).
RECIPE_PORT = 8443
RECIPE_UDP_PORTS = "40000-40007"
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Served:
    """A running server: its process, the token secret it checks, where the internet finds it."""

    proc: Proc
    secret: bytes
    host: Host
    port: int
    #: Whether it serves HTTPS and WSS (``--tls-cert``).
    tls: bool = False

    @property
    def http(self) -> str:
        """Its URL by the host's public address (what a home dials)."""
        return f"{'https' if self.tls else 'http'}://{self.host.public}:{self.port}"

    @property
    def ws(self) -> str:
        """Its signaling URL by the host's public address."""
        return f"{'wss' if self.tls else 'ws'}://{self.host.public}:{self.port}/ws"


def healthz(url: str, context: ssl.SSLContext | None = None) -> int:
    with urllib.request.urlopen(f"{url}/healthz", timeout=5, context=context) as response:
        return response.status


def serve_in(net: Internet, host: Host, *args: str, port: int = PORT,
             env: dict[str, str] | None = None, timeout_s: float = START_TIMEOUT_S,
             tls: Issued | None = None, ca: TestCA | None = None) -> Served:
    """A server listening on all of ``host``'s addresses at ``port`` with a fresh token secret
    (a server off loopback refuses to start without one), one process keeping no state unless
    ``args`` say otherwise, with ``env`` added to its environment (``SSL_CERT_FILE``: a test
    CA for a ``turns:`` server); stopped with the internet at the latest.

    With ``tls`` (a certificate for ``host``'s public address and its key) it serves HTTPS and
    WSS, and is ready once ``/healthz`` answers over TLS with a chain ``ca`` signed (the name is
    not checked: the probe dials the private address, from inside)."""
    if tls is not None and ca is None:
        raise ValueError("a server with a certificate needs the CA that signed it (ca=)")
    secret = secrets.token_hex(32)
    state = () if "--state" in args or "--redis" in args else ("--state", "none")
    workers = () if "--workers" in args else ("--workers", "1")
    certificate = ("--tls-cert", str(tls.cert), "--tls-key", str(tls.key)) if tls else ()
    proc = net.python(host, ["-m", "server.cli", "serve", "--host", "0.0.0.0", "--port", str(port),
                             *state, *workers, *certificate, *args], f"serve-{host.netns}-{port}",
                      env={**(env or {}), "SPATIALJAM_SECRET": secret})
    inside = f"{'https' if tls else 'http'}://{host.address}:{port}"
    context = None
    if ca is not None:
        context = ca.client_context()
        context.check_hostname = False

    def ready() -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                healthz(inside, context)
                return
            except OSError as exc:
                if proc.popen.poll() is not None or time.monotonic() > deadline:
                    tail = "\n".join(proc.output().splitlines()[-20:])
                    raise AssertionError(f"the server in {host.netns} did not start "
                                         f"({exc}):\n{tail}") from None
                time.sleep(0.1)

    net.call(host, ready, timeout=timeout_s + 10)
    return Served(proc, secret.encode(), host, port, tls=tls is not None)


def issue_server_certificate(ca: TestCA) -> Issued:
    """The server's certificate: for its public address, the name a home dials."""
    return ca.issue("server", hosts=(CLOUD_PUBLIC,))


def serve_recipe(net: Internet, ca: TestCA, turn: Coturn | None,
                 public_ip: bool = True) -> Served:
    """The server of docs/DEPLOYMENT.md's recipe in the cloud: HTTPS and WSS, ``--udp-ports``,
    ``--public-ip`` (unless told not to), TURN over TLS with the coturn's secret (if given); it
    trusts the test CA for its own TURN connection (``SSL_CERT_FILE``)."""
    args = ["--udp-ports", RECIPE_UDP_PORTS, "--room-capacity", "4"]
    if public_ip:
        args += ["--public-ip", CLOUD_PUBLIC]
    if turn is not None:
        secret = net.folder / "turn.secret"
        secret.write_text(turn.secret + "\n")
        os.chmod(secret, 0o600)
        args += ["--ice-server", turn.urls()["tls"], "--turn-secret-file", str(secret)]
    return serve_in(net, net.cloud, *args, port=RECIPE_PORT, tls=issue_server_certificate(ca),
                    ca=ca, env={"SSL_CERT_FILE": str(ca.cert)})
