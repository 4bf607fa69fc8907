"""The room: a shoebox's size, what its six surfaces are made of, and how long it rings.

Coordinates follow SOFA: x ahead, y to the left, z up, metres. The room spans
``x ∈ [−X/2, X/2]``, ``y ∈ [−Y/2, Y/2]``, ``z ∈ [0, Z]``: the stage centre is the centre of
the floor, and players' ears sit 1.2 m above it on a circle of about 2 m.

Every per-wall array is in the order of :data:`WALLS`; every per-band array is over the
octave bands :data:`CENTER_FREQS_HZ` (125 Hz … 8 kHz, the bands of pyroomacoustics'
materials database, Vorländer 2008, annex).

The reverberation time of each band follows Eyring's formula with air absorption
(H. Kuttruff, *Room Acoustics*, the chapter on reverberation):

.. math::

    T_b = \\frac{24 \\ln 10 \\; V}{c \\left(-S \\ln(1 - \\bar\\alpha_b) + 4 m_b V\\right)},
    \\qquad \\bar\\alpha_b = \\frac{1}{S} \\sum_w S_w \\alpha_{w,b}

with ``V`` the volume, ``S = Σ S_w`` the surface, ``α_{w,b}`` the energy absorption coefficient
of wall ``w`` in band ``b``, ``m_b`` the energy attenuation of air per metre and ``c`` the speed
of sound. For small ``ᾱ`` it becomes Sabine's ``T = 24 ln 10 · V / (c A)`` with the absorption
area ``A = Σ S_w α_w``. (pyroomacoustics' ``rt60_theory("eyring")`` sums ``−S_w ln(1 − α_w)``
wall by wall instead, which is Millington–Sette's formula: shorter than Eyring's wherever the
walls differ, by far when one surface nearly swallows everything.)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np
import numpy.typing as npt
import pyroomacoustics as pra
from scipy.optimize import brentq

from hrtf.constants import SAMPLE_RATE, SPEED_OF_SOUND_M_S

#: The six surfaces of the shoebox, in the order of every per-wall array.
WALLS = ("x-", "x+", "y-", "y+", "floor", "ceiling")
#: The same walls as pyroomacoustics' ``ShoeBox`` names them.
PRA_WALLS = ("west", "east", "south", "north", "floor", "ceiling")
#: Octave band centres (Hz) of every per-band array.
CENTER_FREQS_HZ = np.array(pra.materials_data["center_freqs"], dtype=np.float64)
#: Energy attenuation of air ``m`` (1/m) per band at 20 °C and 50–70 % relative humidity
#: (pyroomacoustics' table, after Vorländer 2008). Presets include it; rooms made by hand are
#: flat across bands and leave it out.
AIR_ABSORPTION_PER_M = np.array(
    pra.parameters.Physics(temperature=20.0, humidity=50.0).get_air_absorption()["coeffs"],
    dtype=np.float64)
#: Absorption coefficients are kept inside this range: 0 would never decay, 1 has no Eyring.
ALPHA_RANGE = (0.01, 0.99)
DIMS_RANGE_M = (2.0, 60.0)
RT60_RANGE_S = (0.1, 4.0)
MAX_ORDERS = (0, 1, 2)
DEFAULT_MAX_ORDER = 1
DEFAULT_WET = 0.5
#: The diffuse tail starts between these times (s): Polack's ``√V`` ms, clamped.
MIXING_TIME_RANGE_S = (0.020, 0.150)

#: Bands averaged into one broadband figure: 500 Hz and 1 kHz.
_BROADBAND = [2, 3]
#: Bands averaged into one reflection coefficient: 250 Hz … 4 kHz.
_REFLECTION_BANDS = slice(1, 6)
#: Energy decays as exp(−c A t / 4V); 60 dB is ln(10⁶) = 6 ln 10, so T = 24 ln 10 · V / (c A).
_DECAY_CONSTANT = 24.0 * math.log(10.0)


#: Preset rooms: size in metres and a material from pyroomacoustics' database on each wall.
PRESETS: dict[str, dict] = {
    "dry-studio": {
        "description": "a small, heavily treated tracking room (RT60 ≈ 0.26 s)",
        "dims_m": (6.0, 5.0, 3.0),
        "materials": {"x-": "rockwool_50mm_40kgm3", "x+": "plasterboard",
                      "y-": "studio_curtains", "y+": "plasterboard",
                      "floor": "wood_16mm", "ceiling": "ceiling_fissured_tile"},
    },
    "rehearsal-room": {
        "description": "a band's rehearsal room: plasterboard, a curtain, carpet (≈ 0.65 s)",
        "dims_m": (8.0, 6.0, 3.2),
        "materials": {"x-": "plasterboard", "x+": "curtains_velvet",
                      "y-": "plasterboard", "y+": "brickwork",
                      "floor": "carpet_hairy", "ceiling": "ceiling_plasterboard"},
    },
    "club": {
        "description": "a brick club with a standing crowd, boomy below 250 Hz (≈ 1.0 s)",
        "dims_m": (20.0, 14.0, 6.0),
        "materials": {"x-": "brick_wall_rough", "x+": "curtains_velvet",
                      "y-": "wooden_lining", "y+": "brick_wall_rough",
                      "floor": "audience_0.72_m2", "ceiling": "ceiling_plasterboard"},
    },
    "concert-hall": {
        "description": "a shoebox concert hall with an upholstered audience (≈ 2.0 s)",
        "dims_m": (44.0, 24.0, 17.0),
        "materials": {"x-": "wood_16mm", "x+": "wooden_lining",
                      "y-": "plasterboard", "y+": "plasterboard",
                      "floor": "audience_upholstered_chairs_1", "ceiling": "plasterboard"},
    },
}


@functools.cache
def _octave_bands() -> pra.acoustics.OctaveBandsFactory:
    return pra.acoustics.OctaveBandsFactory(fs=SAMPLE_RATE)


def material_absorption(name: str) -> np.ndarray:
    """Energy absorption coefficients of database material ``name``, shape ``(bands,)``.

    Resampled to :data:`CENTER_FREQS_HZ` as pyroomacoustics' rooms do (linear in log
    frequency, extrapolated to 8 kHz for materials measured up to 4 kHz), then kept inside
    :data:`ALPHA_RANGE`.
    """
    try:
        material = pra.Material(name)
    except KeyError:
        raise ValueError(f"unknown material {name!r}: see pyroomacoustics.materials_data") \
            from None
    coeffs = _octave_bands()(**material.energy_absorption)[: len(CENTER_FREQS_HZ)]
    return np.clip(np.asarray(coeffs, dtype=np.float64), *ALPHA_RANGE)


def wall_areas_m2(dims_m: Iterable[float]) -> np.ndarray:
    """Area of each wall of a shoebox ``(X, Y, Z)``, in the order of :data:`WALLS`."""
    x, y, z = (float(d) for d in dims_m)
    return np.array([y * z, y * z, x * z, x * z, x * y, x * y])


def eyring_rt60_s(dims_m: Sequence[float], absorption: np.ndarray,
                  air_per_m: npt.ArrayLike = 0.0) -> np.ndarray:
    """Eyring's reverberation time per band (s) of a shoebox.

    ``absorption`` (6, bands) energy absorption per wall and band; ``air_per_m`` scalar or
    ``(bands,)`` energy attenuation of air ``m`` in 1/m (0: none). See the module docstring.
    """
    areas = wall_areas_m2(dims_m)
    volume = float(np.prod(dims_m))
    mean_alpha = areas @ np.asarray(absorption, dtype=np.float64) / areas.sum()
    exponent = -areas.sum() * np.log1p(-mean_alpha) + 4.0 * np.asarray(air_per_m) * volume
    return _DECAY_CONSTANT * volume / (SPEED_OF_SOUND_M_S * exponent)


def eyring_absorption(dims_m: Sequence[float], rt60_s: float) -> float:
    """The uniform absorption coefficient that gives a shoebox the reverberation time ``rt60_s``.

    Eyring's formula without air, solved for ``α``:
    ``α = 1 − exp(−24 ln 10 · V / (c S T))``.
    """
    areas = wall_areas_m2(dims_m)
    volume = float(np.prod(dims_m))
    return -math.expm1(-_DECAY_CONSTANT * volume / (SPEED_OF_SOUND_M_S * areas.sum() * rt60_s))


@dataclass(frozen=True, eq=False)
class RoomModel:
    """A shoebox room: its size, its surfaces and its reverberation.

    Attributes
    ----------
    name : str
        Preset name, or ``"custom"`` for a room made by hand.
    dims_m : tuple of float
        Length along x, width along y, height along z (m).
    absorption : ndarray, shape (6, bands)
        Energy absorption coefficient ``α`` per wall (:data:`WALLS`) and band (read-only).
    center_freqs_hz : ndarray, shape (bands,)
        Octave band centres (Hz).
    rt60_s : ndarray, shape (bands,)
        Reverberation time per band (s): Eyring's formula, see the module docstring.
    max_order : int
        Image-source order of the early reflections: 0 (none), 1 or 2.
    wet : float
        Balance of room and direct sound in 0..1; 0.5 is the room as physics has it.
    """

    name: str
    dims_m: tuple[float, float, float]
    absorption: np.ndarray
    center_freqs_hz: np.ndarray
    rt60_s: np.ndarray
    max_order: int
    wet: float

    def __post_init__(self) -> None:
        for field in ("absorption", "center_freqs_hz", "rt60_s"):
            array = np.array(getattr(self, field), dtype=np.float64)
            array.setflags(write=False)
            object.__setattr__(self, field, array)
        bands = len(self.center_freqs_hz)
        if self.absorption.shape != (len(WALLS), bands) or self.rt60_s.shape != (bands,):
            raise ValueError(f"absorption must be (6, {bands}) and rt60_s ({bands},), got "
                             f"{self.absorption.shape} and {self.rt60_s.shape}")

    def reflection_gains(self) -> np.ndarray:
        """Broadband pressure reflection coefficient per wall, shape ``(6,)``.

        ``√(1 − ᾱ_w)`` with ``ᾱ_w`` the wall's mean absorption over 250 Hz … 4 kHz.
        """
        return np.sqrt(1.0 - self.absorption[:, _REFLECTION_BANDS].mean(axis=1))

    @property
    def rt60_broadband_s(self) -> float:
        """Reverberation time (s): the mean of the 500 Hz and 1 kHz bands."""
        return float(self.rt60_s[_BROADBAND].mean())

    @property
    def volume_m3(self) -> float:
        return float(np.prod(self.dims_m))

    @property
    def surface_m2(self) -> float:
        return float(wall_areas_m2(self.dims_m).sum())

    @property
    def absorption_area_m2(self) -> float:
        """Sabine's absorption area ``A = Σ S_w α_w`` (m²), mean of the 500 Hz and 1 kHz bands."""
        return float((wall_areas_m2(self.dims_m) @ self.absorption)[_BROADBAND].mean())

    @property
    def mixing_time_s(self) -> float:
        """Where the diffuse tail takes over from the early reflections (s).

        Polack's estimate ``t_mix ≈ √V`` ms (V in m³), clamped to :data:`MIXING_TIME_RANGE_S`.
        """
        return float(np.clip(math.sqrt(self.volume_m3) * 1e-3, *MIXING_TIME_RANGE_S))

    def bounds_m(self) -> tuple[np.ndarray, np.ndarray]:
        """The room's lower and upper corners (m): floor centre at the origin."""
        x, y, z = self.dims_m
        return np.array([-x / 2, -y / 2, 0.0]), np.array([x / 2, y / 2, z])

    def describe(self) -> dict:
        """A JSON-able summary: name, dims_m, broadband rt60_s (2 decimals), max_order, wet."""
        return {"name": self.name, "dims_m": [float(d) for d in self.dims_m],
                "rt60_s": round(self.rt60_broadband_s, 2), "max_order": self.max_order,
                "wet": self.wet}

    def with_wet(self, wet: float) -> RoomModel:
        """The same room at another wet/dry balance."""
        return dataclasses.replace(self, wet=_number("wet", wet, 0.0, 1.0, ""))


def room_model(preset: str | None = None, *, dims_m: Iterable[float] | None = None,
               rt60_s: float | None = None, max_order: int | None = None,
               wet: float | None = None) -> RoomModel:
    """A room from a preset, a preset changed, or by hand.

    - ``room_model("club")``: the preset as it is (:data:`PRESETS`);
    - ``room_model("club", dims_m=(X, Y, Z))``: the club's materials in another size;
    - ``room_model("club", rt60_s=S)``: every absorption coefficient scaled by one factor
      (each kept inside :data:`ALPHA_RANGE`) so that the broadband RT60 becomes ``S``;
    - ``room_model(dims_m=(X, Y, Z), rt60_s=S)``: a ``"custom"`` room, the same absorption on
      every wall and in every band (:func:`eyring_absorption`, no air), so that it rings for
      ``S`` seconds in every band.

    Raises
    ------
    ValueError
        For an unknown preset, a size outside 2..60 m, an RT60 outside 0.1..4 s (or one the
        room cannot reach), an order outside 0..2, a wet level outside 0..1, a value that is
        not a finite number, or a custom room missing its size or its RT60.
    """
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown room preset {preset!r}: choose one of {', '.join(PRESETS)}")
    if dims_m is not None:
        dims_m = _dims(dims_m)
    if rt60_s is not None:
        rt60_s = _number("rt60_s", rt60_s, *RT60_RANGE_S, " s")
    order = DEFAULT_MAX_ORDER if max_order is None else _order(max_order)
    wet = DEFAULT_WET if wet is None else _number("wet", wet, 0.0, 1.0, "")

    if preset is None:
        if dims_m is None or rt60_s is None:
            missing = "rt60_s" if rt60_s is None else "dims_m=(X, Y, Z)"
            raise ValueError(f"a custom room needs dims_m and rt60_s (missing {missing}), or "
                             f"name a preset: {', '.join(PRESETS)}")
        absorption = np.full((len(WALLS), len(CENTER_FREQS_HZ)), _custom_alpha(dims_m, rt60_s))
        rt60 = eyring_rt60_s(dims_m, absorption)
        return RoomModel("custom", dims_m, absorption, CENTER_FREQS_HZ, rt60, order, wet)

    spec = PRESETS[preset]
    dims = spec["dims_m"] if dims_m is None else dims_m
    absorption = np.array([material_absorption(spec["materials"][w]) for w in WALLS])
    if rt60_s is not None:
        absorption = _scaled_absorption(preset, dims, absorption, rt60_s)
    rt60 = eyring_rt60_s(dims, absorption, AIR_ABSORPTION_PER_M)
    x, y, z = dims
    return RoomModel(preset, (float(x), float(y), float(z)), absorption, CENTER_FREQS_HZ, rt60,
                     order, wet)


def _custom_alpha(dims_m: tuple[float, float, float], rt60_s: float) -> float:
    alpha = eyring_absorption(dims_m, rt60_s)
    lo, hi = ALPHA_RANGE
    if not lo <= alpha <= hi:
        reach = [eyring_rt60_s(dims_m, np.full((6, 1), a))[0] for a in (hi, lo)]
        raise ValueError(
            f"a {_size(dims_m)} room cannot ring for rt60_s={rt60_s:g} s: with absorption "
            f"between {lo} and {hi} on every wall it rings {reach[0]:.2f} … {reach[1]:.2f} s")
    return alpha


def _scaled_absorption(preset: str, dims: tuple[float, float, float], absorption: np.ndarray,
                       rt60_s: float) -> np.ndarray:
    """``absorption`` times the one factor that gives broadband RT60 ``rt60_s`` (with air)."""

    def excess(log_scale: float) -> float:
        scaled = np.clip(absorption * math.exp(log_scale), *ALPHA_RANGE)
        rt60 = eyring_rt60_s(dims, scaled, AIR_ABSORPTION_PER_M)
        return math.log(rt60[_BROADBAND].mean() / rt60_s)

    # α · e^{±ln 100} reaches both ends of ALPHA_RANGE from any α inside it.
    lo, hi = -math.log(100.0), math.log(100.0)
    if excess(lo) < 0.0 or excess(hi) > 0.0:
        reach = [math.exp(excess(k)) * rt60_s for k in (hi, lo)]
        raise ValueError(
            f"the {preset} in a {_size(dims)} room cannot ring for rt60_s={rt60_s:g} s: "
            f"scaling its absorption reaches {reach[0]:.2f} … {reach[1]:.2f} s")
    log_scale = brentq(excess, lo, hi, xtol=1e-12)
    return np.clip(absorption * math.exp(log_scale), *ALPHA_RANGE)


def _size(dims_m: Iterable[float]) -> str:
    return " × ".join(f"{d:g}" for d in dims_m) + " m"


def _number(name: str, value: object, lo: float, hi: float, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo:g} and {hi:g}{unit}, got {value:g}{unit}")
    return value


def _dims(dims_m: Iterable[float]) -> tuple[float, float, float]:
    try:
        values = tuple(dims_m)
    except TypeError:
        raise ValueError(f"dims_m must be three lengths (X, Y, Z) in metres, got {dims_m!r}") \
            from None
    if len(values) != 3:
        raise ValueError(f"dims_m must be three lengths (X, Y, Z) in metres, got {dims_m!r}")
    x, y, z = (_number(f"dims_m[{i}]", v, *DIMS_RANGE_M, " m") for i, v in enumerate(values))
    return x, y, z


def _order(max_order: object) -> int:
    if isinstance(max_order, bool) or not isinstance(max_order, int | np.integer) \
            or int(max_order) not in MAX_ORDERS:
        raise ValueError(f"max_order must be 0 (no early reflections), 1 or 2, got {max_order!r}")
    return int(max_order)
