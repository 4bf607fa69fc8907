"""How many sources each mix may hold, from how long the ticks take (no I/O, no clock).

A room whose render-and-encode time nears its frame (20 ms by default) is overloaded. The
governor watches each tick's work time and sets a cap on sources per mix:

- **degrade** when the room is overloaded, not when one tick was slow: ``slow_ticks`` of the
  last ``window`` ticks over ``high_ms`` (one stall, even past the frame, costs a late tick
  that the deadline clock absorbs, not a cut). The cap drops to ``shrink`` of what the mixes
  hold, and the window starts afresh, so the next cut waits for fresh evidence;
- **recover** after ``calm_ticks`` ticks in a row none of them over ``high_ms``: the cap rises
  by a quarter (at least one source), and is lifted once it holds every source. A room that
  runs near its limit may so be cut and given back more than once; each cut and each return
  fades (the renderer crossfades), and both are counted.

A room with no more sources than ``min_sources`` has nothing to cull and is never capped. One
slow tick on a busy machine (another process took the core for a moment) costs nothing;
a room that cannot keep up loses its least audible sources within a few ticks rather than
falling behind. Every change is counted so the server can say it is degrading (``/metrics``,
``stats``, the log).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from hrtf.constants import FRAME_MS


@dataclass
class OverloadGovernor:
    high_ms: float = 0.75 * FRAME_MS
    window: int = 10
    slow_ticks: int = 3
    calm_ticks: int = 50
    shrink: float = 0.75
    grow: float = 0.25
    min_sources: int = 2
    #: The cap on sources per mix; None when nothing is culled.
    max_sources: int | None = None
    degradations: int = 0
    _calm: int = 0
    _recent: deque = field(default_factory=deque, repr=False)

    @classmethod
    def for_frame(cls, frame_ms: float, **kwargs: Any) -> OverloadGovernor:
        """A governor for ticks of ``frame_ms``: over ``0.75 · frame_ms`` is slow, and its
        windows last as long as at 20 ms (3 slow ticks in 200 ms degrade, 1 s calm recovers),
        counted in ticks of that frame."""
        scale = max(1, round(FRAME_MS / frame_ms))
        return cls(high_ms=0.75 * frame_ms, window=10 * scale, slow_ticks=3 * scale,
                   calm_ticks=50 * scale, **kwargs)

    def observe(self, work_ms: float, sources_heard: int) -> int | None:
        """Record a tick's work time; returns the cap for the next tick (None: no cap)."""
        slow = work_ms > self.high_ms
        self._recent.append(slow)
        if len(self._recent) > self.window:
            self._recent.popleft()
        if sum(self._recent) >= self.slow_ticks:
            self._recent.clear()
            self._calm = 0
            current = self.max_sources if self.max_sources is not None else sources_heard
            cap = max(self.min_sources, int(current * self.shrink))
            if cap < sources_heard and cap != self.max_sources:  # a cut that culls something
                self.max_sources = cap
                self.degradations += 1
        elif slow:
            self._calm = 0
        else:
            self._calm += 1
            if self.max_sources is not None and self._calm >= self.calm_ticks:
                self._calm = 0
                self.max_sources += max(1, int(self.max_sources * self.grow))
                if self.max_sources >= sources_heard:
                    self.max_sources = None
        return self.max_sources
