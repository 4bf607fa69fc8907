"""Opus packets of a tone, for the data-channel tests (unit and live)."""

from __future__ import annotations

import numpy as np

from hrtf.constants import FRAME, SAMPLE_RATE
from server.media.opus import OpusEncoder


def opus_frames(count: int, half: bool = False, freq_hz: float = 440.0) -> list[bytes]:
    """``count`` mono Opus packets of a ``freq_hz`` tone, a frame each (half a frame with
    ``half``)."""
    samples = FRAME // 2 if half else FRAME
    encoder = OpusEncoder(64_000, channels=1)
    t = np.arange(count * samples) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)
    return [encoder.encode(tone[k * samples:(k + 1) * samples, None]) for k in range(count)]
