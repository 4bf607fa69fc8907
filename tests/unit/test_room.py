"""A room's membership, stage and personal mixes, and what the renderer makes of them."""

from __future__ import annotations

import numpy as np
import pytest

from dsp.renderer import Renderer
from hrtf.constants import FRAME
from server.rooms.room import Room, RoomFull, UnknownMember


def ild_db(stereo: np.ndarray) -> float:
    return 10 * np.log10(np.mean(stereo[:, 0] ** 2) / np.mean(stereo[:, 1] ** 2))


def test_members_get_distinct_slots_and_places():
    room = Room("band", capacity=4)
    a, b, c = (room.join(n) for n in "abc")
    assert sorted(m.slot for m in (a, b, c)) == [0, 1, 2]
    places = {tuple(room.position[m.slot]) for m in (a, b, c)}
    assert len(places) == 3


def test_a_full_room_refuses_and_a_leave_frees_the_slot():
    room = Room("band", capacity=2)
    a = room.join("a")
    room.join("b")
    with pytest.raises(RoomFull):
        room.join("c")
    room.leave(a.id)
    assert room.join("c").slot == a.slot


def test_a_reconnect_with_the_seat_token_gets_the_same_slot_and_place():
    room = Room("band", capacity=4)
    a = room.join("a")
    room.move_source(a.id, (1.0, 3.0, 1.2))
    room.leave(a.id)
    back = room.join("a", seat=a.seat)
    assert back.slot == a.slot and back.seat == a.seat and back.id == a.id
    np.testing.assert_allclose(room.position[back.slot], (1.0, 3.0, 1.2))


def test_a_newcomer_in_a_used_slot_starts_clean():
    room = Room("band", capacity=1)
    a = room.join("a")
    room.move_source(a.id, (5.0, 5.0, 1.0))
    room.set_self_monitor(a.id, True)
    room.leave(a.id)
    b = room.join("b")  # no seat token: a new occupant
    assert b.seat != a.seat
    assert not room.self_monitor[b.slot]
    assert tuple(room.position[b.slot]) != (5.0, 5.0, 1.0)
    assert room.drain_fresh_slots() == [0, 0] and room.drain_fresh_slots() == []


def test_own_voice_is_excluded_unless_self_monitoring():
    room = Room("band", capacity=3)
    a, b = room.join("a"), room.join("b")
    gain = room.scene().pair_gain
    assert gain[a.slot, a.slot] == 0 and gain[a.slot, b.slot] > 0
    assert gain[2].sum() == 0 and gain[:, 2].sum() == 0  # the empty slot is silent
    room.set_self_monitor(a.id, True)
    assert room.scene().pair_gain[a.slot, a.slot] == 1


def test_personal_override_moves_a_source_for_one_listener_only():
    room = Room("band", capacity=3)
    a, b, c = room.join("a"), room.join("b"), room.join("c")
    room.set_override(b.id, a.id, position=(9.0, 0.0, 1.2), gain=2.0)
    positions = room.scene().source_positions_per_pair()
    np.testing.assert_allclose(positions[b.slot, a.slot], (9.0, 0.0, 1.2))
    np.testing.assert_allclose(positions[c.slot, a.slot], room.position[a.slot])
    assert room.scene().pair_gain[b.slot, a.slot] == 2.0
    room.set_override(b.id, a.id, mute=True)
    assert room.scene().pair_gain[b.slot, a.slot] == 0
    room.reset_override(b.id, a.id)
    scene = room.scene()
    np.testing.assert_allclose(scene.source_positions_per_pair()[b.slot, a.slot],
                               room.position[a.slot])
    assert scene.pair_gain[b.slot, a.slot] == 1.0


def test_unknown_members_are_refused():
    room = Room("band")
    with pytest.raises(UnknownMember):
        room.move_source("nobody", (0, 0, 0))


def test_describe_lists_members_with_their_places():
    room = Room("band")
    a = room.join("Ann", "violin")
    state = room.describe()
    assert state.room == "band" and state.revision == room.version
    assert state.members[0].name == "Ann" and state.members[0].instrument == "violin"
    assert state.stage[0].source == a.id and state.stage[0].label == "violin"
    assert state.stage[0].position_m == pytest.approx(list(room.position[a.slot]), abs=1e-4)


@pytest.fixture
def two_players(kemar):
    room = Room("band", capacity=4)
    a, b = room.join("a"), room.join("b")
    renderer = Renderer(kemar, room.capacity, room.capacity)
    return room, renderer, a, b


def render_for(room, renderer, ticks=6):
    audio = np.zeros((room.capacity, FRAME), np.float32)
    rng = np.random.default_rng(0)
    outs = []
    for _ in range(ticks):
        audio[:] = rng.standard_normal(audio.shape) * 0.1
        outs.append(renderer.render(room.scene(), audio))
    return np.concatenate(outs[2:], axis=1)


def test_a_source_placed_at_a_listeners_left_is_heard_on_the_left_and_flips(two_players):
    room, renderer, a, b = two_players
    room.set_head_pose(b.id, 0.0)
    room.move_source(b.id, (0.0, 0.0, 1.2))
    room.move_source(a.id, (0.0, 2.0, 1.2))  # +y: B's left
    assert ild_db(render_for(room, renderer)[b.slot]) > 6.0
    room.move_source(a.id, (0.0, -2.0, 1.2))
    assert ild_db(render_for(room, renderer)[b.slot]) < -6.0
    room.set_head_pose(b.id, 180.0)  # B turns round: A is on B's left again
    assert ild_db(render_for(room, renderer)[b.slot]) > 6.0


def test_the_scene_is_the_same_object_until_something_in_it_changes():
    room = Room("band", capacity=3)
    a, b = room.join("a"), room.join("b")
    scene = room.scene()
    assert room.scene() is scene
    edits = [lambda: room.move_source(a.id, (1.0, 2.0, 1.2)),
             lambda: room.turn_source(a.id, 30.0),
             lambda: room.set_head_pose(b.id, 45.0),
             lambda: room.set_override(b.id, a.id, gain=0.5),
             lambda: room.set_self_monitor(a.id, True),
             lambda: room.set_listen_only(a.id, True),
             lambda: room.set_head_rotation(b.id, np.eye(3)),
             lambda: room.set_head_pose(b.id, 90.0),  # while rotations come as matrices
             lambda: room.join("c"),
             lambda: room.leave(a.id)]
    for edit in edits:
        edit()
        fresh = room.scene()
        assert fresh is not scene, edit
        assert room.scene() is fresh
        scene = fresh
    np.testing.assert_allclose(scene.pair_gain[:, a.slot], 0)  # gone: silent


def test_rendering_a_standing_scene_again_sounds_as_a_rebuilt_one(two_players, kemar, rng):
    room, cached, a, b = two_players
    rebuilt = Renderer(kemar, room.capacity, room.capacity)
    room.move_source(a.id, (0.0, 2.0, 1.2))
    frames = [(rng.standard_normal((room.capacity, FRAME)) * 0.1).astype(np.float32)
              for _ in range(5)]
    for k, frame in enumerate(frames):
        if k == 3:  # a slot reused while the scene stands: it fades in again in both
            cached.reset_source(b.slot)
            rebuilt.reset_source(b.slot)
        np.testing.assert_allclose(cached.render(room.scene(), frame),
                                   rebuilt.render(room._fresh_scene()[1], frame), atol=1e-6)
    assert cached.pairs.settled is room.scene()  # the last ticks skipped the filter look-up
