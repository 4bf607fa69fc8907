"""Key: the Krumhansl–Schmuckler key-finding algorithm on a long-term chroma.

Each sounding block's chroma (normalised to sum 1) enters an average with an 8 s time constant;
the key is the tonic and mode whose rotated key profile correlates best (Pearson) with it. The
profiles are Temperley's revision of the Krumhansl–Kessler probe-tone ratings (Temperley,
"What's key for key?", Music Perception 17, 1999; "Music and Probability", 2007, table 6.1):
on the harmonic-rich chroma of a C–Am–F–G progression the original ratings put A minor ahead of
C major for seconds at a time (their minor profile rates many scale degrees high), Temperley's
keep C major ahead by 0.18 or more throughout. A key is reported once :data:`SETTLE_S` of sound
has been heard, and changes when another key has led for :data:`HOLD_S`.

Delay, measured by ``tests/unit/test_listen.py``: C major is named once 2 s of C–Am–F–G have been
heard and kept for the rest of the progression; Am–Dm–E–Am comes out as A minor.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Temperley's profiles, tonic first.
MAJOR_PROFILE = (5.0, 2.0, 3.5, 2.0, 4.5, 4.0, 2.0, 4.5, 2.0, 3.5, 1.5, 4.0)
MINOR_PROFILE = (5.0, 2.0, 3.5, 4.5, 2.0, 4.0, 2.0, 4.5, 3.5, 2.0, 1.5, 4.0)
MODES = ("major", "minor")
#: Time constant of the long-term chroma.
MEMORY_S = 8.0
#: Sound heard before a key is named.
SETTLE_S = 2.0
#: A new key must lead this long to replace the named one.
HOLD_S = 1.0
#: Quieter blocks (RMS over the chroma frame, dB full scale) do not count.
SILENCE_DB = -55.0


def key_profiles() -> np.ndarray:
    """(24, 12): rows 0–11 major keys on C..B, rows 12–23 minor keys, each zero-mean."""
    rows = [np.roll(np.array(p), tonic) for p in (MAJOR_PROFILE, MINOR_PROFILE) for tonic in
            range(12)]
    out = np.array(rows)
    return out - out.mean(axis=1, keepdims=True)


@njit(cache=True, nogil=True)
def key_correlations(profiles, chroma, out):
    """Pearson correlation of ``chroma`` with each zero-mean row of ``profiles``."""
    mean = 0.0
    for j in range(12):
        mean += chroma[j]
    mean /= 12.0
    cc = 0.0
    for j in range(12):
        cc += (chroma[j] - mean) ** 2
    for i in range(profiles.shape[0]):
        acc = 0.0
        pp = 0.0
        for j in range(12):
            acc += profiles[i, j] * (chroma[j] - mean)
            pp += profiles[i, j] * profiles[i, j]
        out[i] = acc / math.sqrt(pp * cc + 1e-30)


class KeyDetector:
    """Names the key of the stream, one decision per block."""

    def __init__(self, block_s: float) -> None:
        self._profiles = key_profiles()
        self._alpha = 1.0 - math.exp(-block_s / MEMORY_S)
        self._block_s = block_s
        self._memory = np.zeros(12)
        self._scores = np.zeros(24)
        self._heard_s = 0.0
        self._current = -1
        self._candidate = -1
        self._lead_s = 0.0

    def process(self, chroma: np.ndarray, level_db: float) -> tuple[int | None, str | None, float]:
        """Feed one block's chroma; return ``(tonic, mode, correlation)`` or ``(None, None, 0)``."""
        total = chroma.sum()
        if level_db >= SILENCE_DB and total > 0.0:
            self._memory += self._alpha * (chroma / total - self._memory)
            self._heard_s += self._block_s
        if self._heard_s < SETTLE_S:
            return None, None, 0.0
        key_correlations(self._profiles, self._memory, self._scores)
        best = int(np.argmax(self._scores))
        if self._current < 0:
            self._current = best
        elif best != self._current:
            self._lead_s = self._lead_s + self._block_s if best == self._candidate else 0.0
            self._candidate = best
            if self._lead_s >= HOLD_S:
                self._current = best
                self._lead_s = 0.0
        else:
            self._candidate = -1
            self._lead_s = 0.0
        return self._current % 12, MODES[self._current // 12], float(self._scores[self._current])
