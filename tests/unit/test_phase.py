"""The room clock's phase follows its sources: the tick comes just after their frames arrive."""

from __future__ import annotations

import numpy as np

from server.tick.phase import PhaseAligner


class Room:
    """Sources whose frames arrive at fixed phases (ms within the 20 ms frame, plus jitter and
    drift) and a clock ticking at ``phase``; each frame is played at the first tick after it
    arrives, plus ``depth`` whole frames of buffering. A frame that arrives after the tick it
    used to make waits ~20 ms more: that is a miss (a concealed frame in the server)."""

    def __init__(self, arrivals, phase=19.5, depth=None, jitter_ms=0.0, drift_ms=0.0, seed=0):
        self.arrivals = np.array(arrivals, float)
        self.phase = phase
        self.depth = np.zeros(len(arrivals)) if depth is None else np.array(depth, float)
        self.jitter_ms, self.drift_ms = jitter_ms, drift_ms
        self.rng = np.random.default_rng(seed)
        self.missed = 0
        self._previous: np.ndarray | None = None

    def waits(self) -> dict[int, float]:
        self.arrivals += self.drift_ms
        jitter = self.rng.uniform(0, self.jitter_ms, len(self.arrivals))
        within = (self.phase - (self.arrivals + jitter)) % 20.0
        if self._previous is not None:
            self.missed += int(np.sum(within - self._previous > 10.0))
        self._previous = within
        return dict(enumerate((within + 20.0 * self.depth).tolist()))

    def run(self, aligner: PhaseAligner, ticks: int) -> list[dict[int, float]]:
        seen = []
        for _ in range(ticks):
            waits = self.waits()
            seen.append(waits)
            self.phase += aligner.observe(waits)
        return seen


def test_one_player_waits_only_the_margin_once_the_phase_has_moved():
    room = Room([3.0], phase=19.5)  # frames wait 16.5 ms with the clock where it started
    aligner = PhaseAligner(margin_ms=2.0, window_ticks=50)
    seen = room.run(aligner, 50 * 8)
    assert seen[0][0] == 16.5
    assert abs(seen[-1][0] - 2.0) < 0.01
    assert room.missed == 0  # no frame ever missed its tick on the way
    assert aligner.shifted_ms < 0 and aligner.shifts == 3  # 5 + 5 + 4.5 ms earlier


def test_several_players_the_tightest_sets_the_phase_and_all_waits_shrink():
    room = Room([3.0, 9.0, 15.0], phase=19.0)  # waits 16, 10, 4
    room.run(PhaseAligner(window_ticks=50), 50 * 6)
    waits = room.waits()
    assert abs(waits[2] - 2.0) < 0.01  # the one arriving last
    assert abs(waits[0] - 14.0) < 0.01 and abs(waits[1] - 8.0) < 0.01  # each 2 ms less
    assert room.missed == 0


def test_a_jittery_source_keeps_its_margin_and_misses_nothing():
    room = Room([5.0], phase=19.0, jitter_ms=1.5, seed=3)
    aligner = PhaseAligner(margin_ms=2.0, window_ticks=100)
    room.run(aligner, 100 * 10)
    tail = room.run(aligner, 500)
    assert min(w[0] for w in tail) >= 0.5
    assert np.mean([w[0] for w in tail]) < 5.0
    assert room.missed == 0


def test_a_drifting_sender_moves_the_clock_later_before_its_frames_miss():
    # The sender's sound card runs 200 ppm slow (a poor one): its frames arrive 4 µs later
    # every tick, 12 ms later in a minute.
    room = Room([5.0], phase=8.0, drift_ms=0.004)
    aligner = PhaseAligner(margin_ms=2.0, window_ticks=50)
    seen = room.run(aligner, 3000)
    assert room.missed == 0
    assert min(w[0] for w in seen) > 0.5 and max(w[0] for w in seen[200:]) < 6.0
    assert aligner.shifted_ms > 0  # net later, following the sender


def test_deep_buffers_do_not_constrain_and_underruns_hold_the_phase():
    # Source 1's buffer holds an extra frame (a jittery network): its waits are over 20 ms.
    room = Room([3.0, 16.0], phase=18.0, depth=[0, 1])
    room.run(PhaseAligner(window_ticks=50), 50 * 6)
    assert abs(room.waits()[0] - 2.0) < 0.01

    aligner = PhaseAligner(window_ticks=10)
    for _ in range(9):
        aligner.observe({0: 12.0})
    assert aligner.observe({0: 12.0}, underruns=1) == 0.0  # a late frame: do not tick earlier


def test_sources_that_barely_played_do_not_move_the_clock():
    aligner = PhaseAligner(window_ticks=10)
    steps = [aligner.observe({0: 12.0 if k < 3 else None}) for k in range(10)]
    assert steps == [0.0] * 10 and aligner.shifts == 0
