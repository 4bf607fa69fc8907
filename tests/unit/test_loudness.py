"""A/B listening compares ears, not levels: the spherical head and the panning reference play
music as loud as MIT KEMAR, through the renderer, within 1 dB (hrtf/loudness.py)."""

from __future__ import annotations

import numpy as np
import pytest

from dsp.offline import render_mono
from hrtf.library import load_hrtf
from hrtf.loudness import HIGH_HZ, LOW_HZ, level_db
from hrtf.panning import reference_set


def pink_noise(seconds: float = 0.5) -> np.ndarray:
    """Pink noise from LOW_HZ to HIGH_HZ, as the loudness measure weights music."""
    n = int(48_000 * seconds)
    spectrum = np.fft.rfft(np.random.default_rng(1).standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / 48_000)
    spectrum[1:] /= np.sqrt(f[1:])
    spectrum[(f < LOW_HZ) | (f > HIGH_HZ)] = 0
    x = np.fft.irfft(spectrum, n=n)
    return (0.1 * x / x.std()).astype(np.float32)


def heard_db(hrirs, reference: bool = False) -> float:
    """Mean power at both ears of pink noise from 36 directions around the head (dB)."""
    x = pink_noise()
    powers = [np.mean(render_mono(x, hrirs, azimuth_deg=az, elevation_deg=el, limit=False,
                                  reference=reference).astype(np.float64) ** 2)
              for az in range(0, 360, 30) for el in (-30, 0, 30)]
    return 10 * np.log10(np.mean(powers))


@pytest.fixture(scope="module")
def kemar_db(kemar) -> float:
    return heard_db(kemar)


def test_the_spherical_head_is_as_loud_as_kemar(kemar_db):
    sphere = heard_db(load_hrtf("spherical-head"))
    print(f"\nspherical head − KEMAR: {sphere - kemar_db:+.2f} dB")
    assert sphere == pytest.approx(kemar_db, abs=1.0)


def test_the_panning_reference_is_as_loud_as_the_set_it_is_compared_with(kemar, kemar_db):
    panned = heard_db(kemar, reference=True)
    print(f"\npanning reference − KEMAR: {panned - kemar_db:+.2f} dB")
    assert panned == pytest.approx(kemar_db, abs=1.0)
    assert level_db(reference_set(kemar)) == pytest.approx(level_db(kemar), abs=0.01)


def test_every_spherical_head_size_is_matched(kemar):
    for radius in ("0.06", "0.12"):
        assert level_db(load_hrtf(f"spherical-head:{radius}")) == pytest.approx(
            level_db(kemar), abs=0.01)
