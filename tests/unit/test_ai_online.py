"""``ai eval --online``: the accompanist scored on what sounds against the melody at that
moment, through the live listening path. It must tell a brain that listens from one that
trails the melody by a beat."""

from __future__ import annotations

import numpy as np
import pytest

from ai_accompany.online import (
    Performance,
    evaluate_online,
    format_online,
    perform,
    pool,
    score,
    step_samples,
)
from ai_accompany.tunes import SETS, folk, generated, load_set
from dsp.notes import NoteEvent, cut_lines


@pytest.fixture(scope="module")
def tune():
    return generated("pop", count=1)[0]


@pytest.fixture(scope="module")
def live(tune):
    return pool([score(perform(tune, "onnx"))])


def test_a_listening_accompanist_beats_chance_and_trails_by_less_than_an_8th(tune, live):
    eighth_ms = 2e3 * step_samples(tune) / 48_000
    assert live["harmony"] > live["chance"] + 0.1, live
    assert abs(live["lag_ms"]) < eighth_ms, live
    assert live["in_key"] > 0.9 and live["late"] == 0 and live["grid_lock"] > 0.95, live


def test_an_accompanist_a_beat_late_is_caught(tune, live):
    """The same brain hearing everything a beat late (25 blocks at 120 BPM or less): the lag
    shows it, and its harmony falls toward chance."""
    beat_blocks = round(4 * step_samples(tune) / 960)
    late = pool([score(perform(tune, "onnx", delay_blocks=beat_blocks))])
    eighth_ms = 2e3 * step_samples(tune) / 48_000
    assert late["lag_ms"] >= eighth_ms, late
    assert late["harmony"] < live["harmony"] - 0.05, (late, live)


def test_notes_shifted_by_chance_score_chance_and_a_rest_filled_is_counted(tune):
    """Scoring on its own: the melody against itself an octave down is all consonant and
    fills no rest; a drone through the whole tune fills every rest."""
    melody = [NoteEvent(s, n, p, 0.8, "melody") for s, n, p in
              ((0, 24_000, 60), (72_000, 24_000, 62), (144_000, 24_000, 64))]  # 1 s rests
    octave = [NoteEvent(e.start, e.duration, e.pitch - 12, 0.5, "bass") for e in melody]
    drone = [NoteEvent(0, 170_000, 61, 0.5, "alto")]  # a semitone above the C, below the D
    one = score(Performance(tune, melody, octave, 0, 0, 0.0))
    assert one["harmony"][0] == one["harmony"][1] and one["rests_filled"][0] == 0
    other = score(Performance(tune, melody, drone, 0, 0, 0.0))
    assert other["harmony"][0] < 0.5 * other["harmony"][1]
    assert other["rests_filled"][0] == other["rests_filled"][1] > 0


def test_a_lines_next_note_ends_the_one_before_and_velocity_zero_rests():
    notes = [NoteEvent(0, 1000, 60, 0.5, "bass"), NoteEvent(400, 1000, 62, 0.5, "bass"),
             NoteEvent(600, 1, 62, 0.0, "bass"), NoteEvent(0, 1000, 64, 0.5, "melody"),
             NoteEvent(100, 1000, 65, 0.5, "melody")]
    heard = cut_lines(notes)
    assert [(e.start, e.duration, e.pitch) for e in heard] == [
        (0, 400, 60), (0, 1000, 64), (100, 1000, 65), (400, 200, 62)]


def test_every_set_loads_and_the_report_reads(tmp_path):
    assert set(SETS) == {"chorale", "folk", "pop", "blues"}
    assert len(folk()) >= 20  # shipped: models/heldout_folk.npz
    for name in SETS:
        tunes = load_set(name, 2)
        assert len(tunes) == 2 and all(t.steps > 64 for t in tunes), name
        for t in tunes:
            sounding = t.pitch[t.pitch >= 0]
            assert sounding.min() >= 40 and sounding.max() <= 96 and t.onset.any()
            assert 0 <= t.key_tonic < 12 and t.key_mode in ("major", "minor")
    assert all(t.swing for t in load_set("blues", 2))
    report = evaluate_online(sets=("pop",), models=("rule",), limit=1)
    text = format_online(report)
    assert "pop" in text and "rule" in text and "lag" in text
    assert set(report["sets"]["pop"]["rule"]) >= {"harmony", "chance", "lag_ms", "in_key",
                                                  "rests_filled", "notes_per_s", "grid_lock"}
    with pytest.raises(ValueError, match="no tune set"):
        load_set("jazz")
    assert np.isfinite(report["sets"]["pop"]["rule"]["harmony"])
