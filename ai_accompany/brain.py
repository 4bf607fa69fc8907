"""One room's AI musician: hears the room, decides as late as it can, says what to play (no I/O).

Every block of analysis audio goes through the :class:`~ai_accompany.listen.Listener` (tempo
and beat phase, key and chord, the lead's pitch). Once the beat is known, the beat grid is cut
into 16th-note steps, and each step is decided once, by the block that is the last to hear the
room before the step is due: :attr:`BrainConfig.lead_ms` before it sounds (the room's tick and
the round trip to the server), from the newest melody heard. Decided earlier, the AI would
harmonise the melody of a beat ago: at 120 BPM a beat is 500 ms, and a melody changes note in
less. So:

- ``accompany``: the harmoniser, fed the lead's pitch as the melody, moves its alto, tenor and
  bass every step; the ``style``'s texture (:mod:`ai_accompany.texture`) says which of them
  strike at that step and for how long (a ``bass`` instrument plays the bass line alone). It
  rests while the players rest;
- ``improvise``: the improviser plays a line over the chord and key it hears, each step
  decided as late as the accompanist's (a note sounds until the line's next note or rest);
- ``call_response``: the improviser answers while the players rest (a beat with no onset),
  and keeps quiet while they play.

No pitched note sounds before the key is known: the AI listens first (with a fixed tempo and
the metronome, it counts in and clicks meanwhile), unless the room declares its key
(``key_tonic``, ``key_mode``): then it plays in that key from the first beat after the count-in.

With ``metronome`` on, every beat also gets a click (voice ``metronome``, accented on the
downbeat); with a fixed tempo the first bar is a count-in: clicks alone. With the room's
metronome on, the server sets the tempo and the count-in (``count_in_beats``) from it.

The models are the shipped ONNX networks; if they cannot be loaded, the n-gram baseline plays
instead (and the status says so).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace

import numpy as np

from ai_accompany.ipc import ANALYSIS_RATE
from ai_accompany.texture import (
    BEATS_PER_BAR,
    DEFAULT_STYLE,
    STEPS_PER_BEAT,
    STYLE_NAMES,
    STYLES,
    step_offset,
)
from ai_accompany.vocab import HOLD
from dsp.notes import NoteEvent

log = logging.getLogger(__name__)

ROOM_RATE = 48_000
#: How long before a step sounds it is decided (ms), by default: one 20 ms tick of the room,
#: the sidecar's round trip and a margin for a busy machine.
DEFAULT_LEAD_MS = 40.0
MIN_LEAD_MS, MAX_LEAD_MS = 5.0, 1000.0
#: A block louder than this (RMS, dBFS) is someone playing.
SOUND_DB = -45.0
#: The players rest when nothing was heard for this long (beats; at least REST_MIN_S).
REST_AFTER_BEATS = 0.2
REST_MIN_S = 0.08
#: Status to the server about once a second (blocks of 20 ms).
STATUS_EVERY = 50
#: The lead's pitch counts as a melody note above this confidence.
MIN_PITCH_CONFIDENCE = 0.5
VELOCITY = {"bass": 0.8, "tenor": 0.55, "alto": 0.55, "lead": 0.75}
ROLES = ("accompany", "improvise", "call_response")
TOP_P = 0.9
#: The longest an improvised note sounds (beats) unless its line's next note or rest ends it.
LEAD_NOTE_BEATS = 2.0
#: A metronome click: 30 ms.
CLICK_SAMPLES = 1440


@dataclass(frozen=True)
class BrainConfig:
    role: str = "accompany"
    instrument: str = "epiano"
    #: The accompaniment's texture (:data:`ai_accompany.texture.STYLES`).
    style: str = DEFAULT_STYLE
    #: How long before a step sounds it is decided (ms): the room's tick and the round trip.
    lead_ms: float = DEFAULT_LEAD_MS
    temperature: float = 0.8
    bpm: float = 0.0  # 0: follow the players
    metronome: bool = False
    #: Beats it only listens (and clicks, with ``metronome``) before it plays, in fixed tempo:
    #: -1 for a bar with its own metronome and none without; the room's metronome sets it.
    count_in_beats: int = -1
    #: The room sample of the room metronome's beat zero (a downbeat), -1 without: with a
    #: fixed tempo the AI's beat grid is the room's.
    beat_zero: int = -1
    #: The key the room declares (tonic pitch class 0..11, -1: none, and its mode): played in
    #: from the start instead of the key heard.
    key_tonic: int = -1
    key_mode: str = "major"
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
        if d.get("style") in STYLE_NAMES:
            config = replace(config, style=d["style"])
        for field, lo, hi in (("temperature", 0.1, 2.0), ("bpm", 0.0, 240.0),
                              ("lead_ms", MIN_LEAD_MS, MAX_LEAD_MS)):
            value = d.get(field)
            if isinstance(value, int | float) and not isinstance(value, bool) and lo <= value <= hi:
                config = replace(config, **{field: float(value)})
        if isinstance(d.get("metronome"), bool):
            config = replace(config, metronome=d["metronome"])
        count_in = d.get("count_in_beats")
        if isinstance(count_in, int) and not isinstance(count_in, bool) and 0 <= count_in <= 64:
            config = replace(config, count_in_beats=count_in)
        beat_zero = d.get("beat_zero")
        if isinstance(beat_zero, int) and not isinstance(beat_zero, bool) and beat_zero >= 0:
            config = replace(config, beat_zero=beat_zero)
        tonic = d.get("key_tonic")
        if isinstance(tonic, int) and not isinstance(tonic, bool) and 0 <= tonic <= 11 \
                and d.get("key_mode") in ("major", "minor"):
            config = replace(config, key_tonic=tonic, key_mode=d["key_mode"])
        seed = d.get("seed")
        if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0:
            config = replace(config, seed=seed)
        return config


def _listener(config: BrainConfig):
    """The listening half for ``config``: its tempo, and the room's beat grid if it has one."""
    from ai_accompany.listen import Listener

    beat_zero = config.beat_zero if config.bpm and config.beat_zero >= 0 else None
    return Listener(ANALYSIS_RATE, fixed_bpm=config.bpm or None, beat_zero=beat_zero)


class Brain:
    def __init__(self, config: BrainConfig, models: Models | None = None) -> None:
        self.config = config
        self.listener = _listener(config)
        self.rng = np.random.default_rng(config.seed)
        self.models = models or load_models()
        self.decided_through = -(10**12)  # room sample of the last step decided
        self.beats_planned = 0
        #: Steps that came due between two blocks' decisions (a block late or dropped): the
        #: models moved on, nothing sounded.
        self.missed_steps = 0
        self.blocks = 0
        self.now = 0
        #: A status is due (after a block heard with ``report=False``).
        self.status_due = False
        self._heard_onset_at = -(10**12)
        self._voiced_at = -(10**12)
        self._last = None
        #: What each accompanying voice sounds: (pitch, room sample its note ends).
        self._sounding: dict[str, tuple[int, int]] = {}
        self._bar_step = 0  # of the last step decided

    def configure(self, config: BrainConfig) -> None:
        if (config.bpm, config.beat_zero) != (self.config.bpm, self.config.beat_zero):
            self.listener = _listener(config)
            self.decided_through = -(10**12)
            self.beats_planned = 0  # a new tempo: count in again
        if config.role != self.config.role:
            self.models.reset()
        self.config = config

    def hear(self, sample: int, block: np.ndarray, plan: bool = True, report: bool = True
             ) -> tuple[list[NoteEvent], dict | None]:
        """A block of analysis audio starting at room sample ``sample``: the notes decided
        now, and a status now and then. ``plan=False`` only listens: the sidecar passes it for
        blocks that queued up behind newer ones (deciding from them would be deciding late).
        ``report=False`` leaves the status out and sets :attr:`status_due` instead: the
        sidecar sends the notes first and works the status out after."""
        block = np.nan_to_num(np.asarray(block, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        analysis = self.listener.process(block, sample)
        self._last = analysis
        self.now = sample + len(block) * ROOM_RATE // ANALYSIS_RATE
        if analysis.onsets:
            self._heard_onset_at = max(analysis.onsets)
        if analysis.onsets or analysis.level_db > SOUND_DB or self._melody(analysis) is not None:
            self._voiced_at = self.now  # someone plays (a chord, a drum or a tone counts too)
        events = self._plan(analysis, self.now - sample) if plan else []
        self.blocks += 1
        due = self.blocks % STATUS_EVERY == 0
        if due and not report:
            self.status_due = True  # cleared by whoever sends it (Sidecar.statuses)
        return events, self.status() if due and report else None

    def status(self) -> dict:
        a = self._last
        return {
            "role": self.config.role,
            "style": self.config.style,
            "models": self.models.kind,
            "locked": bool(a and a.locked),
            "bpm": round(a.bpm, 1) if a and a.bpm else None,
            "key": _key_name(*key) if (key := self._key(a)) is not None else None,
            "chord": (_chord_name(a.chord_root, a.chord_quality)
                      if a and a.chord_root is not None else None),
            "beats_planned": self.beats_planned,
            "lead_ms": self.config.lead_ms,
            "waiting": self._waiting(a),
            **self._chords(a),
        }

    def _chords(self, a) -> dict:
        """What it plays, and the plan: the chord its voices sound now (``playing``) and the
        one it expects to play on the next beat (``coming``), from the melody it forecasts.
        An accompanist's only; None while it waits."""
        if self.config.role != "accompany" or a is None or self._waiting(a) is not None:
            return {"playing": None, "coming": None}
        key = self._key(a)
        steps = STEPS_PER_BEAT - self._bar_step % STEPS_PER_BEAT
        coming = self.models.ahead(self._melody(a), (self._bar_step + 1) % 16, steps, key,
                                   (a.chord_root, a.chord_quality or "none"))
        return {"playing": name_chord(self.models.harmoniser.sounding),
                "coming": name_chord(coming)}

    def _waiting(self, a) -> str | None:
        """What it waits for before it plays: ``"beat"``, ``"key"``, ``"players"`` or None."""
        if a is None or not (a.locked or self.config.bpm > 0):
            return "beat"
        if self._key(a) is None:
            return "key"
        if self.config.role == "accompany" and self._resting(a.beat_period):
            return "players"
        return None

    def _key(self, a) -> tuple[int, str] | None:
        """The key it plays in: the room's, if it declares one, else the key heard (None:
        not yet)."""
        if self.config.key_tonic >= 0:
            return self.config.key_tonic, self.config.key_mode
        if a is None or a.key_tonic is None:
            return None
        return a.key_tonic, a.key_mode

    # deciding ---------------------------------------------------------------------------------

    @staticmethod
    def _melody(a) -> int | None:
        if a.lead_pitch is None or a.lead_confidence < MIN_PITCH_CONFIDENCE:
            return None
        return round(a.lead_pitch)

    def _resting(self, period: float | None) -> bool:
        """Whether the players have rested long enough for the accompaniment to rest too."""
        after = max(REST_AFTER_BEATS * (period or 0.0), REST_MIN_S * ROOM_RATE)
        return self.now - self._voiced_at > after

    def _plan(self, a, block_samples: int) -> list[NoteEvent]:
        """Decide every step due before the next block could: those that sound from
        ``now + lead`` up to one block later. Steps already past that point are missed."""
        # With a fixed tempo the grid is known from the start: the steps (and the metronome's
        # clicks) run from there, the notes wait for the key.
        known = a.locked or self.config.bpm > 0
        if not known or a.next_beat is None or not a.beat_period:
            return []
        period = float(a.beat_period)
        swing = STYLES[self.config.style].swing
        lead = self.config.lead_ms * 1e-3 * ROOM_RATE
        earliest = self.now + lead
        horizon = earliest + block_samples
        events: list[NoteEvent] = []
        if self.config.role == "accompany" and self._sounding and self._resting(period):
            events += self._rest(round(earliest))  # at once, not at the next step
        beat, index = float(a.next_beat) - period, int(a.beat_index) - 1
        first = self.decided_through <= -(10**12)  # steps before its first decision: not missed
        while beat < horizon:
            for k in range(STEPS_PER_BEAT):
                at = beat + step_offset(k, swing) * period
                if at >= horizon:
                    break
                if at <= self.decided_through + period / 8:
                    continue  # decided already (the beat estimate may wobble a little)
                if at < earliest and not first:
                    self.missed_steps += 1
                self.decided_through = round(at)
                events += self._step(round(at), period, index, k, a, sounds=at >= earliest)
            beat += period
            index += 1
        return events

    def _step(self, at: int, period: float, beat_index: int, k: int, a, sounds: bool
              ) -> list[NoteEvent]:
        """Step ``k`` of beat ``beat_index``, at room sample ``at``: the models move on; what
        sounds (when ``sounds``) is the texture's hits, or the improviser's beat."""
        bar_step = self._bar_step = (beat_index % BEATS_PER_BAR) * STEPS_PER_BEAT + k
        events = self._beat(at, beat_index) if k == 0 and sounds else []
        # The count-in: the first beats (this one is number ``beats_planned``) only listen.
        counting_in = self.config.bpm > 0 and self.beats_planned <= self.count_in_beats
        if self.config.role == "accompany":
            key = self._key(a)
            chord = (a.chord_root, a.chord_quality or "none")
            voices = dict(zip(("alto", "tenor", "bass"),
                              self.models.harmonise(self._melody(a), bar_step, key, chord),
                              strict=True))
            waiting = self._waiting(a)
            if sounds and not counting_in and waiting is None:
                events += self._hits(at, period, bar_step, voices)
            elif sounds and waiting == "players":
                events += self._rest(at)
        elif sounds and not counting_in and self._waiting(a) is None:
            events += self._improvise(at, period, bar_step, a)
        return events

    def _beat(self, at: int, beat_index: int) -> list[NoteEvent]:
        """A beat begins: counted (the count-in), and clicked with ``metronome``."""
        self.beats_planned += 1
        if not self.config.metronome:
            return []
        downbeat = beat_index % BEATS_PER_BAR == 0
        return [NoteEvent(at, CLICK_SAMPLES, 96 if downbeat else 84, 0.7 if downbeat else 0.5,
                          "metronome")]

    @property
    def count_in_beats(self) -> int:
        """Beats of count-in in fixed tempo: the room metronome's, else a bar with its own."""
        if self.config.count_in_beats >= 0:
            return self.config.count_in_beats
        return BEATS_PER_BAR if self.config.metronome else 0

    def _hits(self, at: int, period: float, bar_step: int, voices: dict) -> list[NoteEvent]:
        """The texture's hits at this step; and a voice still sounding from an earlier hit
        whose pitch the harmoniser has moved (the melody went elsewhere) moves with it, for
        the rest of its hit: the line's new note ends the old one (:data:`LINE_VOICES`)."""
        texture = STYLES[self.config.style]
        step = period / STEPS_PER_BEAT
        struck: dict[str, tuple[int, int]] = {}
        for hit in texture.hits_at(bar_step):
            for voice in hit.voices:
                struck[voice] = (voices[voice], at + max(1, round(hit.steps * step * hit.legato)))
        for voice, (pitch, end) in self._sounding.items():
            if voice not in struck and end - at >= step / 2 and voices[voice] != pitch:
                struck[voice] = (voices[voice], end)
        out = []
        for voice, (pitch, end) in struck.items():
            if self.config.instrument == "bass" and voice != "bass":
                continue  # a bass plays the bass line alone
            if pitch is not None and 0 <= pitch <= 127:
                out.append(NoteEvent(at, end - at, int(pitch), VELOCITY.get(voice, 0.7), voice))
                self._sounding[voice] = (int(pitch), end)
        return out

    def _rest(self, at: int) -> list[NoteEvent]:
        """The players rest: end what still rings (a note of velocity 0 ends its line)."""
        out = [NoteEvent(at, 1, pitch, 0.0, voice)
               for voice, (pitch, end) in self._sounding.items() if end > at]
        self._sounding.clear()
        return out

    def _improvise(self, at: int, period: float, bar_step: int, a) -> list[NoteEvent]:
        """The improviser's step at room sample ``at``, decided as late as the accompanist's:
        a new note sounds until the line's next note or rest ends it (``lead`` is a line
        voice, :data:`~dsp.notes.LINE_VOICES`), at most :data:`LEAD_NOTE_BEATS`. Answering
        (``call_response``), it stops at the first step after the players play again."""
        if self.config.role == "call_response" and self.now - self._heard_onset_at < period:
            self.models.rest()
            return self._rest(at)  # the players are playing: listen
        tonic, mode = self._key(a) or (0, "major")
        pitch = self.models.improvise(
            a.chord_root if a.chord_root is not None else tonic, a.chord_quality or "maj",
            tonic, mode, bar_step, self.config.temperature, TOP_P, self.rng)
        if pitch is None:
            return self._rest(at)
        if self.models.improviser.last_token == HOLD or not 0 <= pitch <= 127:
            return []
        end = at + round(LEAD_NOTE_BEATS * period)
        self._sounding["lead"] = (int(pitch), end)
        return [NoteEvent(at, end - at, int(pitch), VELOCITY["lead"], "lead")]


class Models:
    """The networks (or the baseline) behind one interface, with their running state."""

    def __init__(self, harmoniser, improviser, kind: str, forecast=None) -> None:
        self.harmoniser, self.improviser, self.kind = harmoniser, improviser, kind
        #: A :class:`~ai_accompany.models.MelodyForecast`, or None: the harmoniser then
        #: avoids clashes with the melody heard, not the melody to come.
        self.forecast = forecast

    def reset(self) -> None:
        self.harmoniser.reset()
        self.improviser.reset()
        if self.forecast is not None:
            self.forecast.reset()

    def rest(self) -> None:
        self.improviser.reset()

    def harmonise(self, melody: int | None, bar_step: int, key, chord=(None, "none")
                  ) -> tuple[int | None, ...]:
        """The voices at this step; ``melody`` is the newest heard (the step before's)."""
        forecast = (None if self.forecast is None
                    else _forecast(self.forecast, melody, bar_step, key, chord))
        return self.harmoniser.step(melody, [melody], bar_step, key=key, forecast=forecast)

    def ahead(self, melody: int | None, bar_step: int, steps: int, key, chord=(None, "none")
              ) -> tuple[int | None, ...]:
        """The voices it expects to sound ``steps`` steps on (the first is ``bar_step``), the
        melody taken as the forecast's likeliest note each step; on copies of the models, so
        what it will decide is untouched."""
        harmoniser = _copy_model(self.harmoniser)
        forecast = None
        if self.forecast is not None:
            forecast = copy.copy(self.forecast)
            forecast.model = _copy_model(self.forecast.model)
        voices, guess = harmoniser.sounding, melody
        for k in range(steps):
            chances = None
            if forecast is not None:
                chances = _forecast(forecast, guess, (bar_step + k) % 16, key, chord)
                if guess is not None and chances.any():
                    pc = int(np.argmax(chances))
                    guess = guess + ((pc - guess) % 12 + 6) % 12 - 6  # nearest such pitch
            voices = harmoniser.step(guess, [guess], (bar_step + k) % 16, key=key,
                                     forecast=chances)
        return voices

    def improvise(self, root, quality, tonic, mode, bar_step, temperature, top_p, rng):
        """The pitch sounding at this step (None: a rest)."""
        quality = _QUALITIES.get(quality, quality)
        self.improviser.step(root, quality, tonic, mode, bar_step, temperature, top_p, rng)
        return self.improviser.sounding


#: The brains :func:`load_models` knows: the shipped networks, the n-gram baseline, and the
#: rule-based harmoniser (:class:`~ai_accompany.rules.TriadRule`, with the n-gram improviser).
MODEL_KINDS = ("onnx", "baseline", "rule")


def load_models(kind: str = "onnx") -> Models:
    from ai_accompany import models

    if kind == "rule":
        from ai_accompany.rules import TriadRule

        return Models(TriadRule(), models.load_baseline().improviser, "rule")
    if kind == "onnx":
        try:
            harmoniser = models.load_harmoniser()
            harmoniser.consonant = True  # an accompanist: no clash with the melody
            return Models(harmoniser, models.load_improviser(), "onnx",
                          models.load_forecast()[0])
        except Exception as exc:  # a broken model file must not silence the musician
            log.error("the ONNX models cannot be loaded (%s): playing the n-gram baseline", exc)
    elif kind != "baseline":
        raise ValueError(f"no models {kind!r}: one of {', '.join(MODEL_KINDS)}")
    baseline = models.load_baseline()
    baseline.harmoniser.consonant = True
    return Models(baseline.harmoniser, baseline.improviser, "baseline",
                  models.MelodyForecast(models.load_baseline().improviser))


def _forecast(forecast, melody: int | None, bar_step: int, key, chord) -> np.ndarray:
    """One step of a :class:`~ai_accompany.models.MelodyForecast` with what the brain heard
    (C major until the key is known)."""
    tonic, mode = key if key is not None else (0, "major")
    root, quality = chord
    return forecast.step(melody, root, _QUALITIES.get(quality, quality), tonic, mode, bar_step)


def _copy_model(model):
    """A copy of a stepping model (harmoniser, improviser or rule) whose running state moves
    on its own; the network behind it is shared."""
    clone = copy.copy(model)
    for name, value in vars(model).items():
        if isinstance(value, np.ndarray | list | dict) or hasattr(value, "maxlen"):
            setattr(clone, name, copy.copy(value))
    return clone


def name_chord(voices) -> str | None:
    """The triad or seventh chord that ``voices`` (MIDI pitches, the bass last, None for a
    rest) spell best, its root the bass's on a tie: ``"G"``, ``"Em"``, ``"D7"``."""
    from ai_accompany.vocab import CHORD_TEMPLATES

    pitches = [p for p in voices if p is not None]
    if not pitches:
        return None
    pcs, bass = {p % 12 for p in pitches}, pitches[-1] % 12

    def fit(option):
        root, quality = option
        tones = {(root + i) % 12 for i in CHORD_TEMPLATES[quality]}
        return len(pcs & tones) - 0.5 * len(tones - pcs), root == bass

    root, quality = max(((r, q) for r in range(12) for q in ("maj", "min", "dim", "dom7")),
                        key=fit)
    return _chord_name(root, {"dom7": "7"}.get(quality, quality))


#: The listener's chord qualities in the models' vocabulary (ai_accompany/vocab.py).
_QUALITIES = {"7": "dom7"}
_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def _key_name(tonic: int, mode: str) -> str:
    return f"{_NAMES[tonic % 12]} {mode}"


def _chord_name(root: int, quality: str) -> str:
    suffix = {"maj": "", "min": "m"}.get(quality, quality)
    return f"{_NAMES[root % 12]}{suffix}"
