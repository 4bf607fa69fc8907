"""Offline rendering of a mono signal through the same engine the rooms use.

One listener at the origin facing +x, one source at ``(azimuth, elevation, distance)`` in SOFA
coordinates, optionally orbiting the listener (counter-clockwise seen from above: towards the
left). The signal is cut into 20 ms frames exactly as the room clock does.
"""

from __future__ import annotations

import numpy as np

from dsp.geometry import Scene
from dsp.renderer import Renderer
from hrtf.constants import FRAME, SAMPLE_RATE
from hrtf.grid import unit_vectors
from hrtf.hrirset import HrirSet


def render_mono(
    signal: np.ndarray,
    hrirs: HrirSet,
    *,
    azimuth_deg: float = 0.0,
    elevation_deg: float = 0.0,
    distance_m: float = 1.0,
    orbit_s: float | None = None,
    device: str = "cpu",
    distance_model: str = "inverse",
    ref_distance_m: float = 1.0,
    rolloff: float = 1.0,
    limit: bool = True,
) -> np.ndarray:
    """Render ``signal`` (mono, 48 kHz) to a stereo array ``(len + tail, 2)``.

    The output is longer than the input by the HRTF's length (rounded up to whole frames), so
    the last sound's response is not cut. With ``orbit_s`` the source circles the listener once
    every ``orbit_s`` seconds, starting at ``azimuth_deg``; its position is updated every frame.
    """
    signal = np.asarray(signal, dtype=np.float32).reshape(-1)
    tail = hrirs.taps
    frames = -(-(len(signal) + tail) // FRAME)
    padded = np.zeros(frames * FRAME, np.float32)
    padded[: len(signal)] = signal
    renderer = Renderer(hrirs, 1, 1, device=device)
    out = np.empty((frames * FRAME, 2), np.float32)

    def scene_at(k: int) -> Scene:
        az = azimuth_deg
        if orbit_s:
            az += 360.0 * (k * FRAME / SAMPLE_RATE) / orbit_s
        position = distance_m * unit_vectors(np.array([az]), np.array([elevation_deg]))
        return Scene.create([0.0, 0.0, 0.0], position, distance_model=distance_model,
                            ref_distance_m=ref_distance_m, rolloff=rolloff)

    renderer.prime(scene_at(0))
    for k in range(frames):
        scene = scene_at(k)
        block = padded[None, k * FRAME:(k + 1) * FRAME]
        frame = renderer.render(scene, block) if limit else renderer.render_unlimited(scene, block)
        out[k * FRAME:(k + 1) * FRAME] = frame[0]
    return out
