"""How many sources each mix may hold, from how long the ticks take (no I/O, no clock).

A room whose render-and-encode time nears the 20 ms frame is overloaded. The governor watches
each tick's work time and sets a cap on sources per mix: when a tick takes more than
``high_ms``, the cap drops to a fraction of what the mixes hold; after ``calm_ticks`` ticks below
``low_ms`` it rises again by one source at a time, until it is lifted. Every change is counted
so the server can say it is degrading (``/metrics``, ``stats``, the log).
"""

from __future__ import annotations

from dataclasses import dataclass

from hrtf.constants import FRAME_MS


@dataclass
class OverloadGovernor:
    high_ms: float = 0.75 * FRAME_MS
    low_ms: float = 0.4 * FRAME_MS
    calm_ticks: int = 50
    shrink: float = 0.75
    min_sources: int = 2
    #: The cap on sources per mix; None when nothing is culled.
    max_sources: int | None = None
    degradations: int = 0
    _calm: int = 0

    def observe(self, work_ms: float, sources_heard: int) -> int | None:
        """Record a tick's work time; returns the cap for the next tick (None: no cap)."""
        if work_ms > self.high_ms:
            current = self.max_sources if self.max_sources is not None else sources_heard
            self.max_sources = max(self.min_sources, int(current * self.shrink))
            self.degradations += 1
            self._calm = 0
        elif self.max_sources is not None and work_ms < self.low_ms:
            self._calm += 1
            if self._calm >= self.calm_ticks:
                self._calm = 0
                self.max_sources += 1
                if self.max_sources >= sources_heard:
                    self.max_sources = None
        return self.max_sources
