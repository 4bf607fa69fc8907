"""The AI's decisions: a beat ahead on the room clock, a count-in and clicks on the beat."""

from __future__ import annotations

import numpy as np

from ai_accompany.brain import BEATS_PER_BAR, MIN_LEAD_BEATS, Brain, BrainConfig
from ai_accompany.ipc import ANALYSIS_RATE

BLOCK = ANALYSIS_RATE // 50  # 20 ms
ROOM_PER_BLOCK = 960


def run(config: BrainConfig, seconds: float) -> list[tuple[int, list]]:
    """Silence for ``seconds``: (the room sample when decided, events) per block."""
    brain, out = Brain(config), []
    for k in range(int(seconds * 50)):
        events, _ = brain.hear(k * ROOM_PER_BLOCK, np.zeros(BLOCK, np.float32))
        if events:
            out.append(((k + 1) * ROOM_PER_BLOCK, events))
    return out


def test_with_a_fixed_tempo_it_counts_in_a_bar_then_plays_on_the_beat_ahead_of_time():
    beat = 60 * 48_000 // 120  # 120 BPM
    decided = run(BrainConfig(bpm=120.0, metronome=True, instrument="organ"), 6.0)
    events = [e for _, batch in decided for e in batch]
    clicks = [e for e in events if e.voice == "metronome"]
    notes = [e for e in events if e.voice != "metronome"]
    assert len(clicks) >= 10
    starts = np.array([c.start for c in clicks])
    assert np.all(np.diff(starts) == beat)  # on the beat grid, every beat
    pitches = [c.pitch for c in clicks[:8]]  # one accented downbeat in every four
    first = pitches.index(96)
    assert first < 4 and all(p == (96 if (k - first) % 4 == 0 else 84)
                             for k, p in enumerate(pitches))
    assert notes and min(n.start for n in notes) >= clicks[BEATS_PER_BAR].start  # count-in
    for when, batch in decided:  # decided ahead: never for a beat already under way
        assert min(e.start for e in batch) >= when + MIN_LEAD_BEATS * beat - ROOM_PER_BLOCK


def test_without_the_metronome_no_clicks_and_no_count_in():
    events = [e for _, batch in run(BrainConfig(bpm=120.0), 3.0) for e in batch]
    assert events and all(e.voice in ("alto", "tenor", "bass") for e in events)
    assert min(e.start for e in events) < 48_000  # plays within its first second


def test_the_rooms_metronome_sets_its_count_in_without_clicks_of_its_own():
    """With the room's metronome on, the server sets count_in_beats (2 bars of 3 here): the AI
    only listens that many beats, then plays; no click of its own."""
    config = BrainConfig.from_dict({"bpm": 120.0, "metronome": False, "count_in_beats": 6})
    assert config.count_in_beats == 6
    decided = run(config, 8.0)
    events = [e for _, batch in decided for e in batch]
    assert events and all(e.voice != "metronome" for e in events)
    beat = 60 * 48_000 // 120
    at_once = [e for _, batch in run(BrainConfig(bpm=120.0, count_in_beats=0), 8.0)
               for e in batch]
    # Six beats later than the same AI without a count-in.
    assert min(e.start for e in events) - min(e.start for e in at_once) == 6 * beat
    assert BrainConfig.from_dict({"count_in_beats": True}).count_in_beats == -1  # not a number


def test_on_the_rooms_metronome_its_notes_fall_on_the_rooms_beat_grid():
    """Given the room metronome's beat zero, the AI's 16th-note steps are on that grid from its
    first note (silence in: no onset to lock to), not on one of its own."""
    beat = 60 * 48_000 // 120
    zero = 12_345
    config = BrainConfig.from_dict({"bpm": 120.0, "count_in_beats": 0, "beat_zero": zero})
    events = [e for _, batch in run(config, 4.0) for e in batch]
    assert events
    steps = np.array([e.start for e in events]) - zero
    assert np.all(np.abs(steps / (beat / 4) - np.round(steps / (beat / 4))) < 1e-3), steps[:8]
    plain = [e.start for _, batch in run(BrainConfig(bpm=120.0), 4.0) for e in batch]
    assert (min(plain) - zero) % (beat // 4) != 0  # without it, a grid of its own
