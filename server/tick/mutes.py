"""Members who muted themselves (``mute_self``), silenced in the tick's source frames.

The tick applies :meth:`MuteFades.apply` to its decoded frames before anything hears them (the
mixes, the AI musician's ears, a recording, the levels): a muted member's rows are zero; a mute
or an unmute fades linearly over one frame, so nobody hears a click.
"""

from __future__ import annotations

import numpy as np


class MuteFades:
    """Each slot's gain after its member's mute, as the last tick left it (1 heard, 0 muted)."""

    def __init__(self, capacity: int, frame: int) -> None:
        self.frame = frame
        self.gain = np.ones(capacity, np.float32)

    def apply(self, audio: np.ndarray, muted: np.ndarray | None) -> None:
        """Silence ``audio``'s rows (slot × ``frame`` samples, in place) of the slots
        ``muted`` holds (None: nobody is muted); a slot whose mute changed fades."""
        target = np.ones_like(self.gain) if muted is None else (~muted).astype(np.float32)
        audio[(self.gain == 0.0) & (target == 0.0)] = 0.0
        for slot in np.flatnonzero(self.gain != target):
            audio[slot] *= np.linspace(self.gain[slot], target[slot], self.frame,
                                       dtype=np.float32)
        self.gain[:] = target
