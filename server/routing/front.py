"""``spatialjam serve --workers N`` (N > 1): a front process and N workers, one per core.

Each room lives on exactly one worker (a room's mix needs all its members' streams in one
process); the workers are the single-process server (:mod:`server.web.app`) on loopback ports of
their own (:mod:`server.routing.workers`). The front owns the public port:

- ``/ws``: admitted as the single server admits it (origin, access token, the connection
  limits of :mod:`server.web.admission`, counted here), then relayed to the worker of the room the
  client joins (:mod:`server.routing.relay`); clients cannot tell. Only signaling passes here: media
  goes straight between the client and the worker (the worker's ``answer`` carries its ICE
  candidates);
- ``/healthz``: the workers' health together: each worker's pid, port, rooms, measured load,
  CPU, restarts and whether it is up. ``status`` is ``ok`` when every worker is up,
  ``degraded`` while one is not (HTTP 200 still: the others serve) and ``down`` when none is
  (HTTP 503);
- ``/metrics``: the workers' series combined (:mod:`server.telemetry.aggregate`), the front's own
  connection counts, and per-worker series (``spatialjam_worker_up{worker="1"}``…), each as
  :mod:`server.telemetry.metrics` declares it;
- every other ``GET`` (the web client, ``/access``, ``/ai/ROOM.mid``, ``/recordings/ROOM/…``)
  is passed to a worker and its answer back as it is: to the worker that holds the room when
  the path's second part names an open room (``/ai/ROOM.mid``, ``/recordings/ROOM/…``), to the
  least-loaded one otherwise. Each worker checks access tokens itself, with the same secret.

The front imports neither the engine nor aiortc (:mod:`server.web.replies`): it renders no
audio and holds no media.

New rooms go to the least-loaded worker (:mod:`server.routing.placement`). A worker that dies is
started again (:mod:`server.routing.workers`); meanwhile health says so. On SIGTERM or SIGINT
the front stops taking connections and sends SIGTERM to the workers; each tells its clients
(``server_closing``, then 1001, relayed as they are), and the front exits 0 once they have.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http
import json
import logging
import signal
import ssl
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import uvloop
from redis.exceptions import RedisError
from websockets.asyncio.server import Request, Response, ServerConnection, serve

from server.errors import CliError
from server.media.ice import IceConfig
from server.media.ports import media_addresses
from server.routing.cluster import ClusterError
from server.routing.relay import Relay
from server.routing.workers import POLL_S, RemoteNode, Worker, WorkerPool, http_get
from server.telemetry import aggregate
from server.telemetry import metrics as m
from server.telemetry.collect import process_gauges
from server.web.access import AccessPolicy, SecretError, load_secret
from server.web.admission import ConnectionLimits, TrustedProxies
from server.web.replies import admit_signaling, client_address, reply
from server.web.tls import (
    TlsError,
    is_loopback,
    plain_http_warning,
    reload_on_sighup,
    server_context,
    tls_files,
)
from signaling import limits
from signaling.limits import ROOM_RE
from signaling.server_messages import ServerClosing
from signaling.wire import encode

if TYPE_CHECKING:
    from server.routing.cluster import Cluster

log = logging.getLogger(__name__)

#: The header with which a node relays a client's connection to the node of its room
#: (:meth:`server.routing.cluster.Cluster.vouch`).
RELAYED_FOR = "X-Spatialjam-Relayed-For"

#: Reading one worker's /metrics, or a page it serves, at most (seconds).
WORKER_HTTP_S = 10.0
#: What the front tells connections its workers did not close at shutdown: come back after
#: about a restart of the front (its workers load their engines side by side).
RETRY_AFTER_S = 3.0
#: At shutdown, after the workers stopped: how long those connections get to take the notice.
CLOSE_CONNECTIONS_S = 2.0
#: Then the most to wait for the connections' handlers.
LAST_HANDLERS_S = 1.0
#: A worker's answer headers passed on to the client besides its type (the front writes the
#: others itself).
PASSED_HEADERS = ("Content-Disposition", "Retry-After")


class FrontState:
    """What the front's endpoints report and its connections share."""

    def __init__(self, policy: AccessPolicy, pool: WorkerPool,
                 connections: ConnectionLimits, proxies: TrustedProxies | None = None) -> None:
        self.started = time.monotonic()
        #: Reverse proxies whose X-Forwarded-For names the client (``--trusted-proxy``).
        self.proxies = proxies or TrustedProxies()
        #: Pages and signaling over TLS with this context (None: plain HTTP); what /healthz
        #: warns about, in words.
        self.tls_context: ssl.SSLContext | None = None
        self.warnings: list[str] = []
        self.pool = pool
        #: Signaling connections open, per client and in all (HTTP 429/503 past the limits).
        self.connections = connections
        self.watchers: set[asyncio.Task] = set()
        self.policy = policy
        self.relays: set[Relay] = set()
        #: The counters of workers that were replaced, as last read, summed
        #: (server.telemetry.aggregate).
        self.retired: m.Values = {}
        #: Per worker: (pid, its counters as last read).
        self._seen: dict[int, tuple[int, m.Values]] = {}
        #: With ``--redis``: this node in the deployment (server.routing.cluster).
        self.cluster: Cluster | None = None

    # routing ------------------------------------------------------------------------------------

    def relayed_for(self, request: Request | None) -> str | None:
        """The client address another node of the deployment vouches for, when ``request``
        is a connection it relays here (None otherwise)."""
        header = request.headers.get(RELAYED_FOR) if request is not None else None
        if header is None or self.cluster is None:
            return None
        return self.cluster.vouched_host(header)

    def _vouch(self, client: ServerConnection) -> dict[str, str]:
        return {RELAYED_FOR: self.cluster.vouch(client_address(self.proxies, client,
                                                               client.request))}

    async def route(self, room: str | None, relayed: bool = False) -> Worker | RemoteNode | None:
        """Where a join for ``room`` goes (None: anywhere will answer; see
        :meth:`server.routing.workers.WorkerPool.route`). With ``--redis``: this node's worker when
        the room is here, or new and this node is the least loaded; the room's node when it
        lives elsewhere (relayed there). A join relayed here from another node stays here
        unless the room moved meanwhile (None: the client joins again)."""
        cluster = self.cluster
        if cluster is None or room is None or (room in self.pool.placement.owner
                                               and room not in cluster.lost):
            return self.pool.route(room)
        try:
            node = await (cluster.claim(room) if relayed else cluster.place(room))
        except (OSError, RedisError, ClusterError) as exc:
            log.warning("cannot find room %s in Redis (%s): the join is refused", room, exc)
            return None
        if node.id == cluster.id:
            return self.pool.route(room)
        if relayed:
            return None
        return RemoteNode(node.id, node.url, self._vouch)

    async def keep_cluster(self) -> None:
        """Tell the deployment this node's load and rooms, as each worker poll learns them;
        close the connections of members of rooms another node took over (they rejoin)."""
        told: set[str] = set()
        while True:
            await asyncio.sleep(POLL_S)
            self.cluster.load = sum(w.health.get("load", 0.0) for w in self.pool.workers
                                    if w.up)
            with contextlib.suppress(OSError, RedisError):
                await self.cluster.hold(set(self.pool.placement.owner))
            taken = self.cluster.lost - told  # by another node: their members here rejoin
            for relay in [r for r in self.relays if r.room in taken
                          and isinstance(getattr(r.upstream, "worker", None), Worker)]:
                await relay.room_moved()
            told = set(self.cluster.lost)

    def health(self) -> tuple[http.HTTPStatus, dict]:
        workers = [w.describe() for w in self.pool.workers]
        up = sum(w["up"] for w in workers)
        said = next((w.health for w in self.pool.workers if w.health), {})
        body = {"status": "ok" if up == len(workers) else "degraded" if up else "down",
                "hrtf": said.get("hrtf"), "device": said.get("device"),
                "rooms": sum(w.health.get("rooms", 0) for w in self.pool.workers if w.up),
                "load": round(sum(w["load"] for w in workers if w["up"]), 4),
                "uptime_s": round(time.monotonic() - self.started, 3),
                "tls": self.tls_context is not None, "workers": workers}
        if self.warnings:
            body["warnings"] = list(self.warnings)
        if self.cluster is not None:
            body["node"] = {"id": self.cluster.id, "url": self.cluster.public_url,
                            "redis": self.cluster.redis_display,
                            "heartbeats_failed": self.cluster.heartbeats_failed}
        return (http.HTTPStatus.OK if up else http.HTTPStatus.SERVICE_UNAVAILABLE), body

    async def metrics(self) -> str:
        workers = self.pool.workers
        read = await asyncio.gather(*(self._worker_metrics(w) for w in workers))
        retired = [self.retired]
        for worker, values in zip(workers, read, strict=True):
            pid = worker.proc.pid if worker.proc else None
            seen = self._seen.get(worker.index)
            if seen is not None and seen[0] != pid:  # replaced: its counts stay in the sums
                self.retired = aggregate.summed([self.retired, seen[1]])
                retired.append(seen[1])
                seen = None
            if values is not None and pid is not None:
                self._seen[worker.index] = (pid, m.counters(values))
            elif seen is not None:  # not answering now: its last counts stand for it
                retired.append(seen[1])
        own: m.Values = {
            m.UP: 1, m.UPTIME: round(time.monotonic() - self.started, 3),
            m.CONNECTIONS: self.connections.open(),
            m.CONNECTIONS_REFUSED: dict(self.connections.refused),
            m.WORKERS: len(workers),
            m.WORKER_UP: {_label(w): int(w.up) for w in workers},
            m.WORKER_ROOMS: {_label(w): w.health.get("rooms", 0) if w.up else 0
                             for w in workers},
            m.WORKER_LOAD: {_label(w): w.health.get("load", 0.0) if w.up else 0.0
                            for w in workers},
            m.WORKER_CPU_CORES: {_label(w): round(w.cpu, 3) for w in workers},
            m.WORKER_RESTARTS: {_label(w): w.restarts for w in workers},
            **process_gauges(),  # the front's own, added to the workers'
        }
        return m.exposition(aggregate.merge([v for v in read if v is not None], own,
                                            aggregate.summed(retired)))

    async def _worker_metrics(self, worker: Worker) -> m.Values | None:
        if not worker.up or worker.port is None:
            return None
        try:
            status, _, body = await http_get(worker.port, "/metrics", WORKER_HTTP_S)
            return m.read(body.decode(errors="replace")) if status == 200 else None
        except (OSError, TimeoutError, ValueError):  # ValueError: not Prometheus text
            return None

    async def forward(self, connection: ServerConnection, request: Request) -> Response:
        """Any other ``GET``: the answer of the worker that holds the room the path names, or
        of the least-loaded worker (HTTP 503 when none answers)."""
        parts = request.path.split("?", 1)[0].split("/")
        room = parts[2].split(".", 1)[0] if len(parts) > 2 else ""
        index = self.pool.placement.owner.get(room) if ROOM_RE.fullmatch(room) else None
        worker = self.pool.workers[index] if index is not None else self.pool.route(None)
        answer = None
        node = None
        if index is None and self.cluster is not None and ROOM_RE.fullmatch(room):
            with contextlib.suppress(OSError, RedisError):  # a room on another node: its page
                node = await self.cluster.locate(room)
        if node is not None and node.id != self.cluster.id:
            where = urlsplit(node.url)
            with contextlib.suppress(OSError, TimeoutError, ValueError, IndexError):
                answer = await http_get(where.port or 80, request.path, WORKER_HTTP_S,
                                        host=where.hostname or "127.0.0.1")
        elif worker is not None and worker.port is not None:
            with contextlib.suppress(OSError, TimeoutError, ValueError, IndexError):
                answer = await http_get(worker.port, request.path, WORKER_HTTP_S)
        if answer is None:
            response = reply(connection, http.HTTPStatus.SERVICE_UNAVAILABLE,
                             "the server is starting or restarting; try again shortly\n",
                             "text/plain; charset=utf-8")
            response.headers["Retry-After"] = "2"
            return response
        status, headers, body = answer
        response = reply(connection, http.HTTPStatus(status), body,
                         headers.get("content-type", "application/octet-stream"))
        for name in PASSED_HEADERS:
            if name.lower() in headers:
                response.headers[name] = headers[name.lower()]
        return response


def _label(worker: Worker) -> str:
    """The value of the ``worker`` label of a worker's series: its number, from 1."""
    return str(worker.index + 1)


def front_router(state: FrontState):
    """The front's HTTP side: ``/ws`` admitted as the single server admits it, health and
    metrics of the workers together, every other page from a worker."""

    async def route(connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/ws":  # None: the WebSocket handshake goes on
            return admit_signaling(state, state.policy, connection, request,
                                   state.relayed_for(request)
                                   or client_address(state.proxies, connection, request))
        if path == "/healthz":
            status, body = state.health()
            return reply(connection, status, json.dumps(body), "application/json")
        if path == "/metrics":
            return reply(connection, http.HTTPStatus.OK, await state.metrics(),
                         "text/plain; version=0.0.4")
        return await state.forward(connection, request)

    return route


async def serve_front(args: argparse.Namespace, state: FrontState) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))

    async def handle(ws: ServerConnection) -> None:
        relayed = state.relayed_for(ws.request) is not None
        relay = Relay(ws, lambda room: state.route(room, relayed))
        state.relays.add(relay)
        try:
            await relay.run()
        finally:
            state.relays.discard(relay)

    context = state.tls_context
    if context is not None:  # checked at start; read again on each SIGHUP
        reload_on_sighup(loop, context, tls_files(args))
    try:  # bound now (a busy port fails at once), listening once every worker serves
        server = await serve(handle, args.host, args.port, process_request=front_router(state),
                             max_size=limits.MAX_FRAME_BYTES, max_queue=4, compression=None,
                             ping_interval=20, ping_timeout=20, start_serving=False,
                             ssl=context)
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") \
            from None
    keeping = None
    try:
        await state.pool.start()
        if args.redis:
            await join_cluster(args, state, server.sockets[0].getsockname()[1])
            keeping = loop.create_task(state.keep_cluster())
        await server.start_serving()
        scheme = "https" if context is not None else "http"
        bound = ", ".join(f"{scheme}://{s.getsockname()[0]}:{s.getsockname()[1]}"
                          for s in server.sockets)
        log.info("serving on %s with %d workers", bound, len(state.pool.workers))
        await stop
        if keeping is not None:  # leave the deployment first: its rooms may open elsewhere
            keeping.cancel()
            await state.cluster.stop()
        log.info("shutting down: %d connections; the workers tell theirs to come back soon",
                 len(state.relays))
        server.close(close_connections=False)
        await state.pool.stop()
        notice = encode(ServerClosing(reason="the server is shutting down",
                                      retry_after_s=RETRY_AFTER_S))
        if state.relays:
            await asyncio.wait([asyncio.ensure_future(r.going_away(notice))
                                for r in list(state.relays)], timeout=CLOSE_CONNECTIONS_S)
    finally:
        if keeping is not None and not keeping.done():
            keeping.cancel()
            with contextlib.suppress(OSError, RedisError):
                await state.cluster.stop()
        await state.pool.stop()
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LAST_HANDLERS_S):
                await server.wait_closed()
    log.info("stopped")


def public_url(args: argparse.Namespace, port: int) -> str:
    """Where clients and other nodes reach this node's signaling: ``--public-url``, or this
    node's own address when it listens on one (``wss://`` with ``--tls-cert``)."""
    if args.public_url:
        return args.public_url
    host = f"[{args.host}]" if ":" in args.host else args.host
    scheme = "wss" if getattr(args, "tls_cert", None) else "ws"
    return f"{scheme}://{host}:{port}/ws"


async def join_cluster(args: argparse.Namespace, state: FrontState, port: int) -> None:
    """Register this node in the deployment's Redis (``--redis``)."""
    from server.routing.cluster import Cluster, ClusterError

    cluster = Cluster(args.redis, public_url(args, port))
    try:
        await cluster.start()
    except ClusterError as exc:
        raise CliError(str(exc)) from None
    state.cluster = cluster


def run_front(args: argparse.Namespace, ice: IceConfig) -> int:
    """``serve`` with ``args.workers`` > 1; 0 after a clean stop. ``ice``: the ICE options
    the workers are given (the front warns when they leave outside players no media path)."""
    try:  # before anything starts: a refusal should not wait for the workers
        policy = AccessPolicy.for_listening(args.host, load_secret(args.secret_file))
        files = tls_files(args)
        context = server_context(files) if files is not None else None
    except (SecretError, TlsError) as exc:
        raise CliError(str(exc)) from None
    log.info("rooms are %s; %d workers", "entered with access tokens" if policy.tokens_required
             else "open (loopback, no token secret)", args.workers)
    if args.redis:
        from server.routing.cluster import ClusterError, check_redis_url, redacted

        try:
            check_redis_url(args.redis)
        except ClusterError as exc:
            raise CliError(str(exc)) from None
        if args.state is not None:
            raise CliError("with --redis the rooms are saved in Redis, where any node can "
                           "restore them: leave out --state")
        if not args.public_url and args.host in ("0.0.0.0", "::", ""):
            raise CliError(f"--host {args.host or '(any)'} with --redis: say where clients and "
                           "other nodes reach this one with --public-url ws://HOST:PORT/ws")
        import redis

        try:  # at once, rather than after the workers have loaded their engines
            redis.Redis.from_url(args.redis, socket_connect_timeout=2, socket_timeout=2).ping()
        except (redis.RedisError, OSError) as exc:
            raise CliError(f"cannot use Redis at {redacted(args.redis)}: {exc}") from None
        args.state = args.redis  # the workers save rooms there
    pool = WorkerPool(args)
    state = FrontState(policy, pool, ConnectionLimits(args.max_connections_per_ip,
                                                      args.max_connections),
                       TrustedProxies(args.trusted_proxy or ()))
    state.tls_context = context
    for warning in (plain_http_warning(args.host, context is not None, bool(state.proxies)),
                    None if is_loopback(args.host)
                    else ice.private_only_warning(media_addresses())):
        if warning is not None:
            log.warning(warning)
            state.warnings.append(warning)
    uvloop.run(serve_front(args, state))
    return 0
