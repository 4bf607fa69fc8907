"""A mono stream brought down to a lower rate, frame by frame, without clicks at frame edges.

The room sends the AI sidecar the humans' mono downmix at its analysis rate (16 kHz): each
20 ms frame at 48 kHz is low-pass filtered (a 48-tap FIR, cut-off at 0.9 of the new Nyquist
frequency, ``scipy.signal.firwin``) and decimated. The filter's state and the decimation phase
carry over from frame to frame, so the output is the same as decimating the whole stream at
once.
"""

from __future__ import annotations

import numpy as np
import scipy.signal

from hrtf.constants import SAMPLE_RATE


class AnalysisDownmix:
    """A 48 kHz mono stream at ``rate_hz`` (a whole divisor of 48 kHz), frame by frame.

    Parameters
    ----------
    rate_hz : int
        The output rate; ``SAMPLE_RATE // rate_hz`` is the decimation factor.
    """

    def __init__(self, rate_hz: int) -> None:
        if rate_hz <= 0 or SAMPLE_RATE % rate_hz:
            raise ValueError(f"the analysis rate must divide {SAMPLE_RATE} Hz, got {rate_hz}")
        factor = SAMPLE_RATE // rate_hz
        self.factor = factor
        self.taps = scipy.signal.firwin(48, 0.9 / factor).astype(np.float32)
        self._state = np.zeros(len(self.taps) - 1, np.float32)
        self._phase = 0

    def process(self, mono: np.ndarray) -> np.ndarray:
        """The next frame of the stream, ``mono`` float32 at 48 kHz, at ``rate_hz``."""
        filtered, self._state = scipy.signal.lfilter(self.taps, 1.0, mono, zi=self._state)
        out = filtered[self._phase::self.factor]
        self._phase = (self._phase - len(mono)) % self.factor
        return out.astype(np.float32)
