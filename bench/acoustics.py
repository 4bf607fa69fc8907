"""``spatialjam bench acoustics``: what room acoustics cost per tick, beside the dry render.

For each stage size, two renderers take the same scenes and the same audio, tick by tick, in
one run: one dry (no room set, as a room with acoustics off), one in a preset room
(:func:`dsp.room_model.room_model`: early reflections on the virtual loudspeakers and the late
tail). Ticks alternate which renderer goes first, so that both see the same machine.

Players stand inside the room: scattered over the floor :data:`WALL_CLEARANCE_M` clear of the
walls (the room spans ``x ∈ [−X/2, X/2]``, ``y ∈ [−Y/2, Y/2]``, ``z ∈ [0, Z]``), ears at
:data:`~dsp.geometry.EAR_HEIGHT_M`. Player ``k`` is listener ``k`` and source ``k`` alike, and
does not hear themself (the room's default). "static" keeps everyone still; "moving" is the
worst case: every player walks a small circle at about 1 m/s and turns their head 5° per tick,
so every pair's HRTF filter and every image's delay change on every tick.

Two times per tick and renderer, with ``time.perf_counter``:

- render: :meth:`dsp.renderer.Renderer.render` (scenes are built beforehand, outside);
- tick: the render as :mod:`server.tick.runner` runs it (under its render lock) followed by
  :func:`server.tick.runner.encode_all` of every listener's mix with
  :class:`server.media.downlink.MusicOpusEncoder` (libopus through :mod:`server.media.opus`),
  one encoder per listener. The sources' decoding is left out: it does not depend on the room.

The ratios (with acoustics over without) are medians over medians, and minima over minima: on
a machine shared with other work, many ticks are interrupted and the fastest ones are the
steadier measure of the work itself.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numba
import numpy as np

from bench.report import run_bench
from dsp.geometry import EAR_HEIGHT_M, Scene
from dsp.image_sources import image_recipes
from dsp.renderer import Renderer
from dsp.room_model import RoomModel, room_model
from hrtf.constants import FRAME, FRAME_MS, SAMPLE_RATE
from hrtf.hrirset import HrirSet
from hrtf.library import load_hrtf
from server.cli.args import add_device_arg, add_hrtf_args, count, hrtf_spec
from server.errors import CliError
from signaling.limits import ROOM_PRESETS

SIZES = ((10, 10), (20, 20), (50, 50))
MOTIONS = ("static", "moving")
DEFAULT_PRESET = "rehearsal-room"
DEFAULT_TICKS = 100
#: Players keep this far from the walls (m).
WALL_CLEARANCE_M = 0.5
#: "moving": each player walks a circle of this radius (m) ...
WALK_RADIUS_M = 0.3
#: ... at this speed (m/s) ...
WALK_SPEED_M_S = 1.0
#: ... and turns their head by this much per tick (degrees), as ``bench mixer`` does.
TURN_DEG_PER_TICK = 5.0
#: Untimed ticks before the timed ones (numba's first calls, caches).
WARMUP_TICKS = 3
#: Distinct frames of source audio, played in turn.
AUDIO_FRAMES = 16


def room_stage(model: RoomModel, listeners: int, sources: int,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Listener ``(L, 3)`` and source ``(S, 3)`` positions of players scattered in ``model``.

    Uniform over the floor, :data:`WALL_CLEARANCE_M` clear of the walls, at ear height; player
    ``k`` is listener ``k`` and source ``k``.
    """
    lo, hi = model.bounds_m()
    rng = np.random.default_rng(seed)
    players = max(listeners, sources)
    xy = rng.uniform(lo[:2] + WALL_CLEARANCE_M, hi[:2] - WALL_CLEARANCE_M, (players, 2))
    positions = np.column_stack([xy, np.full(players, EAR_HEIGHT_M)])
    return positions[:listeners], positions[:sources]


def room_scene(listener_pos: np.ndarray, source_pos: np.ndarray, tick: int,
               moving: bool) -> Scene:
    """The stage at ``tick``: still, or every player walking and turning (module docstring).

    Listener ``k`` and source ``k`` are one player: they move together and the player does not
    hear themself.
    """
    n_l, n_s = len(listener_pos), len(source_pos)
    players = max(n_l, n_s)
    yaw = np.linspace(0.0, 360.0, n_l, endpoint=False)
    offset = np.zeros((players, 3))
    if moving:
        yaw = yaw + TURN_DEG_PER_TICK * tick
        step_rad = WALK_SPEED_M_S / WALK_RADIUS_M * FRAME / SAMPLE_RATE
        phase = step_rad * tick + np.linspace(0.0, 2.0 * np.pi, players, endpoint=False)
        offset[:, 0] = WALK_RADIUS_M * np.cos(phase)
        offset[:, 1] = WALK_RADIUS_M * np.sin(phase)
    gain = np.ones((n_l, n_s))
    own = np.arange(min(n_l, n_s))
    gain[own, own] = 0.0
    return Scene.create(listener_pos + offset[:n_l], source_pos + offset[:n_s],
                        listener_yaw_deg=yaw, pair_gain=gain)


def time_case(hrirs: HrirSet, model: RoomModel, listeners: int, sources: int, ticks: int,
              moving: bool, device: str = "cpu", seed: int = 0) -> dict[str, np.ndarray]:
    """Seconds per tick, ``{"render_off", "render_on", "tick_off", "tick_on"}`` → ``(ticks,)``.

    "off" renders dry, "on" in ``model``; both take the same scenes and audio, alternately
    first.
    """
    from server.media.downlink import MusicOpusEncoder
    from server.tick.runner import encode_all, render_lock

    lp, sp = room_stage(model, listeners, sources, seed)
    scenes = [room_scene(lp, sp, k, moving) for k in range(WARMUP_TICKS + ticks)]
    rng = np.random.default_rng(seed)
    audio = (0.05 * rng.standard_normal((AUDIO_FRAMES, sources, FRAME))).astype(np.float32)
    renderers = {"off": Renderer(hrirs, listeners, sources, device=device),
                 "on": Renderer(hrirs, listeners, sources, device=device)}
    renderers["on"].set_room(model)
    encoders = {name: {slot: MusicOpusEncoder() for slot in range(listeners)}
                for name in renderers}
    times = {f"{part}_{name}": np.empty(ticks) for part in ("render", "tick")
             for name in renderers}
    order = list(renderers)
    for k, scene in enumerate(scenes):
        frame = audio[k % AUDIO_FRAMES]
        for name in order if k % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            with render_lock():
                mixes = renderers[name].render(scene, frame)
            t1 = time.perf_counter()
            packets = encode_all(mixes, encoders[name])
            t2 = time.perf_counter()
            if len(packets) != listeners:
                raise RuntimeError(f"{len(packets)} of {listeners} mixes were encoded")
            if k >= WARMUP_TICKS:
                times[f"render_{name}"][k - WARMUP_TICKS] = t1 - t0
                times[f"tick_{name}"][k - WARMUP_TICKS] = t2 - t0
    return times


def _summary_ms(times: np.ndarray) -> dict:
    return {"median": round(1e3 * float(np.median(times)), 4),
            "p95": round(1e3 * float(np.percentile(times, 95)), 4),
            "min": round(1e3 * float(times.min()), 4),
            "ticks": len(times)}


def _ratio(on: np.ndarray, off: np.ndarray, statistic=np.median) -> float:
    return round(float(statistic(on) / statistic(off)), 2)


def acoustics_benchmark(hrirs: HrirSet, sizes=SIZES, preset: str = DEFAULT_PRESET,
                        ticks: int = DEFAULT_TICKS, motion=MOTIONS,
                        device: str = "cpu") -> dict:
    """Time every ``(listeners, sources)`` size and motion dry and in ``preset``.

    Returns the report: per case the render's and the whole tick's median, p95 and min (ms)
    without and with acoustics, and their ratios (on / off) of the medians and of the minima
    (the fastest ticks: what is left when other work on the machine interrupts many ticks).
    """
    if ticks < 1:
        raise ValueError(f"ticks must be at least 1, got {ticks}")
    unknown = [m for m in motion if m not in MOTIONS]
    if unknown:
        raise ValueError(f"unknown motion {unknown[0]!r}: choose from {', '.join(MOTIONS)}")
    model = room_model(preset)
    cases = []
    for listeners, sources in sizes:
        for kind in motion:
            t = time_case(hrirs, model, listeners, sources, ticks, kind == "moving", device)
            cases.append({
                "listeners": listeners, "sources": sources, "motion": kind,
                "render_off_ms": _summary_ms(t["render_off"]),
                "render_on_ms": _summary_ms(t["render_on"]),
                "render_ratio": _ratio(t["render_on"], t["render_off"]),
                "render_ratio_min": _ratio(t["render_on"], t["render_off"], np.min),
                "tick_off_ms": _summary_ms(t["tick_off"]),
                "tick_on_ms": _summary_ms(t["tick_on"]),
                "tick_ratio": _ratio(t["tick_on"], t["tick_off"]),
                "tick_ratio_min": _ratio(t["tick_on"], t["tick_off"], np.min),
            })
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = None
    return {
        "benchmark": "acoustics",
        "room": model.describe(),
        "image_sources": len(image_recipes(model.max_order, model.reflection_gains())[0]),
        "device": device,
        "hrtf": hrirs.name,
        "taps": hrirs.taps,
        "nfft": hrirs.nfft,
        "frame_ms": FRAME_MS,
        "ticks": ticks,
        "tick": "render (under the room's render lock) + encode_all of every listener's mix",
        "cases": cases,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(),
                    "numba_threads": numba.get_num_threads(), "numba_layer": layer},
    }


def report_lines(r: dict) -> list[str]:
    room = r["room"]
    dims = " × ".join(f"{d:g}" for d in room["dims_m"])
    lines = [
        f"acoustics: {room['name']} ({dims} m, RT60 {room['rt60_s']:.2f} s, order "
        f"{room['max_order']}: {r['image_sources']} images, wet {room['wet']:g}) on "
        f"{r['device']} ({r['hrtf']}, {r['taps']} taps, FFT {r['nfft']}), "
        f"{r['ticks']} ticks per case",
        f"  render = Renderer.render; tick = {r['tick']}",
        f"  ms per {r['frame_ms']} ms tick, median / p95; on/off: ratio of the medians "
        "(of the fastest ticks)",
        f"  {'size':>7}  {'motion':<7} {'render off':>16} {'render on':>16} {'on/off':>13}"
        f" {'tick off':>16} {'tick on':>16} {'on/off':>13}",
    ]

    def cell(s: dict) -> str:
        return f"{s['median']:7.3f} /{s['p95']:7.3f}"

    def ratio(c: dict, part: str) -> str:
        return f"{c[f'{part}_ratio']:5.2f}× ({c[f'{part}_ratio_min']:.2f}×)"

    for c in r["cases"]:
        size = f"{c['listeners']}×{c['sources']}"
        lines.append(
            f"  {size:>7}  {c['motion']:<7} {cell(c['render_off_ms'])} "
            f"{cell(c['render_on_ms'])} {ratio(c, 'render')} {cell(c['tick_off_ms'])} "
            f"{cell(c['tick_on_ms'])} {ratio(c, 'tick')}")
    return lines


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """``"10x10,20x20"`` → ``((10, 10), (20, 20))``; ValueError naming the bad part."""
    sizes = []
    for part in text.split(","):
        fields = part.strip().lower().replace("×", "x").split("x")
        try:
            listeners, sources = (int(f) for f in fields)
        except ValueError:
            raise ValueError(f"--sizes: {part.strip()!r} is not LISTENERSxSOURCES, e.g. "
                             "10x10,20x20,50x50") from None
        if not (1 <= listeners <= 1000 and 1 <= sources <= 1000):
            raise ValueError(f"--sizes: {part.strip()!r} must have 1..1000 listeners and "
                             "sources")
        sizes.append((listeners, sources))
    return tuple(sizes)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``spatialjam bench acoustics``'s options; the command runs :func:`run_acoustics_bench`."""
    parser.add_argument("--preset", choices=ROOM_PRESETS, default="rehearsal-room")
    parser.add_argument("--ticks", type=count("ticks", 1, 100_000), default=100)
    parser.add_argument("--sizes", default="10x10,20x20,50x50", metavar="LxS,...",
                        help="listeners×sources per case (default 10x10,20x20,50x50)")
    add_hrtf_args(parser)
    add_device_arg(parser)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(run=run_acoustics_bench)


def run_acoustics_bench(args: argparse.Namespace) -> int:
    try:
        sizes = parse_sizes(args.sizes)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    hrirs = load_hrtf(hrtf_spec(args))
    run_bench(lambda: acoustics_benchmark(hrirs, sizes, args.preset, args.ticks,
                                          device=args.device),
              report_lines, args.json)
    return 0
