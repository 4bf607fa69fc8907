"""``spatialjam serve`` starts, answers /healthz and /metrics, and stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


def test_serve_answers_health_and_metrics_then_stops_cleanly():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                status, body = get(f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.3)
        assert status == 200 and json.loads(body)["status"] == "ok"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.headers.get_all("Content-Type") == ["application/json"]
        status, metrics = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "spatialjam_up 1" in metrics
        assert "# TYPE spatialjam_uptime_seconds gauge" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_serve_refuses_a_busy_port_with_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "server.cli", "serve", "--port", str(port)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_client_is_served_with_its_own_types_and_nothing_outside_it():
    from server.app import static_file

    assert static_file("/").name == "index.html"
    assert static_file("/static/app.js").name == "app.js"
    for bad in ("/static/../server/app.py", "/static/%2e%2e/pyproject.toml", "/static/__init__.py",
                "/etc/passwd", "/static/"):
        assert static_file(bad) is None, bad
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                response = urllib.request.urlopen(f"http://127.0.0.1:{port}/static/app.js",
                                                  timeout=5)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.3)
        body = response.read()
        assert response.headers.get_all("Content-Type") == ["text/javascript; charset=utf-8"]
        assert response.headers.get_all("Content-Length") == [str(len(body))]
        assert body == (ROOT / "client_web" / "app.js").read_bytes()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
