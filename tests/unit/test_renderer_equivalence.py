"""The fast renderers match the plain time-domain reference on random, moving scenes.

Tolerance: 1e-4 relative error (‖fast − reference‖ / ‖reference‖ over the whole frame). The
fast paths accumulate in float32 over ~1000 bins and ~10 sources; their error measured here is
near 1e-7, so 1e-4 leaves room for other machines while still catching any wrong pair, gain,
direction or crossfade (each of which is an error of order 1).

The CUDA kernels under Numba's simulator (a child process of its own):
tests/integration/test_renderer_cudasim.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from dsp.geometry import Scene, quaternion_matrix
from dsp.renderer import Renderer
from tests.helpers.render import FRAMES, RTOL, compare


@pytest.mark.parametrize("frame", FRAMES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_numba_cpu_matches_reference_on_random_moving_scenes(kemar, seed, frame):
    errors = compare(kemar, "cpu", listeners=3, sources=5, ticks=5, seed=seed, frame=frame)
    assert max(errors) < RTOL, errors


@pytest.mark.parametrize("frame", FRAMES)
def test_numba_cpu_matches_reference_with_the_spherical_head(spherical_head, frame):
    errors = compare(spherical_head, "cpu", listeners=2, sources=4, ticks=4, seed=4,
                     frame=frame)
    assert max(errors) < RTOL, errors


@pytest.mark.parametrize("frame", FRAMES)
def test_a_static_scene_renders_the_same_samples_at_every_frame_size(kemar, frame):
    """Overlap-save is exact: once primed, a still scene's output does not depend on how the
    signal is cut into frames (float32 sums in a different order: 1e-6 of full scale)."""
    from tests.helpers.render import random_scene

    rng = np.random.default_rng(7)
    scene = random_scene(rng, 2, 3)
    x = (0.1 * rng.standard_normal((3, 8 * 960))).astype(np.float32)
    outs = {}
    for size in (frame, 960):
        renderer = Renderer(kemar, 2, 3, frame=size)
        renderer.prime(scene)
        outs[size] = np.concatenate([renderer.render_unlimited(scene, x[:, k:k + size])
                                     for k in range(0, x.shape[1], size)], axis=1)
    assert outs[frame].shape == (2, 8 * 960, 2)
    np.testing.assert_allclose(outs[frame], outs[960], atol=1e-6)


@pytest.mark.parametrize("frame", [0, 100, 1920])
def test_a_frame_the_renderer_cannot_tick_at_is_refused(kemar, frame):
    with pytest.raises(ValueError, match=f"frame of {frame} samples"):
        Renderer(kemar, 1, 1, frame=frame)


def test_audio_of_another_frame_size_is_refused(kemar):
    renderer = Renderer(kemar, 1, 2, frame=240)
    with pytest.raises(ValueError, match=r"expected \(2, 240\)"):
        renderer.render(Scene.create([0, 0, 0], [[1, 0, 0], [0, 1, 0]]),
                        np.zeros((2, 960), np.float32))


def test_quaternion_pose_renders_like_the_same_yaw(kemar):
    audio = (np.random.default_rng(0).standard_normal((2, 960)) * 0.1).astype(np.float32)
    by_yaw = Scene.create([0, 0, 0], [[2, 1, 0], [-1, 2, 1]], listener_yaw_deg=40.0)
    by_quat = Scene.create([0, 0, 0], [[2, 1, 0], [-1, 2, 1]])
    half = np.radians(40.0) / 2
    by_quat.listener_rotation = quaternion_matrix([[np.cos(half), 0, 0, np.sin(half)]])
    a = Renderer(kemar, 1, 2).render_unlimited(by_yaw, audio)
    b = Renderer(kemar, 1, 2).render_unlimited(by_quat, audio)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_a_40000_direction_set_renders_like_the_reference():
    """Dense sets work end to end (triangulation, spectra, kernels), not only KEMAR-sized ones."""
    from hrtf.hrirset import HrirSet

    rng = np.random.default_rng(40)
    n = 40_000
    positions = np.column_stack([rng.uniform(-180, 180, n),
                                 np.degrees(np.arcsin(rng.uniform(-1, 1, n))), np.ones(n)])
    hrir = rng.standard_normal((n, 2, 24)) * np.exp(-np.arange(24) / 6.0)
    hrirs = HrirSet.from_measurements("dense", positions, hrir, 48_000)
    assert len(hrirs.directions) > n - 20  # random points closer than 0.01° count as one
    errors = compare(hrirs, "cpu", listeners=2, sources=3, ticks=3, seed=6)
    assert max(errors) < RTOL, errors


def test_every_tick_kernel_releases_the_gil():
    """The room clock's thread must not hold the GIL while a tick renders."""
    from dsp import geometry, limiter, mixer_cpu
    from hrtf import grid

    kernels = [mixer_cpu.mix, geometry.pair_filters, limiter._limit, grid.locate_many]
    for kernel in kernels:
        assert kernel.targetoptions.get("nogil") is True, kernel.py_func.__name__
