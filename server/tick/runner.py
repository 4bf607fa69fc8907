"""A live room: its clock, its renderer and the media of its members (the asyncio shell).

Every frame of the room (:attr:`RoomRunner.frame`: 20 ms by default; 10, 5 or 2.5 ms in
low-latency rooms), on a deadline schedule (:class:`~server.tick.clock.TickSchedule`), on the
room clock's own thread (at real-time priority where the system allows it:
:mod:`server.tick.priority`), whatever the event loop is doing:

1. each source's frame is taken from its :class:`~server.media.jitter.JitterBuffer` (which the
   loop fills, under the buffer's lock), through its :class:`~server.media.reframe.Reframer`
   (a sender's 20 ms packet plays over four ticks of a 5 ms room);
2. each source's frame is decoded, or concealed if it is missing
   (:class:`~server.media.uplink.UplinkDecoder`), the renderer renders every listener's mix and
   the mixes are Opus-encoded (:class:`~server.media.downlink.MusicOpusEncoder`);
3. on the loop (:meth:`RoomRunner._finish`): each listener's packets go to its
   :class:`~server.media.downlink.ListenerTrack` (RTP, or its audio data channel).

The tick never awaits network I/O; a tick that overruns is counted, and the clock skips rather
than drifting (see :mod:`server.tick.clock`). The clock's phase follows the sources: the tick moves
to just after their frames arrive (:mod:`server.tick.phase`). A tick that raises is skipped and
counted, and the next one plays; a room whose ticks keep failing is given up
(:data:`MAX_FAILED_TICKS`), and the hub closes it. Other rooms' clocks are their own threads:
they tick on. What the tick reads of the room while the loop edits it is copied whole first
(a dict, a set, the room's arrays); the room's scene is rebuilt when it changed
(:meth:`~server.rooms.room.Room.scene`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numba
import numpy as np

from ai_accompany.ipc import ANALYSIS_RATE
from ai_accompany.midi import NoteLog
from dsp.culling import cull_quietest
from dsp.downmix import AnalysisDownmix
from dsp.geometry import Scene
from dsp.renderer import Renderer
from hrtf.constants import FRAME_MS, SAMPLE_RATE, frame_samples
from hrtf.hrirset import HrirSet
from server.ai.bridge import AiVoice, AnalysisBlocks
from server.media.downlink import ListenerTrack, MusicOpusEncoder
from server.media.jitter import JitterBuffer, Playout
from server.media.reframe import Reframer
from server.media.uplink import UplinkDecoder
from server.recording.capture import RoomRecording, Take
from server.rooms.room import Room
from server.telemetry.recent import Recent
from server.tick.clock import TickSchedule
from server.tick.metronome import Metronome
from server.tick.mutes import MuteFades
from server.tick.overload import OverloadGovernor
from server.tick.phase import PhaseAligner
from server.tick.priority import HEAVY_SHARE, ClockPriority

log = logging.getLogger(__name__)

_SERIAL = threading.Lock()

#: Where a tick driven by hand (:meth:`RoomRunner._tick`, in tests) does its work; a running
#: clock works on its own thread. A room's ticks never overlap.
_TICK_POOL = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="tick")
#: Helps the rooms' threads encode their listeners' mixes (libopus runs without the GIL).
_ENCODE_HELPERS = max(1, (os.cpu_count() or 1) - 1)
_ENCODE_POOL = ThreadPoolExecutor(_ENCODE_HELPERS, thread_name_prefix="encode")
#: Below this many listeners a room encodes alone (handing work over costs ~50 µs).
PARALLEL_ENCODE_FROM = 6
#: A room whose ticks fail this many times in a row (1 s of silence in its mixes) is given up:
#: a blip of a few ticks is skipped and played through, a fault that lasts is no blip.
MAX_FAILED_TICKS = 50


def encode_all(mixes: np.ndarray, encoders: dict) -> dict:
    """Every listener's mix encoded: ``{slot: [packet]}``. From :data:`PARALLEL_ENCODE_FROM`
    listeners on, the calling thread and the encode pool's share the work."""
    slots = list(encoders)

    def run(part: list[int]) -> dict:
        return {slot: encoders[slot].encode(mixes[slot]) for slot in part}

    if len(slots) < PARALLEL_ENCODE_FROM:
        return run(slots)
    parts = [slots[k::_ENCODE_HELPERS + 1] for k in range(_ENCODE_HELPERS + 1)]
    futures = [_ENCODE_POOL.submit(run, part) for part in parts[1:]]
    packets = run(parts[0])
    for future in futures:
        packets.update(future.result())
    return packets


def render_lock():
    """Rooms render on the tick threads at once, which numba's parallel kernels allow with
    the OpenMP or TBB threading layers; its fallback layer (workqueue) does not, so then the
    renders take turns."""
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run in this process yet
        return _SERIAL
    return _SERIAL if layer == "workqueue" else contextlib.nullcontext()


@dataclass
class TickWork:
    """What one tick renders, captured on the loop (a slot may change hands meanwhile)."""

    scene: Scene
    #: Each source's frame to play, and the decoder that plays or conceals it, by slot.
    playouts: dict[int, tuple[Playout, UplinkDecoder]]
    #: The AI musicians' voices, by slot.
    voices: dict[int, AiVoice]
    #: The most sources a mix may hold now (None: all), from the overload governor.
    cap: int | None
    #: Slots (re)occupied since the last tick: their renderer state starts afresh.
    fresh: list[int]
    #: Each listener's Opus encoder, by slot.
    encoders: dict[int, MusicOpusEncoder]
    #: The room sample this tick starts at.
    start: int
    #: What the session recording takes of this tick (None: not recording).
    take: Take | None = None
    #: Slots muted by their member (``mute_self``), as the room has them now.
    muted: np.ndarray | None = None
    #: The room's metronome (None: off), its source's slot on the stage, and the listeners
    #: who hear it centred (added to their mixes after rendering).
    metronome: Metronome | None = None
    metronome_slot: int | None = None
    click_slots: tuple[int, ...] = ()


@dataclass
class TickDone:
    """What one tick's work gives back to the loop."""

    #: Each listener's Opus packets, by slot.
    packets: dict[int, list]
    #: The whole work's time (ms).
    work_ms: float
    #: Its parts (ms): "decode" (with the AI's synthesiser), "render", "encode".
    parts_ms: dict[str, float]
    #: The humans' downmix for the AI sidecar, or None without an AI musician.
    analysis: np.ndarray | None
    #: Each slot's peak (linear) this tick, as the mixes hear it.
    peaks: np.ndarray | None = None


#: How often (s) the room's sources' levels go out (``levels``: who is playing).
LEVELS_INTERVAL_S = 0.2


#: How long (s) of ticks the stats' percentiles look back over.
STATS_WINDOW_S = 10.0


@dataclass
class TickStats:
    """The room's work per tick (decode, render and encode), and each part of it; how late
    each tick started. A tick whose work takes longer than its frame (``frame_ms``) is an
    overrun. The percentiles are over the last :data:`STATS_WINDOW_S` of ticks."""

    frame_ms: float = FRAME_MS
    ticks: int = 0
    overruns: int = 0
    last_ms: float = 0.0
    recent_ms: Recent = field(init=False)
    #: Milliseconds per tick decoding (and concealing) the sources, rendering, encoding.
    parts_ms: dict[str, Recent] = field(init=False)
    #: How late each tick started (ms), after its deadline (the schedule's ``last_lateness``).
    lateness_ms: Recent = field(init=False)

    def __post_init__(self) -> None:
        window = round(1e3 * STATS_WINDOW_S / self.frame_ms)
        self.recent_ms = Recent(window)
        self.parts_ms = {part: Recent(window) for part in ("decode", "render", "encode")}
        self.lateness_ms = Recent(window)

    def record(self, ms: float, parts: dict[str, float] | None = None) -> None:
        self.ticks += 1
        self.last_ms = ms
        self.recent_ms.add(ms)
        for part, part_ms in (parts or {}).items():
            self.parts_ms[part].add(part_ms)
        if ms > self.frame_ms:
            self.overruns += 1

    def percentile_ms(self, q: float) -> float:
        return self.recent_ms.percentile(q)


@dataclass
class TickFailures:
    """A room's ticks that raised: how many in all, and how many in a row now (no I/O)."""

    limit: int = MAX_FAILED_TICKS
    total: int = 0
    run: int = 0

    def failed(self) -> bool:
        """One more tick failed (it is skipped); True once ``limit`` have failed in a row."""
        self.total += 1
        self.run += 1
        return self.run >= self.limit

    def played(self) -> int:
        """A tick played; returns how many had failed in a row before it (0 mostly)."""
        run, self.run = self.run, 0
        return run


class RoomRunner:
    """Runs one :class:`~server.rooms.room.Room`: slots' media, the clock, the renderer.

    A tick that raises is skipped (its mixes send nothing that tick) and counted in
    :attr:`failures`; after :data:`MAX_FAILED_TICKS` in a row the clock stops,
    :attr:`gave_up` is set and :attr:`on_failed` is called with the last exception.
    """

    def __init__(self, room: Room, hrirs: HrirSet, device: str = "cpu",
                 follow_phase: bool = True, frame: int | None = None, origin: int = 0,
                 priority: ClockPriority | None = None) -> None:
        self.room = room
        #: Whether the clock's thread may run at real-time priority (server.tick.priority).
        self.priority = priority if priority is not None else ClockPriority("normal")
        #: Whether this clock's thread holds real-time priority now.
        self.realtime = False
        if frame is not None:  # given: the room ticks at it (and says so)
            room.frame_ms = 1e3 * frame / SAMPLE_RATE
        #: Samples per tick: the room's frame (``room.frame_ms``).
        self.frame = frame_samples(room.frame_ms)
        self.frame_ms = room.frame_ms
        self.renderer = Renderer(hrirs, room.capacity, room.capacity, device=device,
                                 frame=self.frame)
        self.buffers: dict[int, JitterBuffer] = {}
        #: Each source's buffer as the tick takes it, a room frame at a time.
        self.reframers: dict[int, Reframer] = {}
        self.decoders: dict[int, UplinkDecoder] = {}
        #: AI musicians' sources, by slot (server.ai.bridge).
        self.ai_voices: dict[int, AiVoice] = {}
        #: Every note the room's AI musicians were sent to play (its MIDI file).
        self.ai_notes = NoteLog()
        #: Called on the loop with (room sample, the humans' downmix at 16 kHz) every 20 ms
        #: (the sidecar's block: a short-frame room's ticks are batched into it) while the
        #: room has an AI musician.
        self.on_analysis: Callable[[int, np.ndarray], None] | None = None
        self._downmix = AnalysisDownmix(ANALYSIS_RATE)
        #: Members who muted themselves are silenced in the tick, with a fade.
        self._mutes = MuteFades(room.capacity, self.frame)
        #: Called on the loop with each slot's peak (linear) over the last
        #: :data:`LEVELS_INTERVAL_S`, every that often while the room ticks.
        self.on_levels: Callable[[np.ndarray], None] | None = None
        self._peaks = np.zeros(room.capacity, np.float32)
        self._peak_ticks = 0
        #: The room's metronome while it is on (server.rooms.metronome), its source's slot,
        #: and the listener slots that hear it centred.
        self.metronome: Metronome | None = None
        self.metronome_slot: int | None = None
        self.click_slots: set[int] = set()
        self._analysis = AnalysisBlocks(self.frame)
        #: The room clock: the sample (48 kHz) the current tick's frame starts at. A clock
        #: that takes over from another (the room's frame changed) goes on from ``origin``.
        self.origin = origin
        self.room_sample = origin
        self._tick_count = 0
        self.tracks: dict[int, ListenerTrack] = {}
        self.encoders: dict[int, MusicOpusEncoder] = {}
        self.stats = TickStats(self.frame_ms)
        self.governor = OverloadGovernor.for_frame(self.frame_ms)
        #: Pairs left out of mixes by the overload governor, since the room opened.
        self.culled_pairs = 0
        self.aligner = PhaseAligner(frame_ms=self.frame_ms) if follow_phase else None
        self._underruns_seen = 0
        self.schedule: TickSchedule | None = None
        self.failures = TickFailures()
        #: Whether the clock stopped because its ticks kept failing.
        self.gave_up = False
        #: Called on the loop, with the last exception, when the clock gives up.
        self.on_failed: Callable[[Exception], None] | None = None
        #: How each listener slot hears (the renderer's ``configure_listener`` keywords): put
        #: back after the tick resets a slot that changed hands.
        self.listener_settings: dict[int, dict] = {}
        #: The room's recording while it is recorded (set by ``server.recording.control``).
        self.recording: RoomRecording | None = None
        #: Set while the room has media (members or an AI): an empty room's clock waits.
        self._occupied = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # slots --------------------------------------------------------------------------------

    def attach(self, slot: int) -> tuple[JitterBuffer, ListenerTrack]:
        """Fresh media for a member taking ``slot``: its uplink buffer and downlink track."""
        self.detach(slot)
        self.buffers[slot] = buffer = JitterBuffer(frame=self.frame)
        self.reframers[slot] = Reframer(buffer)
        self.decoders[slot] = UplinkDecoder(self.frame)
        self.tracks[slot] = ListenerTrack(self.frame)
        self.encoders[slot] = MusicOpusEncoder()
        self._occupied.set()
        return self.buffers[slot], self.tracks[slot]

    def add_ai(self, slot: int, instrument: str, volume: float = 1.0) -> AiVoice:
        """An AI musician plays from ``slot`` (its source; it has no ears)."""
        self.detach(slot)
        voice = self.ai_voices[slot] = AiVoice(instrument, volume, self.ai_notes,
                                                   frame=self.frame)
        self._occupied.set()
        return voice

    def configure_listener(self, slot: int, **settings) -> None:
        """How listener ``slot`` hears from the next tick on (see the renderer's
        ``configure_listener``): kept for the slot until it is detached."""
        self.listener_settings[slot] = settings
        self.renderer.configure_listener(slot, **settings)

    def detach(self, slot: int) -> None:
        self.click_slots.discard(slot)
        if slot == self.metronome_slot:
            self.metronome_slot = None
        if self.listener_settings.pop(slot, None) is not None:  # its own set may be let go
            self.renderer.configure_listener(slot)
        self.ai_voices.pop(slot, None)
        self.buffers.pop(slot, None)
        self.reframers.pop(slot, None)
        self.decoders.pop(slot, None)
        self.encoders.pop(slot, None)
        track = self.tracks.pop(slot, None)
        if track is not None:
            track.stop()

    # the clock ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the clock's thread (on the event loop, which the tick's results go back to)."""
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name=f"clock {self.room.name}",
                                            daemon=True)
            self._thread.start()

    async def stop(self) -> None:
        if self._thread is not None:
            self._stopping.set()
            self._occupied.set()  # (an empty room's clock is waiting for it)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        for slot in list(self.tracks):
            self.detach(slot)

    def _run(self) -> None:
        """The clock's thread: each tick at its deadline, whatever the event loop is doing.

        A tick takes its sources' frames, renders and encodes here, and hands the packets to
        the loop, which sends them (:meth:`_finish`). The thread asks for real-time priority
        (:mod:`server.tick.priority`): woken at its deadline, it runs at once.
        """
        self.realtime = self.priority.acquire()
        heavy, heavy_limit = 0, self.priority.heavy_ticks(self.frame_ms)
        # The schedule's clock: time.monotonic, as the arrivals are stamped with.
        clock = time.monotonic
        self.schedule = schedule = TickSchedule.for_frame(clock(), self.frame_ms)
        try:
            while not self._stopping.is_set():
                if not (self.buffers or self.tracks or self.ai_voices):
                    # Empty (its members left, for now): no ticks, so that rooms waiting out
                    # their grace cost nothing (and give a real-time slot to a room that
                    # plays); the clock resumes where it was, on time.
                    self._occupied.clear()
                    if not (self.buffers or self.tracks or self.ai_voices
                            or self._stopping.is_set()):
                        if self.realtime:
                            self.priority.release()
                        self._occupied.wait()
                        self.realtime = self.priority.acquire()
                        schedule.shift(clock() - schedule.deadline(schedule.next_tick))
                    continue
                wait = schedule.seconds_until_next(clock())
                if wait > 0:
                    time.sleep(wait)
                    continue
                tick = schedule.begin_tick(clock())
                self.stats.lateness_ms.add(1e3 * schedule.last_lateness)
                try:
                    work_ms = self._tick_here(tick)
                except Exception as exc:  # one bad tick must not end the room: it is skipped
                    if self._failed(exc, tick):
                        return
                    continue
                if run := self.failures.played():
                    log.warning("room %s plays again after %d failed ticks", self.room.name, run)
                if self.realtime:  # a room this busy shares the machine: no priority
                    heavy = heavy + 1 if work_ms > HEAVY_SHARE * self.frame_ms else 0
                    if heavy >= heavy_limit:
                        self.priority.release()
                        self.realtime = False
                        log.warning("room %s: ticks take over %.0f%% of its %g ms frame; its "
                                    "clock gives real-time priority back", self.room.name,
                                    100 * HEAVY_SHARE, self.frame_ms)
        except Exception as exc:  # the clock itself failed (not a tick): the room is given up
            log.error("room %s: its clock failed: %r", self.room.name, exc, exc_info=exc)
            self.gave_up = True
            if self.on_failed is not None:
                self._on_loop(self.on_failed, exc)
        finally:
            if self.realtime:
                self.priority.release()
                self.realtime = False

    def _failed(self, exc: Exception, tick: int) -> bool:
        """A tick raised: counted, logged once per run; True once the clock gives up."""
        if self.failures.failed():
            log.error("room %s: %d ticks failed in a row, the last with %r: its clock stops",
                      self.room.name, self.failures.run, exc)
            self.gave_up = True
            if self.on_failed is not None:
                self._on_loop(self.on_failed, exc)
            return True
        if self.failures.run == 1:  # one traceback per run of failures, not 50 a second
            log.error("tick %d of room %s failed: skipped", tick, self.room.name,
                      exc_info=exc)
        return False

    def _on_loop(self, callback: Callable, *args) -> None:
        """``callback(*args)`` on the event loop, soon (nothing, once the loop has closed)."""
        with contextlib.suppress(RuntimeError):  # the loop closed: the server is gone
            if self._loop is not None:
                self._loop.call_soon_threadsafe(callback, *args)

    def _tick_here(self, tick: int) -> float:
        """One tick on the clock's thread; its work's time (ms)."""
        captured = self._capture(tick)
        if captured is None:
            return 0.0
        work, tracks = captured
        done = self._render_and_encode(work)
        self._on_loop(self._finish, work, done, tracks)
        return done.work_ms

    async def _tick(self, loop: asyncio.AbstractEventLoop, tick: int | None = None) -> None:
        """One tick driven by hand (tests), its work on a tick thread, its end on the loop."""
        if tick is None:
            tick = self._tick_count
        captured = self._capture(tick)
        if captured is None:
            return
        work, tracks = captured
        done = await loop.run_in_executor(_TICK_POOL, self._render_and_encode, work)
        self._finish(work, done, tracks)

    def _capture(self, tick: int) -> tuple[TickWork, dict[int, ListenerTrack]] | None:
        """What tick ``tick`` renders, taken as it starts (on the clock's thread, while the loop
        goes on editing the room: every collection is copied whole before it is walked), and
        the tracks its packets go to; None when there is nobody to render for."""
        self._tick_count = tick + 1
        self.room_sample = self.origin + tick * self.frame
        now = time.monotonic()  # the clock arrivals are stamped with
        decoders = dict(self.decoders)
        playouts = {slot: (reframer.pop(now), decoders[slot])
                    for slot, reframer in list(self.reframers.items()) if slot in decoders}
        self._align_phase()
        fresh = self.room.drain_fresh_slots()
        all_tracks = dict(self.tracks)
        listeners = [s for s in all_tracks if self.room.active[s]]
        voices = dict(self.ai_voices)
        if not listeners and not fresh and not voices:
            return None  # nobody to render for (an empty room waiting for its members)
        encoders = dict(self.encoders)
        listeners = [s for s in listeners if s in encoders]
        # What this tick renders for, captured now: a slot may change hands meanwhile.
        tracks = {s: all_tracks[s] for s in listeners}
        scene = self.room.scene()
        recording = self.recording
        # (tick numbers from the room clock's origin: a clock that took over from another,
        # the room's frame having changed, starts at a whole number of its ticks)
        take = (recording.take(self.room, self.origin // self.frame + tick)
                if recording is not None else None)
        metronome, metronome_slot = self.metronome, self.metronome_slot
        work = TickWork(scene, playouts, voices, self.governor.max_sources, fresh,
                        {s: encoders[s] for s in listeners}, self.room_sample, take,
                        self.room.muted.copy(), metronome, metronome_slot,
                        tuple(s for s in tuple(self.click_slots) if s in tracks))
        return work, tracks

    def _finish(self, work: TickWork, done: TickDone, tracks: dict[int, ListenerTrack]) -> None:
        """On the loop: a tick's packets to its listeners, its levels, the AI's ears, its
        times."""
        self._note_levels(done.peaks)
        if done.analysis is not None and self.on_analysis is not None:
            block = self._analysis.add(work.start, done.analysis)
            if block is not None:
                self.on_analysis(*block)
        self.stats.record(done.work_ms, done.parts_ms)
        new_cap = self.governor.observe(done.work_ms, int(self.room.active.sum()))
        if new_cap != work.cap:
            log.warning("room %s: tick took %.1f ms; mixes now hold %s sources", self.room.name,
                        done.work_ms, "all" if new_cap is None else f"at most {new_cap}")
        for slot, slot_packets in done.packets.items():
            if self.tracks.get(slot) is tracks[slot]:
                tracks[slot].deliver(slot_packets, work.start)

    def _note_levels(self, peaks: np.ndarray | None) -> None:
        """Keep each slot's peak; every :data:`LEVELS_INTERVAL_S` hand them to
        :attr:`on_levels` (on the loop)."""
        if peaks is None:
            return
        np.maximum(self._peaks, peaks, out=self._peaks)
        self._peak_ticks += 1
        if self._peak_ticks * self.frame_ms >= 1e3 * LEVELS_INTERVAL_S:
            if self.on_levels is not None:
                self.on_levels(self._peaks.copy())
            self._peaks[:] = 0.0
            self._peak_ticks = 0

    def _align_phase(self) -> None:
        """Move the clock's phase to just after the frames' arrivals (:mod:`server.tick.phase`)."""
        if self.aligner is None:
            return
        underruns = sum(b.stats.underruns for b in list(self.buffers.values()))
        new = max(0, underruns - self._underruns_seen)
        self._underruns_seen = underruns
        step_ms = self.aligner.observe(
            {s: r.last_wait_ms for s, r in list(self.reframers.items())}, new)
        if step_ms and self.schedule is not None:
            self.schedule.shift(step_ms / 1e3)
            log.debug("room %s: clock phase moved %+.1f ms", self.room.name, step_ms)

    def _render_and_encode(self, work: TickWork) -> TickDone:
        """The tick's work off the event loop: decode every source, play the AI musicians
        from room sample ``work.start``, render every mix, hand what ``work.take`` records to
        its writer, encode each listener's mix."""
        t0 = time.perf_counter()
        audio = np.zeros((self.room.capacity, self.frame), np.float32)
        for slot, (playout, decoder) in work.playouts.items():
            audio[slot] = decoder.frame(playout)
        self._mutes.apply(audio, work.muted)
        analysis = None
        if work.voices:
            analysis = self._downmix.process(audio[list(work.playouts)].sum(axis=0))
            for slot, voice in work.voices.items():
                audio[slot] = voice.render(work.start)
        click = work.metronome.frame(work.start, self.frame) if work.metronome else None
        if work.metronome_slot is not None:
            audio[work.metronome_slot] = 0.0 if click is None else click
        peaks = np.abs(audio).max(axis=1)
        t1 = time.perf_counter()
        scene = work.scene
        if work.cap is not None:  # (on a copy: the room hands the same scene while it stands)
            scene = dataclasses.replace(scene, pair_gain=scene.pair_gain.copy())
            self.culled_pairs += cull_quietest(scene, np.sqrt(np.mean(audio**2, axis=1)),
                                               work.cap)
        with render_lock():
            for slot in work.fresh:
                self.renderer.reset_source(slot)
                self.renderer.reset_listener(slot)
                if (settings := self.listener_settings.get(slot)) is not None:
                    self.renderer.configure_listener(slot, **settings)  # set before this tick
            mixes = self.renderer.render(scene, audio)
        if click is not None and work.click_slots:  # the centred metronome, sample-exact
            mixes[list(work.click_slots)] += click[None, :, None]
        if work.take is not None:  # copies and a put_nowait: the writer is a thread of its own
            work.take.capture(audio, mixes)
        t2 = time.perf_counter()
        packets = encode_all(mixes, work.encoders)
        t3 = time.perf_counter()
        parts = {"decode": 1e3 * (t1 - t0), "render": 1e3 * (t2 - t1), "encode": 1e3 * (t3 - t2)}
        return TickDone(packets, 1e3 * (t3 - t0), parts, analysis, peaks)
