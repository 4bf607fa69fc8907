"""Plot a room's binaural impulse response with the image sources' predicted arrivals.

``python -m bench.plot_ir --out docs/impulse-response.png``

A unit impulse, one source 2 m from the listener at 30° to the left (SOFA azimuth), ears and
source 1.2 m above the floor at the room's centre, is rendered with
:func:`dsp.offline.render_mono` through the same engine a live room uses (without the safety
limiter: the response as it is). The top panel shows each ear's amplitude in dB over the first
0.8 s with the slope of the room's reverberation time beside the tail; the bottom panel zooms
on the first 40 ms, where the early reflections are. Each image source's arrival is marked
where :func:`dsp.image_sources.image_positions` and :func:`~dsp.image_sources.image_recipes`
predict it: the direct sound's onset plus ``(d_k − d_0) / c``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from bench.report import pyplot
from dsp.geometry import EAR_HEIGHT_M
from dsp.image_sources import image_positions, image_recipes
from dsp.offline import render_mono
from dsp.room_model import PRESETS, WALLS, RoomModel, room_model
from hrtf.constants import SAMPLE_RATE, SPEED_OF_SOUND_M_S
from hrtf.grid import unit_vectors
from hrtf.library import load_hrtf

AZIMUTH_DEG = 30.0
DISTANCE_M = 2.0
FULL_MS = 800.0
ZOOM_MS = 40.0
#: Amplitudes below this (dB) are drawn at it.
FLOOR_DB = -100.0
#: The direct sound's onset: its first sample within this many dB of its peak.
ONSET_DB = 20.0
#: The RMS envelope's window (s).
ENVELOPE_S = 0.005
#: The 0.8 s panel draws each ear's peak over blocks this long (s).
PEAK_BLOCK_S = 0.001
DPI = 100
PNG_COLOURS = 256
LABEL_BOX = {"facecolor": "white", "edgecolor": "none", "alpha": 0.75, "pad": 0.5}


def wall_label(mode: np.ndarray) -> str:
    """The walls an image met, ``(3,)`` modes of :func:`image_recipes` → e.g. ``"floor"``."""
    met = []
    for axis, m in enumerate(mode):
        if m in (1, 2):
            met.append(WALLS[2 * axis + m - 1])
        elif m in (3, 4):
            met += [WALLS[2 * axis], WALLS[2 * axis + 1]]
    return " + ".join(met)


def predicted_arrivals(model: RoomModel, azimuth_deg: float,
                       distance_m: float) -> tuple[np.ndarray, list[str]]:
    """Each image's delay behind the direct sound (s) and the walls it met, earliest first."""
    ears = np.array([0.0, 0.0, EAR_HEIGHT_M])
    source = ears + distance_m * unit_vectors(np.array([azimuth_deg]), np.array([0.0]))[0]
    lo, hi = model.bounds_m()
    modes, _ = image_recipes(model.max_order, model.reflection_gains())
    paths_m = np.linalg.norm(image_positions(source, lo, hi, modes) - ears, axis=1)
    delays_s = (paths_m - distance_m) / SPEED_OF_SOUND_M_S
    order = np.argsort(delays_s)
    return delays_s[order], [wall_label(modes[k]) for k in order]


def impulse_response(model: RoomModel, hrtf: str = "kemar", azimuth_deg: float = AZIMUTH_DEG,
                     distance_m: float = DISTANCE_M) -> tuple[np.ndarray, int]:
    """The rendered response ``(N, 2)`` and the direct sound's onset (samples)."""
    hrirs = load_hrtf(hrtf)
    impulse = np.ones(1, np.float32)
    wet = render_mono(impulse, hrirs, azimuth_deg=azimuth_deg, distance_m=distance_m,
                      room=model, limit=False)
    dry = render_mono(impulse, hrirs, azimuth_deg=azimuth_deg, distance_m=distance_m,
                      limit=False)
    peak = np.abs(dry).max(axis=1)
    onset = int(np.flatnonzero(peak >= peak.max() * 10 ** (-ONSET_DB / 20))[0])
    return wet, onset


def _db(x: np.ndarray) -> np.ndarray:
    return np.maximum(20 * np.log10(np.abs(x) + 1e-30), FLOOR_DB)


def plot(model: RoomModel, out: Path, hrtf: str = "kemar") -> None:
    """Render and draw the figure (module docstring) to ``out``."""
    h, onset = impulse_response(model, hrtf)
    delays_s, walls = predicted_arrivals(model, AZIMUTH_DEG, DISTANCE_M)
    arrivals_ms = 1e3 * (onset / SAMPLE_RATE + delays_s)
    n = int(FULL_MS * 1e-3 * SAMPLE_RATE)
    h = h[:n]
    t_ms = 1e3 * np.arange(len(h)) / SAMPLE_RATE
    mix_ms = 1e3 * model.mixing_time_s
    rt60 = model.rt60_broadband_s

    plt = pyplot()
    fig, (full, zoom) = plt.subplots(2, 1, figsize=(9, 6.6),
                                     gridspec_kw={"height_ratios": [1, 1.1]})
    dims = " × ".join(f"{d:g}" for d in model.dims_m)
    fig.suptitle(f"{model.name} ({dims} m, RT60 {rt60:.2f} s, order {model.max_order}, wet "
                 f"{model.wet:g}): {hrtf.upper()}, source {DISTANCE_M:g} m at "
                 f"{AZIMUTH_DEG:g}° left, ears {EAR_HEIGHT_M:g} m", fontsize=10)
    colours = ("tab:blue", "tab:red")

    # 0.8 s: each ear's peak per block (the raw samples would be a solid band), the RMS
    # envelope of both, and the slope of the room's RT60 from the end of the tail's fade-in
    block = int(PEAK_BLOCK_S * SAMPLE_RATE)
    blocks = len(h) // block
    peaks = np.abs(h[:blocks * block]).reshape(blocks, block, 2).max(axis=1)
    t_block = 1e3 * (np.arange(blocks) + 0.5) * PEAK_BLOCK_S
    for ear, name in enumerate(("left", "right")):
        full.plot(t_block, _db(peaks[:, ear]), color=colours[ear], lw=0.8,
                  label=f"{name} ear (zoom: every sample; here: peak per "
                        f"{1e3 * PEAK_BLOCK_S:g} ms)" if ear == 0 else f"{name} ear")
    win = int(ENVELOPE_S * SAMPLE_RATE)
    power = np.convolve(np.mean(h**2, axis=1), np.ones(win) / win, mode="same")
    full.plot(t_ms, np.maximum(10 * np.log10(power + 1e-30), FLOOR_DB), color="black", lw=1,
              label=f"RMS of both ears over {1e3 * ENVELOPE_S:g} ms")
    start = int((model.mixing_time_s + 0.015) * SAMPLE_RATE)
    t_line = np.array([start / SAMPLE_RATE, FULL_MS * 1e-3])
    level_db = 10 * np.log10(power[start])
    slowest = int(np.argmax(model.rt60_s))
    for seconds, what, style in (
            (rt60, "RT60 at 500 Hz–1 kHz", "--"),
            (model.rt60_s[slowest], f"RT60 at {model.center_freqs_hz[slowest]:g} Hz, the "
                                    "slowest band", ":")):
        full.plot(1e3 * t_line, level_db - 60 * (t_line - t_line[0]) / seconds,
                  color="tab:orange", ls=style, lw=1.5, label=f"−60 dB in {seconds:.2f} s "
                  f"({what})")

    k = t_ms <= ZOOM_MS
    for ear in range(2):
        zoom.plot(t_ms[k], _db(h[k, ear]), color=colours[ear], lw=0.7, alpha=0.8)
    zoom.axvline(1e3 * onset / SAMPLE_RATE, color="black", lw=0.8)
    zoom.text(1e3 * onset / SAMPLE_RATE + 0.25, -4, "direct", rotation=90, va="top",
              fontsize=7.5, bbox=LABEL_BOX)
    for ax in (full, zoom):
        ax.axvline(mix_ms, color="tab:green", ls="--", lw=1,
                   label=f"late tail fades in (t_mix = {mix_ms:.0f} ms)")
        for j, ms in enumerate(arrivals_ms):
            ax.axvline(ms, color="0.3", lw=0.8, ls="-.",
                       label="image sources' predicted arrivals" if j == 0 else None)
        ax.set_ylim(FLOOR_DB, 0)
        ax.set_xlabel("time after the impulse (ms)")
        ax.set_ylabel("amplitude (dB, unit impulse in)")
        ax.grid(alpha=0.3)
    full.set_xlim(0, FULL_MS)
    zoom.set_xlim(0, ZOOM_MS)
    zoom.set_title(f"the first {ZOOM_MS:g} ms", fontsize=9)
    for ms, wall in zip(arrivals_ms, walls, strict=True):
        zoom.text(ms + 0.25, -4, f"{wall} {ms:.1f} ms", rotation=90, va="top", fontsize=7.5,
                  bbox=LABEL_BOX)
    full.legend(fontsize=7.5, loc="upper right")
    fig.tight_layout()
    _save_small(fig, out)
    plt.close(fig)


def _save_small(fig, out: Path) -> None:
    """``fig`` as a PNG of :data:`PNG_COLOURS` palette colours (a third of full colour's size)."""
    from PIL import Image

    fig.set_dpi(DPI)
    fig.canvas.draw()
    image = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB")
    image.quantize(PNG_COLOURS).save(out, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plot_ir", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/impulse-response.png"))
    parser.add_argument("--preset", choices=list(PRESETS), default="rehearsal-room")
    parser.add_argument("--hrtf", default="kemar", help="kemar (default) or spherical-head")
    args = parser.parse_args(argv)
    plot(room_model(args.preset), args.out, args.hrtf)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
