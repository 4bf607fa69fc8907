"""Physics of the rendered mix with the default set (MIT KEMAR), on white noise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import correlate, correlation_lags

from dsp.offline import render_mono
from hrtf.constants import SAMPLE_RATE
from tests.helpers.audio import white_noise

SKIP = 4800  # first 0.1 s: the history fills up


def level_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2))


def itd_ms(stereo: np.ndarray) -> float:
    """Delay of the right ear behind the left (ms), from the cross-correlation peak."""
    left, right = stereo[:, 0].astype(np.float64), stereo[:, 1].astype(np.float64)
    xc = correlate(right, left, mode="full", method="fft")
    lags = correlation_lags(len(right), len(left), mode="full")
    window = np.abs(lags) <= 48  # ±1 ms
    return 1e3 * lags[window][np.argmax(xc[window])] / SAMPLE_RATE


@pytest.fixture(scope="module")
def renders(kemar):
    noise = white_noise(2.0)
    out = {}
    for az in (90.0, -90.0, 0.0):
        out[az] = render_mono(noise, kemar, azimuth_deg=az, distance_m=1.0, limit=False)[SKIP:]
    for d in (2.0, 4.0):
        out[("d", d)] = render_mono(noise, kemar, azimuth_deg=30.0, distance_m=d,
                                    limit=False)[SKIP:]
    return out


def test_source_at_left_is_louder_in_left_ear_by_10_db(renders):
    y = renders[90.0]
    assert level_db(y[:, 0]) - level_db(y[:, 1]) >= 10.0


def test_source_at_left_reaches_left_ear_first_by_a_human_itd(renders):
    assert 0.55 <= itd_ms(renders[90.0]) <= 0.80


def test_source_at_right_is_the_mirror(renders):
    y = renders[-90.0]
    assert level_db(y[:, 1]) - level_db(y[:, 0]) >= 10.0
    assert -0.80 <= itd_ms(y) <= -0.55


def test_source_straight_ahead_is_balanced_within_1_db(renders):
    y = renders[0.0]
    assert abs(level_db(y[:, 0]) - level_db(y[:, 1])) <= 1.0
    assert abs(itd_ms(y)) <= 0.05


def test_doubling_distance_lowers_level_by_6_db_inverse_model(renders):
    near, far = renders[("d", 2.0)], renders[("d", 4.0)]
    drop = level_db(near) - level_db(far)
    assert drop == pytest.approx(6.02, abs=0.5)


def test_spherical_head_itd_follows_woodworth(spherical_head):
    y = render_mono(white_noise(1.0), spherical_head, azimuth_deg=90.0, limit=False)[SKIP:]
    woodworth_ms = 1e3 * 0.0875 / 343.0 * (np.pi / 2 + 1)
    assert itd_ms(y) == pytest.approx(woodworth_ms, abs=0.03)
    assert level_db(y[:, 0]) > level_db(y[:, 1]) + 3.0
