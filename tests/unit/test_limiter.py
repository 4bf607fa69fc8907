"""The safety limiter: transparent below its threshold, a ceiling above it."""

from __future__ import annotations

import numpy as np
import pytest

from dsp.limiter import THRESHOLD, SafetyLimiter


def test_quiet_blocks_pass_unchanged(rng):
    block = (rng.standard_normal((3, 960, 2)) * 0.1).astype(np.float32)
    out = SafetyLimiter(3).process(block.copy())
    np.testing.assert_array_equal(out, block)


def test_loud_blocks_never_exceed_the_threshold_and_gain_recovers(rng):
    lim = SafetyLimiter(1)
    loud = (rng.standard_normal((1, 960, 2)) * 3.0).astype(np.float32)
    assert np.abs(lim.process(loud)).max() <= THRESHOLD + 1e-6
    assert lim.reduction_db[0] > 6.0
    quiet = np.full((1, 960, 2), 0.01, np.float32)
    for _ in range(50):  # one second
        lim.process(quiet.copy())
    assert lim.reduction_db[0] < 0.01


@pytest.mark.parametrize("frame", [120, 240, 480])
def test_a_signal_is_limited_alike_in_frames_of_any_size(rng, frame):
    """The gain follows the signal sample by sample, whatever the frame it arrives in."""
    loud = (rng.standard_normal((2, 9600, 2)) * np.linspace(0.2, 3.0, 9600)[None, :, None])
    loud = loud.astype(np.float32)
    default, short = SafetyLimiter(2), SafetyLimiter(2)
    a = np.concatenate([default.process(loud[:, k:k + 960].copy())
                        for k in range(0, 9600, 960)], axis=1)
    b = np.concatenate([short.process(loud[:, k:k + frame].copy())
                        for k in range(0, 9600, frame)], axis=1)
    np.testing.assert_array_equal(a, b)
