"""The room's frame, set by its admin (``set_frame``): the room's clock is replaced by one at
the new frame, and every member's media connection restarts at it.

A frame is how often the room's clock ticks and how long each packet of its low-latency
transport is (2.5, 5, 10 or 20 ms). Everything built for the old frame goes with the old
clock (receive buffers, decoders, renderer, encoders); the room itself stays: its members,
seats, stage, personal mixes, metronome, AI musician and acoustics. The new clock goes on from
where the old one stopped (to a whole 20 ms), so the AI sidecar's clock and the metronome's
beats keep counting.

Each member is told ``frame_changed`` and its peer connection is closed; the member sends a new
``offer`` (as after ``joined``) and is heard again from its first packet. A room being recorded
keeps its frame until the recording stops: a take is one frame throughout.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Protocol

from hrtf.constants import frame_samples
from server.rooms.live import RoomHost
from server.tick.counts import ClockCounts, clock_counts
from signaling.admin_messages import SetFrame
from signaling.errors import ErrorCode
from signaling.server_messages import ErrorMessage, FrameChanged

if TYPE_CHECKING:
    from server.recording.control import Recordings
    from server.rooms.live import LiveRoom, Participant
    from server.rooms.room import Room
    from server.tick.runner import RoomRunner

log = logging.getLogger(__name__)

#: The room's time after a change of frame starts at a multiple of this many samples (20 ms: a
#: whole number of every frame's).
ROOM_TIME_GRAIN = 960


class FrameHost(RoomHost, Protocol):
    """What a change of frame needs of the process's rooms (:class:`~server.rooms.hub.Hub`)."""

    recordings: Recordings
    closed_clocks: ClockCounts

    def clock(self, room: Room, origin: int = 0) -> RoomRunner:
        """A clock for ``room`` at its frame, going on from room sample ``origin``."""

    def wire_clock(self, live: LiveRoom) -> None:
        """Hand ``live``'s clock what it reports to."""


class RoomFrames:
    """The ``set_frame`` handler of ``hub``'s rooms (the ``admin`` grant, checked by the
    dispatch table)."""

    def __init__(self, hub: FrameHost) -> None:
        self.hub = hub

    async def set(self, p: Participant, message: SetFrame) -> None:
        live = p.live
        if live is None or p.member_id is None:
            return
        room = live.room
        if message.frame_ms == room.frame_ms:  # kept as the room's own from now on
            room.frame_chosen = True
            self.hub.save_soon(live)
            self.hub.broadcast(live)
            return
        if self._recorded(live):
            p.session.send(ErrorMessage(
                ErrorCode.BAD_VALUE, f"room {room.name!r} is being recorded at "
                f"{room.frame_ms:g} ms frames: stop the recording, then change the frame",
                message.msg_id))
            return
        if live.changing_frame:
            p.session.send(ErrorMessage(
                ErrorCode.RATE_LIMITED, "the room's frame is being changed already: wait for "
                "'frame_changed', then try again", message.msg_id))
            return
        live.changing_frame = True
        try:
            await self.hub.renderings.warm(live, frame_samples(message.frame_ms))
            if p.live is not live or self.hub.rooms.get(room.name) is not live:
                return  # the admin left, or the room closed, meanwhile
            if self._recorded(live):  # (one may have started while the sets warmed)
                p.session.send(ErrorMessage(
                    ErrorCode.BAD_VALUE, f"a recording of room {room.name!r} started just "
                    "now: stop it, then change the frame", message.msg_id))
                return
            await self.change(live, message.frame_ms, p.member_id)
        finally:
            live.changing_frame = False
        log.info("room %s: frame %g ms, set by %s", room.name, message.frame_ms, p.member_id)

    def _recorded(self, live: LiveRoom) -> bool:
        """Whether ``live`` is being recorded, or its recording is starting or stopping."""
        return live.runner.recording is not None or self.hub.recordings.starting(live)

    async def change(self, live: LiveRoom, frame_ms: float, by: str) -> None:
        """Give ``live`` a clock at ``frame_ms`` and restart its members' media at it."""
        hub, room, old = self.hub, live.room, live.runner
        # What the old clock holds of its listeners, taken before it lets them go.
        settings = dict(old.listener_settings)
        click_slots = set(old.click_slots)
        voices = {slot: voice.volume for slot, voice in old.ai_voices.items()}
        metronome, metronome_slot = old.metronome, old.metronome_slot
        peers = []
        for member_p in live.participants.values():
            if member_p.pc is not None:
                peers.append(member_p.pc)
                member_p.pc = None  # its next offer makes a connection to the new clock
        hub.closed_clocks += clock_counts(old)
        await old.stop()
        # The room's time goes on from where the old clock stopped, to a whole number of
        # every frame's samples (20 ms): the AI sidecar's clock, the metronome's beats and a
        # later recording's ticks all count on.
        origin = -(-(old.room_sample + old.frame) // ROOM_TIME_GRAIN) * ROOM_TIME_GRAIN
        room.frame_ms, room.frame_chosen = float(frame_ms), True
        room.version += 1
        new = live.runner = hub.clock(room, origin)
        hub.wire_clock(live)
        new.ai_notes = old.ai_notes  # the session's MIDI file goes on
        for member_id in live.participants:
            new.attach(room.member(member_id).slot)
        for slot, volume in voices.items():
            if live.ai_config is not None and not room.is_metronome[slot]:
                voice = new.add_ai(slot, live.ai_config["instrument"], volume)
                voice.set_style(live.ai_config.get("style", "chorale"))  # its bass on the bass
        for slot, listener in settings.items():
            new.configure_listener(slot, **listener)
        new.click_slots = click_slots & set(new.tracks)
        new.metronome, new.metronome_slot = metronome, metronome_slot  # on the same beats
        notice = FrameChanged(frame_ms=float(frame_ms), by=by)
        for member_p in live.participants.values():
            member_p.session.send(notice)
        hub.broadcast(live)
        hub.save_soon(live)
        await hub.renderings.open_room(live)
        new.start()
        for pc in peers:
            with contextlib.suppress(Exception):  # gone already: nothing to close
                await pc.close()
        log.info("room %s now ticks at %g ms (from sample %d); %d media connections restart",
                 room.name, frame_ms, origin, len(peers))
