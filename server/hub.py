"""Rooms and participants on one process: the signaling shell around the sans-I/O cores.

One :class:`Participant` per WebSocket connection: its :class:`~signaling.session.
SignalingSession` parses and polices what arrives; what it yields is applied here to the
:class:`~server.room.Room` and to the participant's aiortc ``RTCPeerConnection``. Outgoing
messages go through a bounded per-connection queue and a writer task, so one slow reader never
holds up a broadcast; a reader that falls too far behind is disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from dsp.geometry import quaternion_matrix
from hrtf.constants import FRAME_MS
from hrtf.hrirset import HrirSet
from server.ai import AiBridge
from server.media import read_uplink, receiver_of
from server.room import Room, RoomFull, UnknownMember
from server.room_runner import RoomRunner
from server.sdp import with_music_opus
from server.uplink import tap_receiver
from signaling.ai_messages import AiAdd, AiRemove, AiUpdate
from signaling.errors import ErrorCode
from signaling.messages import Answer, Ice, Join, Leave, Offer
from signaling.server_messages import ErrorMessage, Stats
from signaling.session import CLOSE_POLICY_VIOLATION, SignalingSession, State
from signaling.stage_messages import HeadPose, MixOverride, MixReset, MoveSource, TurnSource
from signaling.wire import encode

log = logging.getLogger(__name__)

OUTBOX_LIMIT = 256
STATS_INTERVAL_S = 1.0
#: An empty room lingers this long, so a member who drops can come back to the same seat.
EMPTY_ROOM_GRACE_S = 30.0


@dataclass
class LiveRoom:
    room: Room
    runner: RoomRunner
    participants: dict[str, Participant] = field(default_factory=dict)
    closing: asyncio.TimerHandle | None = None
    #: The AI musician's settings, when the room has one.
    ai_config: dict | None = None


#: An AI musician's settings unless ``ai_add`` says otherwise (signaling/ai_messages.py).
AI_DEFAULTS = {"role": "accompany", "instrument": "epiano", "temperature": 0.8, "bpm": 0.0,
               "volume": 1.0, "metronome": False}


def ai_label(config: dict) -> str:
    """What the stage shows on the AI's marker: ``AI epiano (accompany)``."""
    return f"AI {config['instrument']} ({config['role'].replace('_', ' ')})"


class Participant:
    """One signaling connection and, once joined, its member, peer and media."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.session = SignalingSession()
        self.outbox: asyncio.Queue[str] = asyncio.Queue()
        self.live: LiveRoom | None = None
        self.member_id: str | None = None
        self.pc: RTCPeerConnection | None = None
        self.tasks: list[asyncio.Task] = []

    def flush(self) -> None:
        for text in self.session.data_to_send():
            self.outbox.put_nowait(text)
        if self.outbox.qsize() > OUTBOX_LIMIT and self.session.close_requested is None:
            # A reader this far behind is gone or stuck: close it now (its handler then
            # leaves the room), rather than rendering for it until the keepalive notices.
            self.session.close(CLOSE_POLICY_VIOLATION, "not reading: too many messages queued")
            asyncio.get_running_loop().create_task(
                self.ws.close(CLOSE_POLICY_VIOLATION, "not reading"))

    async def writer(self) -> None:
        while True:
            text = await self.outbox.get()
            await self.ws.send(text)


class Hub:
    """All rooms of this process."""

    def __init__(self, hrirs: HrirSet, device: str = "cpu", capacity: int = 16,
                 follow_phase: bool = True) -> None:
        self.hrirs = hrirs
        self.device = device
        self.capacity = capacity
        self.follow_phase = follow_phase
        self.rooms: dict[str, LiveRoom] = {}
        #: The AI sidecar, started when a room first asks for an AI musician.
        self.ai = AiBridge(self._ai_events)

    # the connection ----------------------------------------------------------------------

    async def handle(self, ws: ServerConnection) -> None:
        """The WebSocket handler for ``/ws``."""
        if ws.request is None or ws.request.path.split("?", 1)[0] != "/ws":
            await ws.close(1008, "signaling lives at /ws")
            return
        loop = asyncio.get_running_loop()
        p = Participant(ws)
        writer = loop.create_task(p.writer())
        closer: asyncio.Task | None = None
        try:
            # Keep reading until the socket is closed, also while closing: the peer's close
            # frame may sit behind messages it sent before, and unread input stalls the socket.
            async for data in ws:
                now = loop.time()
                if isinstance(data, str):
                    messages = p.session.receive_text(data, now)
                else:
                    messages = p.session.receive_binary(data, now)
                for message in messages:
                    await self._apply(p, message)
                p.flush()
                if p.session.close_requested and closer is None:
                    await self._leave(p)
                    closer = loop.create_task(self._close(p))
        except ConnectionClosed:
            pass
        finally:
            await self._leave(p)
            writer.cancel()
            if closer is not None:
                closer.cancel()

    async def _close(self, p: Participant) -> None:
        """Send what is queued (briefly), then close with the session's code and reason."""
        await self._drain(p)
        request = p.session.close_requested
        await p.ws.close(request.code, request.reason)

    async def _drain(self, p: Participant) -> None:
        with contextlib.suppress(asyncio.TimeoutError, ConnectionClosed):
            async with asyncio.timeout(1.0):
                while not p.outbox.empty():
                    await p.ws.send(p.outbox.get_nowait())

    async def _apply(self, p: Participant, message) -> None:
        try:
            if isinstance(message, Join):
                await self._join(p, message)
            elif isinstance(message, Offer):
                await self._offer(p, message)
            elif isinstance(message, Answer):
                if p.pc is not None:
                    await p.pc.setRemoteDescription(RTCSessionDescription(message.sdp, "answer"))
            elif isinstance(message, Ice):
                await self._ice(p, message)
            elif isinstance(message, Leave):
                await self._leave(p)
            elif isinstance(message, MoveSource | TurnSource | HeadPose | MixOverride | MixReset):
                self._stage_edit(p, message)
            elif isinstance(message, AiAdd | AiUpdate | AiRemove):
                self._ai_message(p, message)
        except UnknownMember as exc:
            p.session.refuse(message, ErrorCode.UNKNOWN_SOURCE,
                             f"no source {exc.args[0]!r} in this room",
                             asyncio.get_running_loop().time())
        except Exception as exc:  # a peer failure must not end the server (and is no strike)
            log.warning("%s from %s failed: %s", type(message).__name__, p.member_id, exc)
            p.session.send(ErrorMessage(ErrorCode.INTERNAL_ERROR, f"could not apply: {exc}"[:300],
                                        message.msg_id))

    # joining and leaving -----------------------------------------------------------------

    async def _join(self, p: Participant, join: Join) -> None:
        live = self.rooms.get(join.room)
        if live is None:
            room = Room(join.room, self.capacity)
            live = LiveRoom(room, RoomRunner(room, self.hrirs, self.device,
                                                    follow_phase=self.follow_phase))
            live.runner.on_analysis = (
                lambda sample, audio, name=join.room: self.ai.send_audio(name, sample, audio))
            self.rooms[join.room] = live
            live.runner.start()
            log.info("room %s opened", join.room)
        holder = live.room.seat_holder(join.seat)
        if holder is not None and holder in live.participants:
            # The seat's old connection has not noticed its network is gone: this join is the
            # same player coming back, so it takes the seat over.
            old = live.participants[holder]
            await self._leave(old)
            old.session.close(4000, "replaced by a newer connection for this seat")
            old.flush()
            asyncio.get_running_loop().create_task(self._close(old))
        if live.closing is not None:  # someone is here again: the room stays
            live.closing.cancel()
            live.closing = None
        try:
            member = live.room.join(join.name, join.instrument, join.seat)
        except RoomFull as exc:
            p.session.reject_join(ErrorCode.ROOM_FULL, str(exc))
            return
        p.live, p.member_id = live, member.id
        live.participants[member.id] = p
        live.runner.attach(member.slot)
        p.session.accept_join(member.id, member.seat, live.room.describe())
        p.tasks.append(asyncio.get_running_loop().create_task(self._send_stats(p)))
        self._broadcast(live, exclude=p)
        log.info("%s joined %s as %s (slot %d)", join.name, join.room, member.id, member.slot)

    async def _leave(self, p: Participant) -> None:
        live, member_id = p.live, p.member_id
        p.live, p.member_id = None, None
        for task in p.tasks:
            task.cancel()
        p.tasks.clear()
        if p.pc is not None:
            pc, p.pc = p.pc, None
            await pc.close()
        if live is None or member_id is None:
            return
        live.participants.pop(member_id, None)
        with contextlib.suppress(UnknownMember):
            member = live.room.leave(member_id)
            live.runner.detach(member.slot)
        if p.session.state is State.JOINED:
            p.session.state = State.AWAITING_JOIN
        if live.room.empty:
            loop = asyncio.get_running_loop()
            if live.closing is not None:
                live.closing.cancel()
            handle = loop.call_later(
                EMPTY_ROOM_GRACE_S, lambda: loop.create_task(self._close_room(live, handle)))
            live.closing = handle
        else:
            self._broadcast(live)

    async def _close_room(self, live: LiveRoom, timer: asyncio.TimerHandle) -> None:
        if (live.closing is not timer or not live.room.empty
                or self.rooms.get(live.room.name) is not live):
            return
        del self.rooms[live.room.name]
        self.ai.remove(live.room.name)
        await live.runner.stop()
        log.info("room %s closed", live.room.name)

    async def close(self) -> None:
        for live in list(self.rooms.values()):
            for p in list(live.participants.values()):
                await self._leave(p)
            await live.runner.stop()
        self.rooms.clear()
        await self.ai.close()

    # the AI musician -----------------------------------------------------------------------

    def _ai_message(self, p: Participant, message) -> None:
        live = p.live
        room, runner = live.room, live.runner
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
            self.ai.configure(room.name, config)
            log.info("room %s: AI musician %s added (%s)", room.name, member.id, config)
        else:
            member = room.member(message.ai)
            if not room.is_ai[member.slot]:
                raise UnknownMember(message.ai)
            if isinstance(message, AiRemove):
                room.leave(member.id)
                runner.detach(member.slot)
                self.ai.remove(room.name)
                live.ai_config = None
            else:
                config = live.ai_config = {**live.ai_config, **message.settings}
                member.instrument = ai_label(config)
                room.version += 1
                voice = runner.ai_voices[member.slot]
                voice.volume = config["volume"]
                voice.set_instrument(config["instrument"])
                self.ai.configure(room.name, config)
        self._broadcast(live)

    def ai_midi(self, room: str) -> bytes | None:
        """The room's AI notes so far as a Standard MIDI File, or None."""
        from ai_accompany.midi import midi_bytes

        live = self.rooms.get(room)
        if live is None or not live.runner.ai_notes.events:
            return None
        bpm = (live.ai_config or {}).get("bpm") or 120.0
        return midi_bytes(live.runner.ai_notes.events, bpm=bpm)

    def _ai_events(self, room: str, events: list) -> None:
        """Note events from the sidecar (on the loop): to the room's AI voice, if any."""
        live = self.rooms.get(room)
        if live is None:
            return
        for voice in live.runner.ai_voices.values():
            voice.deliver(events, live.runner.room_sample)

    # WebRTC ------------------------------------------------------------------------------

    async def _offer(self, p: Participant, offer: Offer) -> None:
        live = p.live
        if live is None or p.member_id is None:
            return
        slot = live.room.member(p.member_id).slot
        fresh_pc = p.pc is None
        if fresh_pc:
            p.pc = self._peer(p, slot)
        pc = p.pc
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
            track = live.runner.tracks[slot]
            if all(t.sender.track is not track for t in pc.getTransceivers()):
                pc.addTrack(track)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # aiortc raises many kinds on SDP it cannot use
            if fresh_pc:  # a renegotiation that fails keeps the connection that works
                p.pc = None
                await pc.close()
            reason = str(exc) or type(exc).__name__
            p.session.refuse(offer, ErrorCode.BAD_SDP, f"the offer cannot be used: {reason}"[:300],
                             asyncio.get_running_loop().time())
            return
        p.session.send(Answer(sdp=with_music_opus(pc.localDescription.sdp), msg_id=offer.msg_id))

    def _peer(self, p: Participant, slot: int) -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        buffer = p.live.runner.buffers[slot]

        @pc.on("track")
        def on_track(track) -> None:
            if track.kind != "audio":
                return
            tap_receiver(receiver_of(pc, track), buffer)
            # Opus packets go to the buffer from the tap; frames of anything else come here.
            p.tasks.append(asyncio.get_running_loop().create_task(read_uplink(track, buffer)))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState == "failed" and p.pc is pc:
                log.info("peer of %s failed: closing its connection", p.member_id)
                p.session.close(CLOSE_POLICY_VIOLATION, "media connection failed")
                await p.ws.close(1011, "media connection failed")

        return pc

    async def _ice(self, p: Participant, ice: Ice) -> None:
        if p.pc is None or ice.candidate is None:
            return
        try:
            candidate = candidate_from_sdp(ice.candidate.split(":", 1)[1])
        except (ValueError, IndexError) as exc:
            p.session.refuse(ice, ErrorCode.BAD_VALUE, f"'candidate' cannot be parsed: {exc}",
                             asyncio.get_running_loop().time())
            return
        candidate.sdpMid = ice.sdp_mid
        candidate.sdpMLineIndex = ice.sdp_mline_index
        await p.pc.addIceCandidate(candidate)

    # the stage and personal mixes -----------------------------------------------------------

    def _stage_edit(self, p: Participant, message) -> None:
        live = p.live
        if live is None or p.member_id is None:
            return
        room, me = live.room, p.member_id
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
            return
        elif isinstance(message, MixReset):
            room.reset_override(me, message.source)
            if message.source in (None, me):
                room.set_self_monitor(me, False)
            return
        self._broadcast(live)

    def _broadcast(self, live: LiveRoom, exclude: Participant | None = None) -> None:
        text = encode(live.room.describe())  # once for everyone
        for other in live.participants.values():
            if other is not exclude:
                other.session.send_encoded(text)
                other.flush()

    async def _send_stats(self, p: Participant) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            live = p.live
            if live is None or p.member_id is None:
                return
            slot = live.room.member(p.member_id).slot
            runner = live.runner
            buffer, track = runner.buffers.get(slot), runner.tracks.get(slot)
            decoder = runner.decoders.get(slot)
            schedule = runner.schedule
            p.session.send(Stats(
                tick_ms_p50=round(runner.stats.percentile_ms(50), 3),
                tick_ms_p95=round(runner.stats.percentile_ms(95), 3),
                late_ticks=schedule.late_ticks if schedule else 0,
                skipped_ticks=schedule.skipped_ticks if schedule else 0,
                uplink_buffer_ms=float(buffer.depth * FRAME_MS) if buffer else 0.0,
                uplink_target_ms=float(buffer.target * FRAME_MS) if buffer else 0.0,
                concealed=buffer.stats.concealed if buffer else 0,
                uplink_tick_wait_ms_p50=round(buffer.tick_wait_ms(50), 3) if buffer else 0.0,
                decode_ms_p50=round(runner.stats.parts_ms["decode"].percentile(50), 3),
                render_ms_p50=round(runner.stats.parts_ms["render"].percentile(50), 3),
                encode_ms_p50=round(runner.stats.parts_ms["encode"].percentile(50), 3),
                concealed_fec=decoder.stats.fec if decoder else 0,
                concealed_plc=decoder.stats.plc if decoder else 0,
                downlink_queue_ms=float(track.queued * FRAME_MS) if track else 0.0,
                uplink_wait_ms_p50=round(buffer.waits_ms.percentile(50), 3) if buffer else 0.0,
                uplink_wait_ms_p95=round(buffer.waits_ms.percentile(95), 3) if buffer else 0.0,
                downlink_wait_ms_p95=round(track.waits_ms.percentile(95), 3) if track else 0.0,
                sources_cap=runner.governor.max_sources or 0,
            ))
            p.flush()

    def metrics(self) -> dict[str, float]:
        """Process-wide numbers for ``/metrics``."""
        runners = [live.runner for live in self.rooms.values()]
        return {
            "rooms": len(self.rooms),
            "participants": sum(len(live.participants) for live in self.rooms.values()),
            "ticks_total": sum(r.stats.ticks for r in runners),
            "tick_overruns_total": sum(r.stats.overruns for r in runners),
            "late_ticks_total": sum(r.schedule.late_ticks for r in runners if r.schedule),
            "skipped_ticks_total": sum(r.schedule.skipped_ticks for r in runners if r.schedule),
            "tick_ms_p95_max": max((r.stats.percentile_ms(95) for r in runners), default=0.0),
            "uplink_wait_ms_p95_max": max((b.waits_ms.percentile(95) for r in runners
                                           for b in r.buffers.values()), default=0.0),
            "downlink_wait_ms_p95_max": max((t.waits_ms.percentile(95) for r in runners
                                             for t in r.tracks.values()), default=0.0),
            "concealed_frames_total": sum(b.stats.concealed for r in runners
                                          for b in r.buffers.values()),
            "fec_frames_total": sum(d.stats.fec for r in runners for d in r.decoders.values()),
            "plc_frames_total": sum(d.stats.plc for r in runners for d in r.decoders.values()),
            "overload_degradations_total": sum(r.governor.degradations for r in runners),
            "culled_pairs_total": sum(r.culled_pairs for r in runners),
            "clock_phase_shifts_total": sum(r.aligner.shifts for r in runners if r.aligner),
            "ai_musicians": sum(len(r.ai_voices) for r in runners),
            "ai_sidecar_restarts_total": self.ai.restarts,
            "ai_analysis_dropped_total": self.ai.dropped_audio,
            "ai_events_total": sum(v.events for r in runners for v in r.ai_voices.values()),
            "ai_events_late_total": sum(v.late for r in runners for v in r.ai_voices.values()),
            "ai_event_lead_ms_p50_min": min((v.lead_ms.percentile(50) for r in runners
                                             for v in r.ai_voices.values() if len(v.lead_ms)),
                                            default=0.0),
        }
