"""Chords: smoothed chroma against 48 chord templates, with hysteresis.

Templates: for each root (12) and quality — ``maj`` (0, 4, 7), ``min`` (0, 3, 7), ``7``
(0, 4, 7, 10), ``dim`` (0, 3, 6) — every chord tone contributes its first six harmonics with
weight :math:`0.6^{h-1}` to the pitch class of harmonic ``h`` (Gómez, "Tonal description of
music audio signals", 2006), because real tones put energy on their fifth and major third too.
The score is the cosine between template and chroma (smoothed with a 120 ms time constant),
times a small prior that lets a plain triad win a near tie with a four-note chord. The named
chord changes when another has scored higher by :data:`MARGIN` for :data:`HOLD_BLOCKS`
consecutive blocks; below :data:`SILENCE_DB` there is no chord.

Delay, measured by ``tests/unit/test_listen.py::test_chords_and_key_of_a_progression``
(C–Am–F–G twice, harmonic tones, one chord per 2 s): the new chord is named in the block that
ends 140 ms after the change (median; the 256 ms chroma frame must hold mostly the new chord),
240 ms for F → G, which passes through G7 while the F still rings in the frame; from 300 ms after
each change every block is right.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

QUALITIES = ("maj", "min", "7", "dim")
INTERVALS = {"maj": (0, 4, 7), "min": (0, 3, 7), "7": (0, 4, 7, 10), "dim": (0, 3, 6)}
PRIOR = {"maj": 1.0, "min": 1.0, "7": 0.97, "dim": 0.95}
HARMONICS = 6
HARMONIC_DECAY = 0.6
#: Chroma smoothing time constant.
SMOOTHING_MS = 60
#: A new chord must beat the current one by this much (cosine) ...
MARGIN = 0.02
#: ... for this many consecutive blocks.
HOLD_BLOCKS = 2
#: Quieter than this (RMS over the chroma frame, dB full scale) is no chord.
SILENCE_DB = -55.0


def harmonic_chroma(pitch_class: int) -> np.ndarray:
    """The chroma of one harmonic tone: harmonics 1..6 with weights 0.6^(h−1)."""
    out = np.zeros(12)
    for h in range(1, HARMONICS + 1):
        out[(pitch_class + round(12 * math.log2(h))) % 12] += HARMONIC_DECAY ** (h - 1)
    return out


def chord_templates() -> tuple[np.ndarray, list[tuple[int, str]], np.ndarray]:
    """``(templates (48, 12) unit rows, [(root, quality)], prior (48,))``."""
    rows, names, prior = [], [], []
    for quality in QUALITIES:
        for root in range(12):
            t = sum(harmonic_chroma((root + i) % 12) for i in INTERVALS[quality])
            rows.append(t / np.linalg.norm(t))
            names.append((root, quality))
            prior.append(PRIOR[quality])
    return np.array(rows), names, np.array(prior)


@njit(cache=True, nogil=True)
def template_scores(templates, chroma, prior, out):
    """``out[i] = prior[i] · cos(templates[i], chroma)`` (templates are unit rows)."""
    norm = 0.0
    for j in range(12):
        norm += chroma[j] * chroma[j]
    norm = math.sqrt(norm) + 1e-30
    for i in range(templates.shape[0]):
        acc = 0.0
        for j in range(12):
            acc += templates[i, j] * chroma[j]
        out[i] = prior[i] * acc / norm


class ChordDetector:
    """Names the chord of the stream, one decision per block."""

    def __init__(self) -> None:
        self._templates, self._names, self._prior = chord_templates()
        self._alpha = 1.0 - math.exp(-1.0 / (SMOOTHING_MS / 20))
        self._smooth = np.zeros(12)
        self._scores = np.zeros(len(self._names))
        self._current = -1
        self._candidate = -1
        self._held = 0

    def process(self, chroma: np.ndarray, level_db: float) -> tuple[int | None, str | None, float]:
        """Feed one block's chroma; return ``(root, quality, score)``, root None for no chord."""
        if level_db < SILENCE_DB:
            self._smooth[:] = 0.0
            self._current = self._candidate = -1
            self._held = 0
            return None, None, 0.0
        total = chroma.sum()
        if total > 0.0:
            self._smooth += self._alpha * (chroma / total - self._smooth)
        template_scores(self._templates, self._smooth, self._prior, self._scores)
        best = int(np.argmax(self._scores))
        current = self._current
        if current < 0 or (
            best != current and self._scores[best] >= self._scores[current] + MARGIN
        ):
            self._held = self._held + 1 if best == self._candidate else 1
            self._candidate = best
            if self._held >= HOLD_BLOCKS:
                self._current = current = best
                self._held = 0
        else:
            self._held = 0
            self._candidate = -1
        if current < 0:
            return None, None, 0.0
        root, quality = self._names[current]
        return root, quality, float(self._scores[current])
