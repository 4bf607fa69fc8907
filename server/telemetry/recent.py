"""A bounded window of recent measurements and their percentiles (no I/O, no clock)."""

from __future__ import annotations

from collections import deque

import numpy as np

WINDOW = 500


class Recent:
    """The last ``window`` values added (for example, ten seconds of 20 ms ticks)."""

    def __init__(self, window: int = WINDOW) -> None:
        self._values: deque[float] = deque(maxlen=window)
        self.count = 0

    def add(self, value: float) -> None:
        self._values.append(value)
        self.count += 1

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile of the window (0 when empty)."""
        values = list(self._values)  # (a copy in one step: another thread may be adding)
        return float(np.percentile(values, q)) if values else 0.0

    def values(self) -> np.ndarray:
        """The window, oldest first."""
        return np.array(list(self._values), np.float64)

    def __len__(self) -> int:
        return len(self._values)
