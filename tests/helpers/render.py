"""Random moving scenes rendered by a fast renderer and by the plain time-domain reference, and
how far apart the two are (tests/unit/test_renderer_equivalence.py says why 1e-4)."""

from __future__ import annotations

import numpy as np

from dsp.geometry import Scene
from dsp.reference import ReferenceRenderer
from dsp.renderer import Renderer
from hrtf.constants import FRAME, FRAME_CHOICES_MS, frame_samples

#: Relative error allowed between a fast renderer and the reference, over a whole frame.
RTOL = 1e-4
#: Every frame size a room may tick at, in samples: 120, 240, 480 and 960.
FRAMES = [frame_samples(ms) for ms in FRAME_CHOICES_MS]


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


def compare(hrirs, device: str, listeners: int, sources: int, ticks: int, seed: int,
            frame: int = FRAME) -> list:
    """Each tick's relative error of the fast renderer against the reference, at ``frame``."""
    rng = np.random.default_rng(seed)
    fast = Renderer(hrirs, listeners, sources, device=device, frame=frame)
    ref = ReferenceRenderer(hrirs, listeners, sources, frame=frame)
    errors = []
    scene = random_scene(rng, listeners, sources, overrides=seed % 2 == 1)
    for tick in range(ticks):
        if tick % 2 == 1:  # every other tick everything moves; in between it holds still
            scene = random_scene(rng, listeners, sources, overrides=seed % 2 == 1)
        audio = (rng.standard_normal((sources, frame)) * 0.1).astype(np.float32)
        y = fast.render_unlimited(scene, audio)
        y_ref = ref.render_unlimited(scene, audio)
        errors.append(float(np.linalg.norm(y - y_ref) / np.linalg.norm(y_ref)))
    return errors
