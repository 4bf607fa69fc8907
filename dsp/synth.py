"""The AI musician's instruments: a polyphonic synthesiser on the room's sample clock.

The sidecar sends :class:`~dsp.notes.NoteEvent` s ahead of time;
:meth:`Synth.schedule` queues them and :meth:`Synth.render` turns the frame starting at room
sample ``start`` into a mono float32 block, the AI's source signal. Every note begins and is
released on its exact sample, wherever that falls inside a frame; an event that arrives after
its start time has been rendered is dropped and counted (:attr:`Synth.late`), never played late.

Voices live in numpy arrays (one row per voice: note-on/off samples, frequency, amplitude,
oscillator phases, filter state) and one numba kernel renders all active voices for a block.
Envelopes are closed-form functions of the absolute sample, so a note's shape never depends on
how the clock was cut into frames:

.. math::

    e(t) = \\begin{cases}
        (a + 1) / A & a < A \\text{ (linear attack, } a = t - t_\\mathrm{on}) \\\\
        s + (1 - s) \\, e^{-(a - A)/\\tau} & t < t_\\mathrm{off} \\\\
        e(t_\\mathrm{off}) \\, (t_\\mathrm{end} - t) / (t_\\mathrm{end} - t_\\mathrm{off} + 1)
            & t_\\mathrm{off} \\le t < t_\\mathrm{end} \\text{ (linear release)}
    \\end{cases}

with attack ``A`` ≥ 2 ms and release ≥ 10 ms, so neither note-on nor note-off clicks.

Instruments (:data:`INSTRUMENTS`):

- ``organ``: drawbar organ, cosine partials at 1, 2, 3, 4 and 6 × f (the 8', 4', 2⅔', 2' and
  1⅓' drawbars at 1, 0.6, 0.4, 0.3, 0.2), those above 0.45 · fs left out; 5 ms attack, full
  sustain, 40 ms release.
- ``epiano``: two-operator FM, carrier and modulator at the same frequency,
  ``cos(2π φ + I(t) sin 2π φ)`` with a modulation index that starts at 1 + 2.5 · velocity and
  decays (τ 0.25 s) to 0.3: a bright attack that mellows. The amplitude decays like a struck
  tine, faster for higher notes (τ 1.6 s · √(261.6 Hz / f)).
- ``bass``: plucked bass, a band-limited (polyBLEP) sawtooth through a two-pole state-variable
  low-pass whose cutoff falls from about 12 · f to 2 · f (τ 0.12 s), amplitude decaying with
  τ 0.9 s.
- ``pad``: two sawtooths detuned by ±4 cents through a fixed low-pass at 5 · f, slow attack
  (0.25 s) and release (0.5 s).

Level: a single note at full velocity peaks at about −10 dBFS (amplitude ∝ velocity²); the sum
goes through a peak limiter (that of :mod:`dsp.limiter`: instant attack, 80 ms release, no
look-ahead, transparent below :data:`LIMIT`), so chords of many voices never clip. It runs
serially inside the synth's own call: no parallel launch from the room's tick threads.

Polyphony: at most ``max_voices`` notes are held at once; a note that would exceed that steals
the oldest held note, which is released over :data:`STEAL_RELEASE_MS` rather than cut. Release
tails use further voice slots (twice ``max_voices`` in all), so they do not count against the
polyphony. Not thread-safe for rendering; :meth:`Synth.schedule` may be called from another
thread than :meth:`Synth.render`.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numba import njit

from dsp.limiter import RELEASE_MS
from dsp.notes import NoteEvent
from hrtf.constants import FRAME, SAMPLE_RATE

#: Release of a note whose voice is stolen.
STEAL_RELEASE_MS = 10.0
#: Ceiling of the output limiter.
LIMIT = 0.95
#: Most events waiting to be played; more are refused (a runaway sidecar cannot fill memory).
MAX_PENDING = 10_000

ORGAN, EPIANO, BASS, PAD = 0, 1, 2, 3

# Columns of the per-voice arrays.
T_ON, T_OFF, T_END, T_ATTACK = 0, 1, 2, 3  # times: int64 samples (absolute room clock)
# params: float64. P_FREQ in cycles per sample; P_DECAY per sample; P_MOD/P_MODK/P_AUX are the
# FM index (start, decay per sample, floor) for the epiano and the cutoff envelope (depth, decay
# per sample, base, all in multiples of f) for the bass; the pad's cutoff multiple is P_AUX.
P_FREQ, P_AMP, P_DECAY, P_SUSTAIN, P_MOD, P_MODK, P_AUX = range(7)
S_PH0, S_PH1, S_Z0, S_Z1 = range(4)  # state: oscillator phases (cycles), filter integrators

# Drawbar levels of harmonics 1..6 (8', 4', 2⅔', 2', —, 1⅓'); harmonic 5 (1⅗') is pulled out.
_ORGAN_WEIGHT = np.array([1.0, 0.6, 0.4, 0.3, 0.0, 0.2])
_PAD_DETUNE = 2.0 ** (4.0 / 1200.0)
_NYQUIST_GUARD = 0.45  # partials and cutoffs stay below 0.45 · fs
_SVF_DAMPING = 1.1  # 1/Q of the state-variable filters: Q ≈ 0.9, a gentle resonance


@dataclass(frozen=True, slots=True)
class Instrument:
    """Envelope and level of one instrument; the timbre lives in the kernel (:attr:`code`)."""

    code: int
    attack_ms: float
    decay_ms: float  #: time constant of the fall from 1 to :attr:`sustain`
    sustain: float
    release_ms: float
    gain: float  #: peak level of one note at full velocity


INSTRUMENTS: dict[str, Instrument] = {
    "organ": Instrument(ORGAN, 5.0, 1.0, 1.0, 40.0, 0.30),
    "epiano": Instrument(EPIANO, 2.5, 1600.0, 0.0, 80.0, 0.32),
    "bass": Instrument(BASS, 3.0, 900.0, 0.0, 30.0, 0.34),
    "pad": Instrument(PAD, 250.0, 1500.0, 0.7, 500.0, 0.25),
}


def midi_to_hz(pitch: float) -> float:
    """Equal temperament, A4 (MIDI 69) = 440 Hz."""
    return 440.0 * 2.0 ** ((pitch - 69.0) / 12.0)


# ---------------------------------------------------------------------------------------------
# The kernel


@njit(cache=True, nogil=True, fastmath=True)
def _ads(age, attack, decay_k, sustain):
    if age < attack:
        return (age + 1.0) / attack
    return sustain + (1.0 - sustain) * math.exp(-(age - attack) * decay_k)


@njit(cache=True, nogil=True, fastmath=True)
def _env(t, on, off, end, attack, decay_k, sustain, level_off):
    if t < off:
        return _ads(t - on, attack, decay_k, sustain)
    return level_off * (end - t) / (end - off + 1)


@njit(cache=True, nogil=True, fastmath=True)
def _blep(ph, dt):
    """PolyBLEP residual that band-limits a sawtooth's jump at phase 0."""
    if ph < dt:
        x = ph / dt
        return x + x - x * x - 1.0
    if ph > 1.0 - dt:
        x = (ph - 1.0) / dt
        return x * x + x + x + 1.0
    return 0.0


@njit(cache=True, nogil=True, fastmath=True)
def _voice(out, start, v, code, times, params, state):
    on, off, end, attack = times[v, T_ON], times[v, T_OFF], times[v, T_END], times[v, T_ATTACK]
    dph, amp, decay_k = params[v, P_FREQ], params[v, P_AMP], params[v, P_DECAY]
    sustain, aux = params[v, P_SUSTAIN], params[v, P_AUX]
    mod, mod_k = params[v, P_MOD], params[v, P_MODK]
    level_off = _ads(off - on, attack, decay_k, sustain)
    t0 = max(on, start)
    t1 = min(end, start + out.shape[0])
    ph0, ph1, z0, z1 = state[v, S_PH0], state[v, S_PH1], state[v, S_Z0], state[v, S_Z1]
    two_pi = 2.0 * math.pi
    norm = pad_g = 0.0
    n_harm = 0
    if code == ORGAN:
        while n_harm < _ORGAN_WEIGHT.shape[0] and (n_harm + 1) * dph < _NYQUIST_GUARD:
            norm += _ORGAN_WEIGHT[n_harm]
            n_harm += 1
        norm = 1.0 / norm
    elif code == PAD:  # fixed cutoff: the filter coefficient once per block
        pad_g = math.tan(math.pi * min(dph * aux, _NYQUIST_GUARD))
    for t in range(t0, t1):
        e = amp * _env(t, on, off, end, attack, decay_k, sustain, level_off)
        age = t - on
        if code == ORGAN:  # cos kθ by the Chebyshev recurrence: one cosine per sample
            c1 = math.cos(two_pi * ph0)
            c_prev, c_k = 1.0, c1
            x = _ORGAN_WEIGHT[0] * c1
            for k in range(1, n_harm):
                c_prev, c_k = c_k, 2.0 * c1 * c_k - c_prev
                x += _ORGAN_WEIGHT[k] * c_k
            x *= norm
            ph0 += dph
        elif code == EPIANO:
            index = mod * math.exp(-age * mod_k) + aux
            x = math.cos(two_pi * ph0 + index * math.sin(two_pi * ph0))
            ph0 += dph
        else:
            if code == BASS:
                saw = 2.0 * ph0 - 1.0 - _blep(ph0, dph)
                ph0 += dph
                cutoff = dph * (aux + mod * math.exp(-age * mod_k))
                g = math.tan(math.pi * min(cutoff, _NYQUIST_GUARD))
            else:  # PAD
                d0 = dph * _PAD_DETUNE
                d1 = dph / _PAD_DETUNE
                saw = ph0 + ph1 - 1.0 - 0.5 * (_blep(ph0, d0) + _blep(ph1, d1))
                ph0 += d0
                ph1 += d1
                if ph1 >= 1.0:
                    ph1 -= 1.0
                g = pad_g
            # Zavalishin/Simper trapezoidal state-variable filter, low-pass output
            a1 = 1.0 / (1.0 + g * (g + _SVF_DAMPING))
            v3 = saw - z1
            v1 = a1 * z0 + g * a1 * v3
            v2 = z1 + g * v1
            z0 = 2.0 * v1 - z0
            z1 = 2.0 * v2 - z1
            x = v2
        if ph0 >= 1.0:
            ph0 -= 1.0
        out[t - start] += e * x
    state[v, S_PH0], state[v, S_PH1], state[v, S_Z0], state[v, S_Z1] = ph0, ph1, z0, z1


@njit(cache=True, nogil=True)
def _limit(out, gain, threshold, release):
    """Peak-limit ``out`` in place; ``gain[0]`` carries the gain from block to block."""
    g = gain[0]
    for t in range(out.shape[0]):
        target = min(1.0, threshold / max(abs(out[t]), 1e-30))
        g = target if target < g else g + (target - g) * release
        out[t] *= g
    gain[0] = g


@njit(cache=True, nogil=True)
def render_voices(out, start, active, inst, times, params, state):
    """Add every active voice's samples for the block ``[start, start + len(out))`` to ``out``.

    Parameters
    ----------
    out : (n,) float32
        Accumulator, written in place.
    start : int
        Room sample of ``out[0]``.
    active : (V,) bool
        Voices in use; cleared here for voices whose release ends within the block.
    inst : (V,) int32
        Instrument code per voice (:data:`ORGAN` …).
    times : (V, 4) int64
        Note-on, note-off, end of release, attack length (samples).
    params : (V, 7) float64
        Frequency (cycles/sample), amplitude, decay rate (1/samples), sustain level, and the
        instrument's modulation parameters (see the column constants).
    state : (V, 4) float64
        Oscillator phases and filter integrators, carried from block to block.
    """
    stop = start + out.shape[0]
    for v in range(active.shape[0]):
        if not active[v]:
            continue
        if times[v, T_ON] < stop and times[v, T_END] > start:
            _voice(out, start, v, inst[v], times, params, state)
        if times[v, T_END] <= stop:
            active[v] = False


# ---------------------------------------------------------------------------------------------
# The Python shell: scheduling, voice allocation, level


class Synth:
    """A polyphonic synthesiser that plays :class:`NoteEvent` s at their room sample.

    Parameters
    ----------
    instrument : str
        One of :attr:`instruments`; the default for voices without their own.
    sample_rate : int
        Samples per second of the room clock.
    max_voices : int
        Notes held at once before the oldest is stolen.
    """

    instruments: tuple[str, ...] = tuple(INSTRUMENTS)

    def __init__(self, instrument: str = "epiano", sample_rate: int = SAMPLE_RATE,
                 max_voices: int = 32) -> None:
        if not isinstance(sample_rate, int) or sample_rate < 8000:
            raise ValueError(f"sample_rate must be an integer ≥ 8000 Hz, got {sample_rate!r}")
        if not isinstance(max_voices, int) or not 1 <= max_voices <= 256:
            raise ValueError(f"max_voices must be an integer in 1..256, got {max_voices!r}")
        self.sample_rate = sample_rate
        self.max_voices = max_voices
        self._instrument = self._lookup(instrument)
        self._per_voice: dict[str, Instrument] = {}
        #: Voices played as lines (:data:`dsp.notes.LINE_VOICES`): a voice's next note ends
        #: the one it holds. Empty by default: every note keeps its duration.
        self.line_voices: frozenset[str] = frozenset()
        self._voice_ids: dict[str, int] = {}
        slots = 2 * max_voices  # room for release tails beside the held notes
        self._active = np.zeros(slots, np.bool_)
        self._inst = np.zeros(slots, np.int32)
        self._voice = np.full(slots, -1, np.int32)  # the line each slot plays, -1 none
        self._times = np.zeros((slots, 4), np.int64)
        self._params = np.zeros((slots, 7), np.float64)
        self._state = np.zeros((slots, 4), np.float64)
        self._pending: list[tuple[int, int, NoteEvent]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._gain = np.ones(1, np.float64)  # the limiter's
        self._limit_release = 1.0 - math.exp(-1.0 / (RELEASE_MS * 1e-3 * sample_rate))
        self._steal_release = max(1, round(STEAL_RELEASE_MS * 1e-3 * sample_rate))
        #: Room sample the next frame is expected to start at (end of the last render).
        self.position = 0
        #: Events dropped because their start had already been rendered.
        self.late = 0
        #: Notes cut short (released early) to make room for newer ones.
        self.stolen = 0
        #: Events refused because :data:`MAX_PENDING` were already waiting.
        self.overflow = 0

    # -- controls ------------------------------------------------------------------------------

    @staticmethod
    def _lookup(name: str) -> Instrument:
        try:
            return INSTRUMENTS[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown instrument {name!r}; choose one of "
                             f"{', '.join(INSTRUMENTS)}") from None

    @property
    def instrument(self) -> str:
        """The default instrument's name."""
        return next(k for k, v in INSTRUMENTS.items() if v is self._instrument)

    def set_instrument(self, name: str, voice: str | None = None) -> None:
        """Play notes that start from now on with instrument ``name``.

        With ``voice``, only events of that voice (``NoteEvent.voice``, e.g. ``"bass"``) use
        it; the others keep the default. Notes already sounding keep their instrument.
        """
        inst = self._lookup(name)
        if voice is None:
            self._instrument = inst
        else:
            self._per_voice[voice] = inst

    @property
    def voices_in_use(self) -> int:
        """Voice slots sounding (held notes and release tails) after the last render."""
        return int(self._active.sum())

    @property
    def pending(self) -> int:
        """Events waiting for their start."""
        return len(self._pending)

    # -- events --------------------------------------------------------------------------------

    def schedule(self, events: Iterable[NoteEvent]) -> int:
        """Queue events to play at their ``start``; return how many were accepted.

        An event whose start lies before :attr:`position` (already rendered) is dropped and
        counted in :attr:`late`; one beyond :data:`MAX_PENDING` waiting events in
        :attr:`overflow`.
        """
        accepted = 0
        with self._lock:
            for ev in events:
                if not isinstance(ev, NoteEvent):
                    raise TypeError(f"Synth.schedule takes NoteEvents, got {ev!r}")
                if ev.start < self.position:
                    self.late += 1
                elif len(self._pending) >= MAX_PENDING:
                    self.overflow += 1
                else:
                    heapq.heappush(self._pending, (ev.start, next(self._order), ev))
                    accepted += 1
        return accepted

    def all_notes_off(self) -> None:
        """Forget waiting events and release every held note at :attr:`position`."""
        with self._lock:
            self._pending.clear()
        held = self._active & (self._times[:, T_OFF] > self.position)
        self._release(np.flatnonzero(held), self.position)

    def render(self, start: int, n: int = FRAME) -> np.ndarray:
        """Render the ``n`` samples beginning at room sample ``start``; float32 ``(n,)``, mono.

        ``start`` must not lie before :attr:`position`; it may jump ahead of it (a gap in the
        clock: events that were due inside the gap count as :attr:`late`).
        """
        if n <= 0:
            raise ValueError(f"render needs n > 0 samples, got {n}")
        if start < self.position:
            raise ValueError(f"render start {start} lies before the synth's position "
                             f"{self.position}: the room clock only moves forward")
        stop = start + n
        due = []
        with self._lock:
            while self._pending and self._pending[0][0] < stop:
                due.append(heapq.heappop(self._pending)[2])
            self.position = stop
        for ev in due:
            if ev.start < start:
                self.late += 1
            else:
                self._note_on(ev)
        out = np.zeros(n, np.float32)
        render_voices(out, start, self._active, self._inst, self._times, self._params,
                      self._state)
        _limit(out, self._gain, LIMIT, self._limit_release)
        return out

    # -- voices --------------------------------------------------------------------------------

    def _release(self, slots: np.ndarray, at: int) -> None:
        """Release ``slots`` at sample ``at`` over at most :data:`STEAL_RELEASE_MS`."""
        self._times[slots, T_OFF] = at
        self._times[slots, T_END] = np.minimum(self._times[slots, T_END], at + self._steal_release)

    def _note_on(self, ev: NoteEvent) -> None:
        s = ev.start
        line = -1
        if ev.voice in self.line_voices:
            line = self._voice_ids.setdefault(ev.voice, len(self._voice_ids))
            before = self._active & (self._voice == line) & (self._times[:, T_OFF] > s)
            self._release(np.flatnonzero(before), s)
            if ev.velocity == 0.0:
                return  # the line rests
        held = np.flatnonzero(self._active & (self._times[:, T_OFF] > s))
        if held.size >= self.max_voices:
            oldest = held[np.argmin(self._times[held, T_ON])]
            self._release(np.array([oldest]), s)
            self.stolen += 1
        free = np.flatnonzero(~self._active)
        # All slots busy only when release tails pile up: cut the one nearest its end.
        slot = int(free[0]) if free.size else int(np.argmin(self._times[:, T_END]))
        inst = self._per_voice.get(ev.voice, self._instrument)
        sr = self.sample_rate
        f = midi_to_hz(ev.pitch)
        release = max(1, round(inst.release_ms * 1e-3 * sr))
        decay_s = inst.decay_ms * 1e-3
        mod = mod_k = aux = 0.0
        if inst.code == EPIANO:
            decay_s *= math.sqrt(261.63 / f)
            mod = (1.0 + 2.5 * ev.velocity) * min(1.0, 1500.0 / f)  # less FM up high: no alias
            mod_k = 1.0 / (0.25 * sr)
            aux = 0.3
        elif inst.code == BASS:
            mod, mod_k, aux = 10.0 * ev.velocity, 1.0 / (0.12 * sr), 2.0
        elif inst.code == PAD:
            aux = 5.0
        self._times[slot] = (s, ev.end, ev.end + release,
                             max(1, round(inst.attack_ms * 1e-3 * sr)))
        self._params[slot] = (f / sr, inst.gain * ev.velocity ** 2, 1.0 / (decay_s * sr),
                              inst.sustain, mod, mod_k, aux)
        # Phases where each waveform is non-zero, so a note is audible from its first sample.
        self._state[slot] = (0.0, 0.0, 0.0, 0.0) if inst.code in (ORGAN, EPIANO) else (
            0.25, 0.6, 0.0, 0.0)
        self._inst[slot] = inst.code
        self._voice[slot] = line
        self._active[slot] = True
