"""The room metronome's clicks fall on exact room samples, whatever the frame (server/tick)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from server.tick.metronome import ACCENT_LEVEL, CLICK_LEVEL, Metronome


def played(metronome: Metronome, frame: int, seconds: float) -> np.ndarray:
    total = int(48_000 * seconds) // frame * frame
    out = np.zeros(total, np.float32)
    for start in range(0, total, frame):
        part = metronome.frame(start, frame)
        if part is not None:
            out[start:start + frame] = part
    return out


def onsets(y: np.ndarray) -> list[int]:
    """First samples of each click (after at least 10 ms of silence)."""
    loud = np.flatnonzero(np.abs(y) > 1e-3)
    return [int(loud[0])] + [int(b) for a, b in itertools.pairwise(loud)
                             if b - a > 480]


@pytest.mark.parametrize("frame", [120, 240, 480, 960])
def test_clicks_fall_on_the_beat_grid_to_the_sample_at_every_frame(frame):
    m = Metronome(bpm=123.0, beats_per_bar=3, accent=True, origin=5_000)
    y = played(m, frame, 4.0)
    found = onsets(y)
    # (the sine starts at zero: its first audible sample is the click's second)
    assert [at - 1 for at in found] == [m.onset(k) for k in range(len(found))]
    assert len(found) == int((len(y) - 5_000) / m.beat_samples) + 1
    # Every third beat, from beat zero, is the accented one.
    peaks = [float(np.abs(y[at:at + 200]).max()) for at in found]
    accented = [k for k, p in enumerate(peaks) if p > (CLICK_LEVEL + ACCENT_LEVEL) / 2]
    assert accented == list(range(0, len(found), 3))


def test_the_same_clicks_at_every_frame_size():
    m = Metronome(bpm=97.0, beats_per_bar=4, accent=False, origin=0)
    reference = played(m, 960, 3.0)
    for frame in (120, 240, 480):
        assert np.array_equal(played(m, frame, 3.0), reference)


def test_nothing_before_beat_zero_and_silence_between_clicks():
    m = Metronome(bpm=60.0, beats_per_bar=4, accent=True, origin=48_000)
    assert m.frame(0, 960) is None and m.frame(47_040, 960) is None
    assert m.frame(48_000 + 2_000, 960) is None  # the click is over after 15 ms
