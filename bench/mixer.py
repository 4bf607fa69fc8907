"""``spatialjam bench mixer``: the renderer's tick against a naive baseline, in one run.

The engine renders ``--ticks`` frames of a random stage twice: once static (filters unchanged
between ticks) and once with every listener turning their head every tick (every pair's filter
changes, so every pair is rendered twice and crossfaded: the worst case). The baseline renders
the same scene the naive way: every (listener, source) pair's interpolated response convolved
separately with ``scipy.signal.oaconvolve``, per ear, per tick. Both are timed with
``time.perf_counter`` in the same process; the ratio is the number to read.

``--frame-ms`` takes one or more of the room frame sizes (20 ms by default): each renders the
same stretch of audio (``--ticks`` frames of the longest), in rounds that take turns between the
sizes so a busy machine weighs on each alike, and the report gives each size's cost per second
of audio and its ratio to the longest frame's (issue 17: 5 ms within 3× of 20 ms). The
baseline and the top-level keys are the first size's.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numba
import numpy as np
import scipy.signal

from bench.report import run_bench
from dsp.geometry import Scene
from dsp.renderer import Renderer
from hrtf.constants import FRAME, FRAME_CHOICES_MS, SAMPLE_RATE, frame_samples
from hrtf.hrirset import HrirSet, fft_size
from hrtf.library import load_hrtf
from server.cli.args import add_device_arg, add_hrtf_args, count, hrtf_spec

STAGE_HALF_WIDTH_M = 5.0
#: Timed rounds per frame size, taking turns between the sizes.
ROUNDS = 5


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


class EngineTimer:
    """Times :meth:`Renderer.render` (scene building included) on one stage, one frame size,
    static or moving, a batch of ticks per :meth:`run`; the renderer lives between batches."""

    def __init__(self, hrirs: HrirSet, listeners: int, sources: int, device: str,
                 moving: bool, frame: int = FRAME, seed: int = 0) -> None:
        self.stage = random_stage(listeners, sources, seed)
        self.audio = np.random.default_rng(seed).standard_normal((sources, frame))
        self.audio = (0.05 * self.audio).astype(np.float32)
        self.renderer = Renderer(hrirs, listeners, sources, device=device, frame=frame)
        self.moving = moving
        self.tick = 0
        self.times: list[float] = []
        #: CPU seconds of the whole process (every thread) per tick.
        self.cpu: list[float] = []
        self.renderer.render(stage_scene(*self.stage, 0, moving), self.audio)  # compile, warm

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            self.tick += 1
            c0, t0 = time.process_time(), time.perf_counter()
            self.renderer.render(stage_scene(*self.stage, self.tick, self.moving), self.audio)
            self.times.append(time.perf_counter() - t0)
            self.cpu.append(time.process_time() - c0)


def time_engine(hrirs: HrirSet, listeners: int, sources: int, ticks: int, device: str,
                moving: bool, seed: int = 0, frame: int = FRAME) -> np.ndarray:
    """Seconds per tick of :meth:`Renderer.render` (scene building included)."""
    timer = EngineTimer(hrirs, listeners, sources, device, moving, frame, seed)
    timer.run(ticks)
    return np.array(timer.times)


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


def time_frames(hrirs: HrirSet, listeners: int, sources: int, ticks: int, device: str,
                frames_ms: list[float]) -> dict[float, tuple[EngineTimer, EngineTimer]]:
    """The static and the moving :class:`EngineTimer` of each frame size in ``frames_ms``,
    run.

    Each size renders ``ticks`` frames of the longest size's worth of audio, in
    :data:`ROUNDS` rounds that take turns between the sizes.
    """
    longest = max(frame_samples(ms) for ms in frames_ms)
    timers = {ms: [EngineTimer(hrirs, listeners, sources, device, moving, frame_samples(ms))
                   for moving in (False, True)] for ms in frames_ms}
    for r in range(ROUNDS):
        for ms, pair in timers.items():
            share = ticks * longest // frame_samples(ms)
            batch = share * (r + 1) // ROUNDS - share * r // ROUNDS
            for timer in pair:
                timer.run(batch)
    return {ms: (pair[0], pair[1]) for ms, pair in timers.items()}


def _per_audio_s(times: list[float], frame: int) -> float:
    """Milliseconds of wall time per second of audio: the median tick × ticks per second."""
    return round(1e3 * float(np.median(times)) * SAMPLE_RATE / frame, 2)


def _cpu_per_audio_s(cpu: list[float], frame: int) -> float:
    """Milliseconds of CPU time (all the process's threads) per second of audio rendered."""
    return round(1e3 * float(np.sum(cpu)) / (len(cpu) * frame / SAMPLE_RATE), 2)


def mixer_benchmark(hrirs: HrirSet, listeners: int, sources: int, ticks: int,
                    baseline_ticks: int, device: str = "cpu",
                    frames_ms: list[float] | None = None) -> dict:
    """Run the engine (static and moving) at each frame size and the naive baseline; return
    the report dict (top-level timings: the first frame size's)."""
    frames_ms = list(dict.fromkeys(frames_ms or [1000 * FRAME / SAMPLE_RATE]))
    timed = time_frames(hrirs, listeners, sources, ticks, device, frames_ms)
    longest = max(frames_ms)
    per_frame = []
    for ms, (st, mv) in timed.items():
        frame = frame_samples(ms)
        per_frame.append({
            "frame_ms": ms, "frame": frame, "nfft": fft_size(hrirs.taps, frame),
            "engine_static_ms": _summary_ms(np.array(st.times)),
            "engine_moving_ms": _summary_ms(np.array(mv.times)),
            "static_ms_per_audio_s": _per_audio_s(st.times, frame),
            "moving_ms_per_audio_s": _per_audio_s(mv.times, frame),
            "static_cpu_ms_per_audio_s": _cpu_per_audio_s(st.cpu, frame),
            "moving_cpu_ms_per_audio_s": _cpu_per_audio_s(mv.cpu, frame),
        })
    base = next(f for f in per_frame if f["frame_ms"] == longest)
    for f in per_frame:
        for kind in ("static", "moving", "static_cpu", "moving_cpu"):
            f[f"{kind}_cost_vs_{longest:g}ms"] = round(
                f[f"{kind}_ms_per_audio_s"] / base[f"{kind}_ms_per_audio_s"], 2)
    first = per_frame[0]
    static = np.array(timed[frames_ms[0]][0].times)
    moving = np.array(timed[frames_ms[0]][1].times)
    report = {
        "benchmark": "mixer",
        "listeners": listeners,
        "sources": sources,
        "pairs": listeners * sources,
        "device": device,
        "hrtf": hrirs.name,
        "taps": hrirs.taps,
        "nfft": first["nfft"],
        "frame_ms": first["frame_ms"],
        "engine_static_ms": first["engine_static_ms"],
        "engine_moving_ms": first["engine_moving_ms"],
        "frames": per_frame,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine()},
        # how the parallel kernels ran: spinning OpenMP workers count in the CPU time
        "numba": {"threads": numba.get_num_threads(), "layer": numba.threading_layer(),
                  "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "")},
    }
    if baseline_ticks and first["frame"] == FRAME:
        naive = time_naive(hrirs, listeners, sources, baseline_ticks)
        report["baseline"] = "per-pair scipy.signal.oaconvolve, time domain"
        report["baseline_ms"] = _summary_ms(naive)
        report["speedup_static"] = round(float(np.median(naive) / np.median(static)), 1)
        report["speedup_moving"] = round(float(np.median(naive) / np.median(moving)), 1)
    return report


def report_lines(r: dict) -> list[str]:
    lines = [
        f"mixer: {r['listeners']} listeners × {r['sources']} sources on {r['device']} "
        f"({r['hrtf']}, {r['taps']} taps, FFT {r['nfft']}, {r['frame_ms']:g} ms frames)",
        f"  engine, static scene : median {r['engine_static_ms']['median']:.3f} ms "
        f"(min {r['engine_static_ms']['min']:.3f}) per {r['frame_ms']:g} ms tick",
        f"  engine, heads moving : median {r['engine_moving_ms']['median']:.3f} ms "
        f"(min {r['engine_moving_ms']['min']:.3f})",
    ]
    frames = r.get("frames", [])
    if "numba" in r:
        lines.append(f"  numba: {r['numba']['threads']} threads ({r['numba']['layer']}"
                     + (f", OMP_WAIT_POLICY={r['numba']['omp_wait_policy']}"
                        if r['numba']['omp_wait_policy'] else "") + ")")
    if len(frames) > 1:
        longest = max(f["frame_ms"] for f in frames)
        vs = f"cost_vs_{longest:g}ms"
        lines.append(f"  per second of audio, median wall | CPU of all threads (× {longest:g} "
                     "ms frames'):")
        for f in frames:
            lines.append(
                f"    {f['frame_ms']:>4g} ms ({f['frame']} samples, FFT {f['nfft']}): static "
                f"{f['static_ms_per_audio_s']:.1f} (×{f[f'static_{vs}']}) | "
                f"{f['static_cpu_ms_per_audio_s']:.1f} (×{f[f'static_cpu_{vs}']}) ms, moving "
                f"{f['moving_ms_per_audio_s']:.1f} (×{f[f'moving_{vs}']}) | "
                f"{f['moving_cpu_ms_per_audio_s']:.1f} (×{f[f'moving_cpu_{vs}']}) ms")
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
    parser.add_argument("--baseline-ticks", type=count("baseline ticks", 0, 1000), default=3,
                        help="naive baseline ticks (at 20 ms frames only; 0: none)")
    parser.add_argument("--frame-ms", type=float, nargs="+", default=[20.0],
                        choices=FRAME_CHOICES_MS, metavar="MS",
                        help="frame sizes to time in the same run: "
                             f"{', '.join(f'{ms:g}' for ms in FRAME_CHOICES_MS)} (default 20)")
    add_hrtf_args(parser)
    add_device_arg(parser)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(run=run_mixer_bench)


def run_mixer_bench(args: argparse.Namespace) -> int:
    hrirs = load_hrtf(hrtf_spec(args))
    run_bench(lambda: mixer_benchmark(hrirs, args.listeners, args.sources, args.ticks,
                                      args.baseline_ticks, args.device, args.frame_ms),
              report_lines, args.json)
    return 0
