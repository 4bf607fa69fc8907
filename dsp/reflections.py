"""Early reflections on a bus of virtual loudspeakers: exact delays, cost ∝ images, not HRTFs.

Rendering every image source through its own HRTF filter would cost one more HRTF
convolution per image and pair (7× the dry mix at first order). Instead each image, once
delayed and scaled, is panned (VBAP) onto :data:`~dsp.image_sources.BUSES` virtual
loudspeakers fixed to the listener's head (:func:`dsp.image_sources.bus_layout`), and those
eight signals go through the listener's HRTF: one FFT and one filter per loudspeaker and ear.
An image's delay is exact to the sample and may be many frames long; its direction is
resolved to its VBAP triangle.

Each source's samples sit in a ring of :data:`RING` samples, written twice (at ``i`` and
``i + RING``) so that any delayed frame is one contiguous slice. A tap whose delay, loudspeakers
or gains changed since the last tick is crossfaded with the renderer's raised-cosine ramp:
moving players and turning heads never click.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from dsp.geometry import Scene
from dsp.image_sources import BUSES, MAX_IMAGES, bus_layout, image_recipes, image_taps
from hrtf.constants import FRAME
from hrtf.hrirset import HrirSet

#: Ring length per source: 34 default frames (680 ms), a whole number of every frame size a
#: room may tick at (:data:`~hrtf.constants.FRAME_CHOICES_MS`).
RING = 34 * FRAME
#: Longest reflection delay kept (a default frame less than the ring): the same at every frame
#: size, so a room sounds the same whatever its frame.
MAX_DELAY = RING - FRAME


@njit(cache=True, nogil=True, fastmath=True)
def _tap2(out, x, start, b0, b1, g0, g1, d0, d1, ramp):
    """``out[b] += (g + d · ramp) · x[start:]`` for two loudspeakers ``b`` at once."""
    o0, o1 = out[b0], out[b1]
    if d0 == 0.0 and d1 == 0.0:
        for i in range(ramp.shape[0]):
            v = x[start + i]
            o0[i] += g0 * v
            o1[i] += g1 * v
    else:
        for i in range(ramp.shape[0]):
            v = x[start + i]
            r = ramp[i]
            o0[i] += (g0 + d0 * r) * v
            o1[i] += (g1 + d1 * r) * v


@njit(cache=True, nogil=True, fastmath=True)
def _tap(out, x, start, b0, b1, b2, g0, g1, g2, d0, d1, d2, ramp):
    """``out[b] += (g + d · ramp) · x[start:]`` for the three loudspeakers ``b`` at once.

    A loudspeaker with no gain from start to end of the frame is skipped: an image in the
    plane of the ear-height ring (most first-order images of players at one height) sounds
    on two loudspeakers only.
    """
    if g2 == 0.0 and d2 == 0.0:
        _tap2(out, x, start, b0, b1, g0, g1, d0, d1, ramp)
        return
    if g0 == 0.0 and d0 == 0.0:
        _tap2(out, x, start, b1, b2, g1, g2, d1, d2, ramp)
        return
    if g1 == 0.0 and d1 == 0.0:
        _tap2(out, x, start, b0, b2, g0, g2, d0, d2, ramp)
        return
    o0, o1, o2 = out[b0], out[b1], out[b2]
    if d0 == 0.0 and d1 == 0.0 and d2 == 0.0:
        for i in range(ramp.shape[0]):
            v = x[start + i]
            o0[i] += g0 * v
            o1[i] += g1 * v
            o2[i] += g2 * v
    else:
        for i in range(ramp.shape[0]):
            v = x[start + i]
            r = ramp[i]
            o0[i] += (g0 + d0 * r) * v
            o1[i] += (g1 + d1 * r) * v
            o2[i] += (g2 + d2 * r) * v


@njit(parallel=True, cache=True, nogil=True)
def accumulate_taps(ring, base, old_d, old_b, old_g, new_d, new_b, new_g, ramp, out):
    """Sum every pair's delayed, panned source frames into the listeners' loudspeaker buses.

    ``ring`` (S, 2·RING) float32; ``base`` the index of this frame's first sample in the ring's
    second half; ``*_d`` (L, S, K) delays, ``*_b``/``*_g`` (L, S, K, 3) loudspeakers and gains
    of the last and this tick; ``ramp`` (frame,); ``out`` (L, BUSES, frame), overwritten.
    """
    n_l, n_s, n_k = new_d.shape
    for l in prange(n_l):
        o = out[l]
        o[:, :] = 0.0
        for s in range(n_s):
            x = ring[s]
            for k in range(n_k):
                nb, ng = new_b[l, s, k], new_g[l, s, k]
                ob, og = old_b[l, s, k], old_g[l, s, k]
                nd, od = new_d[l, s, k], old_d[l, s, k]
                new_on = ng[0] != 0.0 or ng[1] != 0.0 or ng[2] != 0.0
                old_on = og[0] != 0.0 or og[1] != 0.0 or og[2] != 0.0
                if nd == od and nb[0] == ob[0] and nb[1] == ob[1] and nb[2] == ob[2]:
                    if new_on or old_on:  # same tap, gains ramp from old to new
                        _tap(o, x, base - nd, nb[0], nb[1], nb[2], og[0], og[1], og[2],
                             ng[0] - og[0], ng[1] - og[1], ng[2] - og[2], ramp)
                    continue
                if old_on:  # the old tap fades out ...
                    _tap(o, x, base - od, ob[0], ob[1], ob[2], og[0], og[1], og[2],
                         -og[0], -og[1], -og[2], ramp)
                if new_on:  # ... as the new one fades in
                    _tap(o, x, base - nd, nb[0], nb[1], nb[2], 0.0, 0.0, 0.0,
                         ng[0], ng[1], ng[2], ramp)


@njit(parallel=True, cache=True, nogil=True, fastmath=True)
def bus_to_ears(spec, rows, hrtf, sign, p, d):
    """Add loudspeaker spectra through a set's responses to listener spectra.

    ``spec`` (n, BUSES, B) complex64 loudspeaker spectra of listener rows ``rows`` (n,) of
    ``p``/``d`` (R, 2, B) complex64; ``hrtf`` (BUSES, 2, B); ``sign`` (n, 2): what each row
    adds to ``P`` and to ``D`` (1, 0 steady; 0, 1 fading in; 1, −1 fading out). Bins are the
    inner loop, so each loudspeaker's row is read once and the products vectorise.
    """
    n, n_v, n_b = spec.shape
    for task in prange(2 * n):
        j = task // 2
        e = task % 2
        acc = np.empty(n_b, np.complex64)
        s, h = spec[j, 0], hrtf[0, e]
        for b in range(n_b):
            acc[b] = s[b] * h[b]
        for v in range(1, n_v):
            s, h = spec[j, v], hrtf[v, e]
            for b in range(n_b):
                acc[b] += s[b] * h[b]
        for target, k in ((p, 0), (d, 1)):
            w = sign[j, k]
            if w != 0.0:
                row = target[rows[j], e]
                for b in range(n_b):
                    row[b] += w * acc[b]


class TapState:
    """Delays, loudspeakers and gains of every pair's images, (L, S, :data:`MAX_IMAGES`)."""

    def __init__(self, listeners: int, sources: int) -> None:
        shape = (listeners, sources, MAX_IMAGES)
        self.delay = np.zeros(shape, np.int32)
        self.bus = np.zeros((*shape, 3), np.int32)
        self.gain = np.zeros((*shape, 3), np.float32)


class EarlyReflections:
    """The room's image sources for every pair, as each listener's loudspeaker-bus signals.

    Parameters
    ----------
    listeners, sources : int
        Slot counts, as the renderer's.
    frame : int
        Samples per tick, as the renderer's; :data:`RING` must be a whole number of frames.
    """

    def __init__(self, listeners: int, sources: int, frame: int = FRAME) -> None:
        if frame < 1 or RING % frame or frame > RING - MAX_DELAY:
            raise ValueError(f"a frame of {frame} samples does not divide the reflection ring "
                             f"of {RING} samples or is longer than {RING - MAX_DELAY}")
        self.frame = frame
        self.listeners = listeners
        self.sources = sources
        self.ring = np.zeros((sources, 2 * RING), np.float32)
        self.pos = 0
        self.old = TapState(listeners, sources)
        self.new = TapState(listeners, sources)
        _, self.triangles, self.inverse = bus_layout()
        self.modes = np.zeros((0, 3), np.int64)
        self.recipe_gain = np.zeros(0, np.float64)
        self.lo = np.zeros(3)
        self.hi = np.ones(3)
        self.bus = np.zeros((listeners, BUSES, frame), np.float32)

    def set_room(self, lo: np.ndarray, hi: np.ndarray, max_order: int,
                 wall_gains: np.ndarray) -> None:
        """The shoebox ``lo``..``hi`` (metres) and its walls' pressure reflection coefficients.

        The taps of the last room fade into the new room's over the next tick.
        """
        self.modes, self.recipe_gain = image_recipes(max_order, wall_gains)
        self.lo = np.asarray(lo, np.float64)
        self.hi = np.asarray(hi, np.float64)

    def push(self, audio: np.ndarray) -> None:
        """This tick's source frames, (S, frame); call once per tick, before :meth:`process`."""
        n = self.frame
        self.pos = (self.pos + n) % RING
        self.ring[:, self.pos:self.pos + n] = audio
        self.ring[:, self.pos + RING:self.pos + RING + n] = audio

    def _taps(self, scene: Scene, listener_gain: np.ndarray, into: TapState) -> None:
        k = len(self.modes)
        into.gain[:, :, k:] = 0.0
        if k:
            image_taps(scene.listener_position, scene.listener_rotation,
                       scene.source_positions_per_pair(), scene.source_forward, scene.pair_gain,
                       scene.distance_model, scene.ref_distance_m, scene.max_distance_m,
                       scene.rolloff, scene.cone_inner_deg, scene.cone_outer_deg,
                       scene.cone_outer_gain, self.lo, self.hi, self.modes, self.recipe_gain,
                       np.asarray(listener_gain, np.float64), MAX_DELAY, self.triangles,
                       self.inverse, into.delay[:, :, :k], into.bus[:, :, :k],
                       into.gain[:, :, :k])

    def prime(self, scene: Scene, listener_gain: np.ndarray) -> None:
        """Take ``scene``'s taps as the last tick's, so the next does not fade them in."""
        self._taps(scene, listener_gain, self.old)

    def process(self, scene: Scene, listener_gain: np.ndarray, ramp: np.ndarray) -> np.ndarray:
        """Each listener's loudspeaker signals for this frame, (L, BUSES, frame) float32.

        ``listener_gain`` (L,) scales each listener's reflections (0: none); ``ramp`` is the
        renderer's crossfade ramp, (frame,) float32.
        """
        new = self.new
        self._taps(scene, listener_gain, new)
        accumulate_taps(self.ring, self.pos + RING, self.old.delay, self.old.bus, self.old.gain,
                        new.delay, new.bus, new.gain, ramp, self.bus)
        self.old, self.new = self.new, self.old
        return self.bus

    def reset_source(self, slot: int) -> None:
        self.ring[slot] = 0.0
        self.old.gain[:, slot] = 0.0

    def reset_listener(self, slot: int) -> None:
        self.old.gain[slot] = 0.0


def bus_responses(hrirs: HrirSet) -> np.ndarray:
    """The set's responses at the virtual loudspeakers, (BUSES, 2, taps) float32."""
    directions, _, _ = bus_layout()
    idx, w = hrirs.grid.weights(directions)
    grid_hrir = hrirs.grid_hrir
    return np.einsum("dk,dken->den", w, grid_hrir[idx]).astype(np.float32)
