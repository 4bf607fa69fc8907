"""The AI musician in a room: ``ai_add``, ``ai_update`` and ``ai_remove`` (admin), its notes
from the sidecar to the room's synthesiser voice, and what it played as MIDI.

The sidecar itself is :class:`~server.ai.bridge.AiBridge` (a child process the room clock never
waits for); this module is the rooms' side: one AI member per room at most, positioned on the
stage like any other source, its voice rendered by the room's clock
(:class:`~dsp.synth.Voice`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING

from server.rooms.metronome import ai_config
from server.rooms.room import UnknownMember
from signaling.ai_messages import AI_WAITING, AiAdd, AiHears, AiRemove
from signaling.errors import ErrorCode
from signaling.wire import encode

if TYPE_CHECKING:
    from server.rooms.live import Participant, RoomHost

log = logging.getLogger(__name__)

#: An AI musician's settings unless ``ai_add`` says otherwise (signaling/ai_messages.py).
AI_DEFAULTS = {"role": "accompany", "instrument": "epiano", "style": "chorale",
               "temperature": 0.8, "bpm": 0.0, "volume": 1.0, "metronome": False}


def ai_label(config: dict) -> str:
    """What the stage shows on the AI's marker: ``AI epiano (accompany)``."""
    return f"AI {config['instrument']} ({config['role'].replace('_', ' ')})"


class AiMusicians:
    """The AI musicians of ``hub``'s rooms: the admin's messages and the sidecar's notes."""

    def __init__(self, hub: RoomHost) -> None:
        self.hub = hub

    async def handle(self, p: Participant, message) -> None:
        live = p.live
        if live is None:
            return
        room, runner, bridge = live.room, live.runner, self.hub.ai
        present = room.ai_members
        if isinstance(message, AiAdd):
            if present:
                p.session.refuse(message, ErrorCode.AI_EXISTS,
                                 f"this room has an AI musician already ({present[0].id}): "
                                 "send 'ai_update' to change it", asyncio.get_running_loop().time())
                return
            config = {**AI_DEFAULTS, **message.settings}
            member = room.add_ai(ai_label(config))
            live.ai_config = config
            runner.add_ai(member.slot, config["instrument"], config["volume"])
            runner.ai_voices[member.slot].set_style(config["style"])
            bridge.configure(room.name, ai_config(live))  # (at the metronome's tempo, if on)
            log.info("room %s: AI musician %s added (%s)", room.name, member.id, config)
        else:
            member = room.member(message.ai)
            if not room.is_ai[member.slot] or room.is_metronome[member.slot]:
                raise UnknownMember(message.ai)
            if isinstance(message, AiRemove):
                room.leave(member.id)
                runner.detach(member.slot)
                bridge.remove(room.name)
                live.ai_config = None
            else:
                config = live.ai_config = {**live.ai_config, **message.settings}
                member.instrument = ai_label(config)
                room.version += 1
                voice = runner.ai_voices[member.slot]
                voice.volume = config["volume"]
                voice.set_instrument(config["instrument"])
                voice.set_style(config["style"])
                bridge.configure(room.name, ai_config(live))
        self.hub.broadcast(live)

    def hears(self, room: str, status: dict) -> None:
        """The sidecar's status for ``room`` (on the loop): what its AI hears, to the room's
        members when it changed."""
        live = self.hub.rooms.get(room)
        present = live.room.ai_members if live is not None else []
        if live is None or not present:
            return

        def text(field: str) -> str | None:
            value = status.get(field)
            return value[:32] if isinstance(value, str) else None

        def number(field: str) -> float | None:
            value = status.get(field)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            return float(value) if ok and math.isfinite(value) else None

        waiting = text("waiting")
        voice = live.runner.ai_voices.get(present[0].slot)
        arrives = (float(round(voice.lead_ms.percentile(50)))  # whole ms: sent when it moves
                   if voice is not None and len(voice.lead_ms) else None)
        message = encode(AiHears(ai=present[0].id, bpm=number("bpm"),
                                 key=text("key"), chord=text("chord"),
                                 locked=bool(status.get("locked")),
                                 waiting=waiting if waiting in AI_WAITING else None,
                                 lead_ms=number("lead_ms"), style=text("style"),
                                 playing=text("playing"), coming=text("coming"),
                                 arrives_ms=arrives, late=voice.late if voice else 0))
        if message == live.ai_hears_sent:
            return
        live.ai_hears_sent = message
        live.send_all(message)

    def midi(self, room: str) -> bytes | None:
        """The room's AI notes so far as a Standard MIDI File (without notes while an AI
        musician is in the room and has not played yet), or None: no AI has played here."""
        from ai_accompany.midi import midi_bytes

        live = self.hub.rooms.get(room)
        if live is None or not (live.runner.ai_notes.events or live.room.ai_members):
            return None
        bpm = (live.ai_config or {}).get("bpm") or 120.0
        return midi_bytes(live.runner.ai_notes.events, bpm=bpm)

    def deliver(self, room: str, events: list) -> None:
        """Note events from the sidecar (on the loop): to the room's AI voice, if any."""
        live = self.hub.rooms.get(room)
        if live is None:
            return
        for voice in live.runner.ai_voices.values():
            voice.deliver(events, live.runner.room_sample)
