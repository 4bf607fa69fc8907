"""An analytic spherical-head HRTF set (Brown & Duda), needing no measured data.

C. P. Brown and R. O. Duda, "A structural model for binaural sound synthesis", IEEE Trans.
Speech and Audio Processing 6(5), 1998. Each ear sees the source at angle ``θ`` from its own
axis (the ears sit at azimuth ±90°). The head shadow is a one-pole, one-zero filter

.. math::

    H(\\omega, \\theta) = \\frac{1 + j \\alpha(\\theta) \\omega / (2 \\omega_0)}
                               {1 + j \\omega / (2 \\omega_0)}, \\qquad
    \\omega_0 = c / a,

    \\alpha(\\theta) = \\left(1 + \\frac{\\alpha_\\min}{2}\\right)
        + \\left(1 - \\frac{\\alpha_\\min}{2}\\right)
          \\cos\\left(\\frac{\\theta}{\\theta_\\min} \\pi\\right),
    \\quad \\alpha_\\min = 0.1, \\ \\theta_\\min = 150°,

and the delay to each ear follows Woodworth's ray model,

.. math::

    T(\\theta) = -\\frac{a}{c} \\cos \\theta \\ (\\theta < \\pi/2), \\qquad
    T(\\theta) = \\frac{a}{c} (\\theta - \\pi/2) \\ (\\theta \\ge \\pi/2),

which gives an interaural delay of ``(a / c)(π/2 + 1)`` ≈ 0.66 ms at 90° for ``a`` = 8.75 cm.
The model has no pinna, so it carries no elevation cue beyond the change of ``θ``.
"""

from __future__ import annotations

import numpy as np

from hrtf.constants import SAMPLE_RATE, SPEED_OF_SOUND_M_S
from hrtf.errors import HrtfError
from hrtf.hrirset import HrirSet

DEFAULT_HEAD_RADIUS_M = 0.0875
ALPHA_MIN = 0.1
THETA_MIN_RAD = np.radians(150.0)
TAPS = 256
#: Samples before the earliest arrival, room for the fractional delay's pre-ringing.
PRE_SAMPLES = 8
GRID_STEP_DEG = 10.0


def _grid() -> np.ndarray:
    """(azimuth, elevation, radius) on a 10° grid with single points at the poles."""
    rows = [(0.0, -90.0, 1.0), (0.0, 90.0, 1.0)]
    for el in np.arange(-90 + GRID_STEP_DEG, 90, GRID_STEP_DEG):
        for az in np.arange(0, 360, GRID_STEP_DEG):
            rows.append((az, el, 1.0))
    return np.array(rows)


def spherical_head_set(head_radius_m: float = DEFAULT_HEAD_RADIUS_M,
                       gain: float = 1.0) -> HrirSet:
    """The Brown–Duda set for a head of radius ``head_radius_m`` (5 to 15 cm), its responses
    scaled by ``gain``."""
    if not np.isfinite(head_radius_m) or not 0.05 <= head_radius_m <= 0.15:
        raise HrtfError(f"head radius {head_radius_m} m is outside 0.05..0.15 m")
    positions = _grid()
    az, el = np.radians(positions[:, 0]), np.radians(positions[:, 1])
    y = np.cos(el) * np.sin(az)
    theta = np.arccos(np.clip(np.stack([y, -y], axis=1), -1.0, 1.0))  # (M, 2): left, right ear
    a_over_c = head_radius_m / SPEED_OF_SOUND_M_S
    delay_s = np.where(theta < np.pi / 2, -a_over_c * np.cos(theta), a_over_c * (theta - np.pi / 2))
    delay_s += a_over_c + PRE_SAMPLES / SAMPLE_RATE
    alpha = (1 + ALPHA_MIN / 2) + (1 - ALPHA_MIN / 2) * np.cos(theta / THETA_MIN_RAD * np.pi)

    nfft = 4 * TAPS
    omega = 2 * np.pi * np.fft.rfftfreq(nfft, 1.0 / SAMPLE_RATE)
    omega0 = 1.0 / a_over_c
    shadow = (1 + 1j * alpha[..., None] * omega / (2 * omega0)) / (1 + 1j * omega / (2 * omega0))
    spectrum = gain * shadow * np.exp(-1j * omega * delay_s[..., None])
    hrir = np.fft.irfft(spectrum, n=nfft, axis=-1)[..., :TAPS]
    fade = 32
    hrir[..., -fade:] *= np.linspace(1.0, 0.0, fade)
    name = f"spherical-head (a = {100 * head_radius_m:.2f} cm)"
    return HrirSet.from_measurements(name, positions, hrir, SAMPLE_RATE)
