"""The room's diffuse late reverberation: one stereo tail per room, fed by one mono send.

The tail is what follows the early reflections (:mod:`dsp.image_sources`) once reflections
arrive too densely to tell apart, from the model's mixing time ``t_mix`` on. It is the same
for every listener, so a room convolves the sum of its sources once per frame
(:class:`LateTail`) and each listener adds the result at their own wet level.

The impulse response (:func:`tail_ir`) follows Polack's stochastic model of a diffuse field
(Gaussian noise under an exponential envelope), one envelope per octave band:

.. math::

    h_e(t) = g_e \\, w(t) \\sqrt{\\frac{4 \\pi c}{V f_s}}
        \\sum_b e^{-6.908\\, t / T_b} \\, (f_b * n_e)(t)

- ``n_e`` unit-variance Gaussian noise, independent for each ear ``e`` (decorrelated ears);
- ``f_b`` zero-phase octave filters (:func:`band_magnitudes`) that sum to one: with equal
  ``T_b`` the sum is white noise again;
- ``T_b`` the model's RT60 in band ``b``: the amplitude falls 60 dB in ``T_b``
  (``ln 10³ = 6.908``);
- ``w(t)`` zero before ``t_mix``, a raised-cosine fade-in over :data:`FADE_IN_S`, then one;
- ``4πc/(V f_s)`` the energy per sample (before any decay) with which image sources arrive in
  a room of volume ``V``: at rate ``4πc³t²/V``, each at energy ``1/(ct)²`` relative to the
  direct sound at 1 m (H. Kuttruff, *Room Acoustics*: reflection density and decay).

The time origin is the sound's emission; levels are relative to the direct sound at 1 m.
Integrated over time, that reflection density gives Kuttruff's reverberant energy
``∫ 4πc/V e^{−t/τ} dt = 16π/A`` with ``τ = T/(6 ln 10)`` and ``A = 24 ln 10 · V/(c T)``, the
absorption area that the room's own decay implies (Eyring's ``−S ln(1 − ᾱ)``, which Sabine's
``Σ S α`` approaches for small ``ᾱ``). The tail keeps the part after ``t_mix``:

.. math::

    E = \\sum_b \\beta_b \\frac{16 \\pi}{A_b} e^{-13.8\\, t_\\text{mix} / T_b}

per ear, with ``β_b`` band ``b``'s share of the spectrum (the mean of ``f_b`` over frequency,
``Σ β_b = 1``). ``g_e`` scales each ear to exactly ``E``: it absorbs the fade-in and the
chance energy of a finite noise.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft
from numba import njit

from dsp.room_model import RoomModel
from hrtf.constants import FRAME, SAMPLE_RATE, SPEED_OF_SOUND_M_S

#: The longest tail (s): rooms that ring longer are cut here.
MAX_TAIL_S = 4.0
#: Raised-cosine fade-in of the tail at the mixing time (s).
FADE_IN_S = 0.010
#: Width of the crossover between neighbouring octave bands (octaves).
CROSSOVER_OCTAVES = 1.0 / 3.0
#: Energy decays by 60 dB, ``ln 10⁶ = 13.8``, in one RT60.
_LN_1E6 = 6.0 * math.log(10.0)


def band_magnitudes(n_fft: int, center_freqs_hz: np.ndarray) -> np.ndarray:
    """Zero-phase octave filters that sum to one, shape ``(bands, n_fft // 2 + 1)``.

    Neighbouring bands cross over at the geometric mean of their centres,
    ``e_b = √(f_b f_{b+1})``, with a raised cosine in log frequency :data:`CROSSOVER_OCTAVES`
    wide: below the crossover the lower band's weight is

    .. math::

        \\ell_b(f) = \\tfrac12 + \\tfrac12 \\cos\\left(\\pi \\,
            \\mathrm{clip}\\left(\\frac{\\log_2(f / e_b)}{w} + \\tfrac12, 0, 1\\right)\\right)

    and band ``b`` is ``ℓ_b − ℓ_{b−1}`` (``ℓ_{−1} = 0``, ``ℓ_{B−1} = 1``): the lowest band reaches
    down to DC, the highest up to Nyquist, and the bands add to exactly one. Each band is
    alone within ``±(½ − w/2)`` octave of its centre, so there its decay is its own.
    """
    freqs = np.fft.rfftfreq(n_fft, 1.0 / SAMPLE_RATE)
    centers = np.asarray(center_freqs_hz, dtype=np.float64)
    octaves = np.log2(np.maximum(freqs, 1e-3))  # DC lies far below every crossover
    edges = np.log2(np.sqrt(centers[:-1] * centers[1:]))
    phase = np.clip((octaves - edges[:, None]) / CROSSOVER_OCTAVES + 0.5, 0.0, 1.0)
    below = np.vstack([np.zeros_like(freqs), 0.5 + 0.5 * np.cos(np.pi * phase),
                       np.ones_like(freqs)])
    return np.diff(below, axis=0)


def tail_energy(model: RoomModel) -> float:
    """The energy of each ear of the tail ``E`` (module docstring), relative to 1 m direct."""
    return float(_band_shares(model) @ _band_energies(model))


def tail_length(model: RoomModel) -> int:
    """Samples until the slowest band is 60 dB down, at most :data:`MAX_TAIL_S`."""
    seconds = min(float(model.rt60_s.max()), MAX_TAIL_S)
    fade_end = model.mixing_time_s + FADE_IN_S
    return math.ceil(max(seconds, fade_end) * SAMPLE_RATE)


def tail_ir(model: RoomModel, *, seed: int = 0) -> np.ndarray:
    """The room's late tail, shape ``(N, 2)`` float32 at 48 kHz (module docstring).

    Deterministic for a given ``seed``. Takes tens of milliseconds: build it off the room clock.
    """
    n = tail_length(model)
    n_fft = scipy.fft.next_fast_len(n, real=True)
    t = np.arange(n) / SAMPLE_RATE
    rng = np.random.default_rng(seed)
    spectra = scipy.fft.rfft(rng.standard_normal((2, n_fft)), axis=-1)
    ir = np.zeros((2, n))
    for mag, rt60 in zip(band_magnitudes(n_fft, model.center_freqs_hz), model.rt60_s,
                         strict=True):
        band = scipy.fft.irfft(spectra * mag, n_fft, axis=-1)[:, :n]
        ir += band * np.exp(-0.5 * _LN_1E6 * t / rt60)
    ir *= _onset(t, model.mixing_time_s)
    ir *= np.sqrt(tail_energy(model) / np.sum(ir * ir, axis=-1, keepdims=True))
    return np.ascontiguousarray(ir.T, dtype=np.float32)


def _band_shares(model: RoomModel) -> np.ndarray:
    """``β_b``: each band's share of the spectrum, the mean of its filter over frequency."""
    n_fft = scipy.fft.next_fast_len(tail_length(model), real=True)
    return band_magnitudes(n_fft, model.center_freqs_hz).mean(axis=1)


def _band_energies(model: RoomModel) -> np.ndarray:
    """``16π/A_b · exp(−13.8 t_mix / T_b)`` per band: the reverberant energy after ``t_mix``."""
    tau = model.rt60_s / _LN_1E6
    return 4.0 * np.pi * SPEED_OF_SOUND_M_S * tau / model.volume_m3 \
        * np.exp(-model.mixing_time_s / tau)


def _onset(t: np.ndarray, mixing_time_s: float) -> np.ndarray:
    """Zero before ``mixing_time_s``, a raised-cosine fade-in over :data:`FADE_IN_S`, then one."""
    phase = np.clip((t - mixing_time_s) / FADE_IN_S, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * phase)


@njit(cache=True, nogil=True)
def _fdl_mac(fdl, h, newest, first, stop, out):
    """``out[e] += Σ_p FDL[newest − p] · H[p, e]`` over partitions ``first ≤ p < stop``.

    ``fdl`` (P, bins) complex64, the input spectra, a ring whose newest entry is ``newest``;
    ``h`` (P, 2, bins) complex64, the partitions' spectra per ear; ``out`` (2, bins) complex64,
    added to. Bins innermost (the loop vectorises); both ears per partition, so each input
    spectrum is read once. Serial: parallel over ears measured no steadier gain on two cores,
    and rooms already render on threads of their own.
    """
    n_p, n_k = fdl.shape
    for p in range(first, stop):
        slot = newest - p
        if slot < 0:
            slot += n_p
        x = fdl[slot]
        for e in range(2):
            hp = h[p, e]
            y = out[e]
            for k in range(n_k):
                y[k] += x[k] * hp[k]


class UniformConvolver:
    """Uniformly partitioned overlap-save convolution of one mono signal with a stereo IR, one
    block of ``size`` samples in, one block out, no latency.

    The IR is cut into ``P`` partitions of ``size`` samples, each zero-padded to ``2·size`` and
    transformed once. Per call: one real FFT of ``[previous block, this block]`` enters a
    frequency-domain delay line (a ring of the last ``P`` input spectra); each ear's spectrum
    is ``Σ_p FDL[n − p] · H_p``; one inverse FFT per ear, of which the last ``size`` samples
    are the output (the first half is circular wrap-around). The cost is
    ``2·P·(size + 1)`` complex multiply-adds and three FFTs per block. Partitions before the
    IR's first non-zero sample are skipped.
    """

    def __init__(self, ir: np.ndarray, size: int) -> None:
        self.size = size
        parts = max(1, -(-len(ir) // size))
        padded = np.zeros((parts * size, 2))
        padded[: len(ir)] = ir
        spectra = np.fft.rfft(padded.reshape(parts, size, 2).transpose(0, 2, 1),
                              n=2 * size, axis=-1)
        self._h = np.ascontiguousarray(spectra, dtype=np.complex64)
        nonzero = np.flatnonzero(np.abs(padded).reshape(parts, -1).max(axis=1) > 0)
        self._first = int(nonzero[0]) if len(nonzero) else parts
        self._fdl = np.zeros((parts, size + 1), np.complex64)
        self._out = np.zeros((2, size + 1), np.complex64)
        self._window = np.zeros(2 * size, np.float32)
        self._newest = 0

    @property
    def partitions(self) -> int:
        return self._fdl.shape[0]

    @property
    def silent(self) -> bool:
        """Whether the IR is all zeros (the output always is)."""
        return self._first == self.partitions

    def process(self, block: np.ndarray) -> np.ndarray:
        """Convolve the next ``(size,)`` block; returns ``(size, 2)`` float32."""
        self.push(block)
        self._out[:] = 0.0
        _fdl_mac(self._fdl, self._h, self._newest, self._first, self.partitions, self._out)
        return self.inverse(self._out)

    def push(self, block: np.ndarray) -> None:
        """The next ``(size,)`` block's spectrum enters the delay line."""
        n = self.size
        window = self._window
        window[:n] = window[n:]
        window[n:] = block
        self._newest = (self._newest + 1) % self.partitions
        self._fdl[self._newest] = np.fft.rfft(window)

    def accumulate(self, out: np.ndarray, start: int, stop: int, ahead: int = 0) -> None:
        """``out += Σ_p FDL[newest + ahead − p] · H_p`` over partitions ``start ≤ p < stop``
        (skipping silent ones): with ``ahead`` 1, the terms of the next block's output that
        need only blocks pushed already (``p ≥ 1``), so they can be summed ahead of time."""
        newest = (self._newest + ahead) % self.partitions
        _fdl_mac(self._fdl, self._h, newest, max(start, self._first), stop, out)

    def inverse(self, spectra: np.ndarray) -> np.ndarray:
        """The block's output from its summed ``(2, size + 1)`` spectra: ``(size, 2)``."""
        n = self.size
        ears = np.fft.irfft(spectra, n=2 * n, axis=-1)
        return np.ascontiguousarray(ears[:, n:].T, dtype=np.float32)

    def reset(self) -> None:
        self._fdl[:] = 0.0
        self._window[:] = 0.0


class LateTail:
    """The room's tail as a convolution: one frame of ``frame`` samples of the mono send in,
    one stereo frame out, no latency, the same samples whatever the frame size.

    At the default frame (:data:`~hrtf.constants.FRAME`, 960 samples) this is one
    :class:`UniformConvolver` with partitions of a frame. Cutting a seconds-long tail into
    partitions of a short frame would multiply its cost per second by about ``FRAME / frame``
    (as many partitions, as many more ticks), so a shorter frame that divides ``FRAME`` splits
    the IR in two, as non-uniformly partitioned convolution does:

    - the head ``h[0:FRAME]`` in partitions of ``frame`` samples, every tick (silent, and
      skipped, when the tail starts at or after 20 ms, as every preset's does);
    - the rest ``h[FRAME:]`` in partitions of ``FRAME`` samples, a block of ``FRAME`` samples
      at a time: at the first tick of each block the block that just ended enters the rest's
      delay line, and the next ``FRAME`` samples of its output are made, served a frame a tick.
      No latency: an input sample reaches the rest's output ``FRAME`` samples later at the
      earliest, by which time its block has ended.

    The rest's cost per second is then the default frame's whatever the frame. It is spread
    over the block's ticks rather than paid at its first: a block's output sums partition 0
    against the block that just ended, and partitions ``p ≥ 1`` against blocks that ended
    before, so those terms are summed a share per tick during the block before (a 4 s tail's
    200 partitions cost about 0.3–0.5 ms at once), on every tick but the first, which does the
    block's three FFTs.

    Not thread-safe: one caller at a time.
    """

    latency_samples: int = 0

    def __init__(self, ir: np.ndarray, frame: int = FRAME) -> None:
        ir = np.asarray(ir)
        if ir.ndim != 2 or ir.shape[1] != 2 or ir.shape[0] == 0:
            raise ValueError(f"the tail's impulse response must be (N, 2) with N ≥ 1, got "
                             f"shape {ir.shape}")
        if not np.isfinite(ir).all():
            raise ValueError("the tail's impulse response holds NaN or infinite samples")
        if frame < 1:
            raise ValueError(f"a frame is at least 1 sample, got {frame}")
        self.frame = int(frame)
        self.ir = ir.astype(np.float32)
        self.ir.setflags(write=False)
        two_stage = frame < FRAME and FRAME % frame == 0 and len(ir) > FRAME
        head = UniformConvolver(self.ir[:FRAME] if two_stage else self.ir, self.frame)
        self._head = None if head.silent and two_stage else head
        self._rest = UniformConvolver(self.ir[FRAME:], FRAME) if two_stage else None
        self._block = np.zeros(FRAME, np.float32)  # the rest's input block being filled
        self._rest_out = np.zeros((FRAME, 2), np.float32)  # the rest's output block served
        self._next = np.zeros((2, FRAME + 1), np.complex64)  # next output's spectra so far
        self._pos = 0  # where this frame starts in the block
        if self._rest is not None:  # partitions 1.. of the rest, a share per tick after the
            # first, which does the block's FFTs
            ticks, parts = FRAME // self.frame - 1, self._rest.partitions
            self._shares = [1] + [1 + (parts - 1) * i // ticks for i in range(ticks + 1)]

    @property
    def partitions(self) -> int:
        """Partitions of both stages."""
        return sum(s.partitions for s in (self._head, self._rest) if s is not None)

    def process(self, send: np.ndarray) -> np.ndarray:
        """Convolve the next frame of the send, shape ``(frame,)``; returns ``(frame, 2)``."""
        n = self.frame
        if np.shape(send) != (n,):
            raise ValueError(f"a send frame is ({n},) samples, got shape {np.shape(send)}")
        if self._rest is None:
            assert self._head is not None  # one stage: the head holds the whole response
            return self._head.process(send)
        pos, rest = self._pos, self._rest
        if pos == 0:
            rest.push(self._block)
            rest.accumulate(self._next, 0, 1)
            self._rest_out = rest.inverse(self._next)
            self._next[:] = 0.0
        tick = pos // n
        rest.accumulate(self._next, self._shares[tick], self._shares[tick + 1], ahead=1)
        out = self._rest_out[pos:pos + n].copy()
        if self._head is not None:
            out += self._head.process(send)
        self._block[pos:pos + n] = send
        self._pos = (pos + n) % FRAME
        return out

    def reset(self) -> None:
        """Forget all input: the tail falls silent at once."""
        for stage in (self._head, self._rest):
            if stage is not None:
                stage.reset()
        self._block[:] = 0.0
        self._rest_out[:] = 0.0
        self._next[:] = 0.0
