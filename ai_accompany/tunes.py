"""Held-out tunes for the online evaluation (:mod:`ai_accompany.online`), style by style.

A :class:`Tune` is a monophonic melody on the 16th-note grid, with its key, tempo and the style
an accompanist should take for it. Three sets, each never trained on:

- ``chorale``: the soprano lines of the held-out Bach chorales (``models/heldout.npz``);
- ``folk``: reels and hornpipes from Ryan's Mammoth Collection in music21's corpus, melody
  only (the corpus has no chord symbols for them; ``models/heldout_folk.npz``, written by
  ``python -m ai_accompany.train.folk``);
- ``pop`` and ``blues`` (:func:`generated`): progressions written here (I–V–vi–IV and its
  kin, the 12-bar blues in major and minor, swung), melodies drawn over them from a seed:
  chord tones on the strong beats, steps of the scale between, phrases of two bars that end
  on a long note and a rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ai_accompany.models import HELDOUT_FILE, MODELS_DIR
from ai_accompany.texture import STEPS_PER_BAR
from ai_accompany.vocab import FIRST_PITCH_TOKEN, MODES, PITCH_LO, SCALES, sounding

FOLK_FILE = "heldout_folk.npz"
SETS = ("chorale", "folk", "pop", "blues")


@dataclass(frozen=True)
class Tune:
    """A melody: ``pitch[s]`` is the MIDI pitch sounding at 16th step ``s`` (−1: a rest) and
    ``onset[s]`` whether a note starts there; step 0 lies ``first_step`` 16ths after a
    downbeat. ``chords`` holds each step's chord symbol as (root pitch class, quality), root
    −1 where none is given."""

    name: str
    style: str
    bpm: float
    pitch: np.ndarray
    onset: np.ndarray
    key_tonic: int
    key_mode: str
    first_step: int = 0
    swing: bool = False
    chords: np.ndarray | None = field(default=None, repr=False)

    @property
    def steps(self) -> int:
        return len(self.pitch)

    def notes(self) -> list[tuple[int, int, int]]:
        """(first step, steps, pitch) of each note."""
        out, s = [], 0
        while s < self.steps:
            if self.pitch[s] < 0:
                s += 1
                continue
            end = s + 1
            while end < self.steps and not self.onset[end] and self.pitch[end] == self.pitch[s]:
                end += 1
            out.append((s, end - s, int(self.pitch[s])))
            s = end
        return out


def from_tokens(name: str, style: str, bpm: float, tokens: np.ndarray, key_tonic: int,
                key_mode: str, first_step: int = 0, **kw) -> Tune:
    """A tune from one voice's tokens (:mod:`ai_accompany.vocab`)."""
    tokens = np.asarray(tokens, np.int64)
    snd = sounding(tokens)
    pitch = np.where(snd >= FIRST_PITCH_TOKEN, snd - FIRST_PITCH_TOKEN + PITCH_LO, -1)
    return Tune(name, style, bpm, pitch, tokens >= FIRST_PITCH_TOKEN, key_tonic, key_mode,
                first_step % STEPS_PER_BAR, **kw)


def chorales(models_dir: Path = MODELS_DIR, bpm: float = 84.0) -> list[Tune]:
    """The held-out chorales' soprano lines."""
    from ai_accompany.train.data import load_npz

    data = load_npz(models_dir / HELDOUT_FILE)
    out = []
    for i in range(len(data)):
        c = data.chorale(i)
        out.append(from_tokens(c["id"], "chorale", bpm, c["tokens"][:, 0], c["key_tonic"],
                               MODES[c["key_mode"]], int(c["beat_pos"][0])))
    return out


def folk(models_dir: Path = MODELS_DIR) -> list[Tune]:
    """The held-out folk tunes (empty when their file is not there)."""
    path = models_dir / FOLK_FILE
    if not path.is_file():
        return []
    with np.load(path) as z:
        offsets = z["offsets"]
        out = []
        for i, name in enumerate(z["ids"]):
            a, b = offsets[i], offsets[i + 1]
            out.append(from_tokens(str(name), "folk", float(z["bpm"][i]), z["tokens"][a:b],
                                   int(z["key_tonic"][i]), MODES[int(z["key_mode"][i])],
                                   int(z["first_step"][i]), chords=z["chords"][a:b]))
    return out


# generated: progressions written here, melodies drawn over them -----------------------------

#: Degrees of the scale (0-based) and chord qualities, a chord per bar.
_POP = [
    [(0, "maj"), (4, "maj"), (5, "min"), (3, "maj")],  # I V vi IV
    [(0, "maj"), (5, "min"), (3, "maj"), (4, "maj")],  # I vi IV V
    [(5, "min"), (3, "maj"), (0, "maj"), (4, "maj")],  # vi IV I V
    [(0, "maj"), (3, "maj"), (5, "min"), (4, "maj")],  # I IV vi V
]
_BLUES_MAJOR = [(0, "dom7")] * 4 + [(3, "dom7")] * 2 + [(0, "dom7")] * 2 + [
    (4, "dom7"), (3, "dom7"), (0, "dom7"), (4, "dom7")]
_BLUES_MINOR = [(0, "min")] * 4 + [(3, "min")] * 2 + [(0, "min")] * 2 + [
    (5, "maj"), (4, "dom7"), (0, "min"), (4, "dom7")]
_TEMPLATES = {"maj": (0, 4, 7), "min": (0, 3, 7), "dom7": (0, 4, 7, 10)}
#: Rhythms of a bar: (first step, steps) of each note; the phrase's last bar ends in a rest.
_RHYTHMS = [
    [(0, 4), (4, 4), (8, 4), (12, 4)],
    [(0, 2), (2, 2), (4, 4), (8, 4), (12, 4)],
    [(0, 6), (6, 2), (8, 4), (12, 4)],
    [(0, 4), (4, 2), (6, 2), (8, 8)],
    [(0, 2), (2, 2), (4, 2), (6, 2), (8, 4), (12, 4)],
]
_ENDINGS = [[(0, 4), (4, 4), (8, 4)], [(0, 8)], [(0, 4), (4, 8)]]


def _scale_degree_pc(tonic: int, mode: str, degree: int) -> int:
    scale = (0, 2, 4, 5, 7, 9, 11) if mode == "major" else (0, 2, 3, 5, 7, 8, 10)
    return (tonic + scale[degree % 7]) % 12


def _draw_melody(rng: np.random.Generator, bars: list[tuple[int, str]], tonic: int, mode: str
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    steps = len(bars) * STEPS_PER_BAR
    pitch = np.full(steps, -1, np.int64)
    onset = np.zeros(steps, bool)
    chords = np.full((steps, 2), -1, np.int64)
    scale = [(tonic + d) % 12 for d in SCALES[mode]] if mode == "major" else [
        (tonic + d) % 12 for d in (0, 2, 3, 5, 7, 8, 10)]
    last = 60 + (tonic + 4) % 12
    for b, (root, quality) in enumerate(bars):
        chord_pcs = {(root + d) % 12 for d in _TEMPLATES[quality]}
        chords[b * STEPS_PER_BAR:(b + 1) * STEPS_PER_BAR] = (root, ("maj", "min", "dom7")
                                                             .index(quality))
        ending = b % 2 == 1
        rhythm = (_ENDINGS if ending else _RHYTHMS)[rng.integers(len(_ENDINGS if ending
                                                                      else _RHYTHMS))]
        for start, length in rhythm:
            strong = start % 8 == 0
            pcs = chord_pcs if strong or ending else set(scale)
            candidates = [p for p in range(last - 5, last + 6) if p % 12 in pcs and 57 <= p <= 81]
            candidates = candidates or [p for p in range(57, 82) if p % 12 in pcs]
            near = np.array([abs(p - last) for p in candidates], float)
            weights = np.exp(-near / 2.0)
            last = int(rng.choice(candidates, p=weights / weights.sum()))
            s = b * STEPS_PER_BAR + start
            pitch[s:s + length] = last
            onset[s] = True
    return pitch, onset, chords


def generated(style: str, count: int = 8, seed: int = 19) -> list[Tune]:
    """``count`` tunes of ``style`` (``pop`` or ``blues``), 16 or 24 bars each."""
    if style not in ("pop", "blues"):
        raise ValueError(f"generated tunes are pop or blues, got {style!r}")
    rng = np.random.default_rng([seed, 0 if style == "pop" else 1])
    out = []
    for i in range(count):
        tonic = int(rng.integers(12))
        if style == "pop":
            progression = _POP[i % len(_POP)]
            mode, bpm = "major", float(rng.choice([96.0, 104.0, 112.0, 120.0]))
            degrees = progression * 4
            bars = [(_scale_degree_pc(tonic, mode, d), q) for d, q in degrees]
        else:
            mode = "major" if i % 2 == 0 else "minor"
            form = _BLUES_MAJOR if mode == "major" else _BLUES_MINOR
            bpm = float(rng.choice([84.0, 96.0, 108.0]))
            bars = [(_scale_degree_pc(tonic, mode, d), q) for d, q in form * 2]
        pitch, onset, chords = _draw_melody(rng, bars, tonic, mode)
        out.append(Tune(f"{style}-{i + 1}", style, bpm, pitch, onset, tonic, mode,
                        swing=style == "blues", chords=chords))
    return out


def load_set(name: str, limit: int | None = None, models_dir: Path = MODELS_DIR) -> list[Tune]:
    """One of :data:`SETS`, its first ``limit`` tunes."""
    if name == "chorale":
        tunes = chorales(models_dir)
    elif name == "folk":
        tunes = folk(models_dir)
    elif name in ("pop", "blues"):
        tunes = generated(name)
    else:
        raise ValueError(f"no tune set {name!r}: one of {', '.join(SETS)}")
    return tunes[:limit] if limit else tunes
