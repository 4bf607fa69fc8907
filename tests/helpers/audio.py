"""Test signals and what is measured of them: noise, tones, band levels and level differences
between the ears of a received (or rendered) stereo mix, band envelopes."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.signal import butter, sosfilt, sosfiltfilt

from hrtf.constants import FRAME, SAMPLE_RATE


def white_noise(seconds: float, seed: int = 7, level: float = 0.1) -> np.ndarray:
    """Gaussian white noise, whole frames long, float32."""
    frames = round(seconds * 48_000 / FRAME)
    return (np.random.default_rng(seed).standard_normal(frames * FRAME) * level).astype(np.float32)


def rms_db(stereo: np.ndarray) -> float:
    return 10 * np.log10(np.mean(stereo.astype(np.float64) ** 2) + 1e-20)


# one tone: its band (a received mix, the first 50 ms left out) ---------------------------------


def band_ild_db(stereo: np.ndarray, freq: float = 2000.0) -> float:
    sos = butter(4, [freq * 0.8, freq * 1.25], btype="band", fs=48_000, output="sos")
    y = sosfilt(sos, stereo.astype(np.float64), axis=0)[2400:]
    return 10 * np.log10(np.mean(y[:, 0] ** 2) / np.mean(y[:, 1] ** 2))


def band_level_db(stereo: np.ndarray, freq: float = 2000.0) -> float:
    sos = butter(4, [freq * 0.8, freq * 1.25], btype="band", fs=48_000, output="sos")
    y = sosfilt(sos, stereo.astype(np.float64), axis=0)[2400:]
    return 10 * np.log10(np.mean(y**2) + 1e-20)


def band_envelope(x: np.ndarray, freq: float) -> np.ndarray:
    """RMS over 2 ms of ``x`` (mono or stereo) in a band around ``freq``, zero phase."""
    sos = butter(4, [freq / 1.15, freq * 1.15], btype="band", fs=SAMPLE_RATE, output="sos")
    y = sosfiltfilt(sos, np.asarray(x, np.float64), axis=0)
    power = y**2 if y.ndim == 1 else (y**2).sum(axis=1)
    # the filter's running sum can leave a value a rounding error below zero after a loud
    # stretch: a square root of that is nan, and one nan makes a median nan
    return np.sqrt(np.maximum(uniform_filter1d(power, 96), 0.0))


# five tones at once: how an HRTF set shows in a mix, band by band ------------------------------

#: The tones a source plays (Hz); band levels are measured around each.
TONES_HZ = (500.0, 1000.0, 2000.0, 4000.0, 6000.0)
#: Opus at 128 kbit/s keeps interaural level differences to about half a decibel; a listener
#: whose rendering did not change must measure the same within this (dB, every band).
SAME_DB = 1.0


def tones(start: int, n: int) -> np.ndarray:
    t = (start + np.arange(n)) / SAMPLE_RATE
    return sum(0.08 * np.sin(2 * np.pi * f * t) for f in TONES_HZ).astype(np.float32)


def band_levels_db(stereo: np.ndarray) -> np.ndarray:
    """Each ear's level (dB) in a band around each of :data:`TONES_HZ`: shape (bands, 2)."""
    out = []
    for f in TONES_HZ:
        sos = butter(4, [f * 0.85, f * 1.18], btype="band", fs=SAMPLE_RATE, output="sos")
        y = sosfilt(sos, stereo.astype(np.float64), axis=0)[2400:]
        out.append(10 * np.log10(np.mean(y**2, axis=0) + 1e-20))
    return np.array(out)


def band_ilds_db(stereo: np.ndarray) -> np.ndarray:
    """Left minus right level (dB) in a band around each of :data:`TONES_HZ`."""
    levels = band_levels_db(stereo)
    return levels[:, 0] - levels[:, 1]
