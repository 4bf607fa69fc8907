"""The accompanist's models at run time: ONNX networks and the n-gram baseline, one step at a time.

NumPy and onnxruntime only (no torch). Tokens, voice ranges, chord qualities and the input
layout are defined once, in :mod:`ai_accompany.vocab`.

Every model is a *stepper* — ``initial_state(batch)`` and ``__call__(x, state) -> (log_probs,
state)`` on integer input rows ``x`` — wrapped in a stream object that keeps its own history:

* :class:`Harmoniser` — ``reset()``; ``step(melody, lookahead, beat_pos) -> (alto, tenor, bass)``:
  the MIDI pitches sounding in the three lower voices at this 16th-note step.
  ``last_onsets`` says which of them started a new note at this step (the others hold).
* :class:`Improviser` — ``reset()``; ``step(chord_root_pc, chord_quality, key_tonic_pc, key_mode,
  beat_pos, temperature, top_p, rng) -> int | None``: the MIDI pitch of a note that *starts* at
  this step, or ``None`` when no note starts; then ``sounding`` tells whether the previous note
  goes on (its pitch) or the line rests (``None``). ``feed(...)`` advances it over notes it did
  not choose (a human's phrase, to answer it).

``beat_pos`` is the step's position in its bar in 16ths (0 = downbeat, 4 = second beat …).
Sampling (temperature, top-p) happens here in NumPy, not in the graphs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ai_accompany.vocab import (
    CHORD_QUALITIES,
    FIRST_PITCH_TOKEN,
    H_BASS,
    H_TENOR,
    HOLD,
    KEY_UNKNOWN,
    LOOKAHEAD,
    MODES,
    NO_CHORD_ROOT,
    NUM_TOKENS,
    PITCH_HI,
    PITCH_LO,
    REST,
    SND_REST,
    SND_UNKNOWN,
    VOICE_RANGES,
    harmoniser_row,
    improviser_rows,
    key_scale_mask,
    pitch_token,
    token_pitch,
)

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent / "models"
HARMONISER_FILE = "harmoniser.onnx"
IMPROVISER_FILE = "improviser.onnx"
#: The melody forecaster: the improviser's network trained on folk tunes and chorale melodies
#: without chords, read by :class:`MelodyForecast` (optional: the improviser stands in).
FORECASTER_FILE = "forecaster.onnx"
BASELINE_FILE = "baseline.npz"
HELDOUT_FILE = "heldout.npz"
CARD_FILE = "card.json"
ACCOMPANY_VOICES = ("alto", "tenor", "bass")
#: What ``spatialjam ai eval`` scores: the two networks and the two halves of the baseline.
MODEL_NAMES = ("harmoniser", "improviser", "baseline-harmoniser", "baseline-improviser")


def onnx_providers() -> list[str]:
    """CUDA first when this onnxruntime build offers it, the CPU always."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class OnnxStepper:
    """One exported network: ``x`` ``(B, F)`` int64, ``state`` ``(1, B, H)`` float32 in;
    ``log_probs`` and ``state_out`` out. Single-threaded: a step is a few small matrix products,
    and the sidecar must not take cores from the room clock."""

    def __init__(self, path: Path, providers: Sequence[str] | None = None):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no model file at {path}; train one with "
                                    "python -m ai_accompany.train")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options,
                                            providers=list(providers or onnx_providers()))
        shapes = {i.name: i.shape for i in self.session.get_inputs()}
        if set(shapes) != {"x", "state"}:
            raise ValueError(f"{path}: expected inputs x and state, got {sorted(shapes)}")
        self.hidden = int(shapes["state"][2])
        self.columns = int(shapes["x"][1])
        self.path = path

    def initial_state(self, batch: int) -> np.ndarray:
        return np.zeros((1, batch, self.hidden), dtype=np.float32)

    def __call__(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        log_probs, state = self.session.run(None, {"x": np.ascontiguousarray(x, np.int64),
                                                   "state": state})
        return log_probs, state


def sample(log_probs: np.ndarray, allowed: np.ndarray, temperature: float, top_p: float,
           rng: np.random.Generator) -> int:
    """A token from ``log_probs`` ``(NUM_TOKENS,)`` restricted to ``allowed`` (bool mask).

    ``temperature`` 0 takes the most likely allowed token; otherwise the distribution
    :math:`p_i \\propto \\exp(\\log p_i / T)` is cut to the smallest set of most likely tokens whose
    mass reaches ``top_p`` (nucleus sampling, Holtzman et al. 2020) and sampled.
    """
    scores = np.where(allowed, log_probs.astype(np.float64), -np.inf)
    if temperature <= 0:
        return int(np.argmax(scores))
    scores = scores / temperature
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    order = np.argsort(-probs)
    keep = int(np.searchsorted(np.cumsum(probs[order]), top_p) + 1)
    chosen = order[:keep]
    p = probs[chosen] / probs[chosen].sum()
    return int(chosen[rng.choice(len(chosen), p=p)])


def _check_sampling(temperature: float, top_p: float) -> None:
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number ≥ 0, got {temperature!r}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p!r}")


def _check_beat(beat_pos: int) -> int:
    if isinstance(beat_pos, bool) or int(beat_pos) != beat_pos or beat_pos < 0:
        raise ValueError(f"beat_pos must be a whole number of 16ths ≥ 0, got {beat_pos!r}")
    return int(beat_pos)


def fold_into(pitch: int, lo: int, hi: int) -> int:
    """``pitch`` moved by whole octaves into ``lo..hi`` (``hi - lo`` ≥ 11); ``ValueError`` if it
    is not a MIDI note."""
    if isinstance(pitch, bool) or int(pitch) != pitch or not 0 <= pitch <= 127:
        raise ValueError(f"a pitch must be a MIDI note number 0..127, got {pitch!r}")
    pitch = int(pitch)
    while pitch < lo:
        pitch += 12
    while pitch > hi:
        pitch -= 12
    return pitch


def _range_mask(lo: int, hi: int) -> np.ndarray:
    mask = np.zeros(NUM_TOKENS, dtype=bool)
    mask[pitch_token(lo):pitch_token(hi) + 1] = True
    return mask


_PITCHES = np.arange(PITCH_LO, PITCH_HI + 1)


def parallel_mask(before: int, others: Sequence[tuple[int | None, int | None]]) -> np.ndarray:
    """Tokens that would make consecutive fifths or octaves (bool ``(NUM_TOKENS,)``).

    A voice at ``before`` moving to pitch q makes one with another voice going from a to b when
    both move the same way and :math:`|before - a| \bmod 12 = |q - b| \bmod 12 \\in \\{0, 7\\}`
    (the rule :func:`ai_accompany.evaluate.count_parallels` counts). ``others`` lists (a, b) of
    the voices already decided; ``None`` (a rest) never makes one. Holding never does.
    """
    bad = np.zeros(NUM_TOKENS, dtype=bool)
    for a, b in others:
        if a is None or b is None or a == b:
            continue
        interval = abs(before - a) % 12
        if interval not in (0, 7):
            continue
        same_way = np.sign(_PITCHES - before) == np.sign(b - a)
        bad[FIRST_PITCH_TOKEN:] |= same_way & (np.abs(_PITCHES - b) % 12 == interval)
    return bad


#: Intervals (semitones mod 12) that sound consonant above or below a melody note: unisons and
#: octaves, thirds, fourths, fifths and sixths.
CONSONANT_INTERVALS = (0, 3, 4, 5, 7, 8, 9)


def dissonant_mask(melody: int, holding: int | None) -> np.ndarray:
    """Tokens that would sound a second, a seventh or a tritone against ``melody`` (bool
    ``(NUM_TOKENS,)``); HOLD when the voice holds such a pitch (``holding``)."""
    bad = np.zeros(NUM_TOKENS, dtype=bool)
    bad[FIRST_PITCH_TOKEN:] = ~np.isin((_PITCHES - melody) % 12, CONSONANT_INTERVALS)
    bad[HOLD] = holding is not None and (holding - melody) % 12 not in CONSONANT_INTERVALS
    return bad


#: How much a voice's expected clash with the coming melody note weighs against the model's
#: own choice: log-probability added per unit of log(chance of consonance).
CONSONANCE_WEIGHT = 16.0


#: Whether each pitch (row, :data:`_PITCHES`) is consonant with each pitch class (column).
_CONSONANT_WITH = np.isin((_PITCHES[:, None] - np.arange(12)[None, :]) % 12,
                          CONSONANT_INTERVALS).astype(np.float64)


def consonance_bias(forecast: np.ndarray, holding: int | None) -> np.ndarray:
    """``CONSONANCE_WEIGHT · log P(consonant)`` of each token (``(NUM_TOKENS,)``) against a
    melody whose coming pitch class has the probabilities ``forecast`` ``(12,)``."""
    good = _CONSONANT_WITH @ forecast  # P(consonant) per pitch
    bias = np.zeros(NUM_TOKENS)
    bias[FIRST_PITCH_TOKEN:] = CONSONANCE_WEIGHT * np.log(good + 1e-3)
    if holding is not None:
        bias[HOLD] = bias[pitch_token(holding)]
    return bias


#: With ``consonant``, what a note outside the key costs (log-probability).
OUT_OF_KEY = 2.0


def key_bias(key: tuple[int, str]) -> np.ndarray:
    """``−OUT_OF_KEY`` for each pitch token outside ``key`` (:data:`SCALES`), else 0."""
    bias = np.zeros(NUM_TOKENS)
    bias[FIRST_PITCH_TOKEN:] = np.where(key_scale_mask(*key)[_PITCHES % 12], 0.0, -OUT_OF_KEY)
    return bias


class Harmoniser:
    """Alto, tenor and bass under a melody, one 16th-note step per call.

    Parameters
    ----------
    stepper : an :class:`OnnxStepper` or :class:`~ai_accompany.ngram.HarmoniserNgram`
    name : shown in eval and logs
    avoid_parallels : the decoder's one rule of voice leading (on by default): a voice may not
        move into a fifth or an octave with a voice already decided for this step (the melody,
        then the bass, then the tenor) when that voice moves the same way out of the same
        interval — unless every note in range would; see :func:`parallel_mask`. Left to
        themselves the models make such consecutives far more often than Bach (eval's
        ``parallels_per_100_steps_raw``).
    consonant : a second rule, for accompanying (off by default, as Bach wrote passing
        dissonances): no voice sounds a second, seventh or tritone against the melody note
        (:func:`dissonant_mask`), unless every note in range would.
    """

    def __init__(self, stepper, name: str = "harmoniser", avoid_parallels: bool = True,
                 consonant: bool = False):
        self.stepper = stepper
        self.name = name
        self.avoid_parallels = avoid_parallels
        self.consonant = consonant
        self._range_masks = [_range_mask(*VOICE_RANGES[v]) for v in ACCOMPANY_VOICES]
        self.reset()

    def reset(self) -> None:
        """Forget the piece: the next step is the first."""
        self._state = self.stepper.initial_state(1)
        self._prev_tokens = [REST, REST, REST]
        self._melody: int | None = None
        self.sounding: tuple[int | None, int | None, int | None] = (None, None, None)
        self.last_onsets = (False, False, False)
        self.last_tokens = (REST, REST, REST)

    def step(self, melody: int | None, lookahead: Sequence[int | None] = (), beat_pos: int = 0,
             *, onset: bool | None = None, key: tuple[int, str] | None = None,
             temperature: float = 0.0, rng: np.random.Generator | None = None,
             forecast: np.ndarray | None = None) -> tuple[int, int, int]:
        """Advance one 16th note; return the (alto, tenor, bass) MIDI pitches now sounding.

        Parameters
        ----------
        melody : the melody's MIDI pitch sounding at this step, ``None`` while it rests. It is
            moved by octaves into the soprano range (:data:`~ai_accompany.vocab.VOICE_RANGES`).
        lookahead : the melody pitches expected at the next steps (up to
            :data:`~ai_accompany.vocab.LOOKAHEAD`); ``None`` or a short list = not known.
        beat_pos : 16ths since the bar's downbeat.
        onset : whether the melody note starts at this step; by default, when its pitch differs
            from the previous step's (a repeated note then reads as held).
        key : (tonic pitch class, ``"major"`` or ``"minor"``) when the listener knows it;
            ``None``: the network infers it from the melody (trained both ways).
        temperature : 0 (default) takes each voice's most likely note; above 0, samples.
        forecast : with ``consonant``, the chances of each pitch class for the melody at this
            step, when it is not heard yet (:class:`MelodyForecast`): each voice leans to
            notes that will sound consonant with it (:func:`consonance_bias`) instead of
            avoiding clashes with ``melody`` alone.

        Each voice stays in its range; it holds or moves, it never rests. ``last_onsets`` tells
        which voices started a new note at this step. The bass is chosen first, then the tenor
        given the bass, then the alto given both: three calls of the stepper from one state;
        ``avoid_parallels`` (see the class) narrows each voice's choice.
        """
        beat_pos = _check_beat(beat_pos)
        _check_sampling(temperature, 1.0)
        lo, hi = VOICE_RANGES["soprano"]
        mel = None if melody is None else fold_into(melody, lo, hi)
        if onset is None:
            onset = mel is not None and mel != self._melody
        mel_tok = REST if mel is None else (pitch_token(mel) if onset else HOLD)
        mel_snd = SND_REST if mel is None else pitch_token(mel)
        ahead = [SND_UNKNOWN if p is None else pitch_token(fold_into(p, lo, hi))
                 for p in list(lookahead)[:LOOKAHEAD]]
        key_idx = KEY_UNKNOWN if key is None else key_index(*key)
        x = harmoniser_row(mel_tok, mel_snd, ahead, beat_pos, self._prev_tokens, key_idx)[None]
        rng = rng or np.random.default_rng()
        tokens, pitches = [REST, REST, REST], [None, None, None]
        moving = [(self._melody, mel)]  # (before, now) of the voices decided so far
        for v, column in ((2, H_BASS), (1, H_TENOR), (0, None)):  # bass, tenor, alto
            log_probs, state = self.stepper(x, self._state)
            allowed = self._range_masks[v].copy()
            allowed[HOLD] = self.sounding[v] is not None
            if self.avoid_parallels and self.sounding[v] is not None:
                keep = allowed & ~parallel_mask(self.sounding[v], moving)
                allowed = keep if keep.any() else allowed
            scores = log_probs[0, v]
            if self.consonant and key is not None:
                scores = scores + key_bias(key)
            if self.consonant and forecast is not None:
                scores = scores + consonance_bias(forecast, self.sounding[v])
            elif self.consonant and mel is not None:
                keep = allowed & ~dissonant_mask(mel, self.sounding[v])
                allowed = keep if keep.any() else allowed
            tokens[v] = sample(scores, allowed, temperature, 1.0, rng)
            pitches[v] = self.sounding[v] if tokens[v] == HOLD else token_pitch(tokens[v])
            if column is not None:
                x[0, column:column + 2] = tokens[v], pitch_token(pitches[v])
            moving.append((self.sounding[v], pitches[v]))
        self._state = state
        self._melody = mel
        self._prev_tokens = tokens
        self.last_tokens = tuple(tokens)
        self.last_onsets = tuple(t >= FIRST_PITCH_TOKEN for t in tokens)
        self.sounding = tuple(pitches)
        return self.sounding


def chord_index(chord_root_pc: int | None, chord_quality: str) -> tuple[int, int]:
    """Input indices of a chord; ``ValueError`` names a bad root or quality."""
    if chord_quality not in CHORD_QUALITIES:
        raise ValueError(f"chord_quality must be one of {', '.join(CHORD_QUALITIES)}, "
                         f"got {chord_quality!r}")
    if chord_root_pc is None or chord_quality == "none":
        return NO_CHORD_ROOT, CHORD_QUALITIES.index("none")
    if not 0 <= chord_root_pc <= 11:
        raise ValueError(f"chord_root_pc must be a pitch class 0..11, got {chord_root_pc!r}")
    return int(chord_root_pc), CHORD_QUALITIES.index(chord_quality)


def key_index(key_tonic_pc: int, key_mode: str) -> tuple[int, int]:
    if key_mode not in MODES:
        raise ValueError(f"key_mode must be 'major' or 'minor', got {key_mode!r}")
    if not 0 <= key_tonic_pc <= 11:
        raise ValueError(f"key_tonic_pc must be a pitch class 0..11, got {key_tonic_pc!r}")
    return int(key_tonic_pc), MODES.index(key_mode)


class Improviser:
    """A melody over chords, one 16th-note step per call (see the module docstring)."""

    def __init__(self, stepper, name: str = "improviser",
                 pitch_range: tuple[int, int] = VOICE_RANGES["soprano"]):
        self.stepper = stepper
        self.name = name
        self.pitch_range = pitch_range
        self._range_mask = _range_mask(*pitch_range)
        self._default_rng = np.random.default_rng()
        self.reset()

    def reset(self) -> None:
        """Forget the piece: the next step is the first, after silence."""
        self._state = self.stepper.initial_state(1)
        self._prev_token = REST
        self.sounding: int | None = None
        self.last_token = REST

    def _advance(self, chord_root_pc: int | None, chord_quality: str, key_tonic_pc: int,
                 key_mode: str, beat_pos: int) -> np.ndarray:
        root, quality = chord_index(chord_root_pc, chord_quality)
        tonic, mode = key_index(key_tonic_pc, key_mode)
        prev_snd = SND_REST if self.sounding is None else pitch_token(self.sounding)
        x = improviser_rows(np.array([self._prev_token]), np.array([prev_snd]),
                            np.array([root]), np.array([quality]), np.array([tonic]),
                            np.array([mode]), np.array([_check_beat(beat_pos)]))
        log_probs, self._state = self.stepper(x, self._state)
        return log_probs[0]

    def _commit(self, token: int) -> int | None:
        self._prev_token = token
        self.last_token = token
        if token == REST:
            self.sounding = None
        elif token != HOLD:
            self.sounding = token_pitch(token)
            return self.sounding
        return None

    def step(self, chord_root_pc: int | None, chord_quality: str, key_tonic_pc: int,
             key_mode: str, beat_pos: int, temperature: float = 1.0, top_p: float = 0.9,
             rng: np.random.Generator | None = None) -> int | None:
        """Choose this 16th note; return the MIDI pitch of a note starting now, else ``None``.

        Parameters
        ----------
        chord_root_pc : the chord sounding at this step, root pitch class 0..11 (``None`` or
            quality ``"none"``: no chord)
        chord_quality : one of :data:`~ai_accompany.vocab.CHORD_QUALITIES`
        key_tonic_pc, key_mode : the key, ``"major"`` or ``"minor"``
        beat_pos : 16ths since the bar's downbeat
        temperature, top_p : sampling (0 = most likely token), see :func:`sample`
        rng : a NumPy ``Generator`` for reproducible phrases

        After the call, :attr:`sounding` is the pitch sounding at this step (``None`` = rest) and
        :attr:`last_token` the raw token. Notes stay inside ``pitch_range``.
        """
        _check_sampling(temperature, top_p)
        log_probs = self._advance(chord_root_pc, chord_quality, key_tonic_pc, key_mode,
                                  beat_pos)
        allowed = self._range_mask.copy()
        allowed[REST] = True
        allowed[HOLD] = self.sounding is not None
        token = sample(log_probs, allowed, temperature, top_p, rng or self._default_rng)
        return self._commit(token)

    def feed(self, pitch: int | None, chord_root_pc: int | None, chord_quality: str,
             key_tonic_pc: int, key_mode: str, beat_pos: int, onset: bool | None = None) -> None:
        """Advance one step over a note the model did not choose (e.g. the human's melody).

        ``pitch`` is the MIDI pitch sounding at this step (``None`` = rest), moved by octaves
        into ``pitch_range``; ``onset`` defaults to "the pitch changed".
        """
        self._advance(chord_root_pc, chord_quality, key_tonic_pc, key_mode, beat_pos)
        if pitch is None:
            self._commit(REST)
            return
        pitch = fold_into(pitch, *self.pitch_range)
        if onset is None:
            onset = pitch != self.sounding
        self._commit(pitch_token(pitch) if onset or self.sounding is None else HOLD)


class MelodyForecast:
    """What the melody will sound at the coming 16th step, from what has been heard: a melody
    model (an :class:`Improviser`'s network, over the chord and key heard) fed the heard
    melody step by step, read as chances per pitch class.

    Call :meth:`step` once per step with the melody heard at the step before; it returns the
    chances ``(12,)`` for this step (all zero when the model expects a rest).
    """

    def __init__(self, improviser: Improviser, chords: bool = True) -> None:
        self.model = improviser
        #: Whether the model takes the chord heard (the improviser) or was trained without
        #: chords (the forecaster: a monophonic melody tells little of its chord).
        self.chords = chords
        self._advanced = False

    def reset(self) -> None:
        self.model.reset()
        self._advanced = False

    def step(self, heard: int | None, chord_root_pc: int | None, chord_quality: str,
             key_tonic_pc: int, key_mode: str, beat_pos: int) -> np.ndarray:
        m = self.model
        if self._advanced:  # what the last step turned out to be
            if heard is None:
                m._commit(REST)
            else:
                pitch = fold_into(heard, *m.pitch_range)
                m._commit(HOLD if pitch == m.sounding else pitch_token(pitch))
        if not self.chords:
            chord_root_pc, chord_quality = None, "none"
        log_probs = m._advance(chord_root_pc, chord_quality, key_tonic_pc, key_mode, beat_pos)
        self._advanced = True
        p = np.exp(log_probs - log_probs.max())
        p /= p.sum()
        out = np.zeros(12)
        np.add.at(out, (_PITCHES % 12), p[FIRST_PITCH_TOKEN:])
        if m.sounding is not None:
            out[m.sounding % 12] += p[HOLD]
        total = out.sum()
        return out / total if total > 0 else out


@dataclass
class Baseline:
    """The n-gram baseline behind the same stream APIs as the networks."""

    harmoniser: Harmoniser
    improviser: Improviser


def load_harmoniser(path: Path | None = None, providers: Sequence[str] | None = None
                    ) -> Harmoniser:
    """The shipped harmoniser (or the ``.onnx`` file at ``path``)."""
    return Harmoniser(OnnxStepper(path or MODELS_DIR / HARMONISER_FILE, providers))


def load_improviser(path: Path | None = None, providers: Sequence[str] | None = None
                    ) -> Improviser:
    """The shipped improviser (or the ``.onnx`` file at ``path``)."""
    return Improviser(OnnxStepper(path or MODELS_DIR / IMPROVISER_FILE, providers))


def load_forecast(providers: Sequence[str] | None = None) -> tuple[MelodyForecast, str]:
    """The melody forecast of the shipped forecaster, or of the improviser where there is no
    forecaster file; and which it is."""
    path = MODELS_DIR / FORECASTER_FILE
    if path.is_file():
        return MelodyForecast(Improviser(OnnxStepper(path, providers), "forecaster"),
                              chords=False), "forecaster"
    return MelodyForecast(load_improviser(providers=providers)), "improviser"


def load_baseline(path: Path | None = None) -> Baseline:
    """The shipped n-gram baseline (or the ``.npz`` file at ``path``)."""
    from ai_accompany.ngram import load_baseline_file

    path = Path(path or MODELS_DIR / BASELINE_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"no baseline file at {path}; train one with "
                                "python -m ai_accompany.train --model baseline")
    harmoniser, improviser = load_baseline_file(path)
    return Baseline(Harmoniser(harmoniser, "baseline-harmoniser"),
                    Improviser(improviser, "baseline-improviser"))


__all__ = ["MODEL_NAMES", "Baseline", "Harmoniser", "Improviser", "OnnxStepper", "load_baseline",
           "load_harmoniser", "load_improviser", "onnx_providers", "sample"]
