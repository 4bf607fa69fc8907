"""The early-reflection kernels against plain NumPy: every tap, every crossfade, every bus."""

from __future__ import annotations

import numpy as np
import pytest

from dsp.geometry import Scene
from dsp.image_sources import BUSES
from dsp.reflections import RING, EarlyReflections, accumulate_taps, bus_to_ears
from dsp.renderer import crossfade_ramp
from hrtf.constants import FRAME
from tests.helpers.render import FRAMES


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


@pytest.mark.parametrize("frame", FRAMES)
def test_a_still_rooms_buses_are_the_same_samples_at_every_frame_size(frame):
    """Taps are exact delays: with nothing moving, the loudspeaker signals do not depend on
    how the sources' audio is cut into frames (second-order images of a shoebox)."""
    from dsp.room_model import room_model

    room = room_model(dims_m=(7.0, 5.0, 3.0), rt60_s=0.5, max_order=2)
    scene = Scene.create([[0.5, 0.2, 1.2], [-1.5, 1.0, 1.7]], [[1.8, -0.9, 1.5], [-2.0, -1.0, 1.1]],
                         listener_yaw_deg=[30.0, 200.0])
    x = np.random.default_rng(9).standard_normal((2, 6 * FRAME)).astype(np.float32)
    buses = {}
    for size in {frame, FRAME}:
        er = EarlyReflections(2, 2, size)
        lo, hi = room.bounds_m()
        er.set_room(lo, hi, room.max_order, room.reflection_gains())
        er.prime(scene, np.ones(2))
        ramp = crossfade_ramp(size)
        out = []
        for k in range(0, x.shape[1], size):
            er.push(x[:, k:k + size])
            out.append(er.process(scene, np.ones(2), ramp).copy())
        buses[size] = np.concatenate(out, axis=-1)
    assert buses[frame].shape == (2, BUSES, 6 * FRAME)
    assert np.abs(buses[FRAME]).max() > 0
    np.testing.assert_allclose(buses[frame], buses[FRAME], rtol=0, atol=1e-6)


@pytest.mark.parametrize("frame", [0, 100, 1920])
def test_reflections_refuse_a_frame_that_does_not_divide_their_ring(frame):
    with pytest.raises(ValueError, match=f"frame of {frame} samples"):
        EarlyReflections(1, 1, frame)
