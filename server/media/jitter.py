"""Receive-side buffering of one source's frames (no I/O; the tick pulls).

aiortc's own audio jitter buffer waits for 4 frames before playing and can settle hundreds of
milliseconds behind after a loss; spatialjam bypasses it and buffers each source's frames
here — Opus packets still encoded (decoded at the tick, so a lost one can be concealed by
Opus itself: :mod:`server.media.uplink`), or decoded samples for other codecs — keyed by their RTP
timestamp, with an adaptive target:

- a frame is one packet of the source: :attr:`JitterBuffer.frame` samples, the room's frame
  (20 ms by default; 10, 5 or 2.5 ms in low-latency rooms), or a whole number of room frames
  when the sender's packets are longer than the room's (a browser's 20 ms media track in a
  5 ms room: :class:`~server.media.reframe.Reframer` plays each over several ticks);
- playback starts once ``target`` frames are queued (``target`` starts at 1);
- each tick takes the frame due next (:class:`Playout`, with the frame after it when that is
  here already, for Opus FEC); a frame that is missing is *concealed* by the decoder and the
  playout point moves on, so a late frame is dropped when it arrives instead of delaying
  everything after it;
- a concealment followed by the missing frame arriving late is an *underrun*: the target grows
  by one frame (up to ``max_target``);
- after ``calm_ticks`` frames played (5 s) without an underrun the target shrinks by one frame;
- when more than ``target + slack`` frames are queued (a burst), the oldest are dropped at once;
- when the queue has held more than the target for a whole ``trim_ticks`` window (after a
  start-up burst, or clocks drifting apart), the surplus frames are dropped: the delay never
  stays above the target;
- a frame more than :data:`JUMP_MS` from the playout point, either way, is no late or
  early frame but a new timeline (a sender that restarted its timestamps, or junk): the
  buffer starts afresh with it. Without that, one stray frame far ahead kept the queue from
  ever running dry while every frame of the stream came "late", and the source was silent
  for good.

Every event is counted, and :attr:`depth` is the delay this buffer adds right now (in frames;
:attr:`depth_ms` in milliseconds). The limits are durations (:data:`SLACK_MS`,
:data:`MAX_TARGET_MS`, :data:`CALM_S`, :data:`TRIM_S`, :data:`JUMP_MS`), counted in frames of the
buffer's size: at 20 ms they are the frame counts this buffer always had.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from hrtf.constants import FRAME, SAMPLE_RATE
from server.telemetry.recent import Recent

#: Headroom over the target before the oldest frames are dropped (two 20 ms frames).
SLACK_MS = 40.0
#: The same, in frames of the default 20 ms.
SLACK_FRAMES = 2
#: The deepest the target grows (eight 20 ms frames).
MAX_TARGET_MS = 160.0
#: Seconds of frames played without an underrun before the target shrinks by one frame.
CALM_S = 5.0
#: Seconds a surplus over the target must last before it is trimmed.
TRIM_S = 1.0
#: How far (1.28 s) a frame's timestamp may lie from the playout point and still be a late or
#: an early frame of the same stream; also how long a concealed frame is remembered, to tell
#: an underrun when it arrives.
JUMP_MS = 1280.0


def frames_in(ms: float, frame: int, least: int = 1) -> int:
    """How many frames of ``frame`` samples ``ms`` milliseconds is (rounded up; ≥ ``least``)."""
    return max(least, math.ceil(ms * SAMPLE_RATE / 1000 / frame - 1e-9))


@dataclass
class JitterStats:
    played: int = 0
    concealed: int = 0
    late: int = 0
    dropped: int = 0
    underruns: int = 0
    duplicates: int = 0
    restarts: int = 0


@dataclass(frozen=True, slots=True)
class Playout:
    """What one tick plays of a source: ``frame`` (a packet or samples, as pushed), or
    ``None`` when it is missing and must be concealed; ``following``, the frame after it if it
    is here already; ``buffering`` while nothing plays (silence, not a loss)."""

    frame: Any = None
    following: Any = None
    buffering: bool = False
    #: Room frames the frame plays over (a packet longer than the room's frame), from the
    #: :class:`~server.media.reframe.Reframer`.
    span: int = 1
    #: The tick plays on in the frame an earlier tick began (:data:`CONTINUED`).
    continued: bool = False


#: The source is not playing: silence, nothing to conceal.
BUFFERING = Playout(buffering=True)
#: The tick plays the next room frame of the packet an earlier tick decoded (or concealed).
CONTINUED = Playout(continued=True)


class JitterBuffer:
    """Frames of one source, waiting for the room clock."""

    def __init__(self, target: int = 1, max_target: int | None = None,
                 calm_ticks: int | None = None, trim_ticks: int | None = None, *,
                 frame: int = FRAME) -> None:
        #: Samples per frame (one packet of the source); see :meth:`set_frame`.
        self.frame = frame
        #: The room's frame: a frame here is one, or a whole number of them.
        self.room_frame = frame
        self.target = target
        self.min_target = target
        self._limits = (max_target, calm_ticks, trim_ticks)
        self._derive_limits()
        self.stats = JitterStats()
        self._frames: dict[int, Any] = {}
        self._arrivals: dict[int, float] = {}
        #: Milliseconds each played frame waited here, from arrival to its tick.
        self.waits_ms = Recent()
        #: The wait of the frame the last pop played (None: it played none, or untimed).
        self.last_wait_ms: float | None = None
        self._next: int | None = None  # timestamp due at the next tick
        self._playing = False
        self._conceal_run = 0
        self._missed: set[int] = set()
        self._calm = 0
        self._window_ticks = 0
        self._window_min = 1 << 30
        #: Frames are pushed on the event loop and popped on the room clock's thread.
        self._lock = threading.Lock()

    def _derive_limits(self) -> None:
        """The limits in frames of :attr:`frame` samples (those given in frames kept as given)."""
        max_target, calm_ticks, trim_ticks = self._limits
        frame = self.frame
        self.max_target = max_target if max_target is not None \
            else frames_in(MAX_TARGET_MS, frame, least=self.min_target)
        self.calm_ticks = calm_ticks if calm_ticks is not None else frames_in(1e3 * CALM_S, frame)
        self.trim_ticks = trim_ticks if trim_ticks is not None else frames_in(1e3 * TRIM_S, frame)
        self.slack = frames_in(SLACK_MS, frame, least=SLACK_FRAMES)
        self.jump = frames_in(JUMP_MS, frame) * frame  # in samples

    def set_frame(self, frame: int) -> None:
        """The source's packets are ``frame`` samples long from now on (its first packet said
        so, or the sender changed its packet length): what is queued is dropped (a restart,
        counted) and the limits are counted in the new frames."""
        if frame == self.frame:
            return
        with self._lock:
            self._set_frame(frame)

    def _set_frame(self, frame: int) -> None:
        if self._frames or self._playing:
            self._restart()
        self.frame = frame
        self.target = self.min_target
        self._derive_limits()

    @property
    def frame_ms(self) -> float:
        """One frame's duration (ms)."""
        return 1e3 * self.frame / SAMPLE_RATE

    @property
    def depth(self) -> int:
        """Frames queued now (each is :attr:`frame_ms` of delay)."""
        return len(self._frames)

    @property
    def depth_ms(self) -> float:
        """The delay the queued frames add now (ms)."""
        return len(self._frames) * self.frame_ms

    def tick_wait_ms(self, q: float) -> float:
        """The ``q``-th percentile of the part of each wait spent waiting for the first tick
        after the frame arrived (the rest, whole frames, it spent queued: the buffer's depth)."""
        waits = self.waits_ms.values()
        return float(np.percentile(waits % self.frame_ms, q)) if len(waits) else 0.0

    def push(self, timestamp: int, frame: Any, arrival: float | None = None) -> None:
        """A frame arrived: ``timestamp`` in samples (48 kHz), ``frame`` one frame of audio (an
        encoded packet or samples), ``arrival`` when (seconds, the clock :meth:`pop` is
        given)."""
        with self._lock:
            self._push(timestamp, frame, arrival)

    def _push(self, timestamp: int, frame: Any, arrival: float | None) -> None:
        if self._playing and self._next is not None \
                and abs(timestamp - self._next) > self.jump:
            self._restart()
        if self._playing and self._next is not None and timestamp < self._next:
            self.stats.late += 1
            if timestamp in self._missed:
                self._missed.discard(timestamp)
                self._on_underrun()
            return
        if timestamp in self._frames:
            self.stats.duplicates += 1
            return
        self._frames[timestamp] = frame
        if arrival is not None:
            self._arrivals[timestamp] = arrival
        while len(self._frames) > self.target + self.slack:
            del self._frames[min(self._frames)]
            self.stats.dropped += 1
            if self._playing:
                self._next = min(self._frames)

    def pop(self, now: float | None = None) -> Playout:
        """What this tick plays (:data:`BUFFERING` while buffering; a ``None`` frame when the
        one due is missing).

        ``now``, on the clock of ``push``'s ``arrival``, times the played frame's wait.
        """
        with self._lock:
            return self._pop(now)

    def _pop(self, now: float | None) -> Playout:
        self.last_wait_ms = None
        if not self._playing:
            if len(self._frames) < self.target:
                return BUFFERING
            self._playing = True
            self._next = min(self._frames)
        due = self._next
        if due is None:  # cannot be: playing, a frame is always due (typed for the checker)
            return BUFFERING
        frame = self._frames.pop(due, None)
        if frame is None:
            self._missed.add(due)
            self.stats.concealed += 1
            self._conceal_run += 1
        else:
            arrival = self._arrivals.pop(due, None)
            if arrival is not None and now is not None:
                self.last_wait_ms = 1e3 * (now - arrival)
                self.waits_ms.add(self.last_wait_ms)
            self.stats.played += 1
            self._conceal_run = 0
            self._calm += 1
            if self._calm >= self.calm_ticks and self.target > self.min_target:
                self.target -= 1
                self._calm = 0
        self._next = due = due + self.frame
        playout = Playout(frame, self._frames.get(due))
        self._trim()  # may move the frame due next on
        due = self._next if self._next is not None else due
        self._missed = {t for t in self._missed if t > due - self.jump}
        if len(self._arrivals) > len(self._frames):  # dropped frames' arrival times
            self._arrivals = {t: a for t, a in self._arrivals.items() if t in self._frames}
        if self._conceal_run > self.max_target + self.slack and not self._frames:
            self._playing = False  # the source went quiet: buffer afresh when it returns
            self._next = None
        return playout

    def _trim(self) -> None:
        """Drop frames the queue has held beyond the target for a whole window."""
        self._window_min = min(self._window_min, len(self._frames))
        self._window_ticks += 1
        if self._window_ticks < self.trim_ticks:
            return
        surplus = self._window_min - (self.target - 1)
        for _ in range(max(0, surplus)):
            oldest = min(self._frames)
            del self._frames[oldest]
            self.stats.dropped += 1
            self._next = min(self._frames) if self._frames else oldest + self.frame
        self._window_ticks, self._window_min = 0, 1 << 30

    def _restart(self) -> None:
        """A new timeline: what is queued is dropped, and playback buffers afresh."""
        self.stats.restarts += 1
        self.stats.dropped += len(self._frames)
        self._frames.clear()
        self._arrivals.clear()
        self._missed.clear()
        self._playing, self._next, self._conceal_run = False, None, 0

    def _on_underrun(self) -> None:
        self.stats.underruns += 1
        self._calm = 0
        if self.target < self.max_target:
            self.target += 1
            self._playing = False  # rebuild the cushion before playing on
