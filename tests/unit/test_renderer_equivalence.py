"""The fast renderers match the plain time-domain reference on random, moving scenes.

Tolerance: 1e-4 relative error (‖fast − reference‖ / ‖reference‖ over the whole frame). The
fast paths accumulate in float32 over ~1000 bins and ~10 sources; their error measured here is
near 1e-7, so 1e-4 leaves room for other machines while still catching any wrong pair, gain,
direction or crossfade (each of which is an error of order 1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dsp.geometry import Scene, quaternion_matrix
from dsp.reference import ReferenceRenderer
from dsp.renderer import Renderer

RTOL = 1e-4
ROOT = Path(__file__).resolve().parents[1]


def random_scene(rng, listeners: int, sources: int, *, overrides: bool = False) -> Scene:
    """Random poses, positions, gains, mutes, distance models and cones."""
    scene = Scene.create(
        rng.uniform(-4, 4, (listeners, 3)),
        rng.uniform(-4, 4, (listeners, sources, 3) if overrides else (sources, 3)),
        listener_yaw_deg=rng.uniform(-180, 180, listeners),
        listener_pitch_deg=rng.uniform(-60, 60, listeners),
        listener_roll_deg=rng.uniform(-30, 30, listeners),
        pair_gain=rng.uniform(0.2, 1.5, (listeners, sources))
        * (rng.random((listeners, sources)) > 0.2),  # about one pair in five muted
        source_forward=rng.normal(size=(sources, 3)),
    )
    scene.distance_model = rng.integers(0, 3, sources)
    scene.ref_distance_m = rng.uniform(0.5, 2.0, sources)
    scene.max_distance_m = scene.ref_distance_m + rng.uniform(5, 20, sources)
    scene.rolloff = rng.uniform(0.2, 1.0, sources)
    scene.cone_inner_deg = rng.uniform(60, 360, sources)
    scene.cone_outer_deg = np.minimum(scene.cone_inner_deg + rng.uniform(0, 120, sources), 360)
    scene.cone_outer_gain = rng.uniform(0, 1, sources)
    scene.validate()
    return scene


def compare(hrirs, device: str, listeners: int, sources: int, ticks: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    fast = Renderer(hrirs, listeners, sources, device=device)
    ref = ReferenceRenderer(hrirs, listeners, sources)
    errors = []
    scene = random_scene(rng, listeners, sources, overrides=seed % 2 == 1)
    for tick in range(ticks):
        if tick % 2 == 1:  # every other tick everything moves; in between it holds still
            scene = random_scene(rng, listeners, sources, overrides=seed % 2 == 1)
        audio = (rng.standard_normal((sources, 960)) * 0.1).astype(np.float32)
        y = fast.render_unlimited(scene, audio)
        y_ref = ref.render_unlimited(scene, audio)
        errors.append(float(np.linalg.norm(y - y_ref) / np.linalg.norm(y_ref)))
    return errors


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_numba_cpu_matches_reference_on_random_moving_scenes(kemar, seed):
    errors = compare(kemar, "cpu", listeners=3, sources=5, ticks=5, seed=seed)
    assert max(errors) < RTOL, errors


def test_numba_cpu_matches_reference_with_the_spherical_head(spherical_head):
    errors = compare(spherical_head, "cpu", listeners=2, sources=4, ticks=4, seed=4)
    assert max(errors) < RTOL, errors


def test_quaternion_pose_renders_like_the_same_yaw(kemar):
    audio = (np.random.default_rng(0).standard_normal((2, 960)) * 0.1).astype(np.float32)
    by_yaw = Scene.create([0, 0, 0], [[2, 1, 0], [-1, 2, 1]], listener_yaw_deg=40.0)
    by_quat = Scene.create([0, 0, 0], [[2, 1, 0], [-1, 2, 1]])
    half = np.radians(40.0) / 2
    by_quat.listener_rotation = quaternion_matrix([[np.cos(half), 0, 0, np.sin(half)]])
    a = Renderer(kemar, 1, 2).render_unlimited(by_yaw, audio)
    b = Renderer(kemar, 1, 2).render_unlimited(by_quat, audio)
    np.testing.assert_allclose(a, b, atol=1e-6)


CUDASIM_SCRIPT = """
import json, sys
from hrtf.library import load_hrtf
from tests.test_renderer_equivalence import compare
errors = compare(load_hrtf(sys.argv[1]), "cuda", listeners=2, sources=3, ticks=3, seed=5)
print(json.dumps(errors))
"""


@pytest.mark.parametrize("hrtf", ["kemar", "spherical-head"])
def test_numba_cuda_kernels_match_reference_under_the_simulator(hrtf):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    done = subprocess.run([sys.executable, "-c", CUDASIM_SCRIPT, hrtf], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(errors) == 3
    assert max(errors) < RTOL, errors


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
