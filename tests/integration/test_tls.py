"""``serve --tls-cert --tls-key``: the page, /healthz, /metrics and /ws over HTTPS and WSS on
the one port (single process and the front of ``--workers N``), a renewal on SIGHUP, refusals
in one line; ``--trusted-proxy``; the warning for plain HTTP off loopback. Real servers, real
certificates from a test CA (tests/helpers/certs.py), real aiortc bots over WSS."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websockets
from cryptography import x509

from bench.bot import Bot, tone
from bench.serverproc import ServerProcess, free_port
from tests.helpers.audio import rms_db
from tests.helpers.certs import DAY, TestCA
from tests.helpers.live import wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return TestCA(tmp_path_factory.mktemp("ca"))


def get(url: str, context: ssl.SSLContext | None) -> tuple[int, str]:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10, context=context) as response:
        return response.status, response.read().decode()


def served_serial(port: int, context: ssl.SSLContext) -> int:
    """The serial number of the certificate a new handshake with the server gets."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def serve_error(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", "serve", "--port",
                           str(free_port()), "--workers", "1", "--state", "none", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


async def test_players_join_over_wss_and_hear_each_other_and_http_is_refused(ca, monkeypatch):
    issued = ca.issue("server")
    client = ca.client_context()
    with ServerProcess("--tls-cert", str(issued.cert), "--tls-key", str(issued.key),
                       client_tls=client) as server:
        status, body = get(f"{server.http}/healthz", client)
        assert status == 200 and json.loads(body)["tls"] is True
        assert "warnings" not in json.loads(body)  # loopback: nothing to warn about
        status, page = get(f"{server.http}/", client)
        assert status == 200 and "<html" in page.lower()
        assert "spatialjam_up 1" in get(f"{server.http}/metrics", client)[1]
        assert any(f"serving on https://127.0.0.1:{server.port}" in line for line in server.log)

        # Abuse at the TLS layer: plain HTTP, a handshake cut short, a client certificate.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            raw.settimeout(10)
            assert b"200 OK" not in (raw.recv(4096) or b"")
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            raw.sendall(bytes.fromhex("160301020001"))  # a ClientHello's first bytes, then gone
        offered = ca.issue("a-client", hosts=("player",))
        with_cert = ca.client_context()
        with_cert.load_cert_chain(offered.cert, offered.key)
        assert get(f"{server.http}/healthz", with_cert)[0] == 200  # not asked for, not looked at

        # Bots trust the test CA (websockets' default context reads SSL_CERT_FILE).
        monkeypatch.setenv("SSL_CERT_FILE", str(ca.cert))
        async with Bot(server.ws, "tls", "A", tone(440.0)) as a, \
                Bot(server.ws, "tls", "B") as b:
            assert await wait_for(lambda: len(b.received) > 50, 20.0), "B hears nothing"
            assert rms_db(await b.listen(1.0)) > -45
            assert not a.errors and not b.errors
        with pytest.raises(ssl.SSLCertVerificationError):  # a browser without the CA: refused
            monkeypatch.delenv("SSL_CERT_FILE")
            async with websockets.connect(server.ws, ssl=ssl.create_default_context()):
                pass


def test_a_renewed_certificate_is_served_after_sighup_without_a_restart(ca):
    first = ca.issue("renew")
    client = ca.client_context()
    with ServerProcess("--tls-cert", str(first.cert), "--tls-key", str(first.key),
                       client_tls=client) as server:
        assert served_serial(server.port, client) == first.serial
        renewed = ca.issue("renewed")
        first.cert.write_bytes(renewed.cert.read_bytes())  # in place, as an ACME client does
        first.key.write_bytes(renewed.key.read_bytes())
        server.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: any("TLS certificate reloaded" in line
                                      for line in server.log)), list(server.log)[-5:]
        assert served_serial(server.port, client) == renewed.serial
        # Half a renewal (a key of another certificate): refused, the renewed one serves on.
        first.key.write_bytes(ca.issue("stray").key.read_bytes())
        server.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: any("not reloaded" in line for line in server.log))
        assert served_serial(server.port, client) == renewed.serial
        assert get(f"{server.http}/healthz", client)[0] == 200


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_front_of_several_workers_serves_tls(ca):
    issued = ca.issue("front")
    client = ca.client_context()
    with ServerProcess("--workers", "2", "--tls-cert", str(issued.cert), "--tls-key",
                       str(issued.key), client_tls=client) as server:
        status, body = get(f"{server.http}/healthz", client)
        health = json.loads(body)
        assert status == 200 and health["tls"] is True and len(health["workers"]) == 2
        assert get(f"{server.http}/", client)[0] == 200  # passed to a worker, over TLS here
        assert served_serial(server.port, client) == issued.serial


def test_bad_tls_files_end_the_start_in_one_line(ca, tmp_path):
    good, other = ca.issue("good"), ca.issue("other")
    expired = ca.issue("old", valid_from=-10 * DAY, valid_for=DAY)
    cases = [
        (("--tls-cert", str(good.cert)), "needs both --tls-cert FILE and --tls-key FILE"),
        (("--tls-cert", str(tmp_path / "none.pem"), "--tls-key", str(good.key)),
         "cannot read the TLS certificate"),
        (("--tls-cert", str(good.cert), "--tls-key", str(other.key)),
         "is not the key of the certificate"),
        (("--tls-cert", str(expired.cert), "--tls-key", str(expired.key)), "expired on"),
    ]
    for workers in ("1", "2"):
        for args, words in cases:
            done = serve_error(*args, "--workers", workers)
            assert done.returncode == 1, (args, done.stderr[-500:])
            lines = done.stderr.strip().splitlines()
            assert words in lines[-1] and lines[-1].startswith("spatialjam serve:"), lines
            assert "Traceback" not in done.stderr, done.stderr


def test_plain_http_off_loopback_is_warned_about_in_the_log_and_on_healthz(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(os.urandom(32).hex())
    secret.chmod(0o600)
    with ServerProcess("--host", "0.0.0.0", "--secret-file", str(secret)) as server:
        health = json.loads(get(f"{server.http}/healthz", None)[1])
        assert health["tls"] is False
        # (beside it, on a machine with private addresses alone, the media warning)
        assert [w for w in health["warnings"] if "refuse the microphone" in w], health
        assert any("WARNING" in line and "refuse the microphone" in line for line in server.log)


def test_connections_through_a_trusted_proxy_count_against_the_client_it_names():
    async def open_as(url: str, forwarded: str | None):
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        return await websockets.connect(url, additional_headers=headers)

    async def scenario(server: ServerProcess) -> dict[str, object]:
        seen: dict[str, object] = {}
        first = await open_as(server.ws, "198.51.100.1")
        other = await open_as(server.ws, "198.51.100.2")  # another player behind the proxy
        try:
            await open_as(server.ws, "198.51.100.1")
        except websockets.InvalidStatus as exc:
            seen["again"] = exc.response.status_code
        else:
            seen["again"] = 101
        await first.close()
        await other.close()
        return seen

    with ServerProcess("--trusted-proxy", "127.0.0.1", "--max-connections-per-ip", "1") as srv:
        assert asyncio.run(scenario(srv)) == {"again": 429}
    # Without --trusted-proxy the header is a client's own word: all are the proxy's address.
    with ServerProcess("--max-connections-per-ip", "1") as srv:
        async def untrusted() -> int:
            first = await websockets.connect(srv.ws)
            try:
                await open_as(srv.ws, "198.51.100.2")
            except websockets.InvalidStatus as exc:
                return exc.response.status_code
            finally:
                await first.close()
            return 101
        assert asyncio.run(untrusted()) == 429
