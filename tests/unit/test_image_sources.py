"""Image sources of a shoebox: the same images, gains and delays as pyroomacoustics gives."""

from __future__ import annotations

import numpy as np
import pyroomacoustics as pra
import pytest

from dsp.geometry import Scene
from dsp.image_sources import (
    BUSES,
    MAX_IMAGES,
    SPEED_OF_SOUND_M_S,
    bus_layout,
    image_positions,
    image_recipes,
    image_taps,
)
from hrtf.constants import SAMPLE_RATE

PRA_WALLS = ["west", "east", "south", "north", "floor", "ceiling"]  # x−, x+, y−, y+, z−, z+


def pra_images(dims, absorption, source, max_order):
    """pyroomacoustics' images (K, 3) and damping (K,) in its own frame (corner at 0)."""
    materials = {name: pra.Material(float(a))
                 for name, a in zip(PRA_WALLS, absorption, strict=True)}
    room = pra.ShoeBox(list(dims), fs=SAMPLE_RATE, max_order=max_order, materials=materials)
    room.add_source(list(source))
    room.add_microphone([d / 2 for d in dims])
    room.image_source_model()
    src = room.sources[0]
    keep = src.orders > 0
    return src.images[:, keep].T, src.damping[0, keep]


@pytest.mark.parametrize("max_order", [1, 2])
@pytest.mark.parametrize("seed", range(4))
def test_images_and_their_gains_are_pyroomacoustics(max_order, seed):
    rng = np.random.default_rng(seed)
    dims = rng.uniform(3, 30, 3)
    absorption = rng.uniform(0.05, 0.9, 6)
    corner = rng.uniform(0.1, 0.9, 3) * dims  # the source, from the room's corner
    modes, gains = image_recipes(max_order, np.sqrt(1 - absorption))
    assert len(modes) == {1: 6, 2: 24}[max_order]
    ours = image_positions(corner, np.zeros(3), dims, modes)
    theirs, damping = pra_images(dims, absorption, corner, max_order)
    assert len(ours) == len(theirs)
    for position, gain in zip(ours, gains, strict=True):
        match = np.flatnonzero(np.linalg.norm(theirs - position, axis=1) < 1e-4)  # float32
        assert len(match) == 1, f"image {position} is not one of pyroomacoustics'"
        # pyroomacoustics keeps damping in float32: agreement to its precision
        assert gain == pytest.approx(float(damping[match[0]]), rel=1e-6)


def test_sound_travels_at_pyroomacoustics_speed():
    assert pra.constants.get("c") == SPEED_OF_SOUND_M_S


def test_order_zero_has_no_images_and_three_is_refused():
    assert len(image_recipes(0, np.ones(6))[0]) == 0
    with pytest.raises(ValueError, match="order 3"):
        image_recipes(3, np.ones(6))


def taps_for(scene: Scene, lo, hi, max_order, wall_gains, listener_gain=None, max_delay=10**6):
    modes, gains = image_recipes(max_order, wall_gains)
    n_l, n_s, k = scene.listeners, scene.sources, len(modes)
    delay = np.zeros((n_l, n_s, k), np.int32)
    bus = np.zeros((n_l, n_s, k, 3), np.int32)
    gain = np.zeros((n_l, n_s, k, 3), np.float32)
    _, triangles, inverse = bus_layout()
    if listener_gain is None:
        listener_gain = np.ones(n_l)
    image_taps(scene.listener_position, scene.listener_rotation,
               scene.source_positions_per_pair(), scene.source_forward, scene.pair_gain,
               scene.distance_model, scene.ref_distance_m, scene.max_distance_m, scene.rolloff,
               scene.cone_inner_deg, scene.cone_outer_deg, scene.cone_outer_gain,
               np.asarray(lo, float), np.asarray(hi, float), modes, gains,
               np.asarray(listener_gain, float), max_delay, triangles, inverse, delay, bus, gain)
    return modes, gains, delay, bus, gain


def test_delays_are_the_extra_path_of_each_image_to_the_nearest_sample():
    lo, hi = np.array([-4.0, -3.0, 0.0]), np.array([4.0, 3.0, 3.5])
    listener, source = np.array([0.5, 0.2, 1.2]), np.array([2.0, -1.0, 1.4])
    scene = Scene.create(listener, source)
    modes, _, delay, _, _ = taps_for(scene, lo, hi, 2, np.full(6, 0.8))
    images = image_positions(source, lo, hi, modes)
    extra_m = np.linalg.norm(images - listener, axis=1) - np.linalg.norm(source - listener)
    expected = np.round(extra_m * SAMPLE_RATE / SPEED_OF_SOUND_M_S)
    np.testing.assert_array_equal(delay[0, 0], expected)
    assert delay[0, 0].min() > 0  # every reflection is later than the direct sound


def test_gains_follow_the_walls_the_distance_law_and_a_power_preserving_pan():
    lo, hi = np.array([-4.0, -3.0, 0.0]), np.array([4.0, 3.0, 3.5])
    listener, source = np.array([0.0, 0.0, 1.2]), np.array([2.0, 1.0, 1.2])
    scene = Scene.create(listener, source)
    beta = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    modes, gains, _, _, gain = taps_for(scene, lo, hi, 1, beta, listener_gain=[0.5])
    images = image_positions(source, lo, hi, modes)
    distance = np.linalg.norm(images - listener, axis=1)
    # inverse distance law (ref 1 m, rolloff 1): 1/d; VBAP gains keep power: ‖g‖ = image gain
    np.testing.assert_allclose(np.linalg.norm(gain[0, 0], axis=1), 0.5 * gains / distance,
                               rtol=1e-5)


def test_the_pan_points_at_the_image_in_the_head_frame():
    """An image straight behind a listener facing +x lands on the back loudspeaker alone;
    turned 90° left (facing +y, so −x is on the left), the same image is on the left."""
    lo, hi = np.array([-5.0, -5.0, 0.0]), np.array([5.0, 5.0, 2.4])
    listener, source = np.array([0.0, 0.0, 1.2]), np.array([2.0, 0.0, 1.2])
    directions, _, _ = bus_layout()
    back = int(np.argmin(np.linalg.norm(directions - [-1, 0, 0], axis=1)))
    left = [int(np.argmin(np.linalg.norm(directions - d, axis=1)))
             for d in ([np.cos(np.radians(a)), np.sin(np.radians(a)), 0] for a in (60, 120))]
    for yaw, expected in ((0.0, {back}), (90.0, set(left))):
        scene = Scene.create(listener, source, listener_yaw_deg=yaw)
        modes, _, _, bus, gain = taps_for(scene, lo, hi, 1, np.ones(6))
        k = next(i for i, m in enumerate(modes) if tuple(m) == (1, 0, 0))  # x− wall: behind
        used = {int(b) for b, g in zip(bus[0, 0, k], gain[0, 0, k], strict=True) if g > 1e-6}
        assert used == expected, f"yaw {yaw}: loudspeakers {used}"


def test_silent_pairs_and_late_images_have_no_taps():
    lo, hi = np.array([-20.0, -20.0, 0.0]), np.array([20.0, 20.0, 10.0])
    scene = Scene.create([[0, 0, 1.2], [1, 1, 1.2]], [[3, 0, 1.2]],
                         pair_gain=[[0.0], [1.0]])
    _, _, delay, _, gain = taps_for(scene, lo, hi, 1, np.ones(6), max_delay=3000)
    assert not gain[0].any()
    late = delay[1, 0] > 3000
    assert late.any() and not gain[1, 0][late].any() and gain[1, 0][~late].all(axis=1).any()


def test_positions_outside_the_room_are_clamped_inside():
    lo, hi = np.array([-2.0, -2.0, 0.0]), np.array([2.0, 2.0, 3.0])
    inside = Scene.create([0, 0, 1.2], [1.95, 0, 1.2])
    outside = Scene.create([0, 0, 1.2], [40.0, 0, 1.2])
    _, _, d_in, _, _ = taps_for(inside, lo, hi, 1, np.ones(6))
    _, _, d_out, _, g_out = taps_for(outside, lo, hi, 1, np.ones(6))
    np.testing.assert_array_equal(d_in, d_out)
    assert np.isfinite(g_out).all()


def test_tables_fit_the_largest_order():
    assert len(image_recipes(2, np.ones(6))[0]) == MAX_IMAGES
    directions, triangles, _ = bus_layout()
    assert directions.shape == (BUSES, 3) and triangles.shape == (12, 3)
