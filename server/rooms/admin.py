"""The room's admin: lock and unlock it, remove a member, set its acoustics (``lock_room``,
``kick``, ``set_room_acoustics``; the sender needs the ``admin`` grant, which the dispatch table
checks).

A removed member is kept out until the room closes, by seat and by token identity, and their
connection is closed with :data:`~signaling.session.CLOSE_KICKED`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from server.rooms.room import UnknownMember
from signaling.admin_messages import Kick, LockRoom
from signaling.errors import ErrorCode
from signaling.render_messages import SetRoomAcoustics
from signaling.server_messages import ErrorMessage
from signaling.session import CLOSE_KICKED

if TYPE_CHECKING:
    from server.rooms.live import Participant, RoomHost

log = logging.getLogger(__name__)


class RoomAdmin:
    """The admin's signaling handlers for ``hub``'s rooms."""

    def __init__(self, hub: RoomHost) -> None:
        self.hub = hub

    async def lock(self, p: Participant, message: LockRoom) -> None:
        live = p.live
        if live is None or p.member_id is None:
            return
        live.room.locked = message.locked
        live.room.version += 1
        log.info("room %s %s by %s", live.room.name,
                 "locked" if message.locked else "unlocked", p.member_id)
        self.hub.broadcast(live)

    async def kick(self, p: Participant, message: Kick) -> None:
        live = p.live
        if live is None or p.member_id is None:
            return
        member = live.room.member(message.member)
        target = live.participants.get(member.id)
        if target is None:  # an AI musician: 'ai_remove' removes it
            raise UnknownMember(message.member)
        live.banned.add(f"seat:{member.seat}")
        if target.access.identity is not None:
            live.banned.add(f"identity:{target.access.identity}")
        by = live.room.member(p.member_id).name
        text = f"{by} removed you from room {live.room.name!r}" + (
            f": {message.reason}" if message.reason else "")
        target.session.send(ErrorMessage(ErrorCode.KICKED, text))
        await self.hub.evict(target, CLOSE_KICKED, "removed by the room's admin")
        log.info("room %s: %s removed %s", live.room.name, p.member_id, member.id)

    async def acoustics(self, p: Participant, message: SetRoomAcoustics) -> None:
        live = p.live
        if live is None:
            return
        try:
            await self.hub.renderings.set_room(live, message)
        except ValueError as exc:  # the room model's words: a size and RT60 it cannot reach…
            p.session.send(ErrorMessage(ErrorCode.BAD_VALUE, str(exc), message.msg_id))
            return
        log.info("room %s: acoustics %s, set by %s", live.room.name, live.room.acoustics,
                 p.member_id)
        self.hub.broadcast(live)
        self.hub.save_soon(live)
