"""The safety limiter: transparent below its threshold, a ceiling above it."""

from __future__ import annotations

import numpy as np

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
