"""Validation and conversion in HrirSet.from_measurements (the arrays behind every set)."""

from __future__ import annotations

import numpy as np
import pytest

from hrtf.errors import HrtfError
from hrtf.hrirset import HrirSet
from hrtf.spherical_head import spherical_head_set


def small_set(rng, n=50, taps=64):
    positions = np.column_stack([rng.uniform(-180, 180, n), rng.uniform(-90, 90, n), np.ones(n)])
    return positions, rng.standard_normal((n, 2, taps))


def test_resampling_to_48k_scales_the_length(rng):
    positions, hrir = small_set(rng, taps=441)
    hrir[:, :, 0] = 5.0  # an onset at sample 0, so nothing is trimmed
    hs = HrirSet.from_measurements("x", positions, hrir, 44_100)
    assert abs(hs.taps - 480) <= 1


def test_delay_field_is_baked_in_and_common_delay_removed(rng):
    positions, _ = small_set(rng)
    hrir = np.zeros((50, 2, 32))
    hrir[:, :, 0] = 1.0
    delay = np.tile([[3.0, 10.0]], (50, 1))
    hs = HrirSet.from_measurements("x", positions, hrir, 48_000, delay=delay)
    onset = np.argmax(np.abs(hs.hrir) > 0.5, axis=-1)
    assert np.all(onset[:, 1] - onset[:, 0] == 7)


def test_cartesian_positions_give_the_same_directions(rng):
    positions, hrir = small_set(rng)
    from hrtf.grid import unit_vectors

    xyz = 1.7 * unit_vectors(positions[:, 0], positions[:, 1])
    a = HrirSet.from_measurements("s", positions, hrir, 48_000)
    b = HrirSet.from_measurements("c", xyz, hrir, 48_000, position_type="cartesian")
    np.testing.assert_allclose(a.directions, b.directions, atol=1e-12)


def test_most_measured_radius_is_used_and_repeats_dropped(rng):
    positions, hrir = small_set(rng, n=40)
    near = positions[:10].copy()
    near[:, 2] = 0.5
    both = np.concatenate([positions, near, positions[:5]])
    hs = HrirSet.from_measurements("x", both, np.concatenate([hrir, hrir[:10], hrir[:5]]), 48_000)
    assert len(hs.directions) == 40


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p, h: (p, h[:, :1]), "2 receivers"),
        (lambda p, h: (p[:-1], h), "source positions have shape"),
        (lambda p, h: (p, np.where(h > 2, np.nan, h)), "NaN or infinite"),
        (lambda p, h: (p, h * 0), "silent"),
        (lambda p, h: (np.vstack([[np.inf, 0, 1], p[1:]]), h), "source positions contain"),
    ],
)
def test_bad_arrays_are_refused_with_the_reason(rng, mutate, message):
    positions, hrir = mutate(*small_set(rng))
    with pytest.raises(HrtfError, match=message):
        HrirSet.from_measurements("x", positions, hrir, 48_000)


@pytest.mark.parametrize("rate", [0.0, -48_000.0, 1e9, np.nan])
def test_absurd_sample_rates_are_refused(rng, rate):
    with pytest.raises(HrtfError, match="sample rate"):
        HrirSet.from_measurements("x", *small_set(rng), rate)


def test_spherical_head_radius_is_checked():
    with pytest.raises(HrtfError, match="head radius"):
        spherical_head_set(0.5)


def test_a_set_too_large_for_the_renderer_is_refused(monkeypatch, rng):
    import hrtf.hrirset

    monkeypatch.setattr(hrtf.hrirset, "MAX_SPECTRA_BYTES", 5 * 2**20)  # it needs about 9 MiB
    with pytest.raises(HrtfError, match="GiB in the renderer"):
        HrirSet.from_measurements("x", *small_set(rng, n=1000, taps=256), 48_000)
