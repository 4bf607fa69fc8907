"""Offline rendering of a mono signal through the same engine the rooms use.

One listener facing +x, one source at ``(azimuth, elevation, distance)`` from it in SOFA
coordinates, optionally orbiting the listener (counter-clockwise seen from above: towards the
left). The signal is cut into frames exactly as the room clock does (20 ms unless ``frame``
says otherwise). With a room
(:mod:`dsp.room_model`) the listener stands at the room's floor centre, ears at
:data:`EAR_HEIGHT_M`, and the output carries the room's reflections and tail, as a room's
listener hears them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dsp.geometry import EAR_HEIGHT_M, Scene
from dsp.renderer import Renderer
from hrtf.constants import FRAME, SAMPLE_RATE, SPEED_OF_SOUND_M_S
from hrtf.grid import unit_vectors
from hrtf.hrirset import HrirSet

if TYPE_CHECKING:
    from dsp.room_model import RoomModel



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
    room: RoomModel | None = None,
    reference: bool = False,
    frame: int = FRAME,
) -> np.ndarray:
    """Render ``signal`` (mono, 48 kHz) to a stereo array ``(len + tail, 2)``.

    The output is longer than the input by the HRTF's length (rounded up to whole frames), so
    the last sound's response is not cut. With ``orbit_s`` the source circles the listener once
    every ``orbit_s`` seconds, starting at ``azimuth_deg``; its position is updated every frame.
    ``room`` adds its acoustics (the output then also holds the longest reflection and the
    tail); ``reference`` renders the crossfeed-free stereo-panning reference instead of the
    HRTF (:mod:`hrtf.panning`). ``frame`` is the renderer's frame in samples (a moving
    source's position is updated once a frame).
    """
    signal = np.asarray(signal, dtype=np.float32).reshape(-1)
    renderer = Renderer(hrirs, 1, 1, device=device, frame=frame)
    renderer.configure_listener(0, reference=reference)
    tail = hrirs.taps
    ears = np.zeros(3)
    if room is not None:
        from dsp.reflections import MAX_DELAY

        renderer.set_room(room)
        # an image path is at most 2·order room diagonals longer than the direct one
        longest_m = 2 * room.max_order * float(np.linalg.norm(room.dims_m))
        tail += min(MAX_DELAY, int(longest_m / SPEED_OF_SOUND_M_S * SAMPLE_RATE) + 1)
        tail += renderer.tail_samples(room)
        ears = np.array([0.0, 0.0, EAR_HEIGHT_M])
    frames = -(-(len(signal) + tail) // frame)
    padded = np.zeros(frames * frame, np.float32)
    padded[: len(signal)] = signal
    out = np.empty((frames * frame, 2), np.float32)

    def scene_at(k: int) -> Scene:
        az = azimuth_deg
        if orbit_s:
            az += 360.0 * (k * frame / SAMPLE_RATE) / orbit_s
        position = ears + distance_m * unit_vectors(np.array([az]), np.array([elevation_deg]))
        return Scene.create(ears, position, distance_model=distance_model,
                            ref_distance_m=ref_distance_m, rolloff=rolloff)

    renderer.prime(scene_at(0))
    for k in range(frames):
        scene = scene_at(k)
        block = padded[None, k * frame:(k + 1) * frame]
        mix = renderer.render(scene, block) if limit else renderer.render_unlimited(scene, block)
        out[k * frame:(k + 1) * frame] = mix[0]
    return out
