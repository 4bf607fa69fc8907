"""``spatialjam serve`` starts, answers /healthz and /metrics, and stops on SIGTERM."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from bench.serverproc import ServerProcess

ROOT = Path(__file__).resolve().parents[2]


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


def test_serve_answers_health_and_metrics_then_stops_cleanly():
    server = ServerProcess()
    with server:
        status, body = get(f"{server.http}/healthz")
        health = json.loads(body)
        assert status == 200 and health["status"] == "ok"
        # The room clocks may run at real-time priority: how many do, and why none may.
        assert health["clock"]["mode"] == "auto" and health["clock"]["realtime_clocks"] == 0
        with urllib.request.urlopen(f"{server.http}/healthz", timeout=5) as response:
            assert response.headers.get_all("Content-Type") == ["application/json"]
        status, metrics = get(f"{server.http}/metrics")
        assert status == 200 and "spatialjam_up 1" in metrics
        assert "# TYPE spatialjam_uptime_seconds gauge" in metrics
        assert "spatialjam_rooms 0" in metrics
        # The start-up's objects are out of the garbage collector's walk, which would stop the
        # room clock for ~90 ms at each full collection (server.web.app.freeze_startup_heap).
        (frozen,) = [int(line.split("heap frozen: ")[1].split()[0]) for line in server.log
                     if "start-up heap frozen: " in line]
        assert frozen > 50_000
        assert server.stop() == 0


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
    from server.web.app import static_file

    assert static_file("/").name == "index.html"
    assert static_file("/static/app.js").name == "app.js"
    for bad in ("/static/../server/web/app.py", "/static/%2e%2e/pyproject.toml",
                "/static/__init__.py", "/etc/passwd", "/static/"):
        assert static_file(bad) is None, bad
    with ServerProcess() as server:
        response = urllib.request.urlopen(f"{server.http}/static/app.js", timeout=5)
        body = response.read()
        assert response.headers.get_all("Content-Type") == ["text/javascript; charset=utf-8"]
        assert response.headers.get_all("Content-Length") == [str(len(body))]
        assert body == (ROOT / "client_web" / "app.js").read_bytes()


def test_signaling_refuses_pages_of_other_sites():
    import asyncio

    import websockets

    async def handshake(origin: str | None) -> int:
        headers = {"Origin": origin} if origin else {}
        try:
            async with websockets.connect(server.ws, additional_headers=headers,
                                          origin=None):
                return 101
        except websockets.InvalidStatus as exc:
            return exc.response.status_code

    with ServerProcess() as server:
        assert asyncio.run(handshake(f"http://127.0.0.1:{server.port}")) == 101
        assert asyncio.run(handshake(None)) == 101  # not a browser
        assert asyncio.run(handshake("https://evil.example")) == 403


#: Run in a process of its own: kernels compiled earlier in the test process would hide a miss.
WARM_UP_COVERS_A_TICK = """
import sys

import numpy as np
from numba.core.registry import CPUDispatcher

from server.rooms.room import Room
from server.tick.runner import RoomRunner, TickWork
from server.web.app import warm_up


def compiled():
    return {(f"{name}.{attr}", str(sig)) for name, module in list(sys.modules.items())
            if name.split(".")[0] in ("dsp", "hrtf", "server")
            for attr, f in vars(module).items() if isinstance(f, CPUDispatcher)
            for sig in f.signatures}


hrirs, _ = warm_up("kemar", "cpu")
before = compiled()
room = Room("band")
a, b = room.join("A"), room.join("B")
room.move_source(a.id, [0.0, 2.0, 1.2])
room.set_head_pose(b.id, 30.0)
room.set_override(b.id, a.id, position=[1.0, 1.0, 1.2], gain=0.5)
runner = RoomRunner(room, hrirs)
for _ in range(2):  # a fresh slot's first tick, then one of the steady state
    runner._render_and_encode(TickWork(room.scene(), {}, {}, None, room.drain_fresh_slots(),
                                       {}, 0))
print(sorted(compiled() - before))
"""


def test_the_warm_up_compiles_every_kernel_a_rooms_tick_runs():
    """What a room's ticks run is compiled before the server says it is ready: a kernel
    compiled on a room's first tick instead (numba compiles one variant per kind of argument)
    held the first room's mixes back for about ten seconds on a fresh install."""
    done = subprocess.run([sys.executable, "-c", WARM_UP_COVERS_A_TICK], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", f"compiled on a room's tick: {done.stdout}"
