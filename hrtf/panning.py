"""The crossfeed-free headphone reference: plain stereo panning, no HRTF, as an HRIR set.

For A/B listening a player switches their mix to what a conventional stereo mixer would give:
each source panned by its left–right position alone, with constant power, no interaural delay,
no head shadow and no pinna cues (each ear hears only its own pan gain, hence "crossfeed-free").
Built as an ordinary :class:`~hrtf.hrirset.HrirSet` of one-tap responses, so the renderer
treats it like any other set and switching to it and back crossfades like any filter change.

With the direction's lateral component :math:`y` (SOFA: +1 fully left) the pan position is
:math:`p = (1 - y) / 2` and the gains are

.. math:: g_L = k \\cos(\\pi p / 2), \\qquad g_R = k \\sin(\\pi p / 2),

with :math:`k` chosen so that pink noise through it is as loud, over all directions, as
through the set it is compared with (:mod:`hrtf.loudness`: a loudness-matched A/B).
"""

from __future__ import annotations

import functools

import numpy as np

from hrtf.constants import SAMPLE_RATE
from hrtf.hrirset import HrirSet
from hrtf.loudness import pink_power

GRID_STEP_DEG = 10.0
NAME = "reference (stereo panning, no HRTF)"


def _grid() -> np.ndarray:
    rows = [(0.0, -90.0, 1.0), (0.0, 90.0, 1.0)]
    for el in np.arange(-90 + GRID_STEP_DEG, 90, GRID_STEP_DEG):
        rows.extend((az, el, 1.0) for az in np.arange(0, 360, GRID_STEP_DEG))
    return np.array(rows)


def reference_set(level_like: HrirSet | None = None) -> HrirSet:
    """The panning set, loudness-matched to ``level_like`` (unit energy when None)."""
    energy = 1.0 if level_like is None else pink_power(level_like)
    return _reference_set(round(energy, 12))


@functools.lru_cache(maxsize=8)
def _reference_set(energy: float) -> HrirSet:
    positions = _grid()
    az, el = np.radians(positions[:, 0]), np.radians(positions[:, 1])
    p = (1.0 - np.cos(el) * np.sin(az)) / 2.0
    k = np.sqrt(energy)  # cos² + sin² = 1 in every direction
    hrir = np.stack([k * np.cos(np.pi * p / 2), k * np.sin(np.pi * p / 2)], axis=1)[..., None]
    return HrirSet.from_measurements(NAME, positions, hrir, SAMPLE_RATE)
