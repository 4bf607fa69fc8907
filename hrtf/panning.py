"""The crossfeed-free headphone reference: plain stereo panning, no HRTF, as an HRIR set.

For A/B listening a player switches their mix to what a conventional stereo mixer would give:
each source panned by its left–right position alone, with constant power, no interaural delay,
no head shadow and no pinna cues (each ear hears only its own pan gain, hence "crossfeed-free").
Built as an ordinary :class:`~hrtf.hrirset.HrirSet` of one-tap responses, so the renderer
treats it like any other set and switching to it and back crossfades like any filter change.

With the direction's lateral component :math:`y` (SOFA: +1 fully left) the pan position is
:math:`p = (1 - y) / 2` and the gains are

.. math:: g_L = k \\cos(\\pi p / 2), \\qquad g_R = k \\sin(\\pi p / 2),

with :math:`k` chosen so that the set's mean energy over directions equals that of the set it
is compared with (a loudness-matched A/B).
"""

from __future__ import annotations

import functools
import weakref

import numpy as np

from hrtf.constants import SAMPLE_RATE
from hrtf.hrirset import HrirSet

GRID_STEP_DEG = 10.0
NAME = "reference (stereo panning, no HRTF)"


def _grid() -> np.ndarray:
    rows = [(0.0, -90.0, 1.0), (0.0, 90.0, 1.0)]
    for el in np.arange(-90 + GRID_STEP_DEG, 90, GRID_STEP_DEG):
        rows.extend((az, el, 1.0) for az in np.arange(0, 360, GRID_STEP_DEG))
    return np.array(rows)


#: Directions summed at a time by :func:`mean_energy`.
_ENERGY_CHUNK = 1024
#: Each set's mean energy, once per set (the renderer asks on its tick whenever a listener's
#: setting changes; ``server.rooms.rendering`` asks first, on a worker thread).
_ENERGY: weakref.WeakKeyDictionary[HrirSet, float] = weakref.WeakKeyDictionary()


def mean_energy(hrirs: HrirSet) -> float:
    """Mean over directions of both ears' response energy."""
    energy = _ENERGY.get(hrirs)
    if energy is None:
        total = 0.0
        for lo in range(0, len(hrirs.hrir), _ENERGY_CHUNK):  # no set-sized float64 temporaries
            chunk = hrirs.hrir[lo:lo + _ENERGY_CHUNK].astype(np.float64)
            total += float(np.sum(chunk * chunk))
        energy = total / len(hrirs.hrir)
        _ENERGY[hrirs] = energy
    return energy


def reference_set(level_like: HrirSet | None = None) -> HrirSet:
    """The panning set, loudness-matched to ``level_like`` (unit energy when None)."""
    energy = 1.0 if level_like is None else mean_energy(level_like)
    return _reference_set(round(energy, 12))


@functools.lru_cache(maxsize=8)
def _reference_set(energy: float) -> HrirSet:
    positions = _grid()
    az, el = np.radians(positions[:, 0]), np.radians(positions[:, 1])
    p = (1.0 - np.cos(el) * np.sin(az)) / 2.0
    k = np.sqrt(energy)  # cos² + sin² = 1 in every direction
    hrir = np.stack([k * np.cos(np.pi * p / 2), k * np.sin(np.pi * p / 2)], axis=1)[..., None]
    return HrirSet.from_measurements(NAME, positions, hrir, SAMPLE_RATE)
