"""Direction index and interpolation weights over a set of measured HRTF directions.

Coordinates follow SOFA: x ahead, y to the left, z up; azimuth 0° ahead, +90° left; elevation
+90° above. Directions are unit vectors.

The measured directions are triangulated on the sphere (their convex hull, which for points on a
sphere is the spherical Delaunay triangulation). A direction ``d`` falls inside the facet whose
vertices ``A, B, C`` give non-negative weights in

.. math:: d = w_A A + w_B B + w_C C,

and the normalised weights ``w / sum(w)`` are the barycentric interpolation weights of the three
measured responses. Point location walks from facet to neighbouring facet, starting from the
facet found for the same pair on the previous tick, so a slowly moving source costs one or two
3×3 products.

Sets rarely cover the whole sphere (MIT KEMAR stops at −40° elevation). Directions outside the
measured elevation range are clamped to it (a source below the lowest ring is heard from the
lowest ring at the same azimuth), and virtual points are added where the sphere has large holes
so that the triangulation always surrounds the listener; a virtual point carries the response
of its nearest measured direction.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from scipy.spatial import ConvexHull, QhullError, cKDTree

from hrtf.errors import HrtfError

#: A measured direction within this angle of a pole means the pole is covered.
POLE_COVERED_DEG = 2.0
#: Axis and pole directions farther than this from every measured point get a virtual point.
HOLE_DEG = 20.0
_WALK_MAX_STEPS = 4096
_EPS = 1e-9


def unit_vectors(azimuth_deg: np.ndarray, elevation_deg: np.ndarray) -> np.ndarray:
    """Unit vectors for SOFA spherical angles, shape ``(..., 3)``."""
    az = np.radians(azimuth_deg)
    el = np.radians(elevation_deg)
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)


def angles_deg(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Azimuth in (−180°, 180°] and elevation in [−90°, 90°] of vectors ``(..., 3)``."""
    v = np.asarray(vectors, dtype=np.float64)
    az = np.degrees(np.arctan2(v[..., 1], v[..., 0]))
    el = np.degrees(np.arctan2(v[..., 2], np.hypot(v[..., 0], v[..., 1])))
    return az, el


class DirectionGrid:
    """Triangulation of measured directions, with virtual points filling the holes.

    Parameters
    ----------
    directions : ndarray, shape (D, 3)
        Unit vectors of the measured directions (no duplicates).

    Attributes
    ----------
    points : ndarray, shape (D + V, 3)
        The measured directions followed by ``V`` virtual ones.
    source_of : ndarray of int, shape (D + V,)
        For each point, the measured direction whose response it carries (itself for measured
        points, the nearest measured direction for virtual ones).
    facets, neighbors, inverse :
        Hull triangles (indices into ``points``), the neighbour opposite each vertex, and the
        inverse of each facet's vertex matrix (``w = inverse[f] @ d``).
    elevation_range_deg : (float, float)
        Query elevations are clamped to this range.
    """

    def __init__(self, directions: np.ndarray) -> None:
        d = np.asarray(directions, dtype=np.float64)
        if d.ndim != 2 or d.shape[1] != 3 or len(d) < 3:
            raise HrtfError(f"need at least 3 measured directions, got {len(d)}")
        _, el = angles_deg(d)
        lo = -90.0 if el.min() <= -90.0 + POLE_COVERED_DEG else float(el.min())
        hi = 90.0 if el.max() >= 90.0 - POLE_COVERED_DEG else float(el.max())
        self.elevation_range_deg = (lo, hi)

        candidates = np.array(
            [[0, 0, 1], [0, 0, -1], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]], dtype=np.float64
        )
        tree = cKDTree(d)
        dist, nearest = tree.query(candidates)
        hole_chord = 2.0 * np.sin(np.radians(HOLE_DEG) / 2.0)
        virtual = dist > hole_chord
        self.points = np.concatenate([d, candidates[virtual]])
        self.source_of = np.concatenate([np.arange(len(d)), nearest[virtual]]).astype(np.int64)
        try:
            hull = ConvexHull(self.points)
        except (QhullError, ValueError) as exc:
            raise HrtfError(f"measured directions cannot be triangulated: {exc}") from None
        if np.any(hull.equations[:, 3] > -1e-6):
            raise HrtfError("measured directions do not surround the listener")
        self.facets = np.ascontiguousarray(hull.simplices, dtype=np.int64)
        self.neighbors = np.ascontiguousarray(hull.neighbors, dtype=np.int64)
        vertex_matrix = self.points[self.facets].transpose(0, 2, 1)
        self.inverse = np.ascontiguousarray(np.linalg.inv(vertex_matrix))
        self._clamp = np.radians(np.array(self.elevation_range_deg))

    #: The arrays that make a grid, as :meth:`arrays` gives them and :meth:`from_arrays` takes.
    ARRAYS = ("points", "source_of", "facets", "neighbors", "inverse", "elevation_range_deg")

    def arrays(self) -> dict[str, np.ndarray]:
        """The grid as plain arrays (to hand from one process to another)."""
        return {"points": self.points, "source_of": self.source_of, "facets": self.facets,
                "neighbors": self.neighbors, "inverse": self.inverse,
                "elevation_range_deg": np.array(self.elevation_range_deg, dtype=np.float64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], measured: int) -> DirectionGrid:
        """A grid made elsewhere (by :meth:`arrays`), checked so that no index it holds can
        reach outside its arrays (the point-location kernels do not check bounds).

        Parameters
        ----------
        arrays : dict
            :data:`ARRAYS` by name.
        measured : int
            Measured directions of the set: ``source_of`` must point among them.

        Raises
        ------
        ValueError
            An array of the wrong type or shape, an index out of range, a non-finite value.
        """
        points, source_of = arrays["points"], arrays["source_of"]
        facets, neighbors, inverse = arrays["facets"], arrays["neighbors"], arrays["inverse"]
        elevation = arrays["elevation_range_deg"]
        n_points, n_facets = len(points), len(facets)
        expected = {"points": (points, np.float64, (n_points, 3)),
                    "source_of": (source_of, np.int64, (n_points,)),
                    "facets": (facets, np.int64, (n_facets, 3)),
                    "neighbors": (neighbors, np.int64, (n_facets, 3)),
                    "inverse": (inverse, np.float64, (n_facets, 3, 3)),
                    "elevation_range_deg": (elevation, np.float64, (2,))}
        for name, (value, dtype, shape) in expected.items():
            if value.dtype != dtype or value.shape != shape:
                raise ValueError(f"grid {name} is {value.dtype} {value.shape}, expected "
                                 f"{np.dtype(dtype)} {shape}")
        if not measured <= n_points <= measured + 6 or n_facets < 4:
            raise ValueError(f"grid has {n_points} points and {n_facets} facets for {measured} "
                             "measured directions")
        for name, value, end in (("source_of", source_of, measured), ("facets", facets, n_points),
                                 ("neighbors", neighbors, n_facets)):
            if value.min() < 0 or value.max() >= end:
                raise ValueError(f"grid {name} has an index outside 0..{end - 1}")
        if not (np.all(np.isfinite(points)) and np.all(np.isfinite(inverse))
                and -90.0 <= elevation[0] <= elevation[1] <= 90.0):
            raise ValueError("grid holds non-finite values or an inverted elevation range")
        grid = cls.__new__(cls)
        grid.points, grid.source_of = np.ascontiguousarray(points), np.ascontiguousarray(source_of)
        grid.facets, grid.neighbors = np.ascontiguousarray(facets), np.ascontiguousarray(neighbors)
        grid.inverse = np.ascontiguousarray(inverse)
        grid.elevation_range_deg = (float(elevation[0]), float(elevation[1]))
        grid._clamp = np.radians(np.array(grid.elevation_range_deg))
        return grid

    @property
    def nbytes(self) -> int:
        """Bytes its arrays hold."""
        return sum(a.nbytes for a in (self.points, self.source_of, self.facets, self.neighbors,
                                      self.inverse))

    def weights(self, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Interpolation for many directions at once (not on the tick path).

        Returns ``(indices, weights)``, each shape ``(..., 3)``: point indices into
        :attr:`points` and barycentric weights summing to 1.
        """
        v = np.asarray(directions, dtype=np.float64)
        flat = np.ascontiguousarray(v.reshape(-1, 3))
        idx = np.empty((len(flat), 3), dtype=np.int64)
        w = np.empty((len(flat), 3), dtype=np.float64)
        start = np.zeros(len(flat), dtype=np.int64)
        locate_many(flat, start, self.facets, self.neighbors, self.inverse,
                    self._clamp[0], self._clamp[1], idx, w)
        return idx.reshape(v.shape), w.reshape(v.shape)


@njit(cache=True, nogil=True)
def clamp_direction(
    x: float, y: float, z: float, lo: float, hi: float
) -> tuple[float, float, float]:
    """Normalise ``(x, y, z)`` and clamp its elevation to ``[lo, hi]`` radians."""
    n = np.sqrt(x * x + y * y + z * z)
    if n < 1e-12:
        return 1.0, 0.0, 0.0
    x /= n
    y /= n
    z /= n
    el = np.arcsin(min(1.0, max(-1.0, z)))
    if el < lo or el > hi:
        el = min(hi, max(lo, el))
        h = np.hypot(x, y)
        if h < 1e-12:
            x, y, h = 1.0, 0.0, 1.0
        c = np.cos(el) / h
        x *= c
        y *= c
        z = np.sin(el)
    return x, y, z


@njit(cache=True, nogil=True)
def locate(x, y, z, start, facets, neighbors, inverse):
    """Facet containing direction ``(x, y, z)`` and its barycentric weights.

    Walks from ``start`` towards the direction; falls back to a search over all facets if the
    walk does not end (it always does on a Delaunay triangulation, the fallback is a guard).
    Returns ``(facet, w0, w1, w2)`` with weights normalised to sum to 1.
    """
    f = start
    if f < 0 or f >= facets.shape[0]:
        f = 0
    for _ in range(_WALK_MAX_STEPS):
        m = inverse[f]
        w0 = m[0, 0] * x + m[0, 1] * y + m[0, 2] * z
        w1 = m[1, 0] * x + m[1, 1] * y + m[1, 2] * z
        w2 = m[2, 0] * x + m[2, 1] * y + m[2, 2] * z
        if w0 >= -_EPS and w1 >= -_EPS and w2 >= -_EPS:
            return f, w0, w1, w2
        if w0 <= w1 and w0 <= w2:
            f = neighbors[f, 0]
        elif w1 <= w2:
            f = neighbors[f, 1]
        else:
            f = neighbors[f, 2]
    best = 0
    best_min = -np.inf
    for g in range(facets.shape[0]):
        m = inverse[g]
        w0 = m[0, 0] * x + m[0, 1] * y + m[0, 2] * z
        w1 = m[1, 0] * x + m[1, 1] * y + m[1, 2] * z
        w2 = m[2, 0] * x + m[2, 1] * y + m[2, 2] * z
        lowest = min(w0, min(w1, w2))
        if lowest > best_min:
            best_min = lowest
            best = g
    m = inverse[best]
    w0 = m[0, 0] * x + m[0, 1] * y + m[0, 2] * z
    w1 = m[1, 0] * x + m[1, 1] * y + m[1, 2] * z
    w2 = m[2, 0] * x + m[2, 1] * y + m[2, 2] * z
    return best, w0, w1, w2


@njit(cache=True, nogil=True)
def normalised_weights(w0, w1, w2):
    """Clip tiny negative round-off and scale the weights to sum to 1."""
    w0 = max(w0, 0.0)
    w1 = max(w1, 0.0)
    w2 = max(w2, 0.0)
    s = w0 + w1 + w2
    return w0 / s, w1 / s, w2 / s


@njit(cache=True, nogil=True)
def locate_many(directions, start, facets, neighbors, inverse, lo, hi, idx_out, w_out):
    """:func:`locate` for each row of ``directions``; ``start`` is updated in place."""
    for i in range(directions.shape[0]):
        x, y, z = clamp_direction(directions[i, 0], directions[i, 1], directions[i, 2], lo, hi)
        f, w0, w1, w2 = locate(x, y, z, start[i], facets, neighbors, inverse)
        start[i] = f
        w0, w1, w2 = normalised_weights(w0, w1, w2)
        idx_out[i, 0] = facets[f, 0]
        idx_out[i, 1] = facets[f, 1]
        idx_out[i, 2] = facets[f, 2]
        w_out[i, 0] = w0
        w_out[i, 1] = w1
        w_out[i, 2] = w2
