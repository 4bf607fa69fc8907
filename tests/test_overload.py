"""Overload: the governor caps sources per mix, culling keeps the most audible ones."""

from __future__ import annotations

import asyncio

import numpy as np

from dsp.culling import cull_quietest
from dsp.geometry import Scene
from server.overload import OverloadGovernor


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


def test_governor_caps_on_a_slow_tick_and_lifts_the_cap_when_calm():
    gov = OverloadGovernor(calm_ticks=3)
    assert gov.observe(5.0, 20) is None
    assert gov.observe(18.0, 20) == 15 and gov.degradations == 1
    assert gov.observe(17.0, 20) == 11
    for _ in range(3):
        cap = gov.observe(2.0, 20)
    assert cap == 12
    for _ in range(3 * 8):
        cap = gov.observe(2.0, 20)
    assert cap is None


def test_governor_never_goes_below_its_floor():
    gov = OverloadGovernor(min_sources=2)
    for _ in range(20):
        cap = gov.observe(50.0, 10)
    assert cap == 2


async def test_an_overloaded_room_drops_the_quietest_sources_from_mixes_and_says_so(kemar):
    from hrtf.constants import FRAME
    from server.room import Room
    from server.room_runner import RoomRunner

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
        for k in range(6):
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
