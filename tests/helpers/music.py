"""A player's melody for the AI musician to hear: a tune in C major on the electric piano."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ai_accompany.online import BEAT_ZERO, melody_events, step_samples
from ai_accompany.tunes import Tune
from dsp.synth import Synth
from hrtf.constants import FRAME

#: Up and down the C major scale and back to the tonic, a note a beat.
LINE = [60, 62, 64, 65, 67, 69, 71, 72, 71, 69, 67, 65, 64, 62, 60, 67]


def c_major_tune(bpm: float, plays_bars: int = 4, rests_bars: int = 0) -> np.ndarray:
    """``plays_bars`` bars of the tune in quarter notes, then ``rests_bars`` of silence, as
    mono float32 at 48 kHz, whole frames long (it loops in time)."""
    steps = 16 * (plays_bars + rests_bars)
    pitch, onset = np.full(steps, -1), np.zeros(steps, bool)
    for beat in range(4 * plays_bars):
        pitch[4 * beat:4 * beat + 4] = LINE[beat % len(LINE)]
        onset[4 * beat] = True
    synth = Synth("epiano")
    tune = Tune("scale", "chorale", bpm, pitch, onset, 0, "major")
    synth.schedule([replace(e, start=e.start - BEAT_ZERO) for e in melody_events(tune)])
    n = round(steps * step_samples(tune) / FRAME) * FRAME
    return np.concatenate([synth.render(k, FRAME) for k in range(0, n, FRAME)])
