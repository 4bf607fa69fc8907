"""Safety limiter for each listener's stereo output.

A peak limiter with instant attack and exponential release: the gain drops at once to keep
``|x| ≤ threshold`` and recovers with time constant :data:`RELEASE_MS`. It adds no latency (no
look-ahead); below the threshold it is exactly transparent. It is a safety net against clipping
when many loud sources meet in one mix, not a mastering tool.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from hrtf.constants import SAMPLE_RATE

THRESHOLD = 0.98
RELEASE_MS = 80.0


@njit(parallel=True, cache=True, nogil=True)
def _limit(block, gain, threshold, release):
    n_l, n_t, n_c = block.shape
    for l in prange(n_l):
        g = gain[l]
        for t in range(n_t):
            peak = 0.0
            finite = True
            for c in range(n_c):
                v = block[l, t, c]
                if not math.isfinite(v):
                    finite = False
                peak = max(peak, abs(v))
            if not finite:  # never pass NaN or infinity to a listener: silence instead
                for c in range(n_c):
                    block[l, t, c] = 0.0
                continue
            target = min(1.0, threshold / max(peak, 1e-30))
            g = target if target < g else g + (target - g) * release
            for c in range(n_c):
                block[l, t, c] *= g
        gain[l] = g


class SafetyLimiter:
    """Limits ``(L, T, C)`` blocks in place; keeps each listener's gain between calls."""

    def __init__(self, listeners: int, threshold: float = THRESHOLD) -> None:
        self.threshold = threshold
        self.gain = np.ones(listeners, np.float64)
        self._release = 1.0 - math.exp(-1.0 / (RELEASE_MS * 1e-3 * SAMPLE_RATE))

    def reset(self, listener: int) -> None:
        self.gain[listener] = 1.0

    @property
    def reduction_db(self) -> np.ndarray:
        """Current gain reduction per listener in dB (0 when idle)."""
        return -20.0 * np.log10(self.gain)

    def process(self, block: np.ndarray) -> np.ndarray:
        _limit(block, self.gain, self.threshold, self._release)
        return block
