"""Metronome and count-in: click times on the room clock and the click the server plays.

The server schedules ``click_sound()`` at each time of ``count_in(...)``; a listener given the same
``fixed_bpm`` then locks its phase to the players' first onset after it.
"""

from __future__ import annotations

import math

import numpy as np

from ai_accompany.listen.constants import ROOM_RATE

#: The click: a decaying sine burst, higher and louder on the accent (the bar's first beat).
CLICK_HZ = 1_500.0
ACCENT_HZ = 2_500.0
CLICK_MS = 30
DECAY_MS = 6.0
ATTACK_MS = 0.5


def count_in(bpm: float, beats: int, room_sample_start: int) -> list[int]:
    """Room samples of ``beats`` clicks at ``bpm``, the first at ``room_sample_start``.

    Raises ``ValueError`` for a tempo outside 20–400 BPM or a negative count.
    """
    if not (isinstance(bpm, int | float) and math.isfinite(bpm) and 20.0 <= bpm <= 400.0):
        raise ValueError(f"bpm must be a number from 20 to 400; got {bpm!r}")
    if not isinstance(beats, int) or beats < 0:
        raise ValueError(f"beats must be a non-negative integer; got {beats!r}")
    period = 60.0 * ROOM_RATE / bpm
    return [int(room_sample_start) + round(i * period) for i in range(beats)]


def click_sound(accent: bool = False, sample_rate: int = ROOM_RATE,
                level: float = 0.5) -> np.ndarray:
    """One click, float32 mono at ``sample_rate``: a sine burst with a 0.5 ms attack and a 6 ms
    exponential decay, 30 ms long, peak ``level`` (×1.4 on the accent, at most 1)."""
    n = sample_rate * CLICK_MS // 1000
    t = np.arange(n) / sample_rate
    hz = ACCENT_HZ if accent else CLICK_HZ
    envelope = np.minimum(1.0, t / (ATTACK_MS / 1000)) * np.exp(-t / (DECAY_MS / 1000))
    peak = min(1.0, level * (1.4 if accent else 1.0))
    return (peak * envelope * np.sin(2 * np.pi * hz * t)).astype(np.float32)
