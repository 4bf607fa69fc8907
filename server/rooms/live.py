"""A room open on this process and the connections in it: the types the room's handlers share.

A :class:`LiveRoom` is a :class:`~server.rooms.room.Room` (membership, stage, personal mixes;
no I/O) with its running clock (:class:`~server.tick.runner.RoomRunner`) and the signaling
connections of its members. A :class:`Participant` is one signaling connection: its
:class:`~signaling.session.SignalingSession` parses and polices what arrives; outgoing messages
go through a bounded per-connection queue and a writer task, so one slow reader never holds up
a broadcast, and a reader that falls too far behind is disconnected.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from aiortc import RTCPeerConnection
from websockets.asyncio.server import ServerConnection

from server.rooms.room import Room
from server.tick.runner import RoomRunner
from signaling.access import OPEN, Access
from signaling.limits import CHAT_HISTORY, SIGNALING_SEND_BUFFER
from signaling.session import CLOSE_POLICY_VIOLATION, SignalingSession

if TYPE_CHECKING:
    from server.ai.bridge import AiBridge
    from server.rooms.rendering import Renderings

log = logging.getLogger(__name__)

#: Messages queued for one connection past which its reader is taken for gone.
OUTBOX_LIMIT = 256


@dataclass
class LiveRoom:
    room: Room
    runner: RoomRunner
    participants: dict[str, Participant] = field(default_factory=dict)
    closing: asyncio.TimerHandle | None = None
    #: The AI musician's settings, when the room has one.
    ai_config: dict | None = None
    #: A save to the store is due (one per interval, of the latest state).
    saving: asyncio.TimerHandle | None = None
    #: Kept out until the room closes: ``identity:…`` and ``seat:…`` of kicked members.
    banned: set[str] = field(default_factory=set)
    #: The seat each token identity last held, so a rejoin by identity gets it back.
    seats_by_identity: dict[str, str] = field(default_factory=dict)
    #: The room's last lines of chat (``ChatLine``), for joiners: kept while the room is open.
    chat: deque = field(default_factory=lambda: deque(maxlen=CHAT_HISTORY))
    #: The last ``levels`` sent to the room (encoded): the same again is not sent.
    levels_sent: str = ""
    #: The last ``ai_hears`` sent to the room (encoded), likewise.
    ai_hears_sent: str = ""
    #: An admin's change of the room's frame is under way (server.rooms.frame).
    changing_frame: bool = False

    def send_all(self, text: str, exclude: Participant | None = None) -> None:
        """One encoded message to every member (but ``exclude``), each through its queue."""
        for p in self.participants.values():
            if p is not exclude:
                p.session.send_encoded(text)
                p.flush()


class Participant:
    """One signaling connection and, once joined, its member, peer and media."""

    def __init__(self, ws: ServerConnection, access: Access = OPEN) -> None:
        self.ws = ws
        #: What this connection may do: from its access token (or every grant, open rooms).
        self.access = access
        self.session = SignalingSession()
        self.outbox: asyncio.Queue[str] = asyncio.Queue()
        self.live: LiveRoom | None = None
        self.member_id: str | None = None
        self.pc: RTCPeerConnection | None = None
        self.tasks: list[asyncio.Task] = []
        #: ICE candidates sent for the current peer connection.
        self.candidates = 0
        #: How this member hears, while in a room (server.rooms.rendering; in memory only).
        self.rendering = None
        sock = ws.transport.get_extra_info("socket") if ws.transport is not None else None
        if sock is not None:  # what a reader that stops reading can hold up in the kernel
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SIGNALING_SEND_BUFFER)

    def flush(self) -> None:
        for text in self.session.data_to_send():
            self.outbox.put_nowait(text)
        if self.outbox.qsize() > OUTBOX_LIMIT and self.session.close_requested is None:
            # A reader this far behind is gone or stuck, and its socket is full: no close
            # frame would get through (a graceful close, or a keepalive ping, would wait on
            # it for ever). Drop the connection now; its handler then leaves the room (the
            # seat stays), rather than rendering for it while it never reads.
            log.warning("%s reads nothing (%d messages queued): dropping its connection",
                        self.member_id, self.outbox.qsize())
            self.session.close(CLOSE_POLICY_VIOLATION, "not reading: too many messages queued")
            self.ws.transport.abort()

    async def writer(self) -> None:
        while True:
            text = await self.outbox.get()
            await self.ws.send(text)


class RoomHost(Protocol):
    """What a room's message handlers (stage, admin, AI musician) need of the process's rooms:
    :class:`~server.rooms.hub.Hub` is the one implementation."""

    rooms: dict[str, LiveRoom]
    renderings: Renderings
    ai: AiBridge

    def broadcast(self, live: LiveRoom, exclude: Participant | None = None) -> None:
        """Send the room's ``room_state`` to its members (but ``exclude``)."""

    def save_soon(self, live: LiveRoom) -> None:
        """Have the room's state saved within the store's interval."""

    async def evict(self, p: Participant, code: int, reason: str) -> None:
        """Take ``p`` out of its room now and close its connection with ``code``."""
