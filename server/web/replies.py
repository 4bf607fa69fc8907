"""HTTP answers the single-process server (:mod:`server.web.app`) and the front of ``serve
--workers N`` (:mod:`server.routing.front`) share: replies, the ``/ws`` admission, the
same-origin rule.

Kept apart from :mod:`server.web.app` so that the front, which relays signaling and renders no
audio, imports neither the engine nor aiortc (some 200 MB less resident memory).
"""

from __future__ import annotations

import asyncio
import http
import time
from urllib.parse import urlsplit

from websockets.asyncio.server import Request, Response, ServerConnection

from server.web.access import AccessPolicy
from server.web.admission import TrustedProxies
from signaling.access import AccessError
from signaling.server_messages import ErrorMessage
from signaling.wire import encode


def same_origin(request: Request) -> bool:
    """A browser's WebSocket must come from a page of this server (no cross-site use of /ws).

    Clients that send no ``Origin`` (bots, command-line tools) are not browsers and pass.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == (request.headers.get("Host") or "").lower()


def client_address(proxies: TrustedProxies, connection: ServerConnection,
                   request: Request) -> str:
    """Whom a connection counts against: its peer's address, or, from a trusted reverse
    proxy, the client that the proxy names (:class:`~server.web.admission.TrustedProxies`)."""
    peer = connection.remote_address[0] if connection.remote_address else ""
    return proxies.client(peer, request.headers)


def access_refused(connection: ServerConnection, exc: AccessError) -> Response:
    """HTTP 401 with the refusal as a signaling ``error`` in the body (a client that cannot
    read the handshake's response, as a browser, asks ``/access`` for it)."""
    return reply(connection, http.HTTPStatus.UNAUTHORIZED,
                 encode(ErrorMessage(exc.code, exc.message)), "application/json")


def admit_signaling(state, policy: AccessPolicy, connection: ServerConnection,
                    request: Request, client_host: str | None = None) -> Response | None:
    """The ``/ws`` handshake's checks, before any room state is shared: the page's origin
    (HTTP 403), the access token (401), the connection limits (429, 503, :func:`admit`). None
    lets the handshake go on."""
    if not same_origin(request):
        return reply(connection, http.HTTPStatus.FORBIDDEN,
                     "signaling accepts pages served by this server only\n",
                     "text/plain; charset=utf-8")
    try:
        policy.for_request(request.path, time.time())
    except AccessError as exc:
        return access_refused(connection, exc)
    return admit(state, connection, client_host)


def admit(state, connection: ServerConnection, client_host: str | None = None) -> Response | None:
    """Count a ``/ws`` connection against the limits until its socket closes (None), or the
    refusal: HTTP 429 past the per-client limit, 503 past the total. ``state`` holds the
    :class:`~server.web.admission.ConnectionLimits` (``connections``) and the tasks that release
    them (``watchers``)."""
    host = client_host if client_host is not None else \
        connection.remote_address[0] if connection.remote_address else ""
    refusal = state.connections.admit(host)
    if refusal is not None:
        status = (http.HTTPStatus.TOO_MANY_REQUESTS if refusal.per_client
                  else http.HTTPStatus.SERVICE_UNAVAILABLE)
        response = reply(connection, status, refusal.message + "\n", "text/plain; charset=utf-8")
        response.headers["Retry-After"] = "5"
        return response

    async def release_when_closed() -> None:
        try:
            await connection.wait_closed()
        finally:
            state.connections.release(host)

    task = asyncio.get_running_loop().create_task(release_when_closed())
    state.watchers.add(task)
    task.add_done_callback(state.watchers.discard)
    return None


def reply(connection: ServerConnection, status, body: str | bytes,
          content_type: str) -> Response:
    """A response of ``content_type`` that no cache keeps; ``body`` text, or bytes as they
    are (a file)."""
    response = connection.respond(status, body if isinstance(body, str) else "")
    del response.headers["Content-Type"]  # respond() sets text/plain; replace, don't add
    response.headers["Content-Type"] = content_type
    response.headers["Cache-Control"] = "no-store"
    if isinstance(body, bytes):
        response.body = body
        del response.headers["Content-Length"]
        response.headers["Content-Length"] = str(len(body))
    return response
