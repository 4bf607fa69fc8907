"""Keeping what the AI played: Standard MIDI Files written by hand, read back by hand."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from ai_accompany.midi import DEFAULT_TRACK, PPQ, TITLE, NoteLog, read_midi, write_midi
from dsp.notes import NoteEvent
from hrtf.constants import SAMPLE_RATE

MS = SAMPLE_RATE // 1000


def session(seed: int = 3, n: int = 200, origin: int = 123_456) -> list[NoteEvent]:
    """Random notes in three voices, at arbitrary samples (not on any grid), none of one key
    overlapping another in the same voice."""
    rng = np.random.default_rng(seed)
    out = []
    for voice, low in (("bass", 36), ("alto", 55), ("lead", 67)):
        t = origin + int(rng.integers(0, 5000))
        for _ in range(n):
            duration = int(rng.integers(1, 40_000))
            out.append(NoteEvent(t, duration, int(rng.integers(low, low + 12)),
                                 float(rng.uniform(0.05, 1.0)), voice))
            t += duration + int(rng.integers(0, 3000))
    return out


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """The file's chunks, parsed here independently of the module's reader."""
    out, pos = [], 0
    while pos < len(data):
        kind, length = data[pos:pos + 4], struct.unpack(">I", data[pos + 4:pos + 8])[0]
        out.append((kind, data[pos + 8:pos + 8 + length]))
        pos += 8 + length
    assert pos == len(data)
    return out


@pytest.mark.parametrize("bpm", [120.0, 97.3, 30.0, 240.0])
def test_round_trip_keeps_pitches_and_times_within_a_millisecond(tmp_path, bpm):
    events = session()
    path = write_midi(tmp_path / "s.mid", events, bpm=bpm, origin=100_000)
    song = read_midi(path, origin=100_000)
    key = lambda e: (e.voice, e.start, e.pitch)  # noqa: E731
    wrote, read = sorted(events, key=key), sorted(song.events, key=key)
    assert [(e.voice, e.pitch) for e in read] == [(e.voice, e.pitch) for e in wrote]
    starts = np.array([[w.start, r.start] for w, r in zip(wrote, read, strict=True)])
    ends = np.array([[w.end, r.end] for w, r in zip(wrote, read, strict=True)])
    assert np.abs(np.diff(starts)).max() <= MS
    assert np.abs(np.diff(ends)).max() <= MS
    for w, r in zip(wrote, read, strict=True):
        assert abs(r.velocity - w.velocity) <= 0.5 / 127 + 1e-9
    assert song.bpm == pytest.approx(bpm, rel=1e-5)


def test_one_track_per_voice_after_a_conductor_track(tmp_path):
    path = write_midi(tmp_path / "s.mid", [*session(), NoteEvent(200_000, 4800, 60, 0.5)])
    parts = chunks(path.read_bytes())
    kind, header = parts[0]
    assert kind == b"MThd"
    fmt, n_tracks, division = struct.unpack(">HHH", header)
    assert (fmt, n_tracks, division) == (1, 5, PPQ)
    assert [k for k, _ in parts[1:]] == [b"MTrk"] * 5
    # the tempo meta event (FF 51 03, 500 000 µs per quarter) lives in the conductor track
    assert b"\xff\x51\x03\x07\xa1\x20" in parts[1][1]
    song = read_midi(path)
    assert song.track_names[0] == TITLE
    assert sorted(song.track_names[1:]) == sorted(["bass", "alto", "lead", DEFAULT_TRACK])
    assert {e.voice for e in song.events} == set(song.track_names[1:])


def test_origin_defaults_to_the_first_note(tmp_path):
    events = [NoteEvent(480_000, 4800, 60, 0.8), NoteEvent(528_000, 4800, 64, 0.8)]
    song = read_midi(write_midi(tmp_path / "s.mid", events))
    assert [e.start for e in song.events] == [0, 48_000]


def test_slow_tempi_keep_a_tick_at_most_a_millisecond(tmp_path):
    path = write_midi(tmp_path / "s.mid", [NoteEvent(0, 4800, 60, 0.8)], bpm=20.0)
    assert read_midi(path).ppq == 3000  # 3 s per quarter at 1 ms per tick


def test_overlapping_notes_of_one_key_are_cut_at_the_next_start(tmp_path):
    u = 500  # samples: 20 ticks at 120 BPM, so the times survive the tick grid exactly
    events = [NoteEvent(0, 4 * u, 60, 0.8), NoteEvent(2 * u, 4 * u, 60, 0.8),
              NoteEvent(2 * u, u, 60, 0.5)]  # same key, same start: merged, the longer kept
    song = read_midi(write_midi(tmp_path / "s.mid", events))
    assert [(e.start, e.duration) for e in song.events] == [(0, 2 * u), (2 * u, 4 * u)]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_midi(tmp_path / "s.mid", [NoteEvent(0, 4800, 60, 0.8)])
    before = path.read_bytes()
    with pytest.raises(ValueError, match="origin"):
        write_midi(path, [NoteEvent(0, 4800, 62, 0.8)], origin=10)
    with pytest.raises(TypeError):
        write_midi(path, [NoteEvent(0, 4800, 62, 0.8), "not an event"])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.mid"]


@pytest.mark.parametrize("bpm", [0.0, -120.0, float("nan"), float("inf"), 5000.0])
def test_tempo_out_of_range_is_refused(tmp_path, bpm):
    with pytest.raises(ValueError, match="bpm must be"):
        write_midi(tmp_path / "s.mid", [NoteEvent(0, 4800, 60, 0.8)], bpm=bpm)


def test_an_empty_session_writes_a_valid_file(tmp_path):
    song = read_midi(write_midi(tmp_path / "s.mid", []))
    assert song.events == () and song.track_names == (TITLE,)


def test_reader_refuses_what_is_not_midi(tmp_path):
    path = tmp_path / "x.mid"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVE")
    with pytest.raises(ValueError, match="not a Standard MIDI File"):
        read_midi(path)
    path.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\x00\x00\x00\x10\x00\x90")
    with pytest.raises(ValueError, match="truncated"):
        read_midi(path)


def test_note_log_keeps_the_newest_events(tmp_path):
    log = NoteLog(max_events=3)
    log.add(NoteEvent(i * MS, MS, 60 + i, 0.5) for i in range(5))
    assert [e.pitch for e in log.events] == [62, 63, 64] and log.forgotten == 2
    song = read_midi(log.write(tmp_path / "s.mid"))
    assert [e.pitch for e in song.events] == [62, 63, 64]
