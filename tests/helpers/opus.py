"""Opus test signals: a plucked melody, and packets encoded by PyAV's libopus as aiortc sends
them (music and voice-with-FEC settings)."""

from __future__ import annotations

import fractions

import av
import numpy as np

from hrtf.constants import FRAME, SAMPLE_RATE

TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)


def melody(seconds: float = 3.0, seed: int = 1) -> np.ndarray:
    """Plucked notes, a new one every 200 ms: harmonics under a decaying envelope."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    note = SAMPLE_RATE // 5
    f0 = np.repeat(rng.choice([196, 220, 247, 262, 294, 330, 349, 392], n // note + 1), note)[:n]
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    envelope = np.tile(np.exp(-np.arange(note) / 4000), n // note + 1)[:n]
    tone = np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.3 * np.sin(3 * phase)
    return (0.3 * envelope * tone).astype(np.float32)


def encode(signal: np.ndarray, bitrate: int, **options: str) -> list[bytes]:
    """``signal`` as 20 ms Opus packets from PyAV's libopus encoder (as aiortc sends them)."""
    codec = av.CodecContext.create("libopus", "w")
    codec.bit_rate = bitrate
    codec.format, codec.layout, codec.sample_rate = "s16", "mono", SAMPLE_RATE
    codec.time_base = TIME_BASE
    codec.options = {"frame_duration": "20", **options}
    pcm = np.round(signal * 32767).astype(np.int16)
    packets = []
    for k in range(len(signal) // FRAME):
        frame = av.AudioFrame.from_ndarray(pcm[k * FRAME:(k + 1) * FRAME].reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, k * FRAME, TIME_BASE
        packets += [bytes(p) for p in codec.encode(frame)]
    return packets


MUSIC = {"bitrate": 128_000, "application": "lowdelay"}  # CELT only: no FEC possible
VOICE_FEC = {"bitrate": 32_000, "application": "voip", "fec": "1", "packet_loss": "20"}
