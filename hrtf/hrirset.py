"""A validated HRIR set at the engine's sample rate, and its frequency-domain form.

Every source of HRTFs (a SOFA file, the analytic spherical head) ends in
:meth:`HrirSet.from_measurements`, which validates, resamples to 48 kHz once, bakes the SOFA
``Data.Delay`` into the responses, trims the leading silence common to all of them (it would
only add latency) and triangulates the directions.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import numpy.typing as npt
import scipy.fft
from scipy.signal import resample_poly

from hrtf.constants import FRAME, SAMPLE_RATE
from hrtf.errors import HrtfError
from hrtf.grid import DirectionGrid, unit_vectors

log = logging.getLogger(__name__)

#: Limits on what a set may be; past them the input is refused as absurd.
MAX_DIRECTIONS = 200_000
MAX_INPUT_SAMPLES = 65_536
MIN_SAMPLE_RATE = 8_000.0
MAX_SAMPLE_RATE = 768_000.0
#: Responses are cut to this many taps at 48 kHz (85 ms, far past any free-field HRIR).
MAX_TAPS = 4096
#: Leading samples kept before the earliest onset of the set.
ONSET_MARGIN = 4
#: An onset is the first sample above this level relative to the set's peak.
ONSET_THRESHOLD_DB = -50.0
#: Trailing samples below this level relative to the set's peak are dropped.
TAIL_THRESHOLD_DB = -90.0
#: Largest frequency-domain form a set may need (grid points × 2 ears × bins × complex64).
MAX_SPECTRA_BYTES = 2 * 2**30
_SPECTRA_CHUNK = 1024
#: Directions closer than this are the same direction; the first one measured is kept.
SAME_DIRECTION_DEG = 0.01


@dataclass(frozen=True, eq=False)
class HrirSet:
    """Head-related impulse responses for a set of directions, at :data:`SAMPLE_RATE`.

    Attributes
    ----------
    name : str
        What the set is (file name or model name), for logs and the client.
    directions : ndarray, shape (D, 3)
        Unit vectors of the measured directions (SOFA coordinates).
    hrir : ndarray, shape (D, 2, N), float32
        Responses, ear 0 left and ear 1 right.
    grid : DirectionGrid
        Triangulation of ``directions`` with virtual points filling holes.
    trimmed_samples : int
        Leading samples (common to all responses) removed at load: latency not paid.
    digest : str
        Content hash: equal digests mean equal sets.
    """

    name: str
    directions: np.ndarray
    hrir: np.ndarray
    grid: DirectionGrid
    trimmed_samples: int
    digest: str
    _spectra: dict = field(default_factory=dict, repr=False)

    @property
    def taps(self) -> int:
        return self.hrir.shape[2]

    @property
    def nfft(self) -> int:
        """FFT size of the block renderer at the default frame (:func:`fft_size`)."""
        return fft_size(self.taps)

    @property
    def grid_hrir(self) -> np.ndarray:
        """Responses for every grid point, virtual points included, shape ``(P, 2, N)``."""
        return self.hrir[self.grid.source_of]

    @property
    def nbytes(self) -> int:
        """Bytes the set holds now: responses, directions, grid, and the spectra computed."""
        spectra = sum(re.nbytes + im.nbytes for re, im in self._spectra.values())
        return self.directions.nbytes + self.hrir.nbytes + self.grid.nbytes + spectra

    @property
    def prepared_bytes(self) -> int:
        """Bytes the set holds once the renderer's spectra (:attr:`nfft`) are computed."""
        missing = 0 if self.nfft in self._spectra else spectra_bytes(len(self.grid.points),
                                                                     self.nfft)
        return self.nbytes + missing

    def spectra(self, nfft: int) -> tuple[np.ndarray, np.ndarray]:
        """Real and imaginary parts of the grid responses' ``nfft``-point spectra.

        Shape ``(P, 2, nfft // 2 + 1)`` each, float32, computed once per ``nfft`` and kept.
        """
        if nfft < self.taps:
            raise ValueError(f"nfft {nfft} is shorter than the {self.taps}-tap responses")
        if nfft not in self._spectra:
            points = len(self.grid.points)
            shape = (points, 2, nfft // 2 + 1)
            re, im = np.empty(shape, np.float32), np.empty(shape, np.float32)
            for lo in range(0, points, _SPECTRA_CHUNK):  # chunks: no set-sized temporaries
                rows = self.grid.source_of[lo:lo + _SPECTRA_CHUNK]
                spec = np.fft.rfft(self.hrir[rows], n=nfft, axis=-1)
                re[lo:lo + len(rows)] = spec.real
                im[lo:lo + len(rows)] = spec.imag
            self._spectra[nfft] = (re, im)
        return self._spectra[nfft]

    @classmethod
    def from_measurements(
        cls,
        name: str,
        positions: np.ndarray,
        hrir: np.ndarray,
        sample_rate: float | np.ndarray,
        *,
        position_type: str = "spherical",
        delay: np.ndarray | None = None,
    ) -> HrirSet:
        """Validate and convert measured responses.

        Parameters
        ----------
        positions : ndarray, shape (M, 3)
            ``(azimuth_deg, elevation_deg, radius_m)`` for ``"spherical"``, metres for
            ``"cartesian"``.
        hrir : ndarray, shape (M, 2, N)
            Responses at ``sample_rate``.
        sample_rate : float or ndarray
            In Hz; an array (SOFA's ``Data.SamplingRate``) gives its first value.
        delay : ndarray, shape (1, 2) or (M, 2), optional
            SOFA ``Data.Delay`` in samples at ``sample_rate``, added to the responses.
        """
        positions = _finite_array(positions, "source positions")
        hrir = _finite_array(hrir, "impulse responses")
        if hrir.ndim != 3:
            raise HrtfError(f"impulse responses must have 3 dimensions (M, R, N), got {hrir.ndim}")
        m, r, n = hrir.shape
        if r != 2:
            raise HrtfError(f"impulse responses must have 2 receivers (ears), got {r}")
        if not 1 <= m <= MAX_DIRECTIONS:
            raise HrtfError(f"{m} measurements is outside 1..{MAX_DIRECTIONS}")
        if not 1 <= n <= MAX_INPUT_SAMPLES:
            raise HrtfError(f"impulse responses of {n} samples is outside 1..{MAX_INPUT_SAMPLES}")
        if positions.shape != (m, 3):
            raise HrtfError(
                f"source positions have shape {positions.shape}, expected ({m}, 3) "
                f"to match {m} impulse responses"
            )
        rate = float(np.asarray(sample_rate, dtype=np.float64).reshape(-1)[0])
        if not np.isfinite(rate) or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise HrtfError(
                f"sample rate {rate:g} Hz is outside {MIN_SAMPLE_RATE:g}..{MAX_SAMPLE_RATE:g} Hz"
            )
        if not np.any(hrir):
            raise HrtfError("every impulse response is silent")
        if delay is None:
            delay = np.zeros((1, 2))
        delay = _finite_array(delay, "delays")
        if delay.ndim == 1 and delay.size == 2:
            delay = delay.reshape(1, 2)
        if delay.ndim != 2 or delay.shape[1] != 2 or delay.shape[0] not in (1, m):
            raise HrtfError(f"delays have shape {delay.shape}, expected (1, 2) or ({m}, 2)")
        if np.any(delay < 0) or np.any(delay > MAX_INPUT_SAMPLES):
            raise HrtfError(f"delays must lie in 0..{MAX_INPUT_SAMPLES} samples")

        vectors, radius = _to_unit_vectors(positions, position_type)
        keep = _one_radius_unique_directions(vectors, radius)
        vectors, hrir = vectors[keep], hrir[keep]
        delay = np.broadcast_to(delay, (m, 2))[keep]

        out = _resample(hrir, rate)
        out = _apply_delay(out, delay * (SAMPLE_RATE / rate))
        out, trimmed = _trim(out)
        out = out.astype(np.float32)
        need = spectra_bytes(len(vectors) + 6, fft_size(out.shape[-1]))  # 6: virtual points
        if need > MAX_SPECTRA_BYTES:
            raise HrtfError(
                f"{len(vectors)} directions of {out.shape[-1]} taps would need "
                f"{need / 2**30:.1f} GiB in the renderer (limit {MAX_SPECTRA_BYTES / 2**30:g} GiB)")
        return cls(name, vectors, out, DirectionGrid(vectors), trimmed,
                   content_digest(vectors, out))


def fft_size(taps: int, frame: int = FRAME) -> int:
    """The block renderer's FFT size for ``frame``-sample frames and ``taps``-long responses:
    the smallest size ≥ ``frame + taps − 1`` (overlap-save) whose factors are 2, 3 and 5
    (``scipy.fft.next_fast_len``).

    Not a power of two: for KEMAR's 538 taps that is 1500 points rather than 2048 at 20 ms
    frames and 800 rather than 1024 at 5 ms, a quarter fewer bins to multiply and FFTs no
    slower (measured with pocketfft, issue 17).
    """
    return scipy.fft.next_fast_len(frame + taps - 1, real=True)


def spectra_bytes(points: int, nfft: int) -> int:
    """Bytes of :meth:`HrirSet.spectra` for ``points`` grid points: real and imaginary float32
    parts, ``points × 2 ears × (nfft / 2 + 1)`` bins each."""
    return 2 * points * 2 * (nfft // 2 + 1) * np.dtype(np.float32).itemsize


def content_digest(directions: np.ndarray, hrir: np.ndarray) -> str:
    """SHA-256 of a set's directions (float64) and responses (float32), read in place."""
    sha = hashlib.sha256()
    sha.update(np.ascontiguousarray(directions, dtype=np.float64).data)
    sha.update(np.ascontiguousarray(hrir, dtype=np.float32).data)
    return sha.hexdigest()


def _finite_array(value: npt.ArrayLike, what: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise HrtfError(f"{what} are not numeric") from None
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise HrtfError(f"{what} contain {bad} NaN or infinite values")
    return arr


def _to_unit_vectors(positions: np.ndarray, position_type: str) -> tuple[np.ndarray, np.ndarray]:
    kind = position_type.strip().lower()
    if kind == "spherical":
        radius = np.abs(positions[:, 2])
        vectors = unit_vectors(positions[:, 0], positions[:, 1])
    elif kind == "cartesian":
        radius = np.linalg.norm(positions, axis=1)
        if np.any(radius < 1e-9):
            raise HrtfError("a cartesian source position is at the listener (0, 0, 0)")
        vectors = positions / radius[:, None]
    else:
        raise HrtfError(
            f"source position type {position_type!r} is neither spherical nor cartesian")
    return vectors, radius


def _one_radius_unique_directions(vectors: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Indices of the measurements used: one radius (the most measured), no repeats."""
    rounded = np.round(radius, 2)
    values, counts = np.unique(rounded, return_counts=True)
    chosen = values[np.flatnonzero(counts == counts.max())[-1]]
    candidates = np.flatnonzero(rounded == chosen)
    if len(values) > 1:
        log.info("set has %d radii; using the %.2f m measurements", len(values), chosen)
    key = np.round(vectors[candidates] / np.radians(SAME_DIRECTION_DEG)).astype(np.int64)
    _, first = np.unique(key, axis=0, return_index=True)
    return candidates[np.sort(first)]


def _resample(hrir: np.ndarray, rate: float) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return hrir.astype(np.float64)
    ratio = Fraction(SAMPLE_RATE / rate).limit_denominator(1000)
    return resample_poly(hrir, ratio.numerator, ratio.denominator, axis=-1)


def _apply_delay(hrir: np.ndarray, delay: np.ndarray) -> np.ndarray:
    """Delay each response by ``delay`` samples (fractional allowed), minus the common part."""
    if not np.any(delay):
        return hrir
    delay = delay - delay.min()
    extra = int(np.ceil(delay.max())) + 1
    n = hrir.shape[-1] + extra
    nfft = 1 << int(np.ceil(np.log2(n)))
    spec = np.fft.rfft(hrir, n=nfft, axis=-1)
    freqs = np.arange(spec.shape[-1]) / nfft
    spec *= np.exp(-2j * np.pi * freqs * delay[..., None])
    return np.fft.irfft(spec, n=nfft, axis=-1)[..., :n]


def _trim(hrir: np.ndarray) -> tuple[np.ndarray, int]:
    """Drop leading silence common to all responses and cap the length at :data:`MAX_TAPS`."""
    envelope = np.abs(hrir).max(axis=(0, 1))
    peak = envelope.max()
    onset = int(np.argmax(envelope > peak * 10 ** (ONSET_THRESHOLD_DB / 20)))
    start = max(onset - ONSET_MARGIN, 0)
    audible = envelope > peak * 10 ** (TAIL_THRESHOLD_DB / 20)
    end = max(int(len(envelope) - np.argmax(audible[::-1])), start + 1)
    out = hrir[..., start:end]
    if out.shape[-1] > MAX_TAPS:
        log.warning("responses longer than %d taps at 48 kHz are cut (with a fade)", MAX_TAPS)
        out = out[..., :MAX_TAPS].copy()
        fade = 64
        out[..., -fade:] *= np.linspace(1.0, 0.0, fade)
    return out, start
