"""The room clock's deadline schedule."""

from __future__ import annotations

import pytest

from server.tick.clock import TickSchedule


def run(schedule: TickSchedule, wakeups: list[float]) -> list[int]:
    return [schedule.begin_tick(now) for now in wakeups]


def test_ticks_are_due_every_20_ms_from_the_start_without_drift():
    s = TickSchedule(start=100.0)
    ticks = []
    now = 100.0
    for _ in range(1000):
        now += max(s.seconds_until_next(now), 0) + 0.0007  # each wake-up is 0.7 ms late
        ticks.append(s.begin_tick(now))
    assert ticks == list(range(1000))
    assert s.deadline(1000) == pytest.approx(100.0 + 20.0)  # 1000 ticks = 20 s, exactly
    assert s.late_ticks == 0 and s.skipped_ticks == 0


def test_a_slow_tick_is_counted_late_and_the_next_runs_at_once():
    s = TickSchedule(start=0.0)
    s.begin_tick(0.0)
    assert s.begin_tick(0.035) == 1  # due at 20 ms, starts 15 ms late
    assert s.late_ticks == 1 and s.last_lateness == pytest.approx(0.015)
    assert s.seconds_until_next(0.036) == pytest.approx(0.004)  # tick 2 still at 40 ms


def test_falling_far_behind_skips_and_counts_instead_of_catching_up_for_seconds():
    s = TickSchedule(start=0.0)
    s.begin_tick(0.0)
    tick = s.begin_tick(1.0)  # suspended for a second
    assert s.skipped_ticks == 49
    assert tick == 50
    assert s.seconds_until_next(1.0) == pytest.approx(0.02)


def test_a_few_ticks_behind_are_caught_up_not_skipped():
    s = TickSchedule(start=0.0)
    s.begin_tick(0.0)
    assert run(s, [0.061, 0.0611, 0.0612]) == [1, 2, 3]
    assert s.skipped_ticks == 0 and s.late_ticks == 2


def test_a_phase_shift_moves_later_deadlines_and_keeps_the_period():
    s = TickSchedule(start=0.0)
    s.begin_tick(0.0)
    s.shift(-0.005)  # tick earlier (server.tick.phase)
    assert s.seconds_until_next(0.0) == pytest.approx(0.015)
    assert s.begin_tick(0.015) == 1 and s.late_ticks == 0
    assert s.seconds_until_next(0.015) == pytest.approx(0.020)
