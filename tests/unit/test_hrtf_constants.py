"""The engine's frame sizes (issue 17): a room ticks at 2.5, 5, 10 or 20 ms."""

from __future__ import annotations

import pytest

from hrtf.constants import FRAME, FRAME_CHOICES_MS, FRAME_MS, SAMPLE_RATE, frame_samples


@pytest.mark.parametrize(("frame_ms", "samples"), [(2.5, 120), (5.0, 240), (10.0, 480),
                                                   (20.0, 960), (5, 240), (20, 960)])
def test_frame_samples_of_each_choice(frame_ms, samples):
    assert frame_samples(frame_ms) == samples
    assert isinstance(frame_samples(frame_ms), int)


def test_the_default_frame_is_one_of_the_choices():
    assert FRAME_MS in FRAME_CHOICES_MS
    assert frame_samples(FRAME_MS) == FRAME == SAMPLE_RATE * FRAME_MS // 1000


@pytest.mark.parametrize("frame_ms", [0, 1.0, 3.0, 40.0, -5.0, float("nan")])
def test_a_frame_outside_the_choices_is_refused_in_words(frame_ms):
    with pytest.raises(ValueError, match=r"choose one of 2\.5, 5, 10, 20 ms"):
        frame_samples(frame_ms)
