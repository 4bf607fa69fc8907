"""pytest-benchmark for session recording: what it costs the room clock per tick, and how fast
the writer thread writes.

The room clock's side is :meth:`RoomRecording.take` on the loop and :meth:`Take.capture` on the
tick thread: one fancy-index copy of the recorded members' rows of the ``(S, FRAME)`` source
audio, one copy of a listener's stereo mix when a binaural recording was asked for, and a
``put_nowait``. It is timed with the real writer thread writing FLAC files in a temporary
folder, one tick every few milliseconds (the writer has written the last one when the next
comes, as at 50 ticks a second). The writer's side is the time to write and close 5 s of a full
room (16 members): it must stay far below 5 s.

Run with ``make bench``; under ``make test`` each case runs once as a smoke test (benchmarks
disabled), asserting nothing about speed.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from hrtf.constants import FRAME, SAMPLE_RATE
from server.recording.capture import RecordingWriter, RoomRecording
from server.rooms.room import Room

CAPACITY = 16


def _room(members: int) -> Room:
    room = Room("bench", CAPACITY)
    for k in range(members):
        room.join(f"player {k}")
    return room


def _music(ticks: int, members: int) -> np.ndarray:
    """``(ticks, members, FRAME)``: a tone per member under a little noise (FLAC's work is
    in the noise)."""
    rng = np.random.default_rng(0)
    t = np.arange(ticks * FRAME) / SAMPLE_RATE
    tones = 0.2 * np.sin(2 * np.pi * np.outer(220 * (1 + np.arange(members) / 8), t))
    audio = tones + 0.01 * rng.standard_normal(tones.shape)
    return audio.astype(np.float32).reshape(members, ticks, FRAME).transpose(1, 0, 2).copy()


@pytest.mark.parametrize("members", [4, 16])
@pytest.mark.parametrize("binaural", [False, True], ids=["dry", "dry+binaural"])
def test_recording_cost_per_tick(benchmark, tmp_path, members, binaural):
    benchmark.group = "recording: the room clock's cost per tick"
    room = _room(members)
    writer = RecordingWriter(tmp_path, {"id": "bench"})
    writer.start()
    listener = next(iter(room.members)) if binaural else None
    recording = RoomRecording(writer, binaural_of=listener)
    music = _music(50, CAPACITY)
    mixes = np.repeat(music[:, :, :, None], 2, axis=3)  # (ticks, S, FRAME, 2)
    ticks = itertools.count()

    def tick() -> bool:
        k = next(ticks)
        return recording.take(room, k).capture(music[k % 50], mixes[k % 50])

    # Ticks come every 20 ms: between two, the writer has written the last one (0.4 ms for
    # 16 members), as in a live room; without the pause the writer and the clock would
    # fight over the GIL as they never do at 50 ticks a second.
    benchmark.pedantic(tick, setup=lambda: time.sleep(0.002), rounds=400, iterations=1,
                       warmup_rounds=20)
    manifest = writer.finish()
    benchmark.extra_info["dropped_frames"] = manifest["dropped_frames"]
    assert len(manifest["tracks"]) == members + binaural


@pytest.mark.parametrize("binaural", [False, True], ids=["dry", "dry+binaural"])
def test_writer_writes_5_s_of_a_full_room(benchmark, tmp_path, binaural):
    benchmark.group = "recording: the writer thread, 5 s of 16 members"
    ticks, members = 250, CAPACITY
    music = _music(ticks, members)
    room = _room(members)
    mix = np.repeat(music[:, :1].transpose(0, 2, 1), 2, axis=2)  # (ticks, FRAME, 2)
    runs = itertools.count()

    def setup():
        folder = tmp_path / str(next(runs))
        folder.mkdir()
        writer = RecordingWriter(folder, {"id": "bench"}, queue_ticks=ticks + 1)
        writer.start()
        recording = RoomRecording(writer, next(iter(room.members)) if binaural else None)
        takes = [recording.take(room, k) for k in range(ticks)]
        return (writer, takes), {}

    def write(writer, takes) -> dict:
        for k, take in enumerate(takes):
            take.capture(music[k], np.broadcast_to(mix[k], (CAPACITY, FRAME, 2)))
        return writer.finish()

    manifest = benchmark.pedantic(write, setup=setup, rounds=3, iterations=1)
    assert manifest["dropped_frames"] == 0
    assert len(manifest["tracks"]) == members + binaural
