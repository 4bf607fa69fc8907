"""pytest-benchmark suite for the renderer's tick: 10×10, 50×50, 100×100, and the baseline.

Run with ``make bench`` (timings, compare runs with ``--benchmark-compare``). Under
``make test`` each case runs once as a smoke test (benchmarks disabled), asserting nothing
about speed.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.mixer import cycling_tick, naive_tick, random_stage, stage_scene
from dsp.renderer import Renderer
from hrtf.constants import FRAME
from hrtf.library import load_hrtf

SIZES = [(10, 10), (50, 50), (100, 100)]


@pytest.fixture(scope="module")
def kemar():
    return load_hrtf("kemar")


def _tick_fn(hrirs, listeners, sources, moving):
    lp, sp = random_stage(listeners, sources)
    audio = (np.random.default_rng(0).standard_normal((sources, FRAME)) * 0.05).astype(np.float32)
    renderer = Renderer(hrirs, listeners, sources)
    scenes = [stage_scene(lp, sp, k, moving) for k in range(8)]
    return cycling_tick(renderer, scenes, audio)


@pytest.mark.parametrize(("listeners", "sources"), SIZES, ids=[f"{a}x{b}" for a, b in SIZES])
@pytest.mark.parametrize("motion", ["static", "moving"])
def test_engine_tick(benchmark, kemar, listeners, sources, motion):
    benchmark.group = f"tick {listeners}x{sources}"
    out = benchmark(_tick_fn(kemar, listeners, sources, motion == "moving"))
    assert out.shape == (listeners, FRAME, 2)


@pytest.mark.parametrize(("listeners", "sources"), SIZES[:2], ids=["10x10", "50x50"])
def test_naive_baseline_tick(benchmark, kemar, listeners, sources):
    benchmark.group = f"tick {listeners}x{sources}"
    lp, sp = random_stage(listeners, sources)
    history = np.random.default_rng(0).standard_normal((sources, FRAME + kemar.taps - 1))
    scene = stage_scene(lp, sp, 1, True)
    out = benchmark.pedantic(naive_tick, args=(kemar, scene, history), rounds=3, iterations=1)
    assert out.shape == (listeners, FRAME, 2)
