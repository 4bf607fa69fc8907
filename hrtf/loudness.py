"""How loud an HRTF set makes music: the power of pink noise through it, over all directions.

A/B listening between sets (KEMAR, the spherical head, the panning reference) is fair only at
the same loudness. Music carries about equal energy per octave, so the measure is pink noise
(power density ∝ 1/f) from 50 Hz to 16 kHz, through both ears' responses, averaged over
:data:`DIRECTIONS` directions spread evenly over the band within :data:`BAND_DEG` of the
horizontal plane, where instruments stand around a listener (a Fibonacci lattice), each
response interpolated from the set's grid as the renderer does (barycentric weights on its
triangulation, the complex spectra mixed):

.. math:: P = \\frac{1}{M} \\sum_{m} \\sum_{e \\in \\{L, R\\}}
   \\frac{\\sum_k |H_{m,e}(f_k)|^2 / f_k}{\\sum_k 1 / f_k}

Even spreading matters: measured grids are denser near the horizontal plane, and interpolation
between responses of different delays loses some of their highs.

A broadband energy match is not enough: KEMAR's responses put much of their energy into the
ear-canal and pinna resonances above 2 kHz, so a flat set matched to its energy sounds louder
on music.
"""

from __future__ import annotations

import weakref

import numpy as np

from hrtf.constants import SAMPLE_RATE
from hrtf.hrirset import HrirSet

LOW_HZ, HIGH_HZ = 50.0, 16_000.0
_NFFT = 4096
#: Directions transformed at a time (no set-sized complex temporaries).
_CHUNK = 256
#: Directions :func:`pink_power` averages over, and how far above and below the horizontal
#: plane they reach (degrees): where players put instruments, around the listener's ears.
DIRECTIONS = 512
BAND_DEG = 30.0
_POWER: weakref.WeakKeyDictionary[HrirSet, float] = weakref.WeakKeyDictionary()


def even_directions(n: int = DIRECTIONS) -> np.ndarray:
    """``n`` unit vectors spread evenly over the band within :data:`BAND_DEG` of the
    horizontal plane (a Fibonacci lattice on that zone of the sphere)."""
    k = np.arange(n) + 0.5
    top = np.sin(np.radians(BAND_DEG))
    z = top * (1.0 - 2.0 * k / n)
    phi = np.pi * (1.0 + 5.0**0.5) * k
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def pink_power(hrirs: HrirSet) -> float:
    """:math:`P` above for ``hrirs`` (once per set)."""
    power = _POWER.get(hrirs)
    if power is None:
        nfft = max(_NFFT, 1 << int(np.ceil(np.log2(hrirs.hrir.shape[-1]))))
        f = np.fft.rfftfreq(nfft, 1.0 / SAMPLE_RATE)
        weight = np.where((f >= LOW_HZ) & (f <= HIGH_HZ), 1.0 / np.maximum(f, 1.0), 0.0)
        weight /= weight.sum()
        idx, w = hrirs.grid.weights(even_directions())
        measured = hrirs.grid.source_of[idx]  # (M, 3): the measured response at each corner
        total = 0.0
        for lo in range(0, len(measured), _CHUNK):
            corners = hrirs.hrir[measured[lo:lo + _CHUNK]].astype(np.float64)  # (m, 3, 2, N)
            spectra = np.fft.rfft(corners, n=nfft, axis=-1)
            mixed = np.einsum("mc,mcek->mek", w[lo:lo + _CHUNK], spectra)
            total += float(np.sum((mixed.real**2 + mixed.imag**2) * weight))
        power = total / len(measured)
        _POWER[hrirs] = power
    return power


def level_db(hrirs: HrirSet) -> float:
    """:func:`pink_power` in dB."""
    return 10.0 * float(np.log10(pink_power(hrirs)))
