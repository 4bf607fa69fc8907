"""The block renderer: per-listener binaural mixes of many sources, one frame per call.

A renderer's frame (``frame`` samples: 960 for the default 20 ms room, 480, 240 or 120 for 10,
5 and 2.5 ms rooms) is fixed when it is built; everything it owns works at that frame. Per tick
(see the design page, "the path of one frame"):

1. each source's frame is appended to its overlap-save history and FFT'd once per FFT size in
   use (``nfft`` ≥ ``frame + taps − 1`` of each HRTF set listened through);
2. :func:`dsp.geometry.pair_filters` finds every pair's direction in the listener's head frame,
   its distance and cone gain, and the HRTF interpolation weights;
3. the mixing backend (numba CPU, or numba-cuda) accumulates each listener's ear spectra;
   with room acoustics, each listener's early reflections (:mod:`dsp.reflections`) arrive as
   eight virtual loudspeakers whose spectra, through the listener's HRTF, are added there;
4. one inverse FFT per listener ear gives the frame (the last ``frame`` samples: overlap-save);
   listeners whose filters changed get a second inverse FFT of the difference, added under a
   raised-cosine ramp, so old filters fade into new ones across the frame;
5. the room's late tail (:mod:`dsp.late_tail`, one per room, fed by every source) is added
   at each listener's wet level;
6. the safety limiter.

Listeners choose their own HRTF set (:meth:`Renderer.configure_listener`): listeners are
grouped by set, and each set in use has its own :class:`SetEngine` (spectra shared by every
room using the set: they belong to the :class:`~hrtf.hrirset.HrirSet`). Changing a listener's
set renders that listener through both sets for one tick, the old one fading out.

Callers see one interface, :meth:`Renderer.render`, whatever the backend.

Short frames stay overlap-save, with ``nfft`` the smallest 2·3·5-smooth length ≥
``frame + taps − 1`` (:func:`hrtf.hrirset.fft_size`), rather than uniformly partitioned
convolution (partitions of a frame in the frequency domain, a delay line of spectra per
source). For KEMAR's 538 taps, per pair and ear and tick, overlap-save multiplies 338 bins at
2.5 ms (FFT 675), 401 at 5 ms (800), 513 at 10 ms (1024) and 751 at 20 ms (1500); partitions of
the frame would multiply 5 × 121 = 605, 3 × 241 = 723, 2 × 481 = 962 and 961. The mixing kernel
costs in proportion to its bins and is about two thirds of the tick's FFT-and-mix work (the rest
is the FFTs, which partitions would make about 2–3× smaller), so partitions would cost more at
every frame size for responses of this length; they pay for long responses, as the room's late
tail does (:class:`dsp.late_tail.LateTail`). Measured at 20 × 20 (``spatialjam bench mixer
--listeners 20 --sources 20 --frame-ms 2.5 5 10 20``): a 5 ms room costs about 2.3–2.6× a 20 ms
room per second of audio, a 2.5 ms room about 4×; what is left is the per-tick work (about
0.15 ms of Python and kernel launches a tick) and overlap-save's ``frame / nfft``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.fft
from numba import njit

from dsp.geometry import Scene, pair_filters
from dsp.image_sources import BUSES
from dsp.limiter import SafetyLimiter
from dsp.reflections import MAX_DELAY, RING, EarlyReflections, bus_responses, bus_to_ears
from hrtf.constants import FRAME
from hrtf.hrirset import HrirSet, fft_size
from hrtf.panning import reference_set

if TYPE_CHECKING:
    from dsp.late_tail import LateTail
    from dsp.mixer_cpu import CpuMixer
    from dsp.mixer_cuda import CudaMixer
    from dsp.room_model import RoomModel

log = logging.getLogger(__name__)

BACKENDS = ("cpu", "cuda")


def crossfade_ramp(frame: int = FRAME) -> np.ndarray:
    """Raised-cosine ramp from 0 to 1 across one frame (float32, shape ``(frame,)``)."""
    n = np.arange(frame, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(np.pi * (n + 0.5) / frame)).astype(np.float32)


def make_mixer(backend: str, hr: np.ndarray, hi: np.ndarray) -> CpuMixer | CudaMixer:
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
        #: The scene whose filters were the last committed for every listener, while no pair
        #: was forgotten or written since: given it again, every filter stands.
        self.settled: Scene | None = None
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

    def take(self, rows: np.ndarray) -> PairState:
        """A state for listener ``rows`` only (copies; :meth:`put` writes them back)."""
        part = PairState(0, 0)
        part.idx, part.w, part.start = self.idx[rows], self.w[rows], self.start[rows]
        part.new_idx, part.new_w = np.empty_like(part.idx), np.empty_like(part.w)
        part.changed = np.empty(part.start.shape, np.bool_)
        return part

    def put(self, rows: np.ndarray, part: PairState) -> None:
        self.idx[rows], self.w[rows], self.start[rows] = part.idx, part.w, part.start
        self.settled = None

    def forget_listener(self, slot: int) -> None:
        self.w[slot] = 0.0
        self.settled = None

    def forget_source(self, slot: int) -> None:
        self.w[:, slot] = 0.0
        self.settled = None


@njit(cache=True, nogil=True, fastmath=True)
def add_wet(out, tail, last, wet, ramp):
    """``out[l] += tail · level_l`` where ``level_l`` ramps from ``last[l]`` to ``wet[l]``.

    ``out`` (L, frame, 2) and ``tail`` (frame, 2) float32; ``last``, ``wet`` (L,); ``ramp``
    (frame,) rising 0 → 1. Listeners with neither level are left alone.
    """
    for l in range(out.shape[0]):
        a, b = last[l], wet[l]
        if a <= 0.0 and b <= 0.0:
            continue
        o = out[l]
        step = b - a
        for i in range(tail.shape[0]):
            g = np.float32(a + step * ramp[i])
            o[i, 0] += g * tail[i, 0]
            o[i, 1] += g * tail[i, 1]


def dry_wet_gains(wet: float) -> tuple[float, float]:
    """Direct-sound and room gains for a wet/dry balance ``wet`` in 0..1.

    0.5 is the room as physics has it (both 1); towards 0 the room fades out, towards 1 the
    direct sound does: ``(min(1, 2 (1 − wet)), min(1, 2 wet))``.
    """
    return min(1.0, 2.0 * (1.0 - wet)), min(1.0, 2.0 * wet)


@dataclass(frozen=True)
class ListenerSettings:
    """How one listener hears the room.

    ``hrirs`` None is the renderer's default set; ``acoustics`` False hears the room dry;
    ``reference`` True replaces the HRTF by plain stereo panning (:mod:`hrtf.panning`).
    """

    hrirs: HrirSet | None = None
    acoustics: bool = True
    reference: bool = False


class SetEngine:
    """One HRTF set's share of a renderer: its FFT size, mixer, and every slot's pair state.

    ``members`` marks the listener slots rendered through this set; ``nfft`` is the smallest
    power of two ≥ ``frame + taps − 1``.
    """

    def __init__(self, hrirs: HrirSet, listeners: int, sources: int, device: str,
                 frame: int = FRAME) -> None:
        self.hrirs = hrirs
        self.listeners = listeners
        self.nfft = fft_size(hrirs.taps, frame)
        hr, hi = hrirs.spectra(self.nfft)
        self.mixer = make_mixer(device, hr, hi)
        self.pairs = PairState(listeners, sources)
        self.members = np.zeros(listeners, np.bool_)
        self._bus_spectra: np.ndarray | None = None

    @property
    def bus_spectra(self) -> np.ndarray:
        """The set's responses at the reflection loudspeakers, (BUSES, 2, B) complex64."""
        if self._bus_spectra is None:
            spec = np.fft.rfft(bus_responses(self.hrirs), n=self.nfft, axis=-1)
            self._bus_spectra = spec.astype(np.complex64)
        return self._bus_spectra

    def mix(self, rows: np.ndarray, scene: Scene, xr: np.ndarray,
            xi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(P, D, listener_changed)`` for listener ``rows`` of ``scene`` (already cut)."""
        whole = len(rows) == self.listeners
        if whole and self.pairs.settled is scene:
            # The room's scene has not changed since the last tick (a room hands the same
            # object while nothing moved): no filter to look up, nothing to crossfade.
            state = self.pairs
            state.changed[:] = False
            return self.mixer.mix(xr, xi, state.idx, state.w, state.idx, state.w, state.changed)
        state = self.pairs if whole else self.pairs.take(rows)
        state.update(scene, self.hrirs)
        p, d, changed = self.mixer.mix(xr, xi, state.new_idx, state.new_w, state.idx, state.w,
                                       state.changed)
        state.commit()
        if whole:
            state.settled = scene
        else:
            self.pairs.put(rows, state)
        return p, d, changed


def listener_rows(scene: Scene, rows: np.ndarray, gain: np.ndarray) -> Scene:
    """``scene`` cut to listener ``rows``, their pair gains times ``gain`` (len(rows),)."""
    positions = scene.source_position
    return Scene(
        listener_position=scene.listener_position[rows],
        listener_rotation=scene.listener_rotation[rows],
        source_position=positions[rows] if positions.ndim == 3 else positions,
        source_forward=scene.source_forward,
        pair_gain=scene.pair_gain[rows] * gain[:, None],
        distance_model=scene.distance_model, ref_distance_m=scene.ref_distance_m,
        max_distance_m=scene.max_distance_m, rolloff=scene.rolloff,
        cone_inner_deg=scene.cone_inner_deg, cone_outer_deg=scene.cone_outer_deg,
        cone_outer_gain=scene.cone_outer_gain)


class Renderer:
    """Binaural renderer for a fixed number of listener and source slots.

    Parameters
    ----------
    hrirs : HrirSet
        The default set (listeners may choose others).
    listeners, sources : int
        Slot counts; :class:`~dsp.geometry.Scene` arrays must have these sizes.
    device : {"cpu", "cuda"}
    frame : int
        Samples per tick (:func:`hrtf.constants.frame_samples` of the room's frame in ms);
        the default is the 20 ms :data:`~hrtf.constants.FRAME`.

    A pair whose slot was just (re)assigned starts from silence: its first tick fades in.
    :meth:`configure_listener` and :meth:`set_room` may be called from another thread while a
    frame renders: they take effect at the next frame.
    """

    def __init__(self, hrirs: HrirSet, listeners: int, sources: int, device: str = "cpu",
                 frame: int = FRAME):
        if not 1 <= frame <= RING - MAX_DELAY or RING % frame:
            raise ValueError(f"a frame of {frame} samples is not one the renderer can tick at "
                             f"(1..{RING - MAX_DELAY} samples, dividing {RING})")
        self.frame = int(frame)
        self.hrirs = hrirs
        self.listeners = listeners
        self.sources = sources
        self.device = device
        self.engines: dict[str, SetEngine] = {}
        default = self._engine(hrirs)
        default.members[:] = True
        self.nfft = default.nfft
        self.history = np.zeros((sources, self.nfft), np.float32)
        self.limiter = SafetyLimiter(listeners)
        self.ramp = crossfade_ramp(self.frame)[None, :, None]
        #: Frames per source slot replaced by silence because they held NaN or infinity.
        self.rejected_frames = np.zeros(sources, np.int64)
        self.settings = [ListenerSettings() for _ in range(listeners)]
        self._acoustics_on = np.ones(listeners, np.bool_)
        self._pending: dict[int, ListenerSettings] = {}
        self._room_pending: list[tuple[RoomModel | None, LateTail | None]] = []
        #: The room's acoustics, None when dry.
        self.room: RoomModel | None = None
        self.reflections = EarlyReflections(listeners, sources, self.frame)
        self.tail: LateTail | None = None
        #: Tails of rooms left behind, ringing out on silence: (tail, frames left).
        self._ringing: list[tuple[LateTail, int]] = []
        self._wet_gain = np.zeros(listeners)  # what each listener got last tick
        self._bus_live = np.zeros(listeners, np.int64)  # ticks the bus history still sounds
        self._bus_history = np.zeros((listeners, BUSES, self.nfft), np.float32)

    @property
    def pairs(self) -> PairState:
        """The default set's pair states."""
        return self.engines[self.hrirs.digest].pairs

    @property
    def latency_samples(self) -> int:
        """Algorithmic delay added by the renderer: none (overlap-save, no look-ahead)."""
        return 0

    def _engine(self, hrirs: HrirSet) -> SetEngine:
        engine = self.engines.get(hrirs.digest)
        if engine is None:
            engine = SetEngine(hrirs, self.listeners, self.sources, self.device, self.frame)
            self.engines[hrirs.digest] = engine
        return engine

    # settings -----------------------------------------------------------------------------

    def configure_listener(self, slot: int, *, hrirs: HrirSet | None = None,
                           acoustics: bool = True, reference: bool = False) -> None:
        """How listener ``slot`` hears from the next frame on (crossfaded, no click)."""
        if not 0 <= slot < self.listeners:
            raise ValueError(f"listener slot {slot} is outside 0..{self.listeners - 1}")
        self._pending[slot] = ListenerSettings(hrirs, bool(acoustics), bool(reference))

    def set_room(self, model: RoomModel | None) -> None:
        """The room's acoustics from the next frame on (None: dry for everyone).

        Builds the room's late tail (tens of milliseconds): call it off the event loop. The
        old room's tail rings out.
        """
        from dsp.late_tail import LateTail, tail_ir  # only where a room is set

        tail = LateTail(tail_ir(model), self.frame) if model is not None else None
        self._room_pending.append((model, tail))

    def tail_samples(self, model: RoomModel) -> int:
        """Length of ``model``'s late tail once set (after :meth:`set_room`), in samples."""
        for pending, tail in reversed(self._room_pending):
            if pending is model and tail is not None:
                return len(tail.ir)
        return len(self.tail.ir) if self.tail is not None and self.room is model else 0

    def _apply_settings(self) -> dict[int, SetEngine]:
        """Apply pending settings; returns the slots whose set changed (leaving: old engine)."""
        moved = {}
        for slot in list(self._pending):
            settings = self._pending.pop(slot)
            old = self._set_of(slot)
            self.settings[slot] = settings
            self._acoustics_on[slot] = settings.acoustics
            new = self._set_of(slot)
            if new.digest != old.digest:
                old_engine = self.engines[old.digest]
                old_engine.members[slot] = False
                engine = self._engine(new)
                engine.pairs.forget_listener(slot)
                engine.members[slot] = True
                moved[slot] = old_engine
        while self._room_pending:
            model, tail = self._room_pending.pop(0)
            if self.tail is not None:
                self._ringing.append((self.tail, -(-len(self.tail.ir) // self.frame) + 1))
            self.room, self.tail = model, tail
            if model is None:
                self.reflections.set_room(np.zeros(3), np.ones(3), 0, np.zeros(6))
            else:
                lo, hi = model.bounds_m()
                self.reflections.set_room(lo, hi, model.max_order, model.reflection_gains())
        return moved

    def _set_of(self, slot: int) -> HrirSet:
        settings = self.settings[slot]
        chosen = settings.hrirs or self.hrirs
        return reference_set(chosen) if settings.reference else chosen

    def _drop_idle_engines(self) -> None:
        for digest in [d for d, e in self.engines.items()
                       if not e.members.any() and d != self.hrirs.digest]:
            del self.engines[digest]

    # slots --------------------------------------------------------------------------------

    def reset_source(self, slot: int) -> None:
        """A new source takes ``slot``: forget the old one's audio and filters."""
        self.history[slot] = 0.0
        self.rejected_frames[slot] = 0
        for engine in self.engines.values():
            engine.pairs.forget_source(slot)
        self.reflections.reset_source(slot)

    def reset_listener(self, slot: int) -> None:
        """A new listener takes ``slot``: default settings, its mix fades in from silence."""
        self._pending.pop(slot, None)
        self.settings[slot] = ListenerSettings()
        self._acoustics_on[slot] = True
        for engine in self.engines.values():
            engine.members[slot] = False
            engine.pairs.forget_listener(slot)
        self.engines[self.hrirs.digest].members[slot] = True
        self.reflections.reset_listener(slot)
        self._wet_gain[slot] = 0.0
        self._bus_live[slot] = 0
        self._bus_history[slot] = 0.0
        self.limiter.reset(slot)

    def prime(self, scene: Scene) -> None:
        """Take ``scene``'s filters as the current ones, so the next tick does not fade in.

        For offline rendering, where the first sample must sound at full level; a room never
        calls this (a newcomer's mix fades in over one frame instead of starting with a click).
        """
        self._apply_settings()
        dry, wet = self._gains()
        self.reflections.prime(scene, wet)
        self._wet_gain = wet
        for engine in self.engines.values():
            rows = np.flatnonzero(engine.members)
            if len(rows):
                state = engine.pairs.take(rows)
                state.update(listener_rows(scene, rows, dry[rows]), engine.hrirs)
                state.commit()
                engine.pairs.put(rows, state)

    # rendering ----------------------------------------------------------------------------

    def _gains(self) -> tuple[np.ndarray, np.ndarray]:
        """Each listener's direct-sound and room gains this tick."""
        dry = np.ones(self.listeners)
        wet = np.zeros(self.listeners)
        if self.room is not None:
            d, w = dry_wet_gains(self.room.wet)
            dry[self._acoustics_on], wet[self._acoustics_on] = d, w
        return dry, wet

    def render(self, scene: Scene, audio: np.ndarray) -> np.ndarray:
        """Render one frame.

        Parameters
        ----------
        scene : Scene
            With ``listeners`` listener and ``sources`` source slots.
        audio : ndarray, shape (sources, frame)
            This frame of every source (float32, nominal full scale ±1).

        Returns
        -------
        ndarray, shape (listeners, frame, 2), float32
            Each listener's stereo frame (left, right), limited to ±0.98.
        """
        if audio.shape != (self.sources, self.frame):
            raise ValueError(f"audio has shape {audio.shape}, expected ({self.sources}, "
                             f"{self.frame})")
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
        moved = self._apply_settings()
        n = self.frame
        h = self.history
        longest = max(e.nfft for e in self.engines.values())
        if longest > h.shape[1]:  # a set with longer responses joined: a longer history
            h = self.history = np.concatenate(
                [np.zeros((self.sources, longest - h.shape[1]), np.float32), h], axis=1)
            self._bus_history = np.concatenate(
                [np.zeros((self.listeners, BUSES, longest - self._bus_history.shape[2]),
                          np.float32), self._bus_history], axis=2)
        h[:, :-n] = h[:, n:]
        h[:, -n:] = audio

        dry, wet = self._gains()
        bus = self._early_reflections(scene, audio, wet)
        spectra: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        out = np.zeros((self.listeners, n, 2), np.float32)
        leaving: dict[int, tuple[SetEngine, list[int]]] = {}
        for slot, engine in moved.items():
            leaving.setdefault(id(engine), (engine, []))[1].append(slot)
        jobs: list[tuple[SetEngine, np.ndarray, list[int]]] = [
            (e, np.flatnonzero(e.members), []) for e in self.engines.values()]
        jobs += [(e, np.array(slots), slots) for e, slots in leaving.values()]
        for engine, rows, fading in jobs:
            if not len(rows):
                continue
            if engine.nfft not in spectra:
                spec = scipy.fft.rfft(h[:, -engine.nfft:], axis=-1, workers=-1)
                spectra[engine.nfft] = (np.ascontiguousarray(spec.real, dtype=np.float32),
                                        np.ascontiguousarray(spec.imag, dtype=np.float32))
            xr, xi = spectra[engine.nfft]
            gain = np.zeros(len(rows)) if fading else dry[rows]
            whole = len(rows) == self.listeners
            sub = scene if whole and not fading and (gain == 1).all() else \
                listener_rows(scene, rows, gain)
            p, d, changed = engine.mix(rows, sub, xr, xi)
            switching = np.isin(rows, list(moved)) if moved else np.zeros(len(rows), np.bool_)
            if bus is not None:
                self._add_bus(engine, rows, p, d, changed, switching, bool(fading))
            changed |= switching
            # (rows, ear, frame) float32: complex64 spectra give single-precision outputs
            y = scipy.fft.irfft(p, n=engine.nfft, axis=-1, workers=-1)[..., -n:]
            moving = np.flatnonzero(changed)
            if len(moving):
                diff = scipy.fft.irfft(d[moving], n=engine.nfft, axis=-1, workers=-1)
                y[moving] += diff[..., -n:] * self.ramp[0, :, 0]
            if whole and not fading:  # rows are then 0..L−1 in order
                out += y.transpose(0, 2, 1)
            else:
                out[rows] += y.transpose(0, 2, 1)
        if moved:
            self._drop_idle_engines()
        self._late_tail(scene, audio, wet, out)
        return out

    def _early_reflections(self, scene: Scene, audio: np.ndarray,
                           wet: np.ndarray) -> np.ndarray | None:
        """Update the loudspeaker buses' histories; None when no listener hears any."""
        live = (wet > 0) | (self._wet_gain > 0)
        # the bus history sounds until a whole window of silence has entered it
        window = self._bus_history.shape[2]
        ticks = -(-window // self.frame) + 1
        self._bus_live = np.where(live, ticks, np.maximum(self._bus_live - 1, 0))
        self.reflections.push(audio)
        if not self._bus_live.any():
            return None
        bus = self.reflections.process(scene, wet, self.ramp[0, :, 0])
        hist = self._bus_history
        hist[..., :-self.frame] = hist[..., self.frame:]
        hist[..., -self.frame:] = bus
        return bus

    def _add_bus(self, engine: SetEngine, rows: np.ndarray, p: np.ndarray, d: np.ndarray,
                 changed: np.ndarray, switching: np.ndarray, fading: bool) -> None:
        """Add the reflection loudspeakers, through ``engine``'s set, to ``rows``' spectra.

        A listener changing sets hears them through the old set fading out (in ``P`` and
        minus in ``D``) and through the new one fading in (in ``D``).
        """
        live = np.flatnonzero(self._bus_live[rows] > 0)
        if not len(live):
            return
        which = rows[live]
        every = np.array_equal(which, np.arange(self.listeners))  # then a view, not a copy
        window = self._bus_history[slice(None) if every else which, :, -engine.nfft:]
        spec = scipy.fft.rfft(window, axis=-1, workers=-1)
        sign = np.zeros((len(live), 2), np.float32)
        if fading:
            sign[:] = (1.0, -1.0)
            changed[live] = True
        else:
            entering = switching[live]
            sign[~entering] = (1.0, 0.0)
            sign[entering] = (0.0, 1.0)
        bus_to_ears(spec, live.astype(np.int64), engine.bus_spectra, sign, p, d)

    def _late_tail(self, scene: Scene, audio: np.ndarray, wet: np.ndarray,
                   out: np.ndarray) -> None:
        """Add the room's tail (and old rooms' ringing out) at each listener's wet level."""
        last = self._wet_gain
        self._wet_gain = wet
        if self.tail is None and not self._ringing:
            return
        sounding = (scene.pair_gain > 0).any(axis=0)
        n = self.frame
        send = audio[sounding].sum(axis=0, dtype=np.float32) if sounding.any() else \
            np.zeros(n, np.float32)
        tail = self.tail.process(send) if self.tail is not None else np.zeros((n, 2), np.float32)
        still = []
        for old, left in self._ringing:
            tail = tail + old.process(np.zeros(n, np.float32))
            if left > 1:
                still.append((old, left - 1))
        self._ringing = still
        add_wet(out, tail, last, wet, self.ramp[0, :, 0])
