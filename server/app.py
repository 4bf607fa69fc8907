"""The server process: HTTP endpoints on one asyncio loop (uvloop).

This first slice serves ``GET /healthz``, ``GET /metrics`` (Prometheus text) and a landing page
at ``/``, with the binaural engine loaded and its kernels compiled at start-up. Rooms, WebRTC
and signaling at ``/ws`` come with the live-room work.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import signal
import time

import numpy as np
import uvloop
from websockets.asyncio.server import Request, Response, ServerConnection, serve

from dsp.geometry import Scene
from dsp.renderer import Renderer
from hrtf.constants import FRAME
from hrtf.library import load_hrtf
from server.errors import CliError

log = logging.getLogger(__name__)

LANDING_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>spatialjam</title></head>
<body><h1>spatialjam</h1>
<p>The binaural engine is running ({hrtf}, {device}). The jam room client is not served yet.</p>
</body></html>
"""


class ServerState:
    """What the endpoints report; filled at start-up."""

    def __init__(self, hrtf_name: str, device: str, warmup_ms: float) -> None:
        self.started = time.monotonic()
        self.hrtf_name = hrtf_name
        self.device = device
        self.warmup_ms = warmup_ms

    def health(self) -> dict:
        return {"status": "ok", "hrtf": self.hrtf_name, "device": self.device,
                "uptime_s": round(time.monotonic() - self.started, 3)}

    def metrics(self) -> str:
        lines = [
            "# HELP spatialjam_up Whether the server is serving.",
            "# TYPE spatialjam_up gauge",
            "spatialjam_up 1",
            "# HELP spatialjam_uptime_seconds Seconds since start-up.",
            "# TYPE spatialjam_uptime_seconds gauge",
            f"spatialjam_uptime_seconds {time.monotonic() - self.started:.3f}",
            "# HELP spatialjam_engine_warmup_seconds Time to load the HRTF set and compile.",
            "# TYPE spatialjam_engine_warmup_seconds gauge",
            f"spatialjam_engine_warmup_seconds {self.warmup_ms / 1e3:.3f}",
            "# HELP spatialjam_rooms Rooms open on this process.",
            "# TYPE spatialjam_rooms gauge",
            "spatialjam_rooms 0",
        ]
        return "\n".join(lines) + "\n"


def warm_up(hrtf: str, device: str) -> ServerState:
    """Load the HRTF set and run one tick so kernels are compiled before anyone joins."""
    t0 = time.perf_counter()
    hrirs = load_hrtf(hrtf)
    renderer = Renderer(hrirs, 1, 1, device=device)
    renderer.render(Scene.create([0, 0, 0], [1, 0, 0]), np.zeros((1, FRAME), np.float32))
    warmup_ms = 1e3 * (time.perf_counter() - t0)
    log.info("engine ready: %s on %s in %.0f ms", hrirs.name, device, warmup_ms)
    return ServerState(hrirs.name, device, warmup_ms)


def http_router(state: ServerState):
    def route(connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return _reply(connection, http.HTTPStatus.OK, json.dumps(state.health()),
                          "application/json")
        if path == "/metrics":
            return _reply(connection, http.HTTPStatus.OK, state.metrics(),
                          "text/plain; version=0.0.4")
        if path in ("/", "/index.html"):
            page = LANDING_PAGE.format(hrtf=state.hrtf_name, device=state.device)
            return _reply(connection, http.HTTPStatus.OK, page, "text/html; charset=utf-8")
        return _reply(connection, http.HTTPStatus.NOT_FOUND, f"no such page: {path}\n",
                      "text/plain")

    return route


def _reply(connection: ServerConnection, status, body: str, content_type: str) -> Response:
    response = connection.respond(status, body)
    del response.headers["Content-Type"]  # respond() sets text/plain; replace, don't add
    response.headers["Content-Type"] = content_type
    response.headers["Cache-Control"] = "no-store"
    return response


async def _no_websocket(connection: ServerConnection) -> None:
    await connection.close(1008, "signaling is not available on this server")


async def serve_forever(host: str, port: int, state: ServerState) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(_no_websocket, host, port, process_request=http_router(state)) as server:
        bound = ", ".join(f"http://{s.getsockname()[0]}:{s.getsockname()[1]}"
                          for s in server.sockets)
        log.info("serving on %s", bound)
        await stop
    log.info("stopped")


def run_server(host: str, port: int, *, device: str = "cpu", hrtf: str = "kemar") -> int:
    try:
        state = warm_up(hrtf, device)
    except RuntimeError as exc:
        raise CliError(str(exc)) from None
    try:
        uvloop.run(serve_forever(host, port, state))
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return 0
