"""pytest-benchmark for the listener: the cost of one 20 ms block of the analysis downmix.

Run with ``make bench``; under ``make test`` each case runs once as a smoke test (benchmarks
disabled), asserting nothing about speed. The signal is a drum pattern under a chord and a
melody, so every stage works: onsets and the beat tracker's corrections, chroma, YIN.
"""

from __future__ import annotations

import numpy as np
import pytest

from ai_accompany.listen import Analysis, Listener
from ai_accompany.listen.constants import BLOCK

RATE = 16_000


def _music(seconds: float = 8.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(round(seconds * RATE)) / RATE
    out = rng.standard_normal(t.shape[0]) * 1e-3
    for midi in (48, 60, 64, 67):  # C major
        out += 0.05 * np.sin(2 * np.pi * 440 * 2 ** ((midi - 69) / 12) * t)
    beat = np.arange(round(0.015 * RATE)) / RATE
    hit = rng.standard_normal(beat.shape[0]) * 0.3 * np.exp(-beat / 0.004)
    for start in np.arange(0.5, seconds - 0.1, 0.3):  # eighths at 100 BPM
        i = round(start * RATE)
        out[i:i + hit.shape[0]] += hit
    melody = 440 * 2 ** ((72 + 2 * np.floor(t * 4 % 4) - 69) / 12)
    out += 0.1 * np.sin(2 * np.pi * np.cumsum(melody) / RATE)
    return out.astype(np.float32)


@pytest.mark.parametrize("fixed_bpm", [None, 100.0], ids=["follow", "fixed"])
def test_listener_block(benchmark, fixed_bpm):
    music = _music()
    listener = Listener(fixed_bpm=fixed_bpm)
    blocks = music.shape[0] // BLOCK
    for i in range(blocks // 2):  # warm up: compiled, locked
        listener.process(music[i * BLOCK:(i + 1) * BLOCK], i * 960)
    state = {"i": blocks // 2}

    def step():
        i = state["i"] % blocks
        state["i"] += 1
        return listener.process(music[i * BLOCK:(i + 1) * BLOCK], state["i"] * 960)

    assert isinstance(benchmark(step), Analysis)
