"""The rooms of one process: connections in, joins and leaves, rooms opened, failed and closed.

:class:`Hub` is the WebSocket handler for ``/ws``. Each connection is a
:class:`~server.rooms.live.Participant`; what its signaling session yields is applied by the
handler :mod:`server.rooms.dispatch`'s table names for its type. Joining and leaving live here:
who may enter (tokens, bans, a locked room), the seat a member gets back, a room opened with
its clock (:class:`~server.tick.runner.RoomRunner`) and its saved state, closed after its grace
when empty or at once when its clock fails, and the shutdown that tells every connection.
Stats go to each member every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from hrtf.constants import FRAME_MS
from hrtf.hrirset import HrirSet
from server.ai.bridge import AiBridge
from server.ai.musician import AiMusicians
from server.media.ice import IceConfig
from server.media.ingress import DropCounts
from server.media.peers import Peers
from server.recording.control import Recordings
from server.rooms.admin import RoomAdmin
from server.rooms.dispatch import apply, routes
from server.rooms.frame import RoomFrames
from server.rooms.hrtf_registry import HrtfRegistry
from server.rooms.hrtf_uploads import HrtfUploads
from server.rooms.live import LiveRoom, Participant
from server.rooms.metronome import RoomMetronomes, hear
from server.rooms.rendering import Renderings
from server.rooms.room import Room, RoomFull, UnknownMember
from server.rooms.social import Social
from server.rooms.stage import StageEdits
from server.rooms.store import RoomStore
from server.tick.counts import ClockCounts, clock_counts
from server.tick.priority import ClockPriority
from server.tick.runner import RoomRunner
from server.web.access import AccessPolicy
from signaling.access import Access, AccessError
from signaling.errors import ErrorCode
from signaling.messages import Join
from signaling.server_messages import ErrorMessage, ServerClosing, Stats
from signaling.session import (
    CLOSE_GOING_AWAY,
    CLOSE_POLICY_VIOLATION,
    CLOSE_REPLACED,
    CLOSE_SERVER_ERROR,
    State,
)
from signaling.wire import encode

log = logging.getLogger(__name__)

STATS_INTERVAL_S = 1.0
#: Rooms open on one process at once (an empty one stays open for its grace): past it a join
#: that would open another is refused (``room_full``). Each holds a renderer sized to its
#: capacity, so rooms opened by join-and-leave must not pile up without bound.
MAX_ROOMS = 256
#: An empty room lingers this long, so a member who drops can come back to the same seat.
EMPTY_ROOM_GRACE_S = 30.0
#: At shutdown: how long connections get to take the notice and close, and the store to write.
CLOSE_CONNECTIONS_S = 2.0
FLUSH_STORE_S = 2.0
#: What ``server_closing`` tells clients: rejoin after this long (about a restart's warm-up).
RETRY_AFTER_S = 2.0


class Hub:
    """All rooms of this process."""

    def __init__(self, hrirs: HrirSet, device: str = "cpu", capacity: int = 16,
                 follow_phase: bool = True, policy: AccessPolicy | None = None,
                 store: RoomStore | None = None,
                 empty_room_grace_s: float = EMPTY_ROOM_GRACE_S, hrtf_spec: str = "kemar",
                 acoustics: str = "off", recordings: Recordings | None = None,
                 ice: IceConfig | None = None,
                 uploads: HrtfRegistry | None = None, frame_ms: float = FRAME_MS,
                 clock_priority: ClockPriority | None = None) -> None:
        self.hrirs = hrirs
        #: Session recordings (``serve --recordings``); by default recording is off.
        self.recordings = recordings or Recordings(None)
        #: Listeners' HRTF sets and rendering settings, rooms' acoustics (``serve --hrtf``,
        #: ``--acoustics`` give the defaults), and the listeners' own uploaded sets (``uploads``,
        #: with the budgets of ``serve --upload-set-mb`` and ``--upload-budget-mb``).
        registry = uploads if uploads is not None else HrtfRegistry()
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
        #: The frame rooms of this process tick at (ms; ``serve --frame-ms``) unless their
        #: admin set another (``set_frame``, kept with the room).
        self.frame_ms = frame_ms
        #: Which rooms' clocks run at real-time priority (``serve --clock-priority``).
        self.clock_priority = clock_priority or ClockPriority("normal")
        #: How long an empty room waits for its members before it closes (seconds).
        self.empty_room_grace_s = empty_room_grace_s
        self.rooms: dict[str, LiveRoom] = {}
        #: The clock counters of the rooms that have closed: /metrics counters never go down.
        self.closed_clocks = ClockCounts()
        #: The AI sidecar, started when a room first asks for an AI musician.
        #: The rooms' AI musicians, and the sidecar, started when a room first asks for one.
        self.ai_musicians = AiMusicians(self)
        self.ai = AiBridge(self.ai_musicians.deliver, on_status=self.ai_musicians.hears)
        #: Media packets dropped before anything decoded them (server.media.ingress).
        self.drops = DropCounts()
        #: The handlers of the messages (server.rooms.dispatch names them by type).
        self.peers = Peers(self.drops, self.evict, ice)
        self.stage = StageEdits(self)
        self.admin = RoomAdmin(self)
        self.social = Social(self)
        self.metronomes = RoomMetronomes(self)
        self.frames = RoomFrames(self)
        self.routes = routes(self)

    # the connection ----------------------------------------------------------------------

    async def handle(self, ws: ServerConnection) -> None:
        """The WebSocket handler for ``/ws``."""
        if ws.request is None or ws.request.path.split("?", 1)[0] != "/ws":
            await ws.close(1008, "signaling lives at /ws")
            return
        loop = asyncio.get_running_loop()
        try:  # the handshake was checked already (server.web.app); expiry since then is caught here
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
                    await apply(self.routes, p, message)
                p.flush()
                if p.session.close_requested and closer is None:
                    await self.leave(p)
                    closer = loop.create_task(self._close(p))
        except ConnectionClosed:
            pass
        finally:
            self.connections.discard(p)
            await self.leave(p)
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
        # A locked room admits its seat holders, and admins known by their token. On an open
        # server everyone may administer, so an admin there is no one in particular: the lock
        # keeps out every newcomer.
        admin = access.allows("admin") and access.identity is not None
        if live.room.locked and not admin and not live.room.has_seat(seat):
            raise AccessError(ErrorCode.ROOM_LOCKED, f"room {join.room!r} is locked by its "
                                                     "admin: only its members may enter")
        return access, seat

    async def join(self, p: Participant, join: Join) -> None:
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
            room = Room(join.room, self.capacity, frame_ms=self.frame_ms)
            self._restore(room)
            live = LiveRoom(room, self.clock(room))
            self.wire_clock(live)
            self.rooms[join.room] = live
            if room.metronome_settings is not None:  # a saved room's metronome plays on
                self.metronomes.apply(live)
            live.runner.start()
            await self.renderings.open_room(live)
            log.info("room %s opened", join.room)
        holder = live.room.seat_holder(join.seat)
        if holder is not None and holder in live.participants:
            # The seat's old connection has not noticed its network is gone: this join is the
            # same player coming back, so it takes the seat over.
            await self.evict(live.participants[holder], CLOSE_REPLACED,
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
        hear(live, member.slot, "centre")  # the metronome, until the player says otherwise
        p.session.accept_join(member.id, member.seat, live.room.describe(),
                              tuple(sorted(p.access.grants)),
                              self.peers.ice_servers(p.access, member.id))
        self.renderings.joined(p)
        self.social.history(p)
        p.tasks.append(asyncio.get_running_loop().create_task(self._send_stats(p)))
        self.broadcast(live, exclude=p)
        self.save_soon(live)
        log.info("%s joined %s as %s (slot %d)", join.name, join.room, member.id, member.slot)

    def clock(self, room: Room, origin: int = 0) -> RoomRunner:
        """A clock for ``room`` at its frame (``origin``: the room sample it goes on from)."""
        return RoomRunner(room, self.hrirs, self.device, follow_phase=self.follow_phase,
                          origin=origin, priority=self.clock_priority)

    def wire_clock(self, live: LiveRoom) -> None:
        """Hand the room's clock (``live.runner``) what it reports to: the AI sidecar, the
        room's failure, its levels."""
        name, runner = live.room.name, live.runner
        runner.on_analysis = lambda sample, audio: self.ai.send_audio(name, sample, audio)
        runner.on_failed = lambda exc: None if live.runner is not runner else (
            asyncio.get_running_loop().create_task(self._fail_room(live, exc)))
        runner.on_levels = lambda peaks: self.social.send_levels(live, peaks)

    async def evict(self, p: Participant, code: int, reason: str) -> None:
        """Take ``p`` out of its room now, and close its connection once its queue is sent."""
        await self.leave(p)
        p.session.close(code, reason)
        p.flush()
        asyncio.get_running_loop().create_task(self._close(p))

    async def leave(self, p: Participant) -> None:
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
            self.broadcast(live)

    async def _close_room(self, live: LiveRoom, timer: asyncio.TimerHandle) -> None:
        if (live.closing is not timer or not live.room.empty
                or self.rooms.get(live.room.name) is not live):
            return
        del self.rooms[live.room.name]
        self.closed_clocks += clock_counts(live.runner)
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
        self.closed_clocks += clock_counts(live.runner)
        self.ai.remove(name)
        text = (f"room {name!r} stopped working and was closed: its audio failed "
                f"{live.runner.failures.run} ticks in a row; join again to open it afresh")
        members = list(live.participants.values())
        for p in members:
            p.session.send(ErrorMessage(ErrorCode.INTERNAL_ERROR, text))
        for p in members:
            await self.evict(p, CLOSE_SERVER_ERROR, "the room failed")
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
                await self.leave(p)
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

    def save_soon(self, live: LiveRoom) -> None:
        """Have the room's state saved within the store's interval: the latest state of a
        burst of edits, one snapshot (array copies) per interval on the loop."""
        if self.store is None or live.saving is not None:
            return

        def save() -> None:
            live.saving = None
            if self.rooms.get(live.room.name, live) is live:  # not reopened since: still ours
                self.store.save(live.room.snapshot())

        live.saving = asyncio.get_running_loop().call_later(self.store.interval_s, save)

    def broadcast(self, live: LiveRoom, exclude: Participant | None = None) -> None:
        text = encode(live.room.describe())  # once for everyone
        live.send_all(text, exclude)

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
                uplink_buffer_ms=float(buffer.depth_ms) if buffer else 0.0,
                uplink_target_ms=float(buffer.target * buffer.frame_ms) if buffer else 0.0,
                concealed=buffer.stats.concealed if buffer else 0,
                uplink_tick_wait_ms_p50=round(buffer.tick_wait_ms(50), 3) if buffer else 0.0,
                decode_ms_p50=round(runner.stats.parts_ms["decode"].percentile(50), 3),
                render_ms_p50=round(runner.stats.parts_ms["render"].percentile(50), 3),
                encode_ms_p50=round(runner.stats.parts_ms["encode"].percentile(50), 3),
                concealed_fec=decoder.stats.fec if decoder else 0,
                concealed_plc=decoder.stats.plc if decoder else 0,
                downlink_queue_ms=float(track.queued_ms) if track else 0.0,
                uplink_wait_ms_p50=round(buffer.waits_ms.percentile(50), 3) if buffer else 0.0,
                uplink_wait_ms_p95=round(buffer.waits_ms.percentile(95), 3) if buffer else 0.0,
                downlink_wait_ms_p95=round(track.waits_ms.percentile(95), 3) if track else 0.0,
                sources_cap=runner.governor.max_sources or 0,
            ))
            p.flush()
