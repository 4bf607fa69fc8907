"""``spatialjam bench mixer``: the renderer's tick against a naive baseline, in one run.

The engine renders ``--ticks`` frames of a random stage twice: once static (filters unchanged
between ticks) and once with every listener turning their head every tick (every pair's filter
changes, so every pair is rendered twice and crossfaded: the worst case). The baseline renders
the same scene the naive way: every (listener, source) pair's interpolated response convolved
separately with ``scipy.signal.oaconvolve``, per ear, per tick. Both are timed with
``time.perf_counter`` in the same process; the ratio is the number to read.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import scipy.signal

from bench.report import run_bench
from dsp.geometry import Scene
from dsp.renderer import Renderer
from hrtf.constants import FRAME, FRAME_MS
from hrtf.hrirset import HrirSet
from hrtf.library import load_hrtf
from server.cli.args import add_device_arg, add_hrtf_args, count, hrtf_spec

STAGE_HALF_WIDTH_M = 5.0


def random_stage(listeners: int, sources: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Listener and source positions scattered on a 10 m × 10 m stage, heads at 1.2–1.8 m."""
    rng = np.random.default_rng(seed)
    def scatter(n):
        xy = rng.uniform(-STAGE_HALF_WIDTH_M, STAGE_HALF_WIDTH_M, (n, 2))
        return np.column_stack([xy, rng.uniform(1.2, 1.8, n)])
    return scatter(listeners), scatter(sources)


def stage_scene(listener_pos, source_pos, tick: int, moving: bool) -> Scene:
    yaw = np.linspace(0, 360, len(listener_pos), endpoint=False)
    if moving:
        yaw = yaw + 5.0 * tick
    return Scene.create(listener_pos, source_pos, listener_yaw_deg=yaw)


def cycling_tick(renderer, scenes: list, audio: np.ndarray):
    """A no-argument tick for pytest-benchmark: renders the next of ``scenes`` each call
    (rendered once already, so the first timed call is not the first)."""
    state = {"k": 0}

    def tick():
        state["k"] += 1
        return renderer.render(scenes[state["k"] % len(scenes)], audio)

    tick()
    return tick


def time_engine(hrirs: HrirSet, listeners: int, sources: int, ticks: int, device: str,
                moving: bool, seed: int = 0) -> np.ndarray:
    """Seconds per tick of :meth:`Renderer.render` (scene building included)."""
    lp, sp = random_stage(listeners, sources, seed)
    audio = np.random.default_rng(seed).standard_normal((sources, FRAME)).astype(np.float32)
    audio *= 0.05
    renderer = Renderer(hrirs, listeners, sources, device=device)
    renderer.render(stage_scene(lp, sp, 0, moving), audio)  # compile / warm caches
    times = np.empty(ticks)
    for k in range(ticks):
        t0 = time.perf_counter()
        renderer.render(stage_scene(lp, sp, k + 1, moving), audio)
        times[k] = time.perf_counter() - t0
    return times


def naive_tick(hrirs: HrirSet, scene: Scene, history: np.ndarray) -> np.ndarray:
    """One frame rendered pair by pair with ``scipy.signal.oaconvolve``."""
    grid_hrir = hrirs.grid_hrir
    out = np.zeros((scene.listeners, FRAME, 2), np.float32)
    positions = scene.source_positions_per_pair()
    for l in range(scene.listeners):
        rel = positions[l] - scene.listener_position[l]
        head = rel @ scene.listener_rotation[l]
        dist = np.linalg.norm(rel, axis=1)
        gain = 1.0 / np.maximum(dist, 1.0)
        idx, w = hrirs.grid.weights(head)
        for s in range(scene.sources):
            ir = gain[s] * np.tensordot(w[s], grid_hrir[idx[s]], axes=1)
            for ear in range(2):
                y = scipy.signal.oaconvolve(history[s], ir[ear], mode="valid")
                out[l, :, ear] += y[-FRAME:]
    return out


def time_naive(hrirs: HrirSet, listeners: int, sources: int, ticks: int,
               seed: int = 0) -> np.ndarray:
    lp, sp = random_stage(listeners, sources, seed)
    history = np.random.default_rng(seed).standard_normal(
        (sources, FRAME + hrirs.taps - 1)).astype(np.float32) * 0.05
    naive_tick(hrirs, stage_scene(lp, sp, 0, True), history)
    times = np.empty(ticks)
    for k in range(ticks):
        t0 = time.perf_counter()
        naive_tick(hrirs, stage_scene(lp, sp, k + 1, True), history)
        times[k] = time.perf_counter() - t0
    return times


def _summary_ms(times: np.ndarray) -> dict:
    return {"min": round(1e3 * float(times.min()), 4),
            "median": round(1e3 * float(np.median(times)), 4),
            "p95": round(1e3 * float(np.percentile(times, 95)), 4),
            "ticks": len(times)}


def mixer_benchmark(hrirs: HrirSet, listeners: int, sources: int, ticks: int,
                    baseline_ticks: int, device: str = "cpu") -> dict:
    """Run the engine (static and moving) and the naive baseline; return the report dict."""
    static = time_engine(hrirs, listeners, sources, ticks, device, moving=False)
    moving = time_engine(hrirs, listeners, sources, ticks, device, moving=True)
    report = {
        "benchmark": "mixer",
        "listeners": listeners,
        "sources": sources,
        "pairs": listeners * sources,
        "device": device,
        "hrtf": hrirs.name,
        "taps": hrirs.taps,
        "nfft": hrirs.nfft,
        "frame_ms": FRAME_MS,
        "engine_static_ms": _summary_ms(static),
        "engine_moving_ms": _summary_ms(moving),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine()},
    }
    if baseline_ticks:
        naive = time_naive(hrirs, listeners, sources, baseline_ticks)
        report["baseline"] = "per-pair scipy.signal.oaconvolve, time domain"
        report["baseline_ms"] = _summary_ms(naive)
        report["speedup_static"] = round(float(np.median(naive) / np.median(static)), 1)
        report["speedup_moving"] = round(float(np.median(naive) / np.median(moving)), 1)
    return report


def report_lines(r: dict) -> list[str]:
    lines = [
        f"mixer: {r['listeners']} listeners × {r['sources']} sources on {r['device']} "
        f"({r['hrtf']}, {r['taps']} taps, FFT {r['nfft']})",
        f"  engine, static scene : median {r['engine_static_ms']['median']:.3f} ms "
        f"(min {r['engine_static_ms']['min']:.3f}) per {r['frame_ms']} ms tick",
        f"  engine, heads moving : median {r['engine_moving_ms']['median']:.3f} ms "
        f"(min {r['engine_moving_ms']['min']:.3f})",
    ]
    if "baseline_ms" in r:
        lines += [
            f"  naive baseline       : median {r['baseline_ms']['median']:.1f} ms "
            f"(min {r['baseline_ms']['min']:.1f}) — {r['baseline']}",
            f"  speed-up             : ×{r['speedup_static']} static, "
            f"×{r['speedup_moving']} moving",
        ]
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``spatialjam bench mixer``'s options; the command runs :func:`run_mixer_bench`."""
    parser.add_argument("--listeners", type=count("listeners", 1, 10_000), default=50)
    parser.add_argument("--sources", type=count("sources", 1, 10_000), default=50)
    parser.add_argument("--ticks", type=count("ticks", 1, 100_000), default=100)
    parser.add_argument("--baseline-ticks", type=count("baseline ticks", 0, 1000), default=3)
    add_hrtf_args(parser)
    add_device_arg(parser)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(run=run_mixer_bench)


def run_mixer_bench(args: argparse.Namespace) -> int:
    hrirs = load_hrtf(hrtf_spec(args))
    run_bench(lambda: mixer_benchmark(hrirs, args.listeners, args.sources, args.ticks,
                                      args.baseline_ticks, args.device),
              report_lines, args.json)
    return 0
