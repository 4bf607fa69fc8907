"""One client's signaling through the front: its WebSocket piped to a worker's, and back.

The front (:mod:`server.routing.front`) admits the client's ``/ws`` connection as the single-process
server does (origin, access token, connection limits), then a :class:`Relay` carries every
frame, text and binary, to an *upstream* WebSocket on a worker and every frame of the worker's
back, unchanged, with the client's query string (its token) on the upstream's URL. The media
does not pass here: the worker's ``answer`` carries its own ICE candidates, and the client's
peer connection goes straight to the worker.

**Routing.** The relay reads the type of the client's text messages while the client is not in
a room, and of any that may be a ``leave`` while it is:

- the first message opens the upstream: to the worker of the room of a ``join``, to the least
  loaded worker for anything else;
- a ``join`` while not in a room goes to the worker that holds the room (or where the
  placement puts a new room, :mod:`server.routing.placement`). If that is not the current
  upstream's, the upstream is closed (the worker's handler ends as for a client that left) and
  one to that worker is opened before the ``join`` is sent on; a ``join`` sent while an earlier
  one is not answered yet waits (at most :data:`JOIN_WAIT_S`) for that answer first;
- the worker's ``joined`` marks the client in a room, its ``leave`` out of it.

**Closing.** When the worker closes the upstream, the client's connection closes with the same
code and reason (``4003`` kick, ``1001`` going away, ``1011``, ``1008``…); when it drops it
without a close frame (a full send queue, a crash), the client's is dropped too. When the
client closes, the upstream is closed. A join that finds no worker able to take rooms, or whose
worker cannot be reached, closes the client's connection with ``1011`` (join again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import CloseCode
from websockets.protocol import State as WsState

from server.routing.workers import RemoteNode, Worker
from signaling.errors import ErrorCode, ProtocolError
from signaling.limits import ROOM_RE, SIGNALING_SEND_BUFFER
from signaling.server_messages import ErrorMessage
from signaling.session import CLOSE_GOING_AWAY, CLOSE_POLICY_VIOLATION
from signaling.wire import decode, encode

log = logging.getLogger(__name__)

#: How long a ``join`` waits for an earlier, unanswered one (seconds).
JOIN_WAIT_S = 10.0
#: Opening an upstream to a worker, at most (seconds).
CONNECT_TIMEOUT_S = 10.0
#: What a closing client connection gets to send its close frame before it is dropped.
CLOSE_TIMEOUT_S = 3.0
#: The worker's messages are compact JSON with ``type`` first (signaling.wire.encode), so
#: their type shows in their first bytes.
_JOINED = '{"type":"joined"'
_ERROR = '{"type":"error"'


@dataclass
class Upstream:
    """The WebSocket to one worker (or another node), and the task passing its frames to the
    client."""

    worker: Worker | RemoteNode
    conn: ClientConnection
    pump: asyncio.Task | None = None
    #: Closed by the relay (a switch or the client's close): its end is not the client's.
    retired: bool = False


def peek(text: str, joined: bool) -> tuple[str | None, str | None]:
    """A client message's type and, for a ``join``, its room, as far as routing needs them:
    ``(None, None)`` for what needs no routing (any message while ``joined``, other than a
    ``leave``) or does not parse (the worker answers it)."""
    if joined and "leave" not in text and "\\u" not in text:  # (an escaped "leave" decodes)
        return None, None
    try:
        message = decode(text)
    except ProtocolError:
        return None, None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return None, None
    room = message.get("room")
    if not isinstance(room, str) or not ROOM_RE.fullmatch(room):
        room = None
    return message["type"], room


class Relay:
    """One client connection at the front; :meth:`run` until it closes.

    Parameters
    ----------
    client
        The client's WebSocket (admitted by the front's HTTP router).
    route
        ``await route(room)``: the worker for a join to ``room`` (None: any), or None when no
        worker takes rooms (:meth:`server.routing.front.FrontState.route`); with ``--redis``, it may
        be another node (:class:`~server.routing.workers.RemoteNode`).
    """

    def __init__(self, client: ServerConnection, route) -> None:
        self.client = client
        self.route = route
        self.path = client.request.path if client.request is not None else "/ws"
        self.upstream: Upstream | None = None
        #: In a room on the upstream's worker (its ``joined`` came; no ``leave`` since).
        self.joined = False
        #: The room of the client's last ``join``.
        self.room: str | None = None
        #: While a ``join`` waits for its answer: True (``joined``) or False (``error``).
        self.joining: asyncio.Future[bool] | None = None
        sock = client.transport.get_extra_info("socket") if client.transport else None
        if sock is not None:  # as the worker's own: a reader that stops reading is noticed
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SIGNALING_SEND_BUFFER)

    async def run(self) -> None:
        try:
            async for data in self.client:
                if not await self._forward(data):
                    break
        except ConnectionClosed:
            pass
        finally:
            await self._retire()

    async def _forward(self, data: str | bytes) -> bool:
        """Route and send one client frame upstream; False when the connection is over."""
        kind, room = peek(data, self.joined) if isinstance(data, str) else (None, None)
        if kind == "leave":
            self.joined = False
        target = None
        if kind == "join" and not self.joined:
            if self.joining is not None and not self.joining.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self.joining), JOIN_WAIT_S)
            if not self.joined:
                self.room = room
                target = await self.route(room)  # without a valid room: anywhere answers
                if target is None:
                    await self._close_client(CloseCode.INTERNAL_ERROR,
                                             "no worker can take rooms now; join again")
                    return False
                self.joining = asyncio.get_running_loop().create_future()
        switch = self.upstream is None or (target is not None
                                           and target.key != self.upstream.worker.key)
        if switch:
            if target is None:
                target = await self.route(None)
            if not await self._connect(target):
                return False
        with contextlib.suppress(ConnectionClosed):  # its pump closes the client's
            await self.upstream.conn.send(data)
        return True

    async def _connect(self, worker: Worker | None) -> bool:
        """Close the current upstream (its last frames still reach the client) and open one
        to ``worker``; False (the client's connection closed) when that fails."""
        await self._retire()
        url = worker.ws_url(self.path) if worker is not None else None
        if url is None:
            await self._close_client(CloseCode.INTERNAL_ERROR,
                                     "no worker can take rooms now; join again")
            return False
        try:
            conn = await connect(url, proxy=None, compression=None, max_size=None,
                                 ping_interval=None, open_timeout=CONNECT_TIMEOUT_S,
                                 user_agent_header=None,
                                 additional_headers=worker.headers(self.client))
        except InvalidStatus as exc:  # refused: the token (expired since), or another
            body = exc.response.body.decode(errors="replace")  # node's connection limits
            if not body.lstrip().startswith("{"):  # plain words: as a signaling error
                status = exc.response.status_code
                code = ErrorCode.RATE_LIMITED if status == 429 else ErrorCode.INTERNAL_ERROR
                body = encode(ErrorMessage(code, f"the server of this room refused the "
                                           f"connection (HTTP {status}): {body.strip()}"))
            with contextlib.suppress(ConnectionClosed):
                await self.client.send(body)
            await self._close_client(CLOSE_POLICY_VIOLATION, "refused")
            return False
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            log.warning("cannot reach %s for a client: %s", worker.label, exc)
            await self._close_client(CloseCode.INTERNAL_ERROR,
                                     f"{worker.label} of the server cannot be reached; join again")
            return False
        sock = conn.transport.get_extra_info("socket")
        if sock is not None:  # what the front holds for a client that stops reading
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SIGNALING_SEND_BUFFER)
        self.upstream = Upstream(worker, conn)
        self.upstream.pump = asyncio.get_running_loop().create_task(self._pump(self.upstream))
        return True

    async def _pump(self, up: Upstream) -> None:
        """The worker's frames to the client; then the worker's close to the client."""
        try:
            async for message in up.conn:
                if isinstance(message, str) and not self.joined:
                    self._answered(message)
                await self.client.send(message)
        except ConnectionClosed:
            if self.client.state is not WsState.OPEN:
                return  # the client went: run() closes the upstream
        if up.retired or self.client.state is not WsState.OPEN:
            return
        close = up.conn.protocol.close_rcvd
        if close is None:  # dropped without a close frame: drop the client's too
            self.client.transport.abort()
            return
        await self._close_client(None if close.code == 1005 else close.code, close.reason)

    def _answered(self, message: str) -> None:
        """A worker's message before ``joined``: the answer to a pending join?"""
        if message.startswith(_JOINED):
            self.joined = True
            if self.joining is not None and not self.joining.done():
                self.joining.set_result(True)
        elif message.startswith(_ERROR) and self.joining is not None \
                and not self.joining.done():
            self.joining.set_result(False)

    async def _retire(self) -> None:
        """Close the upstream, if any, and wait for its last frames to reach the client."""
        up, self.upstream = self.upstream, None
        self.joined = False
        if up is None:
            return
        up.retired = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await up.conn.close()
                await up.pump
        up.pump.cancel()

    async def _close_client(self, code: int | None, reason: str = "") -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.client.close(code, reason)
        except TimeoutError:  # stuck writing the close frame
            self.client.transport.abort()

    async def room_moved(self) -> None:
        """This client's room is held by another node now (this node lost it while cut off
        from Redis): close it with 1012 (service restart), so it joins again, and its join
        reaches the room's node."""
        await self._retire()
        await self._close_client(CloseCode.SERVICE_RESTART,
                                 "this room moved to another server; join again")

    async def going_away(self, notice: str) -> None:
        """At shutdown, for a client whose worker did not close it (none was opened): the
        ``server_closing`` ``notice`` (encoded), then 1001."""
        up = self.upstream
        if up is not None and up.pump is not None:  # the worker's own close comes first
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(up.pump), CLOSE_TIMEOUT_S)
        if self.client.state is not WsState.OPEN:
            return
        with contextlib.suppress(ConnectionClosed):
            await self.client.send(notice)
        await self._close_client(CLOSE_GOING_AWAY, "server shutting down")
