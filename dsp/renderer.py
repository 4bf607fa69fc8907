"""The block renderer: per-listener binaural mixes of many sources, one 20 ms frame per call.

Per tick (see the design page, "the path of one 20 ms frame"):

1. each source's frame is appended to its overlap-save history and FFT'd once
   (``nfft`` ≥ ``FRAME + taps − 1``);
2. :func:`dsp.geometry.pair_filters` finds every pair's direction in the listener's head frame,
   its distance and cone gain, and the HRTF interpolation weights;
3. the mixing backend (numba CPU, or numba-cuda) accumulates each listener's ear spectra;
4. one inverse FFT per listener ear gives the frame (the last ``FRAME`` samples: overlap-save);
   listeners whose filters changed get a second inverse FFT of the difference, added under a
   raised-cosine ramp, so old filters fade into new ones across the frame;
5. the safety limiter.

Callers see one interface, :meth:`Renderer.render`, whatever the backend.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.fft

from dsp.geometry import Scene, pair_filters
from dsp.limiter import SafetyLimiter
from hrtf.constants import FRAME
from hrtf.hrirset import HrirSet

log = logging.getLogger(__name__)

BACKENDS = ("cpu", "cuda")


def crossfade_ramp() -> np.ndarray:
    """Raised-cosine ramp from 0 to 1 across one frame (float32, shape ``(FRAME,)``)."""
    n = np.arange(FRAME, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(np.pi * (n + 0.5) / FRAME)).astype(np.float32)


def make_mixer(backend: str, hr: np.ndarray, hi: np.ndarray):
    """The mixing backend called ``backend`` ("cpu" or "cuda")."""
    if backend == "cpu":
        from dsp.mixer_cpu import CpuMixer

        return CpuMixer(hr, hi)
    if backend == "cuda":
        from dsp.mixer_cuda import CudaMixer

        return CudaMixer(hr, hi)
    raise ValueError(f"unknown device {backend!r}; choose one of {', '.join(BACKENDS)}")


class PairState:
    """What the renderer remembers per pair between ticks: the last filter and facet."""

    def __init__(self, listeners: int, sources: int) -> None:
        shape = (listeners, sources, 3)
        self.idx = np.zeros(shape, np.int32)
        self.w = np.zeros(shape, np.float32)
        self.new_idx = np.zeros(shape, np.int32)
        self.new_w = np.zeros(shape, np.float32)
        self.start = np.zeros((listeners, sources), np.int64)
        self.changed = np.zeros((listeners, sources), np.bool_)

    def update(self, scene: Scene, hrirs: HrirSet) -> None:
        """Compute this tick's filters into ``new_*`` and flag the pairs that changed."""
        grid = hrirs.grid
        lo, hi = np.radians(grid.elevation_range_deg)
        pair_filters(
            scene.listener_position, scene.listener_rotation,
            scene.source_positions_per_pair(), scene.source_forward, scene.pair_gain,
            scene.distance_model, scene.ref_distance_m, scene.max_distance_m, scene.rolloff,
            scene.cone_inner_deg, scene.cone_outer_deg, scene.cone_outer_gain,
            grid.facets, grid.neighbors, grid.inverse, lo, hi,
            self.start, self.idx, self.w, self.new_idx, self.new_w, self.changed,
        )

    def commit(self) -> None:
        self.idx, self.new_idx = self.new_idx, self.idx
        self.w, self.new_w = self.new_w, self.w

    def forget_listener(self, slot: int) -> None:
        self.w[slot] = 0.0

    def forget_source(self, slot: int) -> None:
        self.w[:, slot] = 0.0


class Renderer:
    """Binaural renderer for a fixed number of listener and source slots.

    Parameters
    ----------
    hrirs : HrirSet
    listeners, sources : int
        Slot counts; :class:`~dsp.geometry.Scene` arrays must have these sizes.
    device : {"cpu", "cuda"}

    A pair whose slot was just (re)assigned starts from silence: its first tick fades in.
    """

    def __init__(self, hrirs: HrirSet, listeners: int, sources: int, device: str = "cpu"):
        self.hrirs = hrirs
        self.listeners = listeners
        self.sources = sources
        self.nfft = hrirs.nfft
        hr, hi = hrirs.spectra(self.nfft)
        self.mixer = make_mixer(device, hr, hi)
        self.device = device
        self.history = np.zeros((sources, self.nfft), np.float32)
        self.pairs = PairState(listeners, sources)
        self.limiter = SafetyLimiter(listeners)
        self.ramp = crossfade_ramp()[None, :, None]
        #: Frames per source slot replaced by silence because they held NaN or infinity.
        self.rejected_frames = np.zeros(sources, np.int64)

    @property
    def latency_samples(self) -> int:
        """Algorithmic delay added by the renderer: none (overlap-save, no look-ahead)."""
        return 0

    def reset_source(self, slot: int) -> None:
        """A new source takes ``slot``: forget the old one's audio and filters."""
        self.history[slot] = 0.0
        self.rejected_frames[slot] = 0
        self.pairs.forget_source(slot)

    def reset_listener(self, slot: int) -> None:
        """A new listener takes ``slot``: its mix fades in from silence."""
        self.pairs.forget_listener(slot)
        self.limiter.reset(slot)

    def prime(self, scene: Scene) -> None:
        """Take ``scene``'s filters as the current ones, so the next tick does not fade in.

        For offline rendering, where the first sample must sound at full level; a room never
        calls this (a newcomer's mix fades in over one frame instead of starting with a click).
        """
        self.pairs.update(scene, self.hrirs)
        self.pairs.commit()

    def render(self, scene: Scene, audio: np.ndarray) -> np.ndarray:
        """Render one frame.

        Parameters
        ----------
        scene : Scene
            With ``listeners`` listener and ``sources`` source slots.
        audio : ndarray, shape (sources, FRAME)
            This frame of every source (float32, nominal full scale ±1).

        Returns
        -------
        ndarray, shape (listeners, FRAME, 2), float32
            Each listener's stereo frame (left, right), limited to ±0.98.
        """
        if audio.shape != (self.sources, FRAME):
            raise ValueError(f"audio has shape {audio.shape}, expected ({self.sources}, {FRAME})")
        if scene.listeners != self.listeners or scene.sources != self.sources:
            raise ValueError(f"scene has {scene.listeners}×{scene.sources} slots, renderer "
                             f"{self.listeners}×{self.sources}")
        finite = np.isfinite(audio).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            self.rejected_frames[bad] += 1
            first = bad[self.rejected_frames[bad] == 1]
            if len(first):
                log.warning("source slots %s sent NaN or infinite samples: silenced (counted "
                            "in rejected_frames)", first.tolist())
            audio = np.where(finite[:, None], audio, np.float32(0.0))
        out = self.render_unlimited(scene, audio)
        return self.limiter.process(out)

    def render_unlimited(self, scene: Scene, audio: np.ndarray) -> np.ndarray:
        """:meth:`render` without the limiter (for tests against the reference)."""
        h = self.history
        h[:, :-FRAME] = h[:, FRAME:]
        h[:, -FRAME:] = audio
        spec = scipy.fft.rfft(h, axis=-1, workers=-1)
        xr = np.ascontiguousarray(spec.real, dtype=np.float32)
        xi = np.ascontiguousarray(spec.imag, dtype=np.float32)

        pairs = self.pairs
        pairs.update(scene, self.hrirs)
        p, d, listener_changed = self.mixer.mix(
            xr, xi, pairs.new_idx, pairs.new_w, pairs.idx, pairs.w, pairs.changed
        )
        pairs.commit()

        out = scipy.fft.irfft(p, n=self.nfft, axis=-1, workers=-1)[..., -FRAME:]
        out = np.ascontiguousarray(out.transpose(0, 2, 1), dtype=np.float32)
        moving = np.flatnonzero(listener_changed)
        if len(moving):
            diff = scipy.fft.irfft(d[moving], n=self.nfft, axis=-1, workers=-1)[..., -FRAME:]
            out[moving] += diff.transpose(0, 2, 1).astype(np.float32) * self.ramp
        return out
