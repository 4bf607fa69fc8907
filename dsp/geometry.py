"""Scene geometry: listener head poses, source placement, distance and directivity gains.

Coordinates follow SOFA: x ahead, y to the left, z up, metres. A listener's orientation is a
head-to-world rotation built from yaw (turn left positive, about z), pitch (nose up positive)
and roll (left ear up positive), or from a unit quaternion ``(w, x, y, z)``.

Distance gains follow the Web Audio ``PannerNode`` models (W3C Web Audio API, §1.30.3):

.. math::

    g_\\text{inverse} &= \\frac{d_\\text{ref}}
        {d_\\text{ref} + \\rho (\\max(d, d_\\text{ref}) - d_\\text{ref})} \\\\
    g_\\text{linear} &= 1 - \\rho \\frac{\\text{clamp}(d, d_\\text{ref}, d_\\text{max})
        - d_\\text{ref}}{d_\\text{max} - d_\\text{ref}} \\\\
    g_\\text{exponential} &= \\left(\\max(d, d_\\text{ref}) / d_\\text{ref}\\right)^{-\\rho}

and the directivity cone is the ``PannerNode`` sound cone: gain 1 inside the inner angle, the
outer gain outside the outer angle, linear in between.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit, prange

from hrtf.grid import clamp_direction, locate, normalised_weights

#: Where ears are: a listener's default height, in rooms and offline renders (metres).
EAR_HEIGHT_M = 1.2

DISTANCE_MODELS = {"inverse": 0, "linear": 1, "exponential": 2}
_INVERSE, _LINEAR, _EXPONENTIAL = DISTANCE_MODELS.values()
#: Coordinates beyond this (metres) are refused: nobody jams across a 10 km stage.
MAX_COORDINATE_M = 10_000.0


@njit(cache=True, nogil=True)
def _values_ok(listener_position, source_position, listener_rotation, source_forward,
               pair_gain, distance_model, ref, dmax, rolloff, inner, outer, outer_gain,
               max_coordinate):
    """Whether every value check of :meth:`Scene.validate` passes, in one compiled pass (a
    scene is built every tick: 5 ms in a low-latency room). Shapes are checked before."""
    for a in (listener_position, source_position):
        for v in a.ravel():
            if not math.isfinite(v) or abs(v) > max_coordinate:
                return False
    for v in listener_rotation.ravel():
        if not math.isfinite(v):
            return False
    for v in source_forward.ravel():
        if not math.isfinite(v):
            return False
    for v in pair_gain.ravel():
        if not math.isfinite(v) or v < 0:
            return False
    for s in range(ref.shape[0]):
        r, m, k = float(ref[s]), float(dmax[s]), float(rolloff[s])
        i, o, g = float(inner[s]), float(outer[s]), float(outer_gain[s])
        model = distance_model[s]
        for v in (r, m, k, i, o, g):
            if not math.isfinite(v):
                return False
        if not (r > 0 and m > r) or not 0 <= g <= 1 or not k >= 0:
            return False
        if not (i >= 0 and o <= 360 and i <= o):
            return False
        if model != _INVERSE and model != _LINEAR and model != _EXPONENTIAL:
            return False
        if model == _LINEAR and k > 1:
            return False
    return True


def yaw_pitch_roll_matrix(yaw_deg: npt.ArrayLike, pitch_deg: npt.ArrayLike = 0.0,
                          roll_deg: npt.ArrayLike = 0.0) -> np.ndarray:
    """Head-to-world rotations ``R = Rz(yaw) · Ry(−pitch) · Rx(roll)``, shape ``(..., 3, 3)``.

    ``R @ [1, 0, 0]`` is where the nose points, ``R @ [0, 1, 0]`` where the left ear points.
    """
    y, p, r = np.broadcast_arrays(*(np.radians(np.asarray(a, dtype=np.float64))
                                    for a in (yaw_deg, pitch_deg, roll_deg)))
    cy, sy, cp, sp, cr, sr = np.cos(y), np.sin(y), np.cos(p), np.sin(p), np.cos(r), np.sin(r)
    m = np.empty((*y.shape, 3, 3))
    m[..., 0, 0] = cy * cp
    m[..., 0, 1] = -sy * cr - cy * sp * sr
    m[..., 0, 2] = sy * sr - cy * sp * cr
    m[..., 1, 0] = sy * cp
    m[..., 1, 1] = cy * cr - sy * sp * sr
    m[..., 1, 2] = -cy * sr - sy * sp * cr
    m[..., 2, 0] = sp
    m[..., 2, 1] = cp * sr
    m[..., 2, 2] = cp * cr
    return m


def forward_vectors(yaw_deg: npt.ArrayLike, pitch_deg: npt.ArrayLike) -> np.ndarray:
    """Unit vectors a source faces, ``(N, 3)`` float64, from its yaw and pitch in degrees.

    .. math:: f = (\\cos p \\cos y,\\ \\cos p \\sin y,\\ \\sin p)

    Yaw 0° faces +x (SOFA's "ahead"), +90° faces +y (left); pitch +90° faces up.
    """
    yaw = np.radians(np.asarray(yaw_deg, np.float64))
    pitch = np.radians(np.asarray(pitch_deg, np.float64))
    return np.column_stack([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw),
                            np.sin(pitch)])


def quaternion_matrix(q: npt.ArrayLike) -> np.ndarray:
    """Rotation matrices for unit quaternions ``(w, x, y, z)``, shape ``(..., 3, 3)``."""
    u = np.asarray(q, dtype=np.float64)
    u = u / np.linalg.norm(u, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(u, -1, 0)
    m = np.empty((*w.shape, 3, 3))
    m[..., 0, 0] = 1 - 2 * (y * y + z * z)
    m[..., 0, 1] = 2 * (x * y - w * z)
    m[..., 0, 2] = 2 * (x * z + w * y)
    m[..., 1, 0] = 2 * (x * y + w * z)
    m[..., 1, 1] = 1 - 2 * (x * x + z * z)
    m[..., 1, 2] = 2 * (y * z - w * x)
    m[..., 2, 0] = 2 * (x * z - w * y)
    m[..., 2, 1] = 2 * (y * z + w * x)
    m[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return m


@dataclass
class Scene:
    """Everything the renderer needs to know about one tick, as slot-indexed arrays.

    Listener slots ``L`` and source slots ``S`` are fixed by the caller (a room keeps a slot
    per participant); an unused slot has all its pair gains at 0.

    Attributes
    ----------
    listener_position : (L, 3) metres
    listener_rotation : (L, 3, 3) head-to-world rotations
    source_position : (S, 3), or (L, S, 3) when listeners override positions in their mix
    source_forward : (S, 3) unit vectors the sources face (for the directivity cone)
    pair_gain : (L, S) linear gain per listener and source; 0 mutes (own voice, absent slots)
    distance_model : (S,) int, codes of :data:`DISTANCE_MODELS`
    ref_distance_m, max_distance_m, rolloff : (S,) Web Audio distance parameters
    cone_inner_deg, cone_outer_deg, cone_outer_gain : (S,) Web Audio cone parameters
    """

    listener_position: np.ndarray
    listener_rotation: np.ndarray
    source_position: np.ndarray
    source_forward: np.ndarray
    pair_gain: np.ndarray
    distance_model: np.ndarray
    ref_distance_m: np.ndarray
    max_distance_m: np.ndarray
    rolloff: np.ndarray
    cone_inner_deg: np.ndarray
    cone_outer_deg: np.ndarray
    cone_outer_gain: np.ndarray

    @classmethod
    def create(
        cls,
        listener_position: npt.ArrayLike,
        source_position: npt.ArrayLike,
        *,
        listener_yaw_deg: npt.ArrayLike = 0.0,
        listener_pitch_deg: npt.ArrayLike = 0.0,
        listener_roll_deg: npt.ArrayLike = 0.0,
        pair_gain: npt.ArrayLike | None = None,
        source_forward: npt.ArrayLike | None = None,
        distance_model: str = "inverse",
        ref_distance_m: float = 1.0,
        max_distance_m: float = 10_000.0,
        rolloff: float = 1.0,
        cone_inner_deg: float = 360.0,
        cone_outer_deg: float = 360.0,
        cone_outer_gain: float = 0.0,
    ) -> Scene:
        """A scene with the same distance model and cone for every source."""
        lp = np.atleast_2d(np.asarray(listener_position, dtype=np.float64))
        sp = np.asarray(source_position, dtype=np.float64)
        if sp.ndim == 1:
            sp = sp[None, :]
        n_l, n_s = lp.shape[0], sp.shape[-2]
        yaw, pitch, roll = (np.broadcast_to(np.asarray(a, dtype=np.float64), (n_l,))
                            for a in (listener_yaw_deg, listener_pitch_deg, listener_roll_deg))
        if source_forward is None:
            source_forward = np.tile([1.0, 0.0, 0.0], (n_s, 1))
        if pair_gain is None:
            pair_gain = np.ones((n_l, n_s))
        if distance_model not in DISTANCE_MODELS:
            raise ValueError(f"distance model {distance_model!r} is not one of "
                             f"{', '.join(DISTANCE_MODELS)}")
        full = lambda v: np.full(n_s, float(v))  # noqa: E731
        scene = cls(
            listener_position=lp,
            listener_rotation=yaw_pitch_roll_matrix(yaw, pitch, roll),
            source_position=sp,
            source_forward=np.asarray(source_forward, dtype=np.float64).reshape(n_s, 3),
            pair_gain=np.asarray(pair_gain, dtype=np.float64).reshape(n_l, n_s),
            distance_model=np.full(n_s, DISTANCE_MODELS[distance_model], dtype=np.int64),
            ref_distance_m=full(ref_distance_m),
            max_distance_m=full(max_distance_m),
            rolloff=full(rolloff),
            cone_inner_deg=full(cone_inner_deg),
            cone_outer_deg=full(cone_outer_deg),
            cone_outer_gain=full(cone_outer_gain),
        )
        scene.validate()
        return scene

    @property
    def listeners(self) -> int:
        return self.listener_position.shape[0]

    @property
    def sources(self) -> int:
        return self.source_position.shape[-2]

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field that is out of shape or range."""
        n_l, n_s = self.listeners, self.sources
        shapes = {
            "listener_position": (n_l, 3),
            "listener_rotation": (n_l, 3, 3),
            "pair_gain": (n_l, n_s),
        }
        for name, shape in shapes.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected {shape}")
        if self.source_forward.shape != (n_s, 3):
            raise ValueError(f"source_forward has shape {self.source_forward.shape}, "
                             f"expected ({n_s}, 3)")
        if self.source_position.shape not in ((n_s, 3), (n_l, n_s, 3)):
            raise ValueError(f"source_position has shape {self.source_position.shape}, "
                             f"expected ({n_s}, 3) or ({n_l}, {n_s}, 3)")
        for name in ("distance_model", "ref_distance_m", "max_distance_m", "rolloff",
                     "cone_inner_deg", "cone_outer_deg", "cone_outer_gain"):
            if getattr(self, name).shape != (n_s,):
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected ({n_s},)")
        if _values_ok(self.listener_position, self.source_position.reshape(-1, 3),
                      self.listener_rotation, self.source_forward, self.pair_gain,
                      self.distance_model, self.ref_distance_m, self.max_distance_m,
                      self.rolloff, self.cone_inner_deg, self.cone_outer_deg,
                      self.cone_outer_gain, MAX_COORDINATE_M):
            return  # one compiled pass; the checks below only name what is wrong
        for name in ("listener_position", "source_position", "listener_rotation",
                     "source_forward", "pair_gain", "ref_distance_m", "max_distance_m",
                     "rolloff", "cone_inner_deg", "cone_outer_deg", "cone_outer_gain"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise ValueError(f"{name} contains NaN or infinite values")
        for name in ("listener_position", "source_position"):
            if np.any(np.abs(getattr(self, name)) > MAX_COORDINATE_M):
                raise ValueError(f"{name} is beyond ±{MAX_COORDINATE_M:g} m")
        if np.any(self.pair_gain < 0):
            raise ValueError("pair_gain must be ≥ 0")
        if np.any(self.ref_distance_m <= 0) or np.any(self.max_distance_m <= self.ref_distance_m):
            raise ValueError("distances need 0 < ref_distance_m < max_distance_m")
        if not np.all(np.isin(self.distance_model, list(DISTANCE_MODELS.values()))):
            codes = sorted(DISTANCE_MODELS.values())
            raise ValueError(f"distance_model codes must be among {codes}")
        if np.any((self.cone_outer_gain < 0) | (self.cone_outer_gain > 1)):
            raise ValueError("cone_outer_gain must lie in 0..1")
        if np.any((self.cone_inner_deg < 0) | (self.cone_outer_deg > 360)
                  | (self.cone_inner_deg > self.cone_outer_deg)):
            raise ValueError("cone angles need 0 ≤ cone_inner_deg ≤ cone_outer_deg ≤ 360")
        if np.any(self.rolloff < 0):
            raise ValueError("rolloff must be ≥ 0")
        if np.any((self.distance_model == DISTANCE_MODELS["linear"]) & (self.rolloff > 1)):
            raise ValueError("the linear distance model needs rolloff ≤ 1")

    def source_positions_per_pair(self) -> np.ndarray:
        """Source positions as ``(L, S, 3)`` (a broadcast view when shared)."""
        if self.source_position.ndim == 3:
            return self.source_position
        return np.broadcast_to(self.source_position, (self.listeners, self.sources, 3))


@njit(cache=True, nogil=True)
def distance_gain(d: float, model: int, ref: float, dmax: float, rolloff: float) -> float:
    """Web Audio distance gain for distance ``d`` metres (see module docstring)."""
    if model == 1:
        dc = min(max(d, ref), dmax)
        return 1.0 - rolloff * (dc - ref) / (dmax - ref)
    if model == 2:
        return (max(d, ref) / ref) ** (-rolloff)
    return ref / (ref + rolloff * (max(d, ref) - ref))


@njit(cache=True, nogil=True)
def cone_gain(fx: float, fy: float, fz: float, tx: float, ty: float, tz: float,
              inner_deg: float, outer_deg: float, outer_gain: float) -> float:
    """Web Audio sound-cone gain; ``f`` the source's facing, ``t`` source-to-listener (unit)."""
    if inner_deg >= 360.0 and outer_deg >= 360.0:
        return 1.0
    fn = math.sqrt(fx * fx + fy * fy + fz * fz)
    if fn < 1e-12:
        return 1.0
    c = (fx * tx + fy * ty + fz * tz) / fn
    angle = math.degrees(math.acos(min(1.0, max(-1.0, c))))
    half_in = 0.5 * inner_deg
    half_out = 0.5 * outer_deg
    if angle <= half_in:
        return 1.0
    if angle >= half_out:
        return outer_gain
    return 1.0 + (outer_gain - 1.0) * (angle - half_in) / (half_out - half_in)


@njit(parallel=True, cache=True, nogil=True)
def pair_filters(
    listener_pos, listener_rot, source_pos, source_fwd, pair_gain,
    model, ref, dmax, rolloff, cone_in, cone_out, cone_gain_out,
    facets, neighbors, inverse, el_lo, el_hi,
    start, old_idx, old_w, idx, w, changed,
):
    """Interpolation indices and gain-folded weights for every (listener, source) pair.

    Writes ``idx`` (L, S, 3) grid-point indices, ``w`` (L, S, 3) weights times the pair's total
    gain, and ``changed`` (L, S): whether the filter differs from ``old_idx``/``old_w``.
    ``start`` (L, S) holds each pair's last facet and is updated (the walk starts there).
    """
    n_l, n_s = pair_gain.shape
    for l in prange(n_l):
        r = listener_rot[l]
        for s in range(n_s):
            g = pair_gain[l, s]
            vx = source_pos[l, s, 0] - listener_pos[l, 0]
            vy = source_pos[l, s, 1] - listener_pos[l, 1]
            vz = source_pos[l, s, 2] - listener_pos[l, 2]
            dist = math.sqrt(vx * vx + vy * vy + vz * vz)
            if g > 0.0:
                g *= distance_gain(dist, model[s], ref[s], dmax[s], rolloff[s])
                if dist > 1e-9:
                    g *= cone_gain(source_fwd[s, 0], source_fwd[s, 1], source_fwd[s, 2],
                                   -vx / dist, -vy / dist, -vz / dist,
                                   cone_in[s], cone_out[s], cone_gain_out[s])
            if dist > 1e-9:
                hx = r[0, 0] * vx + r[1, 0] * vy + r[2, 0] * vz
                hy = r[0, 1] * vx + r[1, 1] * vy + r[2, 1] * vz
                hz = r[0, 2] * vx + r[1, 2] * vy + r[2, 2] * vz
            else:
                hx, hy, hz = 1.0, 0.0, 0.0
            x, y, z = clamp_direction(hx, hy, hz, el_lo, el_hi)
            f, w0, w1, w2 = locate(x, y, z, start[l, s], facets, neighbors, inverse)
            start[l, s] = f
            w0, w1, w2 = normalised_weights(w0, w1, w2)
            idx[l, s, 0] = facets[f, 0]
            idx[l, s, 1] = facets[f, 1]
            idx[l, s, 2] = facets[f, 2]
            w[l, s, 0] = w0 * g
            w[l, s, 1] = w1 * g
            w[l, s, 2] = w2 * g
            differs = False
            for k in range(3):
                if w[l, s, k] != old_w[l, s, k] or (
                    idx[l, s, k] != old_idx[l, s, k] and (w[l, s, k] != 0 or old_w[l, s, k] != 0)
                ):
                    differs = True
            changed[l, s] = differs
