"""The room clock's arithmetic: a deadline schedule for a room's ticks, one per frame (20 ms by
default; 10, 5 or 2.5 ms in low-latency rooms) (no I/O, time injected).

Tick ``k`` is due at ``start + k · period``. Deadlines come from the tick number, never from
"now + period", so the schedule cannot drift. A tick that starts after its deadline is *late*
(counted); if the clock falls more than ``max_catch_up`` ticks behind (the process was
suspended, the machine overloaded) the missed ticks are *skipped* and counted, and the schedule
resumes from the present: a room never plays catch-up for seconds, and never skips silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hrtf.constants import FRAME_MS

#: How far behind (ms) a clock may fall and still play the missed ticks at once: three 20 ms
#: ticks.
CATCH_UP_MS = 60.0


@dataclass
class TickSchedule:
    """Deadline schedule of one room clock; all times in seconds on one monotonic clock."""

    start: float
    period: float = FRAME_MS / 1000
    max_catch_up: int = 3
    next_tick: int = 0
    late_ticks: int = 0
    skipped_ticks: int = 0
    #: How late the last tick started (seconds, ≥ 0).
    last_lateness: float = 0.0
    _resync_base: int = field(default=0, repr=False)

    @classmethod
    def for_frame(cls, start: float, frame_ms: float, **kwargs: Any) -> TickSchedule:
        """A schedule of ``frame_ms`` ticks that catches up :data:`CATCH_UP_MS` at most."""
        catch_up = max(3, round(CATCH_UP_MS / frame_ms))
        return cls(start=start, period=frame_ms / 1000, max_catch_up=catch_up, **kwargs)

    def deadline(self, tick: int) -> float:
        return self.start + tick * self.period

    def seconds_until_next(self, now: float) -> float:
        """How long to sleep before the next tick is due (≤ 0: run it now)."""
        return self.deadline(self.next_tick) - now

    def shift(self, seconds: float) -> None:
        """Move every later deadline by ``seconds`` (negative: earlier), keeping the period:
        the clock's phase, not its rate (see :mod:`server.tick.phase`)."""
        self.start += seconds

    def begin_tick(self, now: float) -> int:
        """Claim the tick that is due at ``now``; returns its number.

        Call when :meth:`seconds_until_next` is ≤ 0. Counts lateness, and skips (and counts)
        ticks when more than ``max_catch_up`` are overdue.
        """
        behind = int((now - self.deadline(self.next_tick)) / self.period + 1e-9)
        if behind > self.max_catch_up:
            self.skipped_ticks += behind
            self.next_tick += behind
        tick = self.next_tick
        self.last_lateness = max(0.0, now - self.deadline(tick))
        if self.last_lateness > self.period / 2:
            self.late_ticks += 1
        self.next_tick += 1
        return tick
