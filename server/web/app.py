"""The server process: HTTP, signaling and rooms on one asyncio loop (uvloop).

- ``GET /`` and ``GET /static/...``: the web client (``client_web/``, no build step);
- ``GET /healthz``: JSON health; ``GET /metrics``: Prometheus text;
- ``GET /ai/ROOM.mid``: what the room's AI musician played this session, as a MIDI file;
- ``GET /recordings/ROOM/ID/FILE``: a file of one of the room's recordings
  (:mod:`server.recording.control`), for those who may enter the room;
- ``/ws``: WebSocket signaling (``docs/PROTOCOL.md``), handled by :class:`server.rooms.hub.Hub`; at
  most ``--max-connections-per-ip`` at once from one client (HTTP 429 past it) and
  ``--max-connections`` in all (HTTP 503), counted by :mod:`server.web.admission`.

The binaural engine is loaded and its kernels compiled before the port opens. Rooms' seats,
stage and personal mixes are saved as they change (:mod:`server.rooms.store`). On SIGTERM or SIGINT
the server stops taking connections, sends every client ``server_closing``, closes it with 1001
(going away), writes the rooms' last state and exits 0, all within a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import http
import json
import logging
import mimetypes
import signal
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import uvloop
from websockets.asyncio.server import Request, Response, ServerConnection, serve

from dsp.notes import NoteEvent
from dsp.renderer import Renderer
from dsp.room_model import room_model
from dsp.synth import Synth
from hrtf.constants import FRAME, FRAME_MS, frame_samples
from hrtf.hrirset import HrirSet
from hrtf.library import load_hrtf
from server.errors import CliError
from server.media.ice import IceConfig
from server.media.ports import media_addresses
from server.recording.control import RecordingFileError, Recordings, recordings_root
from server.rooms.hrtf_registry import HrtfRegistry
from server.rooms.hub import EMPTY_ROOM_GRACE_S, RETRY_AFTER_S, Hub
from server.rooms.room import Room
from server.rooms.store import open_store
from server.telemetry import metrics as m
from server.telemetry.collect import collect, process_gauges
from server.tick.load import room_loads, tick_load
from server.tick.priority import ClockPriority
from server.web.access import AccessPolicy, SecretError, load_secret
from server.web.admission import (
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_IP,
    ConnectionLimits,
    TrustedProxies,
)
from server.web.replies import access_refused as _access_refused
from server.web.replies import admit_signaling, client_address
from server.web.replies import reply as _reply
from server.web.tls import (
    TlsError,
    TlsFiles,
    is_loopback,
    plain_http_warning,
    reload_on_sighup,
    server_context,
)
from signaling import limits
from signaling.access import OPEN, Access, AccessError

log = logging.getLogger(__name__)

#: At shutdown, after the hub has closed its connections: the most to wait for their handlers.
LAST_HANDLERS_S = 1.0

CLIENT_DIR = Path(__file__).resolve().parents[2] / "client_web"
STATIC_TYPES = {".html", ".js", ".css", ".svg", ".png", ".wasm", ".json", ".ico"}


class ServerState:
    """What the HTTP endpoints report."""

    #: Set on a worker of ``serve --workers N`` (server.routing.front): ``/healthz`` then also lists
    #: its rooms and their loads, which the front places rooms by.
    worker = False

    def __init__(self, hrirs: HrirSet, device: str, warmup_ms: float, hub: Hub,
                 connections: ConnectionLimits | None = None,
                 proxies: TrustedProxies | None = None) -> None:
        self.started = time.monotonic()
        self.hrirs = hrirs
        self.device = device
        self.warmup_ms = warmup_ms
        self.hub = hub
        #: Signaling connections open, per client and in all (HTTP 429/503 past the limits).
        self.connections = connections or ConnectionLimits()
        #: One task per admitted connection, releasing it from the count when it closes.
        self.watchers: set[asyncio.Task] = set()
        #: Reverse proxies whose X-Forwarded-For names the client (``--trusted-proxy``).
        self.proxies = proxies or TrustedProxies()
        #: Whether pages and signaling go over TLS; what /healthz warns about (in words).
        self.tls = False
        self.warnings: list[str] = []

    def health(self) -> dict:
        health = {"status": "ok", "hrtf": self.hrirs.name, "device": self.device,
                  "frame_ms": self.hub.frame_ms, "clock": self.hub.clock_priority.describe(),
                  "rooms": len(self.hub.rooms), "load": tick_load(self.hub.rooms),
                  "uptime_s": round(time.monotonic() - self.started, 3), "tls": self.tls}
        if self.warnings:
            health["warnings"] = list(self.warnings)
        if self.worker:
            health["room_loads"] = room_loads(self.hub.rooms)
        return health

    def metrics(self) -> str:
        """``/metrics``: this process's numbers (:mod:`server.telemetry.metrics`)."""
        return m.exposition({
            m.UP: 1, m.UPTIME: round(time.monotonic() - self.started, 3),
            m.ENGINE_WARMUP: round(self.warmup_ms / 1e3, 3), **process_gauges(),
            m.CONNECTIONS: self.connections.open(),
            m.CONNECTIONS_REFUSED: dict(self.connections.refused),
            **collect(self.hub)})


def warm_up(hrtf: str, device: str, frame: int = FRAME) -> tuple[HrirSet, float]:
    """Load the HRTF set and render one tick of a room (of ``frame`` samples), so that the
    kernels a room's ticks run are compiled (or loaded from numba's cache) before anyone joins.

    The tick renders a scene built the way a room builds it (:meth:`Room.scene`): numba
    compiles a kernel once per kind of argument (an array's dimensions, layout, whether it is
    writable), so a scene of another kind, such as ``Scene.create``'s shared source positions
    (a read-only broadcast view), would leave the rooms' own variant to be compiled on the
    first room's first tick, which then takes seconds on a fresh install: mixes start that
    much later. Rooms with acoustics and AI musicians' synthesisers are warmed the same way.
    """
    t0 = time.perf_counter()
    hrirs = load_hrtf(hrtf)
    room = Room("warm-up", capacity=2)
    room.join("a")
    room.join("b")
    renderer = Renderer(hrirs, room.capacity, room.capacity, device=device, frame=frame)
    silence = np.zeros((room.capacity, frame), np.float32)
    renderer.render(room.scene(), silence)
    # A room with acoustics (reflections, the late tail) and an AI musician's synthesiser run
    # kernels of their own: compiled now too, not on the tick that first needs them (about
    # 20 s of a silent room on a fresh install, for acoustics).
    renderer.set_room(room_model("rehearsal-room"))
    renderer.render(room.scene(), silence)
    synth = Synth("epiano")
    synth.schedule([NoteEvent(start=0, duration=FRAME, pitch=60, velocity=0.5)])
    synth.render(0, frame)
    warmup_ms = 1e3 * (time.perf_counter() - t0)
    log.info("engine ready: %s on %s in %.0f ms", hrirs.name, device, warmup_ms)
    return hrirs, warmup_ms


def freeze_startup_heap() -> int:
    """Collect once, then move every object the start-up made (the engine, numba's and the
    libraries' modules, caches: about 200,000) out of the cyclic garbage collector's reach
    (``gc.freeze``); the number moved.

    A full collection walks every tracked object with the GIL held, and so stops the room
    clock's thread and the event loop alike: 86 to 95 ms after start-up on this 2-core
    machine, more as a long-lived server's heap grew (a 184 ms gap in a listener's mix when a
    new AI sidecar started, in tests/integration/test_faults.py). Frozen, a collection walks
    only what came after (0.002 ms right after start-up). Frozen objects are never freed by
    the cyclic collector; what the start-up made lives as long as the server anyway.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def static_file(path: str) -> Path | None:
    """The client file for a URL path, or None (no traversal, known types only)."""
    if path in ("/", "/index.html"):
        return CLIENT_DIR / "index.html"
    if not path.startswith("/static/"):
        return None
    candidate = (CLIENT_DIR / path[len("/static/"):]).resolve()
    if CLIENT_DIR not in candidate.parents or candidate.suffix not in STATIC_TYPES:
        return None
    return candidate if candidate.is_file() else None


def http_router(state: ServerState):
    def route(connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/ws":  # None: the WebSocket handshake goes on
            return admit_signaling(state, state.hub.policy, connection, request,
                                   client_address(state.proxies, connection, request))
        if path == "/access":
            try:
                access = state.hub.policy.for_request(request.path, time.time())
            except AccessError as exc:
                return _access_refused(connection, exc)
            return _reply(connection, http.HTTPStatus.OK, json.dumps(describe_access(access)),
                          "application/json")
        if path == "/healthz":
            return _reply(connection, http.HTTPStatus.OK, json.dumps(state.health()),
                          "application/json")
        if path == "/metrics":
            return _reply(connection, http.HTTPStatus.OK, state.metrics(),
                          "text/plain; version=0.0.4")
        if path.startswith("/ai/") and path.endswith(".mid"):
            room = path[len("/ai/"):-len(".mid")]
            try:  # what a room played is for those who may enter it
                state.hub.policy.for_request(request.path, time.time()).check_room(room)
            except AccessError as exc:
                return _access_refused(connection, exc)
            midi = state.hub.ai_musicians.midi(room)
            if midi is None:
                return _reply(connection, http.HTTPStatus.NOT_FOUND,
                              "no AI notes for that room (is it open, with an AI musician?)\n",
                              "text/plain; charset=utf-8")
            response = _reply(connection, http.HTTPStatus.OK, midi, "audio/midi")
            response.headers["Content-Disposition"] = "attachment; filename=\"spatialjam-ai.mid\""
            return response
        if path.startswith("/recordings/"):
            return _recording_file(state, connection, request, path)
        file = static_file(path)
        if file is not None:
            kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
            if kind.startswith("text/") or kind == "application/javascript":
                kind += "; charset=utf-8"
            return _reply(connection, http.HTTPStatus.OK, file.read_bytes(), kind)
        return _reply(connection, http.HTTPStatus.NOT_FOUND, f"no such page: {path}\n",
                      "text/plain; charset=utf-8")

    return route


async def _recording_file(state: ServerState, connection: ServerConnection, request: Request,
                          path: str) -> Response:
    """``GET /recordings/ROOM/ID/FILE``: for those who may enter ROOM (the rules of
    ``/ai/ROOM.mid``), read off the loop."""
    parts = path[len("/recordings/"):].split("/")
    try:
        state.hub.policy.for_request(request.path, time.time()).check_room(parts[0])
    except AccessError as exc:
        return _access_refused(connection, exc)
    try:
        if len(parts) != 3:
            raise RecordingFileError(http.HTTPStatus.NOT_FOUND, "recording files are at "
                                     "/recordings/ROOM/ID/FILE (see 'list_recordings')")
        body, kind = await asyncio.to_thread(state.hub.recordings.read_file, *parts)
    except RecordingFileError as exc:
        return _reply(connection, exc.status, exc.message + "\n", "text/plain; charset=utf-8")
    response = _reply(connection, http.HTTPStatus.OK, body, kind)
    response.headers["Content-Disposition"] = f"attachment; filename=\"{parts[2]}\""
    return response


def describe_access(access: Access) -> dict:
    """What ``GET /access?token=…`` tells a client about its token (nothing secret)."""
    return {"tokens_required": access is not OPEN, "identity": access.identity,
            "room": access.room, "grants": sorted(access.grants),
            "expires_in_s": (round(access.expires_at - time.time())
                             if access.expires_at is not None else None)}


async def serve_forever(host: str, port: int, state: ServerState,
                        announce: Callable[[int], None] | None = None,
                        tls: TlsFiles | None = None,
                        context: ssl.SSLContext | None = None) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    if tls is not None and context is not None:
        reload_on_sighup(loop, context, tls)
    # Frames up to an HRTF upload's chunk; text frames past a message close the connection
    # (signaling.session). Four frames queued per connection hold about what sixteen
    # messages did.
    server = await serve(state.hub.handle, host, port, process_request=http_router(state),
                         max_size=limits.MAX_FRAME_BYTES, max_queue=4, compression=None,
                         ping_interval=20, ping_timeout=20, ssl=context)
    try:
        scheme = "https" if context is not None else "http"
        bound = ", ".join(f"{scheme}://{s.getsockname()[0]}:{s.getsockname()[1]}"
                          for s in server.sockets)
        log.info("serving on %s", bound)
        if announce is not None:
            announce(server.sockets[0].getsockname()[1])
        await stop
        log.info("shutting down: %d connections are told to come back in %g s",
                 len(state.hub.connections), RETRY_AFTER_S)
        server.close(close_connections=False)  # no new connections; the hub closes its own
        await state.hub.close()
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):  # a peer that never answers the close
            async with asyncio.timeout(LAST_HANDLERS_S):
                await server.wait_closed()
    log.info("stopped")


def run_server(host: str, port: int, *, device: str = "cpu", hrtf: str = "kemar",
               capacity: int = 16, follow_phase: bool = True, frame_ms: float = FRAME_MS,
               clock_priority: str = "auto", secret_file: str | None = None,
               empty_room_grace_s: float = EMPTY_ROOM_GRACE_S,
               state_path: str | None = None,
               max_connections_per_ip: int = MAX_CONNECTIONS_PER_IP,
               max_connections: int = MAX_CONNECTIONS, acoustics: str = "off",
               announce: Callable[[int], None] | None = None,
               recordings_dir: str | None = None, tls: TlsFiles | None = None,
               trusted_proxies: TrustedProxies | None = None,
               ice: IceConfig | None = None,
               upload_set_mb: int = limits.MAX_HRTF_SET_BYTES >> 20,
               upload_budget_mb: int = limits.HRTF_UPLOADS_BUDGET_BYTES >> 20) -> int:
    """Serve until SIGTERM or SIGINT; 0 then. ``announce``, on a worker of ``serve --workers
    N`` (server.routing.workers), is called with the port once it serves. With ``tls``, over
    HTTPS and WSS (:mod:`server.web.tls`). ``ice``: the operator's ICE options
    (``--public-ip``, ``--udp-ports``, ``--ice-server``; by default host candidates on any
    port). ``upload_set_mb`` and ``upload_budget_mb`` bound uploaded HRTF sets' memory.
    Every room ticks at ``frame_ms`` (``serve --frame-ms``) unless its admin sets another; its
    clock asks for real-time priority unless ``clock_priority`` is ``normal``
    (:mod:`server.tick.priority`)."""
    if upload_set_mb > upload_budget_mb:
        raise CliError(f"--upload-set-mb {upload_set_mb} is more than --upload-budget-mb "
                       f"{upload_budget_mb}: one set cannot take more than all of them")
    try:  # before the engine loads: a refusal should not wait for it
        policy = AccessPolicy.for_listening(host, load_secret(secret_file))
        context = server_context(tls) if tls is not None else None
    except (SecretError, TlsError) as exc:
        raise CliError(str(exc)) from None
    log.info("rooms are %s", "entered with access tokens" if policy.tokens_required
             else "open (loopback, no token secret)")
    try:
        hrirs, warmup_ms = warm_up(hrtf, device, frame_samples(frame_ms))
    except RuntimeError as exc:
        raise CliError(str(exc)) from None
    state = ServerState(hrirs, device, warmup_ms, Hub(hrirs, device, capacity,
                                                         follow_phase=follow_phase,
                                                         frame_ms=frame_ms,
                                                         clock_priority=ClockPriority(
                                                             clock_priority),
                                                         policy=policy,
                                                         empty_room_grace_s=empty_room_grace_s,
                                                         store=open_store(state_path),
                                                         hrtf_spec=hrtf, acoustics=acoustics,
                                                         uploads=HrtfRegistry(
                                                             set_budget_bytes=upload_set_mb << 20,
                                                             budget_bytes=upload_budget_mb << 20),
                                                         recordings=Recordings(recordings_root(
                                                             recordings_dir, state_path)),
                                                         ice=ice),
                        ConnectionLimits(max_connections_per_ip, max_connections),
                        trusted_proxies)
    state.worker = announce is not None
    state.tls = tls is not None
    for warning in (plain_http_warning(host, state.tls, bool(state.proxies)),
                    None if is_loopback(host)
                    else (ice or IceConfig()).private_only_warning(media_addresses())):
        if warning is not None and not state.worker:
            log.warning(warning)
            state.warnings.append(warning)
    log.info("start-up heap frozen: %d objects out of the garbage collector's walk",
             freeze_startup_heap())
    try:
        uvloop.run(serve_forever(host, port, state, announce, tls, context))
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return 0
