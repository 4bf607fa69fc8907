"""A room clock's counters, as ``/metrics`` sums them (no I/O; the engine is not imported, so
the front of ``serve --workers N`` may import this too)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.tick.runner import RoomRunner


@dataclass(frozen=True)
class ClockCounts:
    """A room clock's counters (the hub keeps the sum of the closed rooms': /metrics counters
    never go down)."""

    ticks: int = 0
    overruns: int = 0
    late_ticks: int = 0
    skipped_ticks: int = 0
    degradations: int = 0
    culled_pairs: int = 0
    phase_shifts: int = 0
    tick_errors: int = 0
    rooms_failed: int = 0

    def __add__(self, other: ClockCounts) -> ClockCounts:
        return ClockCounts(*(a + b for a, b in zip(dataclasses.astuple(self),
                                                   dataclasses.astuple(other), strict=True)))


def clock_counts(runner: RoomRunner) -> ClockCounts:
    """What a room's clock has counted so far."""
    schedule, aligner = runner.schedule, runner.aligner
    return ClockCounts(ticks=runner.stats.ticks, overruns=runner.stats.overruns,
                       late_ticks=schedule.late_ticks if schedule else 0,
                       skipped_ticks=schedule.skipped_ticks if schedule else 0,
                       degradations=runner.governor.degradations,
                       culled_pairs=runner.culled_pairs,
                       phase_shifts=aligner.shifts if aligner else 0,
                       tick_errors=runner.failures.total, rooms_failed=int(runner.gave_up))
