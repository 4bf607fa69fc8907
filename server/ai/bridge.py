"""The server's side of the AI sidecar: start it, supervise it, talk to it, never wait for it.

:class:`AiBridge` runs ``python -m ai_accompany.sidecar`` as a child process with pipes
(:mod:`ai_accompany.ipc` frames). Writes go into the pipe's transport buffer and return at
once; when the sidecar falls behind and the buffer passes :data:`MAX_BACKLOG` bytes, analysis
audio is dropped (and counted) instead of queued. Replies are read by a task and handed to
``on_events`` / ``on_status`` callbacks on the event loop.

Supervision: a ping every :data:`PING_INTERVAL_S`; no pong for :data:`HUNG_AFTER_S` (once it
has answered the first, which may take up to :data:`STARTUP_S` while it warms up), or the
process gone, and it is killed and started again, and every room's AI settings are sent to
the new one. Meanwhile the rooms play on: an AI musician whose events stop coming falls
silent when its last notes end, and the humans' mixes never wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ai_accompany.ipc import ChannelError, FrameReader, encode, encode_audio
from ai_accompany.midi import NoteLog
from dsp.notes import LINE_VOICES, NoteEvent
from hrtf.constants import FRAME, SAMPLE_RATE
from server.telemetry.recent import Recent

log = logging.getLogger(__name__)

PING_INTERVAL_S = 0.5
HUNG_AFTER_S = 3.0
#: A new sidecar warms up first (loads its models, compiles its kernels: seconds on a fresh
#: install); until its first pong it is given this long.
STARTUP_S = 120.0
MAX_BACKLOG = 256 * 1024
LOG_LINES_PER_S = 20
#: The metronome's clicks (NoteEvent.voice) and what plays them: short high organ blips.
METRONOME_VOICE = "metronome"
METRONOME_INSTRUMENT = "organ"
ROOT = Path(__file__).resolve().parents[2]


class AiBridge:
    def __init__(self, on_events: Callable[[str, list], None],
                 on_status: Callable[[str, dict], None] = lambda room, status: None,
                 command: list[str] | None = None) -> None:
        self.on_events = on_events
        self.on_status = on_status
        self.command = command or [sys.executable, "-m", "ai_accompany.sidecar"]
        self.configs: dict[str, dict] = {}
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.dropped_audio = 0
        self.sent_audio = 0
        self._last_pong = 0.0
        self._answered = False
        self._tasks: list[asyncio.Task] = []
        self._supervisor: asyncio.Task | None = None
        self._closing = False

    # what the server calls -------------------------------------------------------------------

    def configure(self, room: str, config: dict) -> None:
        """Add or change ``room``'s AI musician (starts the sidecar on first use)."""
        self.configs[room] = dict(config)
        self._ensure_running()
        self._write(encode({"type": "config", "room": room, "ai": config}))

    def remove(self, room: str) -> None:
        if self.configs.pop(room, None) is not None:
            self._write(encode({"type": "remove", "room": room}))

    def send_audio(self, room: str, sample: int, audio: np.ndarray) -> bool:
        """Hand ``room``'s analysis audio over; False (and counted) when dropped."""
        if room not in self.configs or not self._write(encode_audio(room, sample, audio),
                                                       droppable=True):
            self.dropped_audio += 1
            return False
        self.sent_audio += 1
        return True

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def close(self) -> None:
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._stop_process()

    # the process -----------------------------------------------------------------------------

    def _ensure_running(self) -> None:
        if self._supervisor is None and not self._closing:
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def _start_process(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        self.proc = await asyncio.create_subprocess_exec(
            *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=env)
        self._last_pong = time.monotonic()
        self._answered = False
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read(self.proc)),
                       loop.create_task(self._relay_log(self.proc))]
        for room, config in self.configs.items():
            self._write(encode({"type": "config", "room": room, "ai": config}))
        log.info("AI sidecar started (pid %d)", self.proc.pid)

    async def _stop_process(self) -> None:
        for task in self._tasks:
            task.cancel()
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await proc.wait()

    async def _supervise(self) -> None:
        backoff = 0.2
        while True:
            if not self.running:
                if self.proc is not None:
                    log.warning("AI sidecar exited (status %s): starting another",
                                self.proc.returncode)
                    self.restarts += 1
                    await self._stop_process()
                try:
                    await self._start_process()
                    backoff = 0.2
                except OSError as exc:
                    log.error("cannot start the AI sidecar: %s", exc)
                    await asyncio.sleep(backoff)
                    backoff = min(5.0, backoff * 2)
                    continue
            self._write(encode({"type": "ping", "t": time.monotonic()}))
            await asyncio.sleep(PING_INTERVAL_S)
            allowed = HUNG_AFTER_S if self._answered else STARTUP_S
            if self.running and time.monotonic() - self._last_pong > allowed:
                log.warning("AI sidecar stopped answering: restarting it")
                self.restarts += 1
                await self._stop_process()

    def _write(self, frame: bytes, droppable: bool = False) -> bool:
        proc = self.proc
        if proc is None or proc.returncode is not None or proc.stdin is None:
            return False
        transport = proc.stdin.transport
        if transport.is_closing():
            return False
        if droppable and transport.get_write_buffer_size() > MAX_BACKLOG:
            return False
        proc.stdin.write(frame)  # buffered by the transport: never blocks
        return True

    async def _relay_log(self, proc: asyncio.subprocess.Process) -> None:
        """The sidecar's stderr into this process's log, at most :data:`LOG_LINES_PER_S`."""
        window, lines = time.monotonic(), 0
        while line := await proc.stderr.readline():
            now = time.monotonic()
            if now - window > 1.0:
                window, lines = now, 0
            lines += 1
            if lines <= LOG_LINES_PER_S:
                log.warning("sidecar: %s", line.decode(errors="replace").rstrip())

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        reader = FrameReader()
        while True:
            data = await proc.stdout.read(1 << 16)
            if not data:
                return
            try:
                messages = reader.feed(data)
            except ChannelError as exc:
                log.error("the AI sidecar sent something unreadable (%s): restarting it", exc)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                return
            for header, _body in messages:
                kind = header["type"]
                if kind == "pong":
                    self._last_pong = time.monotonic()
                    self._answered = True
                elif kind == "events" and isinstance(header.get("room"), str):
                    self.on_events(header["room"], header.get("events") or [])
                elif kind == "status" and isinstance(header.get("room"), str):
                    if header.get("error"):
                        log.error("AI of room %s: %s", header["room"], header["error"])
                    self.on_status(header["room"], header)


class AnalysisBlocks:
    """A room's analysis downmix, tick by tick, gathered into the sidecar's blocks (no I/O).

    The sidecar listens in blocks of one 20 ms frame (:data:`ai_accompany.listen.constants.BLOCK`),
    each stamped with the room sample it starts at; a room whose ticks are shorter (``frame``
    samples) hands :meth:`add` each tick's part and gets a whole block back every ``block``
    room samples (a 20 ms room: every tick). A tick that does not follow on from the one
    before (the clock skipped) starts the block afresh: the partial one is let go.
    """

    def __init__(self, frame: int = FRAME, block: int = FRAME) -> None:
        #: Room samples (48 kHz) per tick, and per block.
        self.frame, self.block = frame, max(block, frame)
        self._parts: list[np.ndarray] = []
        self._start = 0
        self._next: int | None = None  # the room sample the next tick should start at

    def add(self, start: int, part: np.ndarray) -> tuple[int, np.ndarray] | None:
        """The downmix ``part`` (at the analysis rate) of the tick starting at room sample
        ``start``; returns ``(block start, block)`` once a block is whole, else None."""
        if start != self._next:
            self._parts, self._start = [], start
        self._parts.append(part)
        self._next = start + self.frame
        if self._next - self._start < self.block:
            return None
        parts, first = self._parts, self._start
        self._parts, self._start = [], self._next
        return first, parts[0] if len(parts) == 1 else np.concatenate(parts)


class AiVoice:
    """An AI musician's source in a room: note events arrive on the event loop
    (:meth:`deliver`), the synthesiser renders them on the tick thread (:meth:`render`), one
    room frame (``frame`` samples) at a time."""

    def __init__(self, instrument: str, volume: float = 1.0,
                 notes: NoteLog | None = None, frame: int = FRAME) -> None:
        from dsp.synth import Synth

        self.frame = frame
        self.synth = Synth(instrument)
        self.synth.set_instrument(METRONOME_INSTRUMENT, voice=METRONOME_VOICE)
        self.synth.line_voices = LINE_VOICES  # each of its voices is one line
        self.volume = volume
        #: What it played, for the session's MIDI file.
        self.notes = notes if notes is not None else NoteLog()
        self._pending: deque[list[NoteEvent]] = deque()  # appended on the loop, taken on ticks
        #: Settings changed on the loop, for the tick thread: ("instrument", name) or
        #: ("bass_on_bass", bool); and what the tick thread plays with.
        self._changes: deque[tuple[str, str | bool]] = deque()
        self._instrument = instrument
        self._bass_on_bass = False
        #: How far ahead of the room's clock events arrived (ms; negative: too late).
        self.lead_ms = Recent()
        self.events = 0
        #: Events that arrived after the tick that should have started them (dropped).
        self.late = 0
        self.invalid = 0

    def set_instrument(self, name: str) -> None:
        self._changes.append(("instrument", name))  # taken up by the next render (tick thread)

    def set_style(self, style: str) -> None:
        """Outside the chorale, the bass line plays on the bass and the voices above on the
        AI's instrument (taken up by the next render)."""
        self._changes.append(("bass_on_bass", style != "chorale"))

    def deliver(self, events: list, now_sample: int) -> None:
        """Raw events from the sidecar, ``now_sample`` the room clock's latest tick."""
        good = []
        for raw in events:
            try:
                event = NoteEvent.from_tuple(raw)
            except (TypeError, ValueError):
                self.invalid += 1
                continue
            lead = event.start - (now_sample + self.frame)
            self.lead_ms.add(1e3 * lead / SAMPLE_RATE)
            self.events += 1
            if lead < 0:
                self.late += 1
                continue  # its time has passed: the synthesiser would drop it
            good.append(event)
        if good:
            self._pending.append(good)
            self.notes.add(good)

    def render(self, start: int) -> np.ndarray:
        if self._changes:
            while self._changes:  # appended on the loop, taken here: a deque does both safely
                what, value = self._changes.popleft()
                setattr(self, f"_{what}", value)
            self.synth.set_instrument(self._instrument)
            self.synth.set_instrument("bass" if self._bass_on_bass else self._instrument,
                                      voice="bass")
        while self._pending:
            self.synth.schedule(self._pending.popleft())
        return self.synth.render(start, self.frame) * np.float32(self.volume)
