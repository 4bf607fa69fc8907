"""The room's metronome: set by an admin for everyone (``set_metronome``), heard by each player
as they choose (``hear_metronome``: centred, from its place on the stage, or not at all).

While it is on, the metronome is a source on the stage (id ``metronome``: players may move it,
and change its level in their own mix) and its clicks are made on the room clock
(:class:`~server.tick.metronome.Metronome`), so they fall on exact room samples. Turning it on
(or changing its tempo or metre) starts beat zero, a downbeat, a little ahead of the clock;
``room_state`` says where (``metronome.beat_zero_s``). An AI musician in the room plays at the
metronome's tempo and on its beat grid while it is on, after its count-in. The settings are
saved with the room; a player's choice of how to hear it lives with their connection (a new
join hears it centred, the page asks again).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from server.rooms.room import RoomFull
from server.tick.metronome import Metronome
from signaling.metronome_messages import HearMetronome, SetMetronome, key_parts

if TYPE_CHECKING:
    from server.rooms.live import LiveRoom, Participant, RoomHost

log = logging.getLogger(__name__)

#: A first metronome's settings, before the admin's message is applied.
DEFAULTS = {"on": False, "bpm": 100.0, "beats_per_bar": 4, "accent": True, "count_in_bars": 1,
            "key": None}
#: The settings that start the metronome's beat grid afresh when they change (the key does not).
CLOCK_SETTINGS = ("on", "bpm", "beats_per_bar", "accent", "count_in_bars")
#: The fastest tempo the AI musician plays at (its ``bpm`` setting's limit).
AI_MAX_BPM = 240.0
#: Beat zero is this many frames ahead of the clock when the metronome starts: the tick that
#: renders it is not under way yet.
LEAD_FRAMES = 2


class RoomMetronomes:
    """The metronome's signaling handlers for ``hub``'s rooms."""

    def __init__(self, hub: RoomHost) -> None:
        self.hub = hub

    async def set(self, p: Participant, message: SetMetronome) -> None:
        live = p.live
        if live is None:
            return
        changes = {name: getattr(message, name)
                   for name in (*CLOCK_SETTINGS, "key")
                   if getattr(message, name) is not None}
        if changes.get("key") == "":
            changes["key"] = None  # no key declared: an AI musician listens for it
        before = {**DEFAULTS, **(live.room.metronome_settings or {})}
        settings = {**before, **changes}
        live.room.metronome_settings = settings
        if any(settings[name] != before[name] for name in CLOCK_SETTINGS):
            self.apply(live)  # a new beat zero
        else:  # the key alone (or nothing): the clicks and the AI keep their beat grid
            live.room.version += 1
            if live.ai_config is not None:
                self.hub.ai.configure(live.room.name, ai_config(live))
        log.info("room %s: metronome %s by %s", live.room.name, settings, p.member_id)
        self.hub.broadcast(live)
        self.hub.save_soon(live)

    def apply(self, live: LiveRoom) -> None:
        """Start, restart or stop the room's metronome as its settings say (also when a saved
        room opens), and set an AI musician's tempo by it."""
        room, runner = live.room, live.runner
        settings = room.metronome_settings
        if settings is None or not settings["on"]:
            runner.metronome = None
            if (member := room.members.get("metronome")) is not None:
                room.leave(member.id)
                runner.detach(member.slot)
        else:
            try:
                slot: int | None = room.add_metronome().slot
            except RoomFull:  # no place on the stage: heard centred only, and said so
                slot = None
                log.warning("room %s is full: its metronome has no place on the stage",
                            room.name)
            origin = runner.room_sample + LEAD_FRAMES * runner.frame
            room.metronome_origin = origin
            runner.metronome = Metronome(float(settings["bpm"]), int(settings["beats_per_bar"]),
                                         bool(settings["accent"]), origin)
            runner.metronome_slot = slot
        room.version += 1
        if live.ai_config is not None:
            self.hub.ai.configure(room.name, ai_config(live))

    async def hear(self, p: Participant, message: HearMetronome) -> None:
        live = p.live
        if live is None or p.member_id is None:
            return
        hear(live, live.room.member(p.member_id).slot, message.mode)


def hear(live: LiveRoom, slot: int, mode: str) -> None:
    """Listener ``slot`` hears the metronome as ``mode`` says: ``off``, ``centre``, ``stage``."""
    if mode == "centre":
        live.runner.click_slots.add(slot)
    else:
        live.runner.click_slots.discard(slot)
    live.room.hears_stage_metronome[slot] = mode == "stage"


def ai_config(live: LiveRoom) -> dict:
    """The AI musician's settings as it plays them: at the metronome's tempo while it is on
    (half of it above the AI's 240 bpm: half time) and on its beat grid (from its beat zero),
    after its count-in (whole bars of the room's metre), without a click of its own (the
    room's metronome clicks). The room's key, when it declares one (on or off), is the AI's:
    it plays in it without listening for it first."""
    config = dict(live.ai_config or {})
    settings = live.room.metronome_settings
    parts = key_parts(settings["key"]) if settings and settings.get("key") else None
    if parts is not None:
        config["key_tonic"], config["key_mode"] = parts
    if settings is not None and settings["on"]:
        bpm = float(settings["bpm"])
        config["bpm"] = bpm / 2 if bpm > AI_MAX_BPM else bpm
        config["count_in_beats"] = int(settings["count_in_bars"]) * int(settings["beats_per_bar"])
        config["beat_zero"] = int(live.room.metronome_origin)  # its beat grid is the room's
        config["metronome"] = False
    return config
