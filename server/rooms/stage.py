"""Stage edits: moving and turning sources on the shared stage, each listener's head and their
personal mix (``move_source``, ``turn_source``, ``head_pose``, ``mix_override``, ``mix_reset``).

The room (:class:`~server.rooms.room.Room`, no I/O) holds the layout; this handler applies the
edits, tells the room when the shared stage changed (``room_state`` to every member) and has the
room saved. A head turn and a personal mix change only the sender's own mix, so nobody else is
told.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dsp.geometry import quaternion_matrix
from signaling.stage_messages import HeadPose, MixOverride, MixReset, MoveSource, TurnSource

if TYPE_CHECKING:
    from server.rooms.live import Participant, RoomHost


class StageEdits:
    """The stage's signaling handler for ``hub``'s rooms."""

    def __init__(self, hub: RoomHost) -> None:
        self.hub = hub

    async def edit(self, p: Participant, message) -> None:
        live = p.live
        if live is None or p.member_id is None:
            return
        room, me = live.room, p.member_id
        if isinstance(message, MoveSource | TurnSource) and message.source != me:
            p.access.require("move", "moving another member's source")
        if isinstance(message, MoveSource):
            room.move_source(message.source, message.position_m)
        elif isinstance(message, TurnSource):
            room.turn_source(message.source, message.yaw_deg, message.pitch_deg)
        elif isinstance(message, HeadPose):
            if message.quaternion is not None:
                room.set_head_rotation(me, quaternion_matrix(message.quaternion))
            else:
                room.set_head_pose(me, message.yaw_deg or 0.0, message.pitch_deg or 0.0,
                                   message.roll_deg or 0.0)
            return
        elif isinstance(message, MixOverride):
            if message.source == me:  # your own source: self-monitoring on or off
                room.set_self_monitor(me, not message.mute if message.mute is not None else True)
            room.set_override(me, message.source, position=message.position_m,
                              gain=message.gain, mute=message.mute)
            self.hub.save_soon(live)
            return
        elif isinstance(message, MixReset):
            room.reset_override(me, message.source)
            if message.source in (None, me):
                room.set_self_monitor(me, False)
            self.hub.save_soon(live)
            return
        self.hub.broadcast(live)
        self.hub.save_soon(live)
