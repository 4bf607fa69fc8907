"""The early-reflection kernels against plain NumPy: every tap, every crossfade, every bus."""

from __future__ import annotations

import numpy as np
import pytest

from dsp.image_sources import BUSES
from dsp.reflections import RING, accumulate_taps, bus_to_ears
from dsp.renderer import crossfade_ramp
from hrtf.constants import FRAME


def reference_taps(ring, base, old_d, old_b, old_g, new_d, new_b, new_g, ramp):
    """What accumulate_taps should write, one tap at a time."""
    n_l, n_s, n_k = new_d.shape
    out = np.zeros((n_l, BUSES, FRAME), np.float64)
    for l in range(n_l):
        for s in range(n_s):
            for k in range(n_k):
                for delay, bus, gain, level in ((old_d, old_b, old_g, 1.0 - ramp),
                                                (new_d, new_b, new_g, ramp)):
                    x = ring[s, base - delay[l, s, k]:base - delay[l, s, k] + FRAME]
                    for j in range(3):
                        out[l, bus[l, s, k, j]] += gain[l, s, k, j] * level * x
    return out


def random_taps(rng, n_l, n_s, n_k):
    delay = rng.integers(0, RING - FRAME, (n_l, n_s, n_k)).astype(np.int32)
    bus = np.stack([rng.choice(BUSES, 3, replace=False) for _ in range(n_l * n_s * n_k)])
    gain = rng.uniform(0.1, 1.0, (n_l * n_s * n_k, 3))
    # images on two loudspeakers (any of the three silent), on one, and silent images
    silent = rng.integers(0, 6, n_l * n_s * n_k)
    for j in range(3):
        gain[silent == j, j] = 0.0
    gain[silent == 3, 1:] = 0.0
    gain[silent == 4] = 0.0
    return (delay, bus.reshape(n_l, n_s, n_k, 3).astype(np.int32),
            gain.reshape(n_l, n_s, n_k, 3).astype(np.float32))


@pytest.mark.parametrize("change", ["none", "gains", "delays", "everything"])
def test_taps_sum_as_numpy_does(change):
    rng = np.random.default_rng(3)
    n_l, n_s, n_k = 3, 4, 6
    ring = rng.standard_normal((n_s, 2 * RING)).astype(np.float32)
    base = RING + 5 * FRAME
    old = random_taps(rng, n_l, n_s, n_k)
    new = [a.copy() for a in old]
    if change in ("gains", "everything"):
        new[2] = random_taps(rng, n_l, n_s, n_k)[2]
    if change in ("delays", "everything"):
        new[0] = random_taps(rng, n_l, n_s, n_k)[0]
    if change == "everything":
        new[1] = random_taps(rng, n_l, n_s, n_k)[1]
    ramp = crossfade_ramp()
    out = np.full((n_l, BUSES, FRAME), 7.0, np.float32)  # overwritten, not added to
    accumulate_taps(ring, base, *old, *new, ramp, out)
    expected = reference_taps(ring, base, *old, *new, ramp)
    np.testing.assert_allclose(out, expected, atol=2e-5 * np.abs(expected).max())


def test_buses_reach_the_ears_through_the_set_with_each_rows_signs():
    rng = np.random.default_rng(4)
    n, bins, rows_total = 5, 33, 7
    spec = (rng.standard_normal((n, BUSES, bins))
            + 1j * rng.standard_normal((n, BUSES, bins))).astype(np.complex64)
    hrtf = (rng.standard_normal((BUSES, 2, bins))
            + 1j * rng.standard_normal((BUSES, 2, bins))).astype(np.complex64)
    rows = np.array([6, 0, 3, 2, 5], np.int64)
    sign = np.array([(1, 0), (0, 1), (1, -1), (1, 0), (0, 0)], np.float32)
    p0 = (rng.standard_normal((rows_total, 2, bins)) * (1 + 1j)).astype(np.complex64)
    d0 = (rng.standard_normal((rows_total, 2, bins)) * (1 - 1j)).astype(np.complex64)
    p, d = p0.copy(), d0.copy()
    bus_to_ears(spec, rows, hrtf, sign, p, d)
    ears = np.einsum("nvb,veb->neb", spec.astype(np.complex128), hrtf)
    want_p, want_d = p0.astype(np.complex128), d0.astype(np.complex128)
    want_p[rows] += sign[:, 0, None, None] * ears
    want_d[rows] += sign[:, 1, None, None] * ears
    np.testing.assert_allclose(p, want_p, atol=1e-4)
    np.testing.assert_allclose(d, want_d, atol=1e-4)
