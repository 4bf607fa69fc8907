"""The reverse proxies that docs/DEPLOYMENT.md offers as the alternative to ``--tls-cert``: the
shipped ``docs/proxy/nginx.conf`` and ``docs/proxy/Caddyfile``, run by Debian's nginx and Caddy
in front of a real server, with a certificate from a test CA. Only what a test must change is
changed: the ports, the certificate (Caddy would fetch one from an ACME CA), and nginx's own
address (127.0.0.2, so that the test's client, on 127.0.0.1, is not the trusted proxy).
``make test`` installs nginx-light and caddy; without one, its test skips."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import websockets

from bench.bot import Bot, tone
from bench.serverproc import ServerProcess, free_port
from tests.helpers.audio import rms_db
from tests.helpers.certs import TestCA
from tests.helpers.live import wait_for

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "docs" / "proxy" / "nginx.conf"
CADDYFILE = ROOT / "docs" / "proxy" / "Caddyfile"
PROXY_ADDRESS = "127.0.0.2"


def nginx_config(folder: Path, port: int, upstream: int, cert: Path, key: Path) -> Path:
    """The shipped server block with the test's ports and files, in a main configuration
    that keeps everything in ``folder``."""
    site = SHIPPED.read_text()
    for old, new in [("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
                     ("listen [::]:443 ssl;", ""),
                     ("/etc/letsencrypt/live/jam.example.org/fullchain.pem", str(cert)),
                     ("/etc/letsencrypt/live/jam.example.org/privkey.pem", str(key)),
                     ("proxy_pass http://127.0.0.1:8080;",
                      f"proxy_pass http://127.0.0.1:{upstream};\n"
                      f"        proxy_bind {PROXY_ADDRESS};")]:
        assert old in site, f"docs/proxy/nginx.conf no longer has {old!r}"
        site = site.replace(old, new)
    (folder / "spatialjam.conf").write_text(site)
    temp = "\n".join(f"    {kind}_temp_path {folder / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main = folder / "nginx.conf"
    main.write_text(f"""user root;
worker_processes 1;
daemon off;
pid {folder / 'nginx.pid'};
error_log {folder / 'error.log'} warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
{temp}
    include {folder / 'spatialjam.conf'};
}}
""")
    return main


@pytest.fixture
def nginx_in_front(tmp_path):
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                       else None)
    if binary is None:
        pytest.skip("nginx is not installed (make test installs nginx-light)")
    ca = TestCA(tmp_path)
    issued = ca.issue("proxy")
    with ServerProcess("--trusted-proxy", PROXY_ADDRESS, "--max-connections-per-ip", "2") \
            as server:
        port = free_port()
        config = nginx_config(tmp_path, port, server.port, issued.cert, issued.key)
        proc = subprocess.Popen([binary, "-c", str(config), "-p", str(tmp_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            listening(port, proc, "nginx", lambda: (tmp_path / "error.log").read_text(
                errors="replace") if (tmp_path / "error.log").exists() else "")
            yield server, port, ca
        finally:
            proc.terminate()
            proc.wait(timeout=10)


async def test_players_behind_the_shipped_nginx_configuration_play_and_count_as_themselves(
        nginx_in_front, monkeypatch):
    _server, port, ca = nginx_in_front
    https, wss = f"https://127.0.0.1:{port}", f"wss://127.0.0.1:{port}/ws"
    with urllib.request.urlopen(f"{https}/", timeout=10, context=ca.client_context()) as page:
        assert page.status == 200
    with urllib.request.urlopen(f"{https}/healthz", timeout=10,
                                context=ca.client_context()) as health:
        assert json.loads(health.read())["status"] == "ok"
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.cert))  # the bots' websockets trust the CA

    # A browser's page: the Origin is the proxy's address, and the Host passes unchanged.
    async with websockets.connect(wss, origin=websockets.Origin(https)) as page_ws:
        await page_ws.send(json.dumps({"type": "join", "room": "proxied", "name": "P"}))
        assert json.loads(await page_ws.recv())["type"] == "joined"

    # Two players through the proxy hear each other: signaling passes, media goes around it.
    # Each connection counts against the client nginx names (127.0.0.1 here), not against the
    # proxy: with two connections allowed per client, a third of the same client is refused,
    # and what that client writes into X-Forwarded-For itself changes nothing.
    async with Bot(wss, "proxied", "A", tone(440.0)) as a, Bot(wss, "proxied", "B") as b:
        assert await wait_for(lambda: len(b.received) > 50, 20.0), "B hears nothing"
        assert rms_db(await b.listen(1.0)) > -45
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(
                    wss, additional_headers={"X-Forwarded-For": "198.51.100.9"}):
                pass
        assert refused.value.response.status_code == 429
        assert b"127.0.0.1" in refused.value.response.body
        assert not a.errors and not b.errors


def listening(port: int, proc: subprocess.Popen, what: str,
              log: Callable[[], str] = str, timeout: float = 20.0) -> None:
    """Wait until ``proc`` (``what``) accepts connections on ``port``; fail the test, with
    ``log()``, when it exits first or does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{what} did not start: {log()}")
            time.sleep(0.1)


async def test_players_behind_the_shipped_caddyfile_play(tmp_path, monkeypatch):
    binary = shutil.which("caddy")
    if binary is None:
        pytest.skip("caddy is not installed (make test installs it)")
    ca = TestCA(tmp_path)
    issued = ca.issue("caddy")
    with ServerProcess("--trusted-proxy", "127.0.0.1") as server:
        port = free_port()
        site = CADDYFILE.read_text()
        for old, new in [("jam.example.org {", f"{{\n\tadmin off\n\tstorage file_system "
                          f"{tmp_path / 'caddy'}\n}}\n\nhttps://127.0.0.1:{port} {{\n"
                          f"\ttls {issued.cert} {issued.key}"),
                         ("reverse_proxy 127.0.0.1:8080",
                          f"reverse_proxy 127.0.0.1:{server.port}")]:
            assert old in site, f"docs/proxy/Caddyfile no longer has {old!r}"
            site = site.replace(old, new)
        config = tmp_path / "Caddyfile"
        config.write_text(site)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path),
               "XDG_CONFIG_HOME": str(tmp_path)}
        proc = subprocess.Popen([binary, "run", "--config", str(config), "--adapter",
                                 "caddyfile"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            listening(port, proc, "caddy")
            https, wss = f"https://127.0.0.1:{port}", f"wss://127.0.0.1:{port}/ws"
            with urllib.request.urlopen(f"{https}/", timeout=10,
                                        context=ca.client_context()) as page:
                assert page.status == 200
            monkeypatch.setenv("SSL_CERT_FILE", str(ca.cert))
            async with websockets.connect(wss, origin=websockets.Origin(https)) as page_ws:
                await page_ws.send(json.dumps({"type": "join", "room": "caddy", "name": "P"}))
                assert json.loads(await page_ws.recv())["type"] == "joined"
            async with Bot(wss, "caddy", "A", tone(440.0)) as a, Bot(wss, "caddy", "B") as b:
                assert await wait_for(lambda: len(b.received) > 50, 20.0), "B hears nothing"
                assert rms_db(await b.listen(1.0)) > -45
                assert not a.errors and not b.errors
        finally:
            proc.terminate()
            proc.wait(timeout=10)
