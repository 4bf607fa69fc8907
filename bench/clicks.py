"""The test click: a 2 ms, 2 kHz burst every 500 ms, and how to find it again.

A click leaves at a known sample of the sender's stream; the receiver's stream is searched by
cross-correlation with the click itself, so its arrival is found to the sample.
"""

from __future__ import annotations

import numpy as np

from hrtf.constants import FRAME, SAMPLE_RATE

CLICK_EVERY = SAMPLE_RATE // 2
CLICK_LEN = 96
CLICK_HZ = 2000.0
TEMPLATE = (0.5 * np.sin(2 * np.pi * CLICK_HZ * np.arange(CLICK_LEN) / SAMPLE_RATE)).astype(
    np.float32)


def clicks(start: int, n: int) -> np.ndarray:
    """Samples ``start .. start + n`` of the click track (a signal for :class:`SignalTrack`)."""
    t = start + np.arange(n)
    burst = 0.5 * np.sin(2 * np.pi * CLICK_HZ * t / SAMPLE_RATE)
    return np.where(t % CLICK_EVERY < CLICK_LEN, burst, 0.0).astype(np.float32)


def sent_click_times(sent_at: np.ndarray, first_frame: int = 0,
                     frame: int = FRAME) -> list[float]:
    """When each click's first sample was handed over: frame time + offset / rate (frames of
    ``frame`` samples)."""
    out = []
    total = len(sent_at) * frame
    for onset in range(0, total, CLICK_EVERY):
        k, offset = divmod(onset, frame)
        if k >= first_frame:
            out.append(float(sent_at[k]) + offset / SAMPLE_RATE)
    return out


def stream_times(frame_lengths: np.ndarray, frame_times: np.ndarray) -> np.ndarray:
    """The time of every received sample: its frame's arrival plus its offset in the frame."""
    starts = np.repeat(frame_times, frame_lengths)
    offsets = np.arange(frame_lengths.sum()) - np.repeat(np.cumsum(frame_lengths) - frame_lengths,
                                                         frame_lengths)
    return starts + offsets / SAMPLE_RATE


def found_click_times(audio: np.ndarray, times: np.ndarray, sent: list[float],
                      window_s: float = 0.4, min_ratio: float = 0.3) -> list[tuple[float, float]]:
    """``(sent, heard)`` pairs: each sent click located in ``audio`` by cross-correlation.

    ``audio`` is mono; ``times`` its per-sample times. A click is searched for from its sending
    time up to ``window_s`` later; the correlation peak must reach ``min_ratio`` of the
    template's own energy times the window's peak amplitude, or the click counts as lost.
    """
    pairs = []
    for t_sent in sent:
        lo, hi = np.searchsorted(times, [t_sent, t_sent + window_s])
        segment = audio[lo:hi]
        if len(segment) < CLICK_LEN * 2:
            continue
        xc = np.correlate(segment, TEMPLATE, mode="valid")
        peak = int(np.argmax(np.abs(xc)))
        level = np.abs(segment).max()
        if level <= 0 or abs(xc[peak]) < min_ratio * level * np.sum(np.abs(TEMPLATE)) * 0.5:
            continue
        pairs.append((t_sent, float(times[lo + peak])))
    return pairs


def delay_summary(delays_ms: list[float]) -> dict:
    """Count and percentiles (ms) of click delays."""
    d = np.asarray(delays_ms)
    if not len(d):
        return {"clicks": 0}
    return {"clicks": len(d), "p50": round(float(np.percentile(d, 50)), 2),
            "p95": round(float(np.percentile(d, 95)), 2),
            "p99": round(float(np.percentile(d, 99)), 2),
            "min": round(float(d.min()), 2), "max": round(float(d.max()), 2)}
