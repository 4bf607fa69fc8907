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
import dataclasses
import logging
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from dsp.geometry import quaternion_matrix
from hrtf.constants import FRAME_MS
from hrtf.hrirset import HrirSet
from server.access import AccessPolicy
from server.ai import AiBridge
from server.hrtf_uploads import HrtfRegistry, HrtfUploads
from server.ingress import DropCounts, guard_datagrams
from server.media import read_uplink, receiver_of
from server.recordings import Recordings
from server.rendering import Renderings
from server.room import Room, RoomFull, UnknownMember
from server.room_runner import RoomRunner
from server.sdp import MAX_ICE_CANDIDATES, offer_failure, offer_problem, with_music_opus
from server.store import RoomStore
from server.uplink import tap_receiver
from signaling.access import OPEN, Access, AccessError
from signaling.admin_messages import Kick, LockRoom
from signaling.ai_messages import AiAdd, AiRemove, AiUpdate
from signaling.errors import ErrorCode
from signaling.limits import SIGNALING_SEND_BUFFER
from signaling.messages import Answer, Ice, Join, Leave, Offer
from signaling.recording_messages import ListRecordings, StartRecording, StopRecording
from signaling.render_messages import HrtfChunk, HrtfUpload, SetRendering, SetRoomAcoustics
from signaling.server_messages import ErrorMessage, ServerClosing, Stats
from signaling.session import CLOSE_GOING_AWAY, CLOSE_POLICY_VIOLATION, SignalingSession, State
from signaling.stage_messages import HeadPose, MixOverride, MixReset, MoveSource, TurnSource
from signaling.wire import encode

log = logging.getLogger(__name__)

OUTBOX_LIMIT = 256
STATS_INTERVAL_S = 1.0
#: Rooms open on one process at once (an empty one stays open for its grace): past it a join
#: that would open another is refused (``room_full``). Each holds a renderer sized to its
#: capacity, so rooms opened by join-and-leave must not pile up without bound.
MAX_ROOMS = 256
#: The close code a removed member's connection gets (application range, RFC 6455 7.4.2).
CLOSE_KICKED = 4003
#: The close code of a connection the server cannot go on with: its media connection failed
#: or went silent, or its room failed (RFC 6455 7.4.1, "internal error").
CLOSE_SERVER_ERROR = 1011
#: An established media connection from which nothing at all (RTP, RTCP, DTLS) has arrived
#: for this long has lost its network: a frozen process or a dead link sends no TCP reset, and
#: ICE consent expiry (about 30 s) and the WebSocket keepalive (20 s + 20 s) notice late. A
#: live peer is never this quiet: its microphone track sends a packet every 20 ms, a muted one
#: included (browsers send silent frames), and as a receiver of its mix it sends RTCP reports
#: at least every 7.5 s without any track (browsers' 5 s audio interval, randomised up to
#: 1.5 times; aiortc's every 0.5 to 1.5 s). The member leaves; its seat stays for a rejoin.
MEDIA_SILENCE_S = 10.0
#: How often the media watchdog looks (seconds): a silent peer leaves MEDIA_SILENCE_S to
#: MEDIA_SILENCE_S + MEDIA_CHECK_S after its last packet.
MEDIA_CHECK_S = 1.0
#: An empty room lingers this long, so a member who drops can come back to the same seat.
EMPTY_ROOM_GRACE_S = 30.0
#: At shutdown: how long connections get to take the notice and close, and the store to write.
CLOSE_CONNECTIONS_S = 2.0
FLUSH_STORE_S = 2.0
#: What ``server_closing`` tells clients: rejoin after this long (about a restart's warm-up).
RETRY_AFTER_S = 2.0


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


#: An AI musician's settings unless ``ai_add`` says otherwise (signaling/ai_messages.py).
AI_DEFAULTS = {"role": "accompany", "instrument": "epiano", "temperature": 0.8, "bpm": 0.0,
               "volume": 1.0, "metronome": False}


def ai_label(config: dict) -> str:
    """What the stage shows on the AI's marker: ``AI epiano (accompany)``."""
    return f"AI {config['instrument']} ({config['role'].replace('_', ' ')})"


def clock_counters(runner: RoomRunner) -> dict[str, int]:
    """A room clock's counters for ``/metrics`` (the hub keeps them when the room closes)."""
    schedule, aligner = runner.schedule, runner.aligner
    return {"ticks_total": runner.stats.ticks, "tick_overruns_total": runner.stats.overruns,
            "late_ticks_total": schedule.late_ticks if schedule else 0,
            "skipped_ticks_total": schedule.skipped_ticks if schedule else 0,
            "overload_degradations_total": runner.governor.degradations,
            "culled_pairs_total": runner.culled_pairs,
            "clock_phase_shifts_total": aligner.shifts if aligner else 0,
            "tick_errors_total": runner.failures.total,
            "rooms_failed_total": int(runner.gave_up)}


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
        #: How this member hears, while in a room (server.rendering; in memory only).
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


async def packets_received(pc: RTCPeerConnection) -> int:
    """Datagrams received so far on ``pc``'s transports: DTLS, RTP and RTCP (ICE's own STUN
    checks are not counted)."""
    report = await pc.getStats()
    return sum(stats.packetsReceived for stats in report.values() if stats.type == "transport")


class Hub:
    """All rooms of this process."""

    def __init__(self, hrirs: HrirSet, device: str = "cpu", capacity: int = 16,
                 follow_phase: bool = True, policy: AccessPolicy | None = None,
                 store: RoomStore | None = None,
                 empty_room_grace_s: float = EMPTY_ROOM_GRACE_S, hrtf_spec: str = "kemar",
                 acoustics: str = "off", recordings: Recordings | None = None) -> None:
        self.hrirs = hrirs
        #: Session recordings (``serve --recordings``); by default recording is off.
        self.recordings = recordings or Recordings(None)
        #: Listeners' HRTF sets and rendering settings, rooms' acoustics (``serve --hrtf``,
        #: ``--acoustics`` give the defaults), and the listeners' own uploaded sets.
        registry = HrtfRegistry()
        self.renderings = Renderings(hrtf_spec, hrirs, registry, acoustics)
        self.uploads = HrtfUploads(registry, self.renderings.use_uploaded)
        #: Where rooms' seats, stage and personal mixes are saved; None keeps nothing.
        self.store = store
        #: Every signaling connection, joined or not (each is told when the server closes).
        self.connections: set[Participant] = set()
        self.policy = policy or AccessPolicy(None)
        self.device = device
        self.capacity = capacity
        self.follow_phase = follow_phase
        #: How long an empty room waits for its members before it closes (seconds).
        self.empty_room_grace_s = empty_room_grace_s
        self.rooms: dict[str, LiveRoom] = {}
        #: The clock counters of the rooms that have closed: /metrics counters never go down.
        self.closed_clocks: Counter[str] = Counter()
        #: The AI sidecar, started when a room first asks for an AI musician.
        self.ai = AiBridge(self._ai_events)
        #: Media packets dropped before anything decoded them (server.ingress).
        self.drops = DropCounts()

    # the connection ----------------------------------------------------------------------

    async def handle(self, ws: ServerConnection) -> None:
        """The WebSocket handler for ``/ws``."""
        if ws.request is None or ws.request.path.split("?", 1)[0] != "/ws":
            await ws.close(1008, "signaling lives at /ws")
            return
        loop = asyncio.get_running_loop()
        try:  # the handshake was checked already (server.app); expiry since then is caught here
            access = self.policy.for_request(ws.request.path, time.time())
        except AccessError as exc:
            await ws.send(encode(ErrorMessage(exc.code, exc.message)))
            await ws.close(CLOSE_POLICY_VIOLATION, exc.code)
            return
        p = Participant(ws, access)
        self.connections.add(p)
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
            self.connections.discard(p)
            await self._leave(p)
            writer.cancel()
            if closer is not None:
                closer.cancel()

    async def _close(self, p: Participant) -> None:
        """Send what is queued (briefly), then close with the session's code and reason; a
        peer that never answers (or whose socket is full) is cut off after the close timeout."""
        await self._drain(p)
        request = p.session.close_requested
        try:
            async with asyncio.timeout((p.ws.close_timeout or 0.0) + 1.0):
                await p.ws.close(request.code, request.reason)
        except TimeoutError:  # stuck writing the close frame: websockets would wait for ever
            p.ws.transport.abort()

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
                if isinstance(message, MoveSource | TurnSource) and message.source != p.member_id:
                    p.access.require("move", "moving another member's source")
                self._stage_edit(p, message)
            elif isinstance(message, AiAdd | AiUpdate | AiRemove):
                p.access.require("admin", f"'{message.TYPE}'")
                self._ai_message(p, message)
            elif isinstance(message, Kick | LockRoom):
                p.access.require("admin", f"'{message.TYPE}'")
                await self._admin(p, message)
            elif isinstance(message, HrtfChunk):
                await self.uploads.chunk(p, message.data)
            elif isinstance(message, SetRendering):
                await self.renderings.set(p, message)
            elif isinstance(message, HrtfUpload):
                await self.uploads.begin(p, message)
            elif isinstance(message, SetRoomAcoustics):
                p.access.require("admin", f"'{message.TYPE}'")
                await self._room_acoustics(p, message)
            elif isinstance(message, StartRecording | StopRecording | ListRecordings):
                if not isinstance(message, ListRecordings):
                    p.access.require("admin", f"'{message.TYPE}'")
                await self.recordings.handle(p, message, self._broadcast)
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

    # joining and leaving -----------------------------------------------------------------

    def _entry(self, p: Participant, join: Join) -> tuple[Access, str | None]:
        """The access this join enters with and the seat it takes, or :class:`AccessError`."""
        access = p.access
        if join.token is not None and self.policy.tokens_required:  # a fresher token
            access = self.policy.check(join.token, time.time())
        access.check_room(join.room)
        access.require("join", "entering the room")
        seat = join.seat
        live = self.rooms.get(join.room)
        if live is None:
            return access, seat
        if access.identity is not None:
            seat = seat or live.seats_by_identity.get(access.identity)
        if f"identity:{access.identity}" in live.banned or f"seat:{seat}" in live.banned:
            raise AccessError(ErrorCode.KICKED, f"an admin removed you from room "
                                                f"{join.room!r}; you may not rejoin it now")
        if live.room.locked and not access.allows("admin") and not live.room.has_seat(seat):
            raise AccessError(ErrorCode.ROOM_LOCKED, f"room {join.room!r} is locked by its "
                                                     "admin: only its members may enter")
        return access, seat

    async def _join(self, p: Participant, join: Join) -> None:
        try:
            p.access, seat = self._entry(p, join)
        except AccessError as exc:
            p.session.reject_join(exc.code, exc.message)
            return
        if p.access.name:
            join = dataclasses.replace(join, name=p.access.name)
        join = dataclasses.replace(join, seat=seat)
        live = self.rooms.get(join.room)
        if live is None and len(self.rooms) >= MAX_ROOMS:
            p.session.reject_join(ErrorCode.ROOM_FULL, f"this server has {MAX_ROOMS} rooms open, "
                                  "its most: join an open room, or try again later")
            return
        if live is None:
            room = Room(join.room, self.capacity)
            self._restore(room)
            live = LiveRoom(room, RoomRunner(room, self.hrirs, self.device,
                                                    follow_phase=self.follow_phase))
            live.runner.on_analysis = (
                lambda sample, audio, name=join.room: self.ai.send_audio(name, sample, audio))
            live.runner.on_failed = lambda exc, live=live: asyncio.get_running_loop().create_task(
                self._fail_room(live, exc))
            self.rooms[join.room] = live
            live.runner.start()
            await self.renderings.open_room(live)
            log.info("room %s opened", join.room)
        holder = live.room.seat_holder(join.seat)
        if holder is not None and holder in live.participants:
            # The seat's old connection has not noticed its network is gone: this join is the
            # same player coming back, so it takes the seat over.
            await self._evict(live.participants[holder], 4000,
                              "replaced by a newer connection for this seat")
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
        live.room.set_listen_only(member.id, not p.access.allows("publish"))
        if p.access.identity is not None:
            live.seats_by_identity[p.access.identity] = member.seat
        live.runner.attach(member.slot)
        p.session.accept_join(member.id, member.seat, live.room.describe(),
                              tuple(sorted(p.access.grants)))
        self.renderings.joined(p)
        p.tasks.append(asyncio.get_running_loop().create_task(self._send_stats(p)))
        self._broadcast(live, exclude=p)
        self._save_soon(live)
        log.info("%s joined %s as %s (slot %d)", join.name, join.room, member.id, member.slot)

    async def _evict(self, p: Participant, code: int, reason: str) -> None:
        """Take ``p`` out of its room now, and close its connection once its queue is sent."""
        await self._leave(p)
        p.session.close(code, reason)
        p.flush()
        asyncio.get_running_loop().create_task(self._close(p))

    async def _leave(self, p: Participant) -> None:
        live, member_id = p.live, p.member_id
        p.live, p.member_id = None, None
        for task in p.tasks:
            task.cancel()
        p.tasks.clear()
        self.uploads.cancel(p)
        self.renderings.left(p)
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
                self.empty_room_grace_s,
                lambda: loop.create_task(self._close_room(live, handle)))
            live.closing = handle
        else:
            self._broadcast(live)

    async def _close_room(self, live: LiveRoom, timer: asyncio.TimerHandle) -> None:
        if (live.closing is not timer or not live.room.empty
                or self.rooms.get(live.room.name) is not live):
            return
        del self.rooms[live.room.name]
        self.closed_clocks.update(clock_counters(live.runner))
        self.ai.remove(live.room.name)
        await self.recordings.stop(live, "ended: the room closed")
        await live.runner.stop()
        log.info("room %s closed", live.room.name)

    async def _fail_room(self, live: LiveRoom, exc: Exception) -> None:
        """Close a room whose clock gave up (its ticks kept failing, the last with ``exc``):
        its members are told (``internal_error``), leave (their seats go with the room) and
        their connections close (1011); a new ``join`` opens the room afresh."""
        name = live.room.name
        if self.rooms.get(name) is not live:
            return
        del self.rooms[name]
        if live.closing is not None:
            live.closing.cancel()
        self.closed_clocks.update(clock_counters(live.runner))
        self.ai.remove(name)
        text = (f"room {name!r} stopped working and was closed: its audio failed "
                f"{live.runner.failures.run} ticks in a row; join again to open it afresh")
        members = list(live.participants.values())
        for p in members:
            p.session.send(ErrorMessage(ErrorCode.INTERNAL_ERROR, text))
        for p in members:
            await self._evict(p, CLOSE_SERVER_ERROR, "the room failed")
        await self.recordings.stop(live, "ended: the room failed")
        await live.runner.stop()
        log.error("room %s closed (%d members told): its ticks kept failing, the last with %r",
                  name, len(members), exc)

    async def close(self, reason: str = "the server is shutting down",
                    retry_after_s: float = RETRY_AFTER_S) -> None:
        """Shut down in bounded time: tell every connection (``server_closing``), close it
        with 1001 (going away), stop the rooms, then write their last state to the store.

        Parameters
        ----------
        reason : str
            For people: why the server goes.
        retry_after_s : float
            When clients should try to rejoin (seconds); a restart takes about this long.
        """
        notice = ServerClosing(reason=reason, retry_after_s=retry_after_s)
        closing = list(self.connections)
        for p in closing:
            p.session.send(notice)
            p.session.close(CLOSE_GOING_AWAY, "server shutting down")
            p.flush()
        if closing:  # each handler then leaves its room; what is left is taken out below
            await asyncio.wait([asyncio.ensure_future(self._close(p)) for p in closing],
                               timeout=CLOSE_CONNECTIONS_S)
        for live in list(self.rooms.values()):
            for p in list(live.participants.values()):
                await self._leave(p)
            await self.recordings.stop(live, "ended: the server shut down")
            await live.runner.stop()
            if self.store is not None:
                if live.saving is not None:
                    live.saving.cancel()
                self.store.save(live.room.snapshot())
        self.rooms.clear()
        self.uploads.close()
        await self.ai.close()
        if self.store is not None and not await asyncio.to_thread(self.store.close,
                                                                  FLUSH_STORE_S):
            log.warning("room state: the last changes may be lost (not written in %.1f s)",
                        FLUSH_STORE_S)

    # saved rooms -----------------------------------------------------------------------------

    def _restore(self, room: Room) -> None:
        """Put back what the store holds of this room, as it opens (one small read)."""
        saved = self.store.load(room.name) if self.store is not None else None
        if saved is None:
            return
        skipped = room.restore(saved)
        log.info("room %s: %d seats and %d personal settings restored", room.name,
                 len(saved.seats), len(saved.mixes))
        if skipped:
            log.warning("room %s: left out of the saved state: %s", room.name,
                        "; ".join(skipped))

    def _save_soon(self, live: LiveRoom) -> None:
        """Have the room's state saved within the store's interval: the latest state of a
        burst of edits, one snapshot (array copies) per interval on the loop."""
        if self.store is None or live.saving is not None:
            return

        def save() -> None:
            live.saving = None
            if self.rooms.get(live.room.name, live) is live:  # not reopened since: still ours
                self.store.save(live.room.snapshot())

        live.saving = asyncio.get_running_loop().call_later(self.store.interval_s, save)

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

    # the room's admin ------------------------------------------------------------------------

    async def _admin(self, p: Participant, message: Kick | LockRoom) -> None:
        live = p.live
        if live is None or p.member_id is None:
            return
        if isinstance(message, LockRoom):
            live.room.locked = message.locked
            live.room.version += 1
            log.info("room %s %s by %s", live.room.name,
                     "locked" if message.locked else "unlocked", p.member_id)
            self._broadcast(live)
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
        await self._evict(target, CLOSE_KICKED, "removed by the room's admin")
        log.info("room %s: %s removed %s", live.room.name, p.member_id, member.id)

    async def _room_acoustics(self, p: Participant, message: SetRoomAcoustics) -> None:
        live = p.live
        if live is None:
            return
        try:
            await self.renderings.set_room(live, message)
        except ValueError as exc:  # the room model's words: a size and RT60 it cannot reach…
            p.session.send(ErrorMessage(ErrorCode.BAD_VALUE, str(exc), message.msg_id))
            return
        log.info("room %s: acoustics %s, set by %s", live.room.name, live.room.acoustics,
                 p.member_id)
        self._broadcast(live)
        self._save_soon(live)

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
        problem = offer_problem(offer.sdp)
        if problem is not None:
            p.session.refuse(offer, ErrorCode.BAD_SDP, problem, asyncio.get_running_loop().time())
            return
        slot = live.room.member(p.member_id).slot
        fresh_pc = p.pc is None
        if fresh_pc:
            p.pc = self._peer(p, slot)
            p.candidates = 0
        pc = p.pc
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
            track = live.runner.tracks[slot]
            if all(t.sender.track is not track for t in pc.getTransceivers()):
                pc.addTrack(track)
            await pc.setLocalDescription(await pc.createAnswer())
            guard_datagrams(pc, self.drops)
        except Exception as exc:  # aiortc raises many kinds on SDP it cannot use
            if fresh_pc:  # a renegotiation that fails keeps the connection that works
                p.pc = None
                await pc.close()
            p.session.refuse(offer, ErrorCode.BAD_SDP, offer_failure(exc),
                             asyncio.get_running_loop().time())
            return
        p.session.send(Answer(sdp=with_music_opus(pc.localDescription.sdp), msg_id=offer.msg_id))

    def _peer(self, p: Participant, slot: int) -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        buffer = p.live.runner.buffers[slot]

        @pc.on("track")
        def on_track(track) -> None:
            if track.kind != "audio" or not p.access.allows("publish"):
                return  # a listener without the publish grant is not heard
            tap_receiver(receiver_of(pc, track), buffer, self.drops)
            # Opus packets go to the buffer from the tap; frames of anything else come here.
            p.tasks.append(asyncio.get_running_loop().create_task(read_uplink(track, buffer)))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState == "failed" and p.pc is pc:
                log.info("peer of %s failed: it leaves and its connection closes", p.member_id)
                await self._evict(p, CLOSE_SERVER_ERROR, "media connection failed")

        p.tasks.append(asyncio.get_running_loop().create_task(self._watch_media(p, pc)))
        return pc

    async def _watch_media(self, p: Participant, pc: RTCPeerConnection) -> None:
        """While ``pc`` is ``p``'s and connected, check every :data:`MEDIA_CHECK_S` that
        something arrived on it; after :data:`MEDIA_SILENCE_S` of nothing, ``p`` leaves its
        room (the seat stays) and its signaling closes (:data:`CLOSE_SERVER_ERROR`)."""
        loop = asyncio.get_running_loop()
        heard, heard_at = -1, loop.time()
        while p.pc is pc:
            await asyncio.sleep(MEDIA_CHECK_S)
            now = loop.time()
            if pc.connectionState != "connected":  # not established (yet): nothing to expect
                heard_at = now
                continue
            received = await packets_received(pc)
            if received != heard:
                heard, heard_at = received, now
            elif now - heard_at >= MEDIA_SILENCE_S and p.pc is pc:
                log.warning("nothing from %s's media connection for %.0f s: its network is "
                            "gone; it leaves (its seat stays)", p.member_id, now - heard_at)
                p.tasks.remove(asyncio.current_task())  # leaving cancels the others
                await self._evict(p, CLOSE_SERVER_ERROR,
                                  f"no media from you for {MEDIA_SILENCE_S:.0f} s")
                return

    async def _ice(self, p: Participant, ice: Ice) -> None:
        if p.pc is None or ice.candidate is None:
            return
        p.candidates += 1
        if p.candidates > MAX_ICE_CANDIDATES:
            p.session.refuse(ice, ErrorCode.OUT_OF_RANGE,
                             f"a peer connection takes at most {MAX_ICE_CANDIDATES} trickled "
                             "ICE candidates: this one was dropped",
                             asyncio.get_running_loop().time())
            return
        try:
            candidate = candidate_from_sdp(ice.candidate.split(":", 1)[1])
        except (ValueError, IndexError, AssertionError) as exc:  # aiortc asserts 8 fields
            p.session.refuse(ice, ErrorCode.BAD_VALUE, "'candidate' cannot be parsed (RFC 8839, "
                             f"section 5.1): {str(exc) or 'too few fields'}"[:300],
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
            self._save_soon(live)
            return
        elif isinstance(message, MixReset):
            room.reset_override(me, message.source)
            if message.source in (None, me):
                room.set_self_monitor(me, False)
            self._save_soon(live)
            return
        self._broadcast(live)
        self._save_soon(live)

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

    def metrics(self) -> dict[str, float | dict[str, float]]:
        """Process-wide numbers for ``/metrics``; a dict value holds one number per reason."""
        runners = [live.runner for live in self.rooms.values()]
        clocks = Counter(self.closed_clocks)
        for runner in runners:
            clocks.update(clock_counters(runner))
        return {
            "rooms": len(self.rooms),
            "participants": sum(len(live.participants) for live in self.rooms.values()),
            "ticks_total": clocks["ticks_total"],
            "tick_overruns_total": clocks["tick_overruns_total"],
            "late_ticks_total": clocks["late_ticks_total"],
            "skipped_ticks_total": clocks["skipped_ticks_total"],
            "tick_errors_total": clocks["tick_errors_total"],
            "rooms_failed_total": clocks["rooms_failed_total"],
            "tick_ms_p95_max": max((r.stats.percentile_ms(95) for r in runners), default=0.0),
            "uplink_wait_ms_p95_max": max((b.waits_ms.percentile(95) for r in runners
                                           for b in r.buffers.values()), default=0.0),
            "downlink_wait_ms_p95_max": max((t.waits_ms.percentile(95) for r in runners
                                             for t in r.tracks.values()), default=0.0),
            "concealed_frames_total": sum(b.stats.concealed for r in runners
                                          for b in r.buffers.values()),
            "fec_frames_total": sum(d.stats.fec for r in runners for d in r.decoders.values()),
            "plc_frames_total": sum(d.stats.plc for r in runners for d in r.decoders.values()),
            "dropped_packets_total": dict(self.drops.counts),
            "uplink_dropped_frames_total": {
                "late": sum(b.stats.late for r in runners for b in r.buffers.values()),
                "duplicate": sum(b.stats.duplicates for r in runners for b in r.buffers.values()),
                "overflow": sum(b.stats.dropped for r in runners for b in r.buffers.values()),
                "undecodable": sum(d.stats.corrupt for r in runners for d in r.decoders.values()),
            },
            "overload_degradations_total": clocks["overload_degradations_total"],
            "culled_pairs_total": clocks["culled_pairs_total"],
            "clock_phase_shifts_total": clocks["clock_phase_shifts_total"],
            "ai_musicians": sum(len(r.ai_voices) for r in runners),
            "ai_sidecar_restarts_total": self.ai.restarts,
            "ai_analysis_dropped_total": self.ai.dropped_audio,
            "ai_events_total": sum(v.events for r in runners for v in r.ai_voices.values()),
            "ai_events_late_total": sum(v.late for r in runners for v in r.ai_voices.values()),
            "ai_event_lead_ms_p50_min": min((v.lead_ms.percentile(50) for r in runners
                                             for v in r.ai_voices.values() if len(v.lead_ms)),
                                            default=0.0),
            "hrtf_uploads_total": dict(self.uploads.counts),
            "recordings_active": self.recordings.active,
            "recording_dropped_frames_total": self.recordings.dropped_frames_total,
        }
