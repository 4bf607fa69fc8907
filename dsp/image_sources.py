"""Early reflections of a shoebox room by the image-source method (Allen & Berkley, 1979).

In a rectangular room ``lo ≤ p ≤ hi`` a reflection off a wall is heard as if it came from the
source mirrored in that wall. Per axis, the image coordinates of order 0, 1 and 2 are

.. math::

    p, \\quad 2\\,lo - p, \\quad 2\\,hi - p, \\quad p + 2(hi - lo), \\quad p - 2(hi - lo),

having met no wall, the low wall, the high wall, and both walls (twice) respectively. An image
combines one choice per axis; its order is the number of walls met, its gain the product of
those walls' pressure reflection coefficients :math:`\\beta = \\sqrt{1 - \\alpha}`. Order ≤ 1
gives the 6 first-order images, order ≤ 2 adds 18 more: the set pyroomacoustics' image-source
model gives for the same room (``tests/unit/test_image_sources.py`` checks it).

Each tick, for every (listener, source) pair and every image, :func:`image_taps` computes

- the delay behind the direct sound, :math:`(d_k - d_0) f_s / c` rounded to a sample (the
  direct path itself carries no propagation delay: latency is not added for realism),
- the gain: the pair's gain, the walls' coefficients, the pair's Web Audio distance law at the
  image's distance, and the source's directivity cone with its facing mirrored like the image,
- the direction of arrival in the listener's head frame, panned by VBAP onto the virtual
  loudspeakers of :mod:`dsp.reflections`.

Positions outside the room are clamped inside it (a player placed past a wall still gets the
room's reflections as if standing at the wall).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit, prange

from dsp.geometry import cone_gain, distance_gain
from hrtf.constants import SAMPLE_RATE, SPEED_OF_SOUND_M_S

#: Positions are kept this far inside the walls.
WALL_MARGIN_M = 0.05
MAX_ORDER = 2
#: Images of order ≤ 2 in a shoebox (6 + 18): the size of the per-pair tap tables.
MAX_IMAGES = 24
#: Axis modes: 0 no wall, 1 low wall, 2 high wall, 3 and 4 both walls (order 2).
_AXIS_ORDER = (0, 1, 1, 2, 2)


def image_recipes(max_order: int, wall_gains: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How to build every image of order 1..``max_order`` from a source position.

    Parameters
    ----------
    max_order : int
        0, 1 or 2.
    wall_gains : ndarray, shape (6,)
        Pressure reflection coefficients of the walls x−, x+, y−, y+, floor, ceiling.

    Returns
    -------
    modes : ndarray of int64, shape (K, 3)
        Per image and axis, the mode of the module docstring (0..4).
    gains : ndarray of float64, shape (K,)
        Product of the coefficients of the walls met.
    """
    if not 0 <= max_order <= MAX_ORDER:
        raise ValueError(f"image-source order {max_order} is outside 0..{MAX_ORDER}")
    beta = np.asarray(wall_gains, dtype=np.float64).reshape(6)
    modes, gains = [], []
    for mx in range(5):
        for my in range(5):
            for mz in range(5):
                m = (mx, my, mz)
                order = sum(_AXIS_ORDER[a] for a in m)
                if not 1 <= order <= max_order:
                    continue
                g = 1.0
                for axis, mode in enumerate(m):
                    lo_wall, hi_wall = beta[2 * axis], beta[2 * axis + 1]
                    g *= (1.0, lo_wall, hi_wall, lo_wall * hi_wall, lo_wall * hi_wall)[mode]
                modes.append(m)
                gains.append(g)
    return np.array(modes, np.int64).reshape(-1, 3), np.array(gains, np.float64)


def image_positions(source: npt.ArrayLike, lo: npt.ArrayLike, hi: npt.ArrayLike,
                    modes: np.ndarray) -> np.ndarray:
    """Image positions ``(K, 3)`` of one source (NumPy, for tests and plots)."""
    p = np.asarray(source, dtype=np.float64)
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    table = np.stack([p, 2 * lo - p, 2 * hi - p, p + 2 * (hi - lo), p - 2 * (hi - lo)])
    return table[modes, np.arange(3)]


def bus_layout() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The virtual loudspeakers reflections are panned onto, fixed to the listener's head.

    Six around the head at ear height (every 60°, the first straight ahead), one above, one
    below: a hexagonal bipyramid of 12 triangles.

    Returns
    -------
    directions : (8, 3) unit vectors (head frame: x ahead, y left, z up)
    triangles : (12, 3) loudspeaker indices, triangle ``2i`` above the ring sector
        ``[60° i, 60° (i + 1)]`` and ``2i + 1`` below it
    inverse : (12, 3, 3) inverses of the triangles' vertex matrices (VBAP, Pulkki 1997)
    """
    az = np.radians(np.arange(6) * 60.0)
    directions = np.concatenate([np.stack([np.cos(az), np.sin(az), np.zeros(6)], axis=1),
                                 [[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]]])
    triangles = np.array([(i, (i + 1) % 6, pole) for i in range(6) for pole in (6, 7)], np.int64)
    inverse = np.linalg.inv(directions[triangles].transpose(0, 2, 1))
    return directions, triangles, np.ascontiguousarray(inverse)


BUSES = 8


@njit(cache=True, nogil=True)
def _clamp(v, lo, hi):
    return min(max(v, lo + WALL_MARGIN_M), hi - WALL_MARGIN_M)


@njit(cache=True, nogil=True)
def _image_coordinate(p, lo, hi, mode):
    if mode == 1:
        return 2.0 * lo - p
    if mode == 2:
        return 2.0 * hi - p
    if mode == 3:
        return p + 2.0 * (hi - lo)
    if mode == 4:
        return p - 2.0 * (hi - lo)
    return p


@njit(parallel=True, cache=True, nogil=True)
def image_taps(
    listener_pos, listener_rot, source_pos, source_fwd, pair_gain,
    model, ref, dmax, rolloff, cone_in, cone_out, cone_gain_out,
    lo, hi, modes, recipe_gain, listener_gain, max_delay,
    triangles, inverse,
    delay_out, bus_out, gain_out,
):
    """Every pair's image taps for this tick.

    Parameters
    ----------
    listener_pos : (L, 3); listener_rot : (L, 3, 3) head-to-world rotations
    source_pos : (L, S, 3) per pair; source_fwd : (S, 3); pair_gain : (L, S)
    model, ref, dmax, rolloff, cone_in, cone_out, cone_gain_out : (S,) as in
        :func:`dsp.geometry.pair_filters`
    lo, hi : (3,) the room's corners, metres
    modes : (K, 3); recipe_gain : (K,) from :func:`image_recipes`
    listener_gain : (L,) each listener's reflection level (0: dry)
    max_delay : int, samples; images later than this are dropped
    triangles, inverse : from :func:`bus_layout`

    Writes ``delay_out`` (L, S, K) samples, ``bus_out`` (L, S, K, 3) loudspeaker indices and
    ``gain_out`` (L, S, K, 3) their gains (power-normalised VBAP times the image's gain).
    """
    n_l, n_s = pair_gain.shape
    n_k = modes.shape[0]
    per_m = SAMPLE_RATE / SPEED_OF_SOUND_M_S
    for l in prange(n_l):
        r = listener_rot[l]
        lx = _clamp(listener_pos[l, 0], lo[0], hi[0])
        ly = _clamp(listener_pos[l, 1], lo[1], hi[1])
        lz = _clamp(listener_pos[l, 2], lo[2], hi[2])
        for s in range(n_s):
            g0 = pair_gain[l, s] * listener_gain[l]
            sx = _clamp(source_pos[l, s, 0], lo[0], hi[0])
            sy = _clamp(source_pos[l, s, 1], lo[1], hi[1])
            sz = _clamp(source_pos[l, s, 2], lo[2], hi[2])
            d0 = math.sqrt((sx - lx) ** 2 + (sy - ly) ** 2 + (sz - lz) ** 2)
            for k in range(n_k):
                gain_out[l, s, k, 0] = 0.0
                gain_out[l, s, k, 1] = 0.0
                gain_out[l, s, k, 2] = 0.0
                if g0 <= 0.0:
                    delay_out[l, s, k] = 0
                    bus_out[l, s, k, 0] = 0
                    bus_out[l, s, k, 1] = 0
                    bus_out[l, s, k, 2] = 0
                    continue
                vx = _image_coordinate(sx, lo[0], hi[0], modes[k, 0]) - lx
                vy = _image_coordinate(sy, lo[1], hi[1], modes[k, 1]) - ly
                vz = _image_coordinate(sz, lo[2], hi[2], modes[k, 2]) - lz
                d = math.sqrt(vx * vx + vy * vy + vz * vz)
                delay = math.floor((d - d0) * per_m + 0.5)  # to the nearest sample
                delay_out[l, s, k] = delay
                g = g0 * recipe_gain[k] * distance_gain(d, model[s], ref[s], dmax[s], rolloff[s])
                # the facing mirrored like the image: odd reflections per axis flip that axis
                fx = -source_fwd[s, 0] if modes[k, 0] in (1, 2) else source_fwd[s, 0]
                fy = -source_fwd[s, 1] if modes[k, 1] in (1, 2) else source_fwd[s, 1]
                fz = -source_fwd[s, 2] if modes[k, 2] in (1, 2) else source_fwd[s, 2]
                g *= cone_gain(fx, fy, fz, -vx / d, -vy / d, -vz / d,
                               cone_in[s], cone_out[s], cone_gain_out[s])
                if delay > max_delay:
                    g = 0.0
                # direction of arrival in the head frame, then VBAP on the bipyramid
                hx = (r[0, 0] * vx + r[1, 0] * vy + r[2, 0] * vz) / d
                hy = (r[0, 1] * vx + r[1, 1] * vy + r[2, 1] * vz) / d
                hz = (r[0, 2] * vx + r[1, 2] * vy + r[2, 2] * vz) / d
                az = math.atan2(hy, hx)
                if az < 0.0:
                    az += 2.0 * math.pi
                sector = min(int(az / (math.pi / 3.0)), 5)
                t = 2 * sector + (0 if hz >= 0.0 else 1)
                inv = inverse[t]
                a = max(inv[0, 0] * hx + inv[0, 1] * hy + inv[0, 2] * hz, 0.0)
                b = max(inv[1, 0] * hx + inv[1, 1] * hy + inv[1, 2] * hz, 0.0)
                c = max(inv[2, 0] * hx + inv[2, 1] * hy + inv[2, 2] * hz, 0.0)
                norm = math.sqrt(a * a + b * b + c * c)
                if norm > 0.0:
                    g /= norm
                bus_out[l, s, k, 0] = triangles[t, 0]
                bus_out[l, s, k, 1] = triangles[t, 1]
                bus_out[l, s, k, 2] = triangles[t, 2]
                gain_out[l, s, k, 0] = g * a
                gain_out[l, s, k, 1] = g * b
                gain_out[l, s, k, 2] = g * c
