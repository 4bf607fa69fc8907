"""``spatialjam serve`` on a host of the model internet (tests/helpers/netns.py), ready when its
``/healthz`` answers from inside that host."""

from __future__ import annotations

import secrets
import time
import urllib.request
from dataclasses import dataclass

from tests.helpers.netns import Host, Internet, Proc

PORT = 8080
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Served:
    """A running server: its process, the token secret it checks, where the internet finds it."""

    proc: Proc
    secret: bytes
    host: Host
    port: int

    @property
    def http(self) -> str:
        """Its URL by the host's public address (what a home dials)."""
        return f"http://{self.host.public}:{self.port}"


def healthz(url: str) -> int:
    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
        return response.status


def serve_in(net: Internet, host: Host, *args: str, port: int = PORT,
             env: dict[str, str] | None = None, timeout_s: float = START_TIMEOUT_S) -> Served:
    """A server listening on all of ``host``'s addresses at ``port`` with a fresh token secret
    (a server off loopback refuses to start without one), one process keeping no state unless
    ``args`` say otherwise, with ``env`` added to its environment (``SSL_CERT_FILE``: a test
    CA for a ``turns:`` server); stopped with the internet at the latest."""
    secret = secrets.token_hex(32)
    state = () if "--state" in args or "--redis" in args else ("--state", "none")
    workers = () if "--workers" in args else ("--workers", "1")
    proc = net.python(host, ["-m", "server.cli", "serve", "--host", "0.0.0.0", "--port", str(port),
                             *state, *workers, *args], f"serve-{host.netns}-{port}",
                      env={**(env or {}), "SPATIALJAM_SECRET": secret})
    inside = f"http://{host.address}:{port}"

    def ready() -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                healthz(inside)
                return
            except OSError as exc:
                if proc.popen.poll() is not None or time.monotonic() > deadline:
                    tail = "\n".join(proc.output().splitlines()[-20:])
                    raise AssertionError(f"the server in {host.netns} did not start "
                                         f"({exc}):\n{tail}") from None
                time.sleep(0.1)

    net.call(host, ready, timeout=timeout_s + 10)
    return Served(proc, secret.encode(), host, port)
