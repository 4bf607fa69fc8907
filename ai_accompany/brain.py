"""One room's AI musician: hears the room, decides a beat ahead, says what to play (no I/O).

Every block of analysis audio goes through the :class:`~ai_accompany.listen.Listener` (tempo
and beat phase, key and chord, the lead's pitch). Once the beat is known, each beat that
starts between :data:`MIN_LEAD_BEATS` and :data:`PLAN_BEATS` beats from now is planned once,
as four 16th-note steps of the chosen model, and sent as note events on the room clock — so
they reach the server a beat or so before they sound:

- ``accompany``: the harmoniser, fed the lead's pitch as the melody, gives alto, tenor and
  bass for each step (a ``bass`` instrument plays the bass line alone);
- ``improvise``: the improviser plays a line over the chord and key it hears;
- ``call_response``: the improviser answers while the players rest (a beat with no onset),
  and keeps quiet while they play.

With ``metronome`` on, every beat also gets a click (voice ``metronome``, accented on the
downbeat); with a fixed tempo the first bar is a count-in: clicks alone. With the room's
metronome on, the server sets the tempo and the count-in (``count_in_beats``) from it.

The models are the shipped ONNX networks; if they cannot be loaded, the n-gram baseline plays
instead (and the status says so).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from ai_accompany.ipc import ANALYSIS_RATE
from dsp.notes import NoteEvent

log = logging.getLogger(__name__)

ROOM_RATE = 48_000
#: Beats are planned when they start at least this many beats ahead…
MIN_LEAD_BEATS = 0.25
#: …and at most this many.
PLAN_BEATS = 1.0
STEPS_PER_BEAT = 4
BEATS_PER_BAR = 4
#: Status to the server about once a second (blocks of 20 ms).
STATUS_EVERY = 50
#: The lead's pitch counts as a melody note above this confidence.
MIN_PITCH_CONFIDENCE = 0.5
VELOCITY = {"bass": 0.8, "tenor": 0.55, "alto": 0.55, "lead": 0.75}
ROLES = ("accompany", "improvise", "call_response")
TOP_P = 0.9
#: A metronome click: 30 ms.
CLICK_SAMPLES = 1440


@dataclass(frozen=True)
class BrainConfig:
    role: str = "accompany"
    instrument: str = "epiano"
    temperature: float = 0.8
    bpm: float = 0.0  # 0: follow the players
    metronome: bool = False
    #: Beats it only listens (and clicks, with ``metronome``) before it plays, in fixed tempo:
    #: -1 for a bar with its own metronome and none without; the room's metronome sets it.
    count_in_beats: int = -1
    #: The room sample of the room metronome's beat zero (a downbeat), -1 without: with a
    #: fixed tempo the AI's beat grid is the room's.
    beat_zero: int = -1
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> BrainConfig:
        """From the server's settings (validated there; checked again here)."""
        config = cls()
        role = d.get("role", config.role)
        if role in ROLES:
            config = replace(config, role=role)
        if isinstance(d.get("instrument"), str):
            config = replace(config, instrument=d["instrument"])
        for field, lo, hi in (("temperature", 0.1, 2.0), ("bpm", 0.0, 240.0)):
            value = d.get(field)
            if isinstance(value, int | float) and lo <= value <= hi:
                config = replace(config, **{field: float(value)})
        if isinstance(d.get("metronome"), bool):
            config = replace(config, metronome=d["metronome"])
        count_in = d.get("count_in_beats")
        if isinstance(count_in, int) and not isinstance(count_in, bool) and 0 <= count_in <= 64:
            config = replace(config, count_in_beats=count_in)
        beat_zero = d.get("beat_zero")
        if isinstance(beat_zero, int) and not isinstance(beat_zero, bool) and beat_zero >= 0:
            config = replace(config, beat_zero=beat_zero)
        if isinstance(d.get("seed"), int):
            config = replace(config, seed=d["seed"])
        return config


def _listener(config: BrainConfig):
    """The listening half for ``config``: its tempo, and the room's beat grid if it has one."""
    from ai_accompany.listen import Listener

    beat_zero = config.beat_zero if config.bpm and config.beat_zero >= 0 else None
    return Listener(ANALYSIS_RATE, fixed_bpm=config.bpm or None, beat_zero=beat_zero)


class Brain:
    def __init__(self, config: BrainConfig) -> None:

        self.config = config
        self.listener = _listener(config)
        self.rng = np.random.default_rng(config.seed)
        self.models = _load_models()
        self.planned_through = -1  # room sample of the last beat planned
        self.beats_planned = 0
        self.blocks = 0
        self.now = 0
        self._heard_onset_at = -(10**12)
        self._last = None

    def configure(self, config: BrainConfig) -> None:
        if (config.bpm, config.beat_zero) != (self.config.bpm, self.config.beat_zero):
            self.listener = _listener(config)
            self.planned_through = -1
            self.beats_planned = 0  # a new tempo: count in again
        if config.role != self.config.role:
            self.models.reset()
        self.config = config

    def hear(self, sample: int, block: np.ndarray, plan: bool = True
             ) -> tuple[list[NoteEvent], dict | None]:
        """A block of analysis audio starting at room sample ``sample``: the notes decided
        now, and a status now and then. ``plan=False`` only listens: the sidecar passes it for
        blocks that queued up behind newer ones (deciding from them would be deciding late)."""
        block = np.nan_to_num(np.asarray(block, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        analysis = self.listener.process(block, sample)
        self._last = analysis
        self.now = sample + len(block) * ROOM_RATE // ANALYSIS_RATE
        if analysis.onsets:
            self._heard_onset_at = max(analysis.onsets)
        events = self._plan(analysis) if plan else []
        self.blocks += 1
        status = self.status() if self.blocks % STATUS_EVERY == 0 else None
        return events, status

    def status(self) -> dict:
        a = self._last
        return {
            "role": self.config.role,
            "models": self.models.kind,
            "locked": bool(a and a.locked),
            "bpm": round(a.bpm, 1) if a and a.bpm else None,
            "key": _key_name(a.key_tonic, a.key_mode) if a and a.key_tonic is not None else None,
            "chord": (_chord_name(a.chord_root, a.chord_quality)
                      if a and a.chord_root is not None else None),
            "beats_planned": self.beats_planned,
        }

    # deciding ---------------------------------------------------------------------------------

    def _plan(self, a) -> list[NoteEvent]:
        # With a fixed tempo the grid is known from the start: play before anyone does.
        known = a.locked or self.config.bpm > 0
        if not known or a.next_beat is None or not a.beat_period:
            return []
        period = float(a.beat_period)
        events: list[NoteEvent] = []
        beat, index = float(a.next_beat), int(a.beat_index)
        while beat <= self.now + PLAN_BEATS * period:
            ahead = beat >= self.now + MIN_LEAD_BEATS * period
            if ahead and beat > self.planned_through + period / 2:
                events += self._play_beat(round(beat), period, index, a)
                self.planned_through = round(beat)
                self.beats_planned += 1
            beat += period
            index += 1
        return events

    def _play_beat(self, start: int, period: float, beat_index: int, a) -> list[NoteEvent]:
        clicks = []
        if self.config.metronome:
            downbeat = beat_index % BEATS_PER_BAR == 0
            clicks = [NoteEvent(start, CLICK_SAMPLES, 96 if downbeat else 84,
                                0.7 if downbeat else 0.5, "metronome")]
        if self.config.bpm > 0 and self.beats_planned < self.count_in_beats:
            return clicks  # the count-in: it listens (and clicks) before it plays
        return clicks + self._play_notes(start, period, beat_index, a)

    @property
    def count_in_beats(self) -> int:
        """Beats of count-in in fixed tempo: the room metronome's, else a bar with its own."""
        if self.config.count_in_beats >= 0:
            return self.config.count_in_beats
        return BEATS_PER_BAR if self.config.metronome else 0

    def _play_notes(self, start: int, period: float, beat_index: int, a) -> list[NoteEvent]:
        step = period / STEPS_PER_BEAT
        bar_step = (beat_index % BEATS_PER_BAR) * STEPS_PER_BEAT
        role = self.config.role
        if role == "call_response" and self.now - self._heard_onset_at < period:
            self.models.rest()
            return []  # the players are playing: listen
        melody = (round(a.lead_pitch)
                  if a.lead_pitch is not None and a.lead_confidence >= MIN_PITCH_CONFIDENCE
                  else None)
        lines: dict[str, list[int | None]] = {}
        for k in range(STEPS_PER_BEAT):
            if role == "accompany":
                key = (a.key_tonic, a.key_mode) if a.key_tonic is not None else None
                alto, tenor, bass = self.models.harmonise(melody, bar_step + k, key)
                voices = {"bass": bass} if self.config.instrument == "bass" else {
                    "alto": alto, "tenor": tenor, "bass": bass}
            else:
                voices = {"lead": self.models.improvise(
                    a.chord_root if a.chord_root is not None else (a.key_tonic or 0),
                    a.chord_quality or "maj", a.key_tonic or 0, a.key_mode or "major",
                    bar_step + k, self.config.temperature, TOP_P, self.rng)}
            for voice, pitch in voices.items():
                lines.setdefault(voice, []).append(pitch)
        return [e for voice, pitches in lines.items()
                for e in _notes(voice, pitches, start, step)]


def _notes(voice: str, pitches: list[int | None], start: int, step: float) -> list[NoteEvent]:
    """A voice's steps as notes: a pitch held over several steps is one note; None is a rest."""
    out, k = [], 0
    while k < len(pitches):
        pitch = pitches[k]
        end = k + 1
        while end < len(pitches) and pitches[end] == pitch:
            end += 1
        if pitch is not None and 0 <= pitch <= 127:
            begin = start + round(k * step)
            out.append(NoteEvent(begin, max(1, round((end - k) * step * 0.95)), int(pitch),
                                 VELOCITY.get(voice, 0.7), voice))
        k = end
    return out


class _Models:
    """The networks (or the baseline) behind one interface, with their running state."""

    def __init__(self, harmoniser, improviser, kind: str) -> None:
        self.harmoniser, self.improviser, self.kind = harmoniser, improviser, kind

    def reset(self) -> None:
        self.harmoniser.reset()
        self.improviser.reset()

    def rest(self) -> None:
        self.improviser.reset()

    def harmonise(self, melody: int | None, bar_step: int, key) -> tuple[int | None, ...]:
        return self.harmoniser.step(melody, [melody], bar_step, key=key)

    def improvise(self, root, quality, tonic, mode, bar_step, temperature, top_p, rng):
        """The pitch sounding at this step (None: a rest)."""
        quality = _QUALITIES.get(quality, quality)
        self.improviser.step(root, quality, tonic, mode, bar_step, temperature, top_p, rng)
        return self.improviser.sounding


def _load_models() -> _Models:
    from ai_accompany import models

    try:
        return _Models(models.load_harmoniser(), models.load_improviser(), "onnx")
    except Exception as exc:  # a broken model file must not silence the musician
        log.error("the ONNX models cannot be loaded (%s): playing the n-gram baseline", exc)
        baseline = models.load_baseline()
        return _Models(baseline.harmoniser, baseline.improviser, "baseline")


#: The listener's chord qualities in the models' vocabulary (ai_accompany/vocab.py).
_QUALITIES = {"7": "dom7"}
_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def _key_name(tonic: int, mode: str) -> str:
    return f"{_NAMES[tonic % 12]} {mode}"


def _chord_name(root: int, quality: str) -> str:
    suffix = {"maj": "", "min": "m"}.get(quality, quality)
    return f"{_NAMES[root % 12]}{suffix}"
