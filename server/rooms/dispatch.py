"""Which handler applies each signaling message, and with which grant: one table.

:func:`routes` maps every message type the :class:`~signaling.session.SignalingSession` yields
to its handler and the grant its sender needs (``None``: any member; see
:mod:`signaling.access`). A new message is handled by adding its type here, with a handler in
the module of its concern: joining and leaving in :mod:`server.rooms.hub`, the peer connection
in :mod:`server.media.peers`, the stage in :mod:`server.rooms.stage`, the room's admin in
:mod:`server.rooms.admin`, the AI musician in :mod:`server.ai.musician`, listening settings and
HRTF uploads in :mod:`server.rooms.rendering` and :mod:`server.rooms.hrtf_uploads`, recordings
in :mod:`server.recording.control`, the room's frame in :mod:`server.rooms.frame`.

:func:`apply` runs one message's handler and turns what goes wrong into an answer to that
client: a missing grant or an unknown source is refused in words (neither is a strike: the
client may not know its grants), and any other failure of a handler (aiortc raises many kinds)
is answered ``internal_error`` without ending the connection or the room.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from server.rooms.live import Participant, RoomHost
from server.rooms.room import UnknownMember
from signaling.access import AccessError
from signaling.admin_messages import Kick, LockRoom, SetFrame
from signaling.ai_messages import AiAdd, AiRemove, AiUpdate
from signaling.errors import ErrorCode
from signaling.messages import Answer, Ice, Join, Leave, Offer, Ping
from signaling.metronome_messages import HearMetronome, SetMetronome
from signaling.recording_messages import ListRecordings, StartRecording, StopRecording
from signaling.render_messages import HrtfChunk, HrtfUpload, SetRendering, SetRoomAcoustics
from signaling.server_messages import ErrorMessage
from signaling.social_messages import MuteSelf, SendChat
from signaling.stage_messages import HeadPose, MixOverride, MixReset, MoveSource, TurnSource

if TYPE_CHECKING:
    from server.ai.musician import AiMusicians
    from server.media.peers import Peers
    from server.recording.control import Recordings
    from server.rooms.admin import RoomAdmin
    from server.rooms.frame import RoomFrames
    from server.rooms.hrtf_uploads import HrtfUploads
    from server.rooms.metronome import RoomMetronomes
    from server.rooms.social import Social
    from server.rooms.stage import StageEdits

log = logging.getLogger(__name__)

Handler = Callable[[Participant, Any], Awaitable[None]]


@dataclass(frozen=True)
class Route:
    """A message type's handler, and the grant its sender must hold (None: none needed)."""

    handle: Handler
    grant: str | None = None


class Handlers(RoomHost, Protocol):
    """The handlers the table routes to (:class:`~server.rooms.hub.Hub` holds them)."""

    peers: Peers
    stage: StageEdits
    admin: RoomAdmin
    ai_musicians: AiMusicians
    uploads: HrtfUploads
    recordings: Recordings
    social: Social
    metronomes: RoomMetronomes
    frames: RoomFrames

    async def join(self, p: Participant, join: Join) -> None:
        """Enter the room ``join`` names (or be refused in words)."""

    async def leave(self, p: Participant) -> None:
        """Leave the room; the seat stays for a rejoin."""


def routes(hub: Handlers) -> dict[type, Route]:
    """The table of ``hub``'s handlers, by message type."""
    stage, admin, peers, ai = hub.stage, hub.admin, hub.peers, hub.ai_musicians

    def recordings(p: Participant, message) -> Awaitable[None]:
        return hub.recordings.handle(p, message, hub.broadcast)

    async def answered_by_the_session(p: Participant, message) -> None:
        return None

    return {
        Ping: Route(answered_by_the_session),  # its pong is the session's own answer
        Join: Route(hub.join),
        Leave: Route(lambda p, message: hub.leave(p)),
        Offer: Route(peers.offer),
        Answer: Route(peers.answer),
        Ice: Route(peers.ice),
        MoveSource: Route(stage.edit),  # moving another's source needs "move": stage.edit checks
        TurnSource: Route(stage.edit),
        HeadPose: Route(stage.edit),
        MixOverride: Route(stage.edit),
        MixReset: Route(stage.edit),
        AiAdd: Route(ai.handle, "admin"),
        AiUpdate: Route(ai.handle, "admin"),
        AiRemove: Route(ai.handle, "admin"),
        Kick: Route(admin.kick, "admin"),
        LockRoom: Route(admin.lock, "admin"),
        SetRoomAcoustics: Route(admin.acoustics, "admin"),
        SetRendering: Route(hub.renderings.set),
        HrtfUpload: Route(hub.uploads.begin),
        HrtfChunk: Route(lambda p, message: hub.uploads.chunk(p, message.data)),
        StartRecording: Route(recordings, "admin"),
        StopRecording: Route(recordings, "admin"),
        ListRecordings: Route(recordings),
        SendChat: Route(hub.social.chat),
        MuteSelf: Route(hub.social.mute),
        SetMetronome: Route(hub.metronomes.set, "admin"),
        HearMetronome: Route(hub.metronomes.hear),
        SetFrame: Route(hub.frames.set, "admin"),
    }


async def apply(table: dict[type, Route], p: Participant, message) -> None:
    """Apply ``message`` from ``p`` with its handler in ``table``; answer ``p`` when it fails."""
    route = table.get(type(message))
    if route is None:  # the session yields only types it parsed: a missing row is our bug
        log.error("no handler for %s", type(message).__name__)
        return
    try:
        if route.grant is not None:
            p.access.require(route.grant, f"'{message.TYPE}'")
        await route.handle(p, message)
    except AccessError as exc:  # not a strike: the client may not know its grants
        p.session.send(ErrorMessage(exc.code, exc.message, message.msg_id))
    except UnknownMember as exc:
        p.session.refuse(message, ErrorCode.UNKNOWN_SOURCE,
                         f"no source {exc.args[0]!r} in this room",
                         asyncio.get_running_loop().time())
    except Exception as exc:  # a peer failure must not end the server (and is no strike)
        log.warning("%s from %s failed: %s", type(message).__name__, p.member_id, exc)
        p.session.send(ErrorMessage(ErrorCode.INTERNAL_ERROR, f"could not apply: {exc}"[:300],
                                    message.msg_id))
