"""Head poses, distance models and directivity cones."""

from __future__ import annotations

import numpy as np
import pytest

from dsp.geometry import (
    DISTANCE_MODELS,
    Scene,
    cone_gain,
    distance_gain,
    quaternion_matrix,
    yaw_pitch_roll_matrix,
)
from hrtf.grid import angles_deg


def head_direction(rotation, world_vector):
    return angles_deg(rotation.T @ np.asarray(world_vector, float))


@pytest.mark.parametrize(
    ("yaw", "pitch", "roll", "world", "az", "el"),
    [
        (90, 0, 0, [1, 0, 0], -90, 0),     # facing left, the front is on the right
        (-90, 0, 0, [1, 0, 0], 90, 0),
        (180, 0, 0, [0, 1, 0], -90, 0),
        (0, 90, 0, [0, 0, 1], 0, 0),       # looking up, overhead is ahead
        (0, 30, 0, [1, 0, 0], 0, -30),
        (0, 0, 90, [0, 0, 1], 90, 0),      # left ear up, overhead is at the left ear
    ],
)
def test_head_pose_moves_world_directions_into_the_head_frame(yaw, pitch, roll, world, az, el):
    got_az, got_el = head_direction(yaw_pitch_roll_matrix(yaw, pitch, roll), world)
    assert got_az == pytest.approx(az, abs=1e-9)
    assert got_el == pytest.approx(el, abs=1e-9)


def test_quaternion_and_yaw_pitch_roll_agree():
    half = np.radians(70.0) / 2
    np.testing.assert_allclose(quaternion_matrix([np.cos(half), 0, 0, np.sin(half)]),
                               yaw_pitch_roll_matrix(70.0), atol=1e-12)


@pytest.mark.parametrize("d", [0.2, 1.0, 2.0, 7.5, 50.0])
def test_distance_models_follow_web_audio(d):
    ref, dmax, rolloff = 1.0, 20.0, 0.8
    dc = min(max(d, ref), dmax)
    expected = {
        "inverse": ref / (ref + rolloff * (max(d, ref) - ref)),
        "linear": 1 - rolloff * (dc - ref) / (dmax - ref),
        "exponential": (max(d, ref) / ref) ** -rolloff,
    }
    for name, code in DISTANCE_MODELS.items():
        assert distance_gain(d, code, ref, dmax, rolloff) == pytest.approx(expected[name])


def test_cone_gain_inside_between_and_outside():
    args = (60.0, 180.0, 0.25)
    assert cone_gain(1, 0, 0, 1, 0, 0, *args) == 1.0
    assert cone_gain(1, 0, 0, -1, 0, 0, *args) == 0.25
    between = cone_gain(1, 0, 0, np.cos(np.radians(60)), np.sin(np.radians(60)), 0, *args)
    assert between == pytest.approx(1 + (0.25 - 1) * (60 - 30) / (90 - 30))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("listener_position", np.array([[np.nan, 0, 0]]), "NaN"),
        ("source_position", np.array([[1e9, 0, 0]]), "beyond"),
        ("pair_gain", np.array([[-1.0]]), "pair_gain"),
        ("pair_gain", np.ones((2, 2)), "shape"),
        ("ref_distance_m", np.array([0.0]), "ref_distance_m"),
        ("source_forward", np.ones((2, 3)), "source_forward"),
        ("distance_model", np.array([7]), "distance_model"),
        ("cone_outer_gain", np.array([2.0]), "cone_outer_gain"),
        # every value check once more, each on its own (the compiled pass must agree)
        ("source_position", np.array([[[0, np.inf, 0]]]), "NaN"),
        ("listener_rotation", np.full((1, 3, 3), np.nan), "NaN"),
        ("source_forward", np.array([[np.nan, 1.0, 0]]), "NaN"),
        ("pair_gain", np.array([[np.nan]]), "NaN"),
        ("max_distance_m", np.array([0.5]), "max_distance_m"),
        ("rolloff", np.array([-0.1]), "rolloff"),
        ("rolloff", np.array([np.inf]), "NaN"),
        ("cone_inner_deg", np.array([-1.0]), "cone angles"),
        ("cone_outer_deg", np.array([400.0]), "cone angles"),
        ("cone_inner_deg", np.array([np.nan]), "NaN"),
        ("distance_model", np.array([-1]), "distance_model"),
    ],
)
def test_scene_validation_names_the_bad_field(field, value, message):
    scene = Scene.create([0, 0, 0], [1, 0, 0])
    setattr(scene, field, value)
    with pytest.raises(ValueError, match=message):
        scene.validate()


def test_a_linear_distance_model_with_a_rolloff_over_one_is_refused():
    scene = Scene.create([0, 0, 0], [1, 0, 0], distance_model="linear", rolloff=1.0)
    scene.rolloff = np.array([1.5])
    with pytest.raises(ValueError, match="rolloff ≤ 1"):
        scene.validate()


def test_random_valid_scenes_pass_validation(rng):
    from tests.helpers.render import random_scene

    for overrides in (False, True):
        random_scene(rng, 4, 6, overrides=overrides).validate()
