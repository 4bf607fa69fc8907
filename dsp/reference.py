"""A plain time-domain renderer: the oracle the fast backends are tested against.

Everything here is written the obvious way, in NumPy and Python loops, with no FFTs: each pair's
impulse response is the weighted sum of its three neighbouring measured responses, convolved
directly with the source's recent samples; a changed response is crossfaded from old to new
with the same raised-cosine ramp. Far too slow for a room, fine for a test.
"""

from __future__ import annotations

import numpy as np

from dsp.geometry import Scene
from dsp.renderer import crossfade_ramp
from hrtf.constants import FRAME
from hrtf.hrirset import HrirSet


def reference_distance_gain(d: float, model: int, ref: float, dmax: float, rolloff: float) -> float:
    if model == 0:
        return ref / (ref + rolloff * (max(d, ref) - ref))
    if model == 1:
        return 1.0 - rolloff * (min(max(d, ref), dmax) - ref) / (dmax - ref)
    return (max(d, ref) / ref) ** -rolloff


def reference_cone_gain(forward: np.ndarray, to_listener: np.ndarray, inner: float, outer: float,
                        outer_gain: float) -> float:
    if inner >= 360 and outer >= 360:
        return 1.0
    cos = np.dot(forward, to_listener) / np.linalg.norm(forward)
    angle = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    if angle <= inner / 2:
        return 1.0
    if angle >= outer / 2:
        return outer_gain
    return 1.0 + (outer_gain - 1.0) * (angle - inner / 2) / (outer / 2 - inner / 2)


class ReferenceRenderer:
    """Same contract as :meth:`dsp.renderer.Renderer.render_unlimited`, in the time domain,
    one frame of ``frame`` samples per call."""

    def __init__(self, hrirs: HrirSet, listeners: int, sources: int, frame: int = FRAME) -> None:
        self.hrirs = hrirs
        self.frame = frame
        self.grid_hrir = hrirs.grid_hrir.astype(np.float64)
        self.taps = hrirs.taps
        self.history = np.zeros((sources, frame + self.taps - 1))
        self.old_ir = np.zeros((listeners, sources, 2, self.taps))
        self.ramp = crossfade_ramp(frame).astype(np.float64)

    def pair_response(self, scene: Scene, l: int, s: int) -> np.ndarray:
        """The (2, taps) response of pair (l, s), its gains included."""
        gain = scene.pair_gain[l, s]
        src = scene.source_positions_per_pair()[l, s]
        v = src - scene.listener_position[l]
        dist = float(np.linalg.norm(v))  # v is float64: the same value, as a float
        if gain > 0:
            gain *= reference_distance_gain(
                dist, scene.distance_model[s], scene.ref_distance_m[s],
                scene.max_distance_m[s], scene.rolloff[s])
            if dist > 1e-9:
                gain *= reference_cone_gain(
                    scene.source_forward[s], -v / dist, scene.cone_inner_deg[s],
                    scene.cone_outer_deg[s], scene.cone_outer_gain[s])
        head = scene.listener_rotation[l].T @ v if dist > 1e-9 else np.array([1.0, 0, 0])
        idx, w = self.hrirs.grid.weights(head[None, :])
        return gain * np.tensordot(w[0], self.grid_hrir[idx[0]], axes=1)

    def render_unlimited(self, scene: Scene, audio: np.ndarray) -> np.ndarray:
        n = self.frame
        self.history = np.concatenate([self.history[:, n:], audio.astype(np.float64)], axis=1)
        out = np.zeros((scene.listeners, n, 2))
        for l in range(scene.listeners):
            for s in range(scene.sources):
                new_ir = self.pair_response(scene, l, s)
                old_ir = self.old_ir[l, s]
                for ear in range(2):
                    y_new = np.convolve(self.history[s], new_ir[ear], mode="valid")
                    y_old = np.convolve(self.history[s], old_ir[ear], mode="valid")
                    out[l, :, ear] += (1 - self.ramp) * y_old + self.ramp * y_new
                self.old_ir[l, s] = new_ir
        return out
