"""Overload: the governor caps sources per mix, culling keeps the most audible ones."""

from __future__ import annotations

import asyncio

import numpy as np

from dsp.culling import cull_quietest
from dsp.geometry import Scene
from server.tick.overload import OverloadGovernor


def test_each_listener_keeps_its_most_audible_sources():
    scene = Scene.create(
        [[0, 0, 0], [10, 0, 0]],
        [[1, 0, 0], [3, 0, 0], [9, 0, 0], [11, 0, 0]],
    )
    rms = np.array([0.1, 0.1, 0.1, 0.001])  # source 3 is nearly silent
    culled = cull_quietest(scene, rms, max_sources=2)
    assert culled == 4
    np.testing.assert_array_equal(scene.pair_gain[0] > 0, [True, True, False, False])
    np.testing.assert_array_equal(scene.pair_gain[1] > 0, [False, True, True, False])


def test_no_culling_when_the_mixes_fit():
    scene = Scene.create([0, 0, 0], [[1, 0, 0], [2, 0, 0]])
    assert cull_quietest(scene, np.ones(2), max_sources=2) == 0
    assert np.all(scene.pair_gain == 1)


def test_one_slow_tick_is_not_overload():
    gov = OverloadGovernor()
    for k in range(200):  # a 17 ms tick every 5th: a busy machine, not an overloaded room
        assert gov.observe(17.0 if k % 5 == 0 else 6.0, 20) is None
    assert gov.degradations == 0


def test_governor_caps_on_sustained_slow_ticks_and_lifts_the_cap_when_calm():
    gov = OverloadGovernor(calm_ticks=3)
    assert gov.observe(5.0, 20) is None
    assert gov.observe(18.0, 20) is None and gov.observe(17.0, 20) is None
    assert gov.observe(16.0, 20) == 15 and gov.degradations == 1  # 3 of the last 10
    assert gov.observe(25.0, 20) == 15  # the window starts afresh after a cut
    assert gov.observe(17.0, 20) == 15
    assert gov.observe(19.0, 20) == 11
    for _ in range(3):
        cap = gov.observe(2.0, 20)
    assert cap == 13  # + a quarter
    for _ in range(3):
        cap = gov.observe(2.0, 20)
    assert cap == 16
    for _ in range(3):
        cap = gov.observe(2.0, 20)
    assert cap is None  # 16 + 4 holds all 20: lifted


def test_a_room_near_its_limit_gets_its_sources_back():
    gov = OverloadGovernor(calm_ticks=50)
    for _ in range(3):
        gov.observe(18.0, 35)  # the joins' burst
    assert gov.max_sources == 26
    for k in range(400):  # then 8 s at 12–14 ms a tick: busy, but in time
        cap = gov.observe(12.0 + 2.0 * (k % 2), 35)
    assert cap is None and gov.degradations == 1


def test_a_room_with_nothing_to_cull_is_never_said_to_be_capped():
    gov = OverloadGovernor(min_sources=2)
    for _ in range(30):  # a busy machine: every tick slow
        assert gov.observe(18.0, 2) is None
    assert gov.degradations == 0


def test_governor_never_goes_below_its_floor():
    gov = OverloadGovernor(min_sources=2)
    for _ in range(20):
        cap = gov.observe(50.0, 10)
    assert cap == 2


async def test_an_overloaded_room_drops_the_quietest_sources_from_mixes_and_says_so(kemar):
    from hrtf.constants import FRAME
    from server.rooms.room import Room
    from server.tick.runner import RoomRunner

    room = Room("busy", capacity=4)
    a, b, c = room.join("A"), room.join("B"), room.join("C")
    room.move_source(b.id, (0, 0, 1.2))
    room.move_source(a.id, (1, 0, 1.2))  # loud and near B
    room.move_source(c.id, (8, 0, 1.2))  # quiet and far
    runner = RoomRunner(room, kemar)
    for m in (a, b, c):
        runner.attach(m.slot)
    runner.governor = OverloadGovernor(high_ms=-1.0, min_sources=1)  # every tick is "slow"
    rng = np.random.default_rng(0)
    level = {a.slot: 0.3, b.slot: 0.0, c.slot: 0.01}
    try:
        for k in range(10):  # every third tick cuts (3 slow ticks of the last 10)
            for slot, buffer in runner.buffers.items():
                noise = rng.standard_normal(FRAME) * level[slot]
                buffer.push(k * FRAME, noise.astype(np.float32))
            await runner._tick(asyncio.get_running_loop())
        assert runner.governor.max_sources == 1 and runner.governor.degradations >= 2
        assert runner.culled_pairs > 0
        heard_by_b = runner.renderer.pairs.w[b.slot].sum(axis=1)
        assert heard_by_b[a.slot] > 0 and heard_by_b[c.slot] == 0
    finally:
        await runner.stop()


def test_listeners_encoded_in_parallel_get_what_one_thread_would_give_them():
    from hrtf.constants import FRAME
    from server.media.downlink import MusicOpusEncoder
    from server.tick.runner import PARALLEL_ENCODE_FROM, encode_all

    n = PARALLEL_ENCODE_FROM + 5
    rng = np.random.default_rng(2)
    frames = (0.2 * rng.standard_normal((3, n, FRAME, 2))).astype(np.float32)
    together = {slot: MusicOpusEncoder() for slot in range(n)}
    alone = {slot: MusicOpusEncoder() for slot in range(n)}
    for mixes in frames:  # three ticks: each encoder's state carries over
        packets = encode_all(mixes, together)
        assert sorted(packets) == list(range(n))
        for slot in range(n):
            assert [bytes(p) for p in packets[slot]] == [bytes(p) for p in alone[slot].encode(
                mixes[slot])]
