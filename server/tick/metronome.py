"""The room's metronome on the room clock: clicks at exact room samples.

Beat ``k`` starts at room sample ``origin + round(k · 60 · 48000 / bpm)`` (beats before zero do
not sound); the first beat of each bar is accented (higher and louder) when asked. A click is a
short sine burst with a fast exponential decay: it starts on its sample, so a listener can time
it to the sample. :meth:`Metronome.frame` gives one tick's worth, on the tick thread: a few
array operations, and a Python step per beat in the frame (one, now and then two).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hrtf.constants import SAMPLE_RATE

CLICK_S = 0.015
CLICK_HZ, ACCENT_HZ = 1500.0, 2500.0
CLICK_LEVEL, ACCENT_LEVEL = 0.25, 0.35
DECAY_S = 0.003


def click(freq_hz: float, level: float) -> np.ndarray:
    t = np.arange(round(CLICK_S * SAMPLE_RATE)) / SAMPLE_RATE
    return (level * np.sin(2 * np.pi * freq_hz * t) * np.exp(-t / DECAY_S)).astype(np.float32)


@dataclass
class Metronome:
    """Clicks at ``bpm`` from room sample ``origin`` (beat zero, a downbeat)."""

    bpm: float
    beats_per_bar: int
    accent: bool
    origin: int
    _clicks: tuple[np.ndarray, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._clicks = (click(CLICK_HZ, CLICK_LEVEL), click(ACCENT_HZ, ACCENT_LEVEL))

    @property
    def beat_samples(self) -> float:
        return 60.0 * SAMPLE_RATE / self.bpm

    def onset(self, k: int) -> int:
        """The room sample beat ``k`` starts at."""
        return self.origin + round(k * self.beat_samples)

    def frame(self, start: int, n: int) -> np.ndarray | None:
        """The clicks sounding in room samples ``[start, start + n)``, or None (silence)."""
        length = len(self._clicks[0])
        first = max(0, math.ceil((start - length + 1 - self.origin) / self.beat_samples) - 1)
        last = math.floor((start + n - 1 - self.origin) / self.beat_samples)
        out = None
        for k in range(first, last + 1):
            at = self.onset(k) - start
            if at >= n or at + length <= 0:
                continue
            sound = self._clicks[int(self.accent and k % self.beats_per_bar == 0)]
            if out is None:
                out = np.zeros(n, np.float32)
            lo, hi = max(at, 0), min(at + length, n)
            out[lo:hi] += sound[lo - at:hi - at]
        return out
