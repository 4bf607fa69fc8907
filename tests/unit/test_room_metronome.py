"""The room's metronome as the room and its clock keep it (server/rooms/metronome.py), no I/O."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest

from server.rooms.live import LiveRoom
from server.rooms.metronome import LEAD_FRAMES, RoomMetronomes, ai_config, hear
from server.rooms.room import Room, saved_metronome
from server.tick.runner import RoomRunner
from signaling.metronome_messages import SetMetronome

ON = {"on": True, "bpm": 90.0, "beats_per_bar": 3, "accent": True, "count_in_bars": 2,
      "key": None}


@pytest.fixture
def live(kemar):
    room = Room("m", capacity=3)
    return LiveRoom(room, RoomRunner(room, kemar, follow_phase=False))


def metronomes() -> RoomMetronomes:
    return RoomMetronomes(SimpleNamespace(ai=SimpleNamespace(configure=lambda room, c: None)))


def test_on_it_stands_on_the_stage_and_its_beat_zero_is_ahead_of_the_clock(live):
    a = live.room.join("Ada")
    live.runner.room_sample = 96_000
    live.room.metronome_settings = dict(ON)
    metronomes().apply(live)
    m = live.runner.metronome
    assert m is not None and (m.bpm, m.beats_per_bar, m.accent) == (90.0, 3, True)
    assert m.origin == 96_000 + LEAD_FRAMES * live.runner.frame == live.room.metronome_origin
    member = live.room.members["metronome"]
    assert live.runner.metronome_slot == member.slot and live.room.is_metronome[member.slot]
    assert [w.ai for w in live.room.describe().members] == [False, False]
    assert live.room.describe().metronome.beat_zero_s == pytest.approx(m.origin / 48_000)
    assert live.room.ai_members == [] and not live.room.empty  # Ada is here
    live.room.leave(a.id)
    assert live.room.empty  # a metronome alone keeps no room open
    live.room.metronome_settings = {**ON, "on": False}
    metronomes().apply(live)
    assert live.runner.metronome is None and "metronome" not in live.room.members


def test_a_full_room_still_clicks_centred(live):
    for name in ("A", "B", "C"):
        live.room.join(name)
    live.room.metronome_settings = dict(ON)
    metronomes().apply(live)
    assert live.runner.metronome is not None and live.runner.metronome_slot is None


def test_each_listener_hears_it_as_chosen_in_the_scene_and_after_it(live):
    a, b, c = (live.room.join(name) for name in "ABC")
    live.room.metronome_settings = dict(ON)
    for member in (a, b, c):
        hear(live, member.slot, "centre")  # as every join does
    hear(live, b.slot, "stage")
    hear(live, c.slot, "off")
    assert live.runner.click_slots == {a.slot}
    assert list(live.room.hears_stage_metronome) == [False, True, False]


def test_the_ai_plays_at_its_tempo_on_its_grid_after_its_count_in(live):
    live.ai_config = {"bpm": 0.0, "metronome": True, "role": "accompany"}
    live.room.metronome_settings = {**ON, "bpm": 280.0}
    live.room.metronome_origin = 12_345
    config = ai_config(live)
    assert config["bpm"] == 140.0  # half time above 240
    assert config["count_in_beats"] == 6 and config["beat_zero"] == 12_345
    assert config["metronome"] is False and live.ai_config["metronome"] is True
    live.room.metronome_settings = {**ON, "on": False}
    assert ai_config(live) == live.ai_config


def test_the_ai_takes_the_key_the_room_declares_whether_or_not_it_clicks(live):
    live.ai_config = {"bpm": 0.0, "role": "accompany"}
    assert "key_tonic" not in ai_config(live)  # no key declared: it listens for one
    for on in (True, False):
        live.room.metronome_settings = {**ON, "on": on, "key": "Bb minor"}
        config = ai_config(live)
        assert (config["key_tonic"], config["key_mode"]) == (10, "minor")
    live.room.metronome_origin = 0
    assert live.room.describe().metronome.key == "Bb minor"


def test_declaring_the_key_keeps_the_beat_grid_a_tempo_change_restarts_it(live):
    """The key alone changes no click: beat zero stays (the AI keeps counting), and the AI is
    told the key; a new tempo starts a new beat zero."""
    told = []
    hub = SimpleNamespace(ai=SimpleNamespace(configure=lambda room, c: told.append(c)),
                          broadcast=lambda live: None, save_soon=lambda live: None)
    admin = SimpleNamespace(live=live, member_id="admin")
    live.ai_config = {"bpm": 0.0, "role": "accompany"}
    live.runner.room_sample = 96_000
    asyncio.run(RoomMetronomes(hub).set(admin, SetMetronome(on=True, bpm=120.0)))
    origin = live.room.metronome_origin
    live.runner.room_sample = 200_000
    version = live.room.version
    asyncio.run(RoomMetronomes(hub).set(admin, SetMetronome(on=True, key="D major")))
    assert live.room.metronome_origin == origin and live.room.version > version
    assert (told[-1]["key_tonic"], told[-1]["beat_zero"]) == (2, origin)
    asyncio.run(RoomMetronomes(hub).set(admin, SetMetronome(on=True, bpm=90.0)))
    assert live.room.metronome_origin > origin and live.room.metronome_settings["key"] == "D major"
    asyncio.run(RoomMetronomes(hub).set(admin, SetMetronome(on=True, key="")))
    assert live.room.metronome_settings["key"] is None and "key_tonic" not in told[-1]


def test_saved_settings_are_checked_and_kept_across_a_restore():
    assert saved_metronome({**ON, "key": "bb MINOR"})["key"] == "Bb minor"
    # A room saved before keys, or with a key no longer read: its metronome, without a key.
    old = {k: v for k, v in ON.items() if k != "key"}
    assert saved_metronome(old) == ON == saved_metronome({**ON, "key": "Q major"})
    assert saved_metronome(dict(ON)) == ON
    for bad in (None, [], {**ON, "bpm": 500}, {**ON, "on": 1}, {"on": True}):
        assert saved_metronome(bad) is None
    room = Room("m")
    room.join("Ada")
    room.metronome_settings = dict(ON)
    saved = room.snapshot().saved()
    again = Room("m")
    again.restore(saved)
    assert again.metronome_settings == ON


def test_the_stage_metronome_is_heard_only_by_those_who_chose_it(kemar):
    room = Room("m", capacity=4)
    a, b = room.join("A"), room.join("B")
    metronome = room.add_metronome()
    room.hears_stage_metronome[b.slot] = True
    gain = room.scene().pair_gain
    assert gain[a.slot, metronome.slot] == 0.0 and gain[b.slot, metronome.slot] == 1.0
    assert np.all(gain[metronome.slot] == 0.0)  # it has no ears
