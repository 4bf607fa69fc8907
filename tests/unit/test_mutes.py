"""Muting yourself (``mute_self``): the tick's fade, the room's state, the levels' scale."""

from __future__ import annotations

import numpy as np

from server.rooms.room import Room
from server.rooms.social import levels_db
from server.tick.mutes import MuteFades

FRAME = 240


def frames(n: int, slots: int = 3) -> list[np.ndarray]:
    t = np.arange(n * FRAME) / 48000
    sine = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    return [np.tile(sine[k * FRAME:(k + 1) * FRAME], (slots, 1)) for k in range(n)]


def play(fades: MuteFades, muted_per_frame: list[np.ndarray | None]) -> np.ndarray:
    out = []
    for audio, muted in zip(frames(len(muted_per_frame)), muted_per_frame, strict=True):
        fades.apply(audio, muted)
        out.append(audio)
    return np.concatenate(out, axis=1)


def test_a_mute_fades_out_over_one_frame_stays_silent_and_fades_back_without_a_click():
    muted = np.array([False, True, False])
    heard = np.zeros(3, np.bool_)
    y = play(MuteFades(3, FRAME), [heard, heard, muted, muted, muted, heard, heard])
    reference = np.concatenate(frames(7), axis=1)
    assert np.array_equal(y[[0, 2]], reference[[0, 2]])  # the others are untouched
    a = y[1]
    assert np.array_equal(a[:2 * FRAME], reference[1, :2 * FRAME])
    assert np.abs(a[2 * FRAME:3 * FRAME]).max() > 0.1  # the fade-out frame still sounds…
    assert np.all(a[3 * FRAME:5 * FRAME] == 0.0)  # …then silence while muted
    assert np.abs(a[5 * FRAME:6 * FRAME]).max() > 0.1  # the fade back in
    assert np.array_equal(a[6 * FRAME:], reference[1, 6 * FRAME:])
    smooth = np.abs(np.diff(reference[1])).max()  # a 1 kHz sine's largest step
    assert np.abs(np.diff(a)).max() <= smooth * 1.01


def test_nobody_muted_leaves_the_frames_as_they_are():
    y = play(MuteFades(3, FRAME), [None, None])
    assert np.array_equal(y, np.concatenate(frames(2), axis=1))


def test_the_room_shows_who_muted_themselves_and_a_new_occupant_starts_unmuted():
    room = Room("r", capacity=2)
    a = room.join("Ada", "cello")
    version = room.version
    room.set_muted(a.id, True)
    assert room.version == version + 1
    assert [m.muted for m in room.describe().members] == [True]
    room.leave(a.id)
    again = room.join("Ada", "cello", seat=a.seat)  # the seat keeps it across a rejoin
    assert again.slot == a.slot and room.describe().members[0].muted
    room.leave(again.id)
    room.join("Bo")
    newcomer = room.join("Cy")  # the room is full: Cy takes Ada's away seat, afresh
    assert newcomer.slot == a.slot and not room.muted[newcomer.slot]


def test_levels_are_dbfs_rounded_and_floored():
    db = levels_db(np.array([1.0, 0.5, 0.0, 1e-9], np.float32))
    assert db.tolist() == [0.0, -6.0, -120.0, -120.0]
