"""Direction index and interpolation weights."""

from __future__ import annotations

import numpy as np
import pytest

from hrtf.errors import HrtfError
from hrtf.grid import DirectionGrid, angles_deg, unit_vectors
from hrtf.hrirset import HrirSet


def random_directions(rng, n):
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_weights_sum_to_one_and_reconstruct_the_direction_inside_its_facet(kemar, rng):
    grid = kemar.grid
    queries = random_directions(rng, 2000)
    _, el = angles_deg(queries)
    inside = el >= grid.elevation_range_deg[0]
    idx, w = grid.weights(queries[inside])
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-9)
    assert np.all(w >= 0)
    # The weighted vertices point the same way as the query (barycentric on the facet).
    recon = np.einsum("nk,nkd->nd", w, grid.points[idx])
    recon /= np.linalg.norm(recon, axis=1, keepdims=True)
    np.testing.assert_allclose(recon, queries[inside], atol=1e-9)


def test_a_measured_direction_gets_all_the_weight_on_itself(kemar):
    probe = kemar.directions[[0, 100, 400, 709]]
    idx, w = kemar.grid.weights(probe)
    best = idx[np.arange(4), np.argmax(w, axis=1)]
    np.testing.assert_array_equal(best, [0, 100, 400, 709])
    np.testing.assert_allclose(w.max(axis=1), 1.0, atol=1e-9)


def test_walk_agrees_with_brute_force_on_40000_directions(rng):
    """A dense set (40k directions) triangulates and locates like an exhaustive search."""
    dirs = random_directions(rng, 40_000)
    grid = DirectionGrid(dirs)
    queries = random_directions(rng, 300)
    idx, w = grid.weights(queries)
    for q, i, wi in zip(queries, idx, w, strict=True):
        verts = grid.points[i]
        np.testing.assert_allclose(wi @ verts / np.linalg.norm(wi @ verts), q, atol=1e-8)


def test_below_the_lowest_measured_elevation_is_heard_from_the_lowest_ring(kemar):
    low = unit_vectors(np.array([30.0, 30.0]), np.array([-75.0, -40.0]))
    idx, w = kemar.grid.weights(low)
    filt = [np.tensordot(wi, kemar.grid_hrir[ii], axes=1) for ii, wi in zip(idx, w, strict=True)]
    np.testing.assert_allclose(filt[0], filt[1], atol=1e-7)
    # Straight down is also answered (from the lowest ring, ahead), never by the virtual pole.
    idx, w = kemar.grid.weights(np.array([[0.0, 0.0, -1.0]]))
    assert np.all(kemar.grid.source_of[idx[w > 1e-6]] < len(kemar.directions))


def test_a_horizontal_only_set_interpolates_azimuth(rng):
    az = np.arange(0, 360, 5.0)
    positions = np.column_stack([az, np.zeros_like(az), np.ones_like(az)])
    hrir = rng.standard_normal((len(az), 2, 64))
    hs = HrirSet.from_measurements("ring", positions, hrir, 48_000)
    idx, w = hs.grid.weights(unit_vectors(np.array([12.5, 12.5]), np.array([0.0, 60.0])))
    for row_idx, row_w in zip(idx, w, strict=True):
        weights = dict(zip(row_idx.tolist(), row_w.tolist(), strict=True))
        assert weights.get(2, 0) == pytest.approx(0.5, abs=1e-6)
        assert weights.get(3, 0) == pytest.approx(0.5, abs=1e-6)


def test_directions_on_one_point_cannot_be_triangulated():
    with pytest.raises(HrtfError, match="at least 3"):
        DirectionGrid(np.array([[1.0, 0, 0], [0, 1.0, 0]]))


def test_spectra_are_computed_once_per_fft_size(kemar):
    a = kemar.spectra(2048)
    assert kemar.spectra(2048) is a
    assert a[0].shape == (len(kemar.grid.points), 2, 1025)
    assert a[0].dtype == np.float32
