"""Tempo and beat phase: tempo induction from inter-onset intervals, then a phase-locked loop.

**Induction.** Over the onsets of the last :data:`HISTORY_S`, every pair ``(i, j)`` closer than
four slowest beats votes for the periods it could span: for ``k = 1..4`` a Gaussian of width
``σ/k`` (σ = 10 ms of timing jitter) centred on ``(t_j − t_i)/k``, weighted by the product of the
two onsets' strengths. A true period collects votes from pairs one, two, three and four beats
apart; its double only from two and four, its half only from one and two. The salience times a
log-normal prior centred on 113 BPM (an octave wide at 60 % height: 80 and 160 BPM) picks the
period, 60–180 BPM, refined by a parabola. Until four beats are heard a slow click's half period
scores as well as its period, so the doubled period is taken when its best grid holds 90 % of
the onset strength the induced one's does (every other line of the faster grid is empty).

**Lock.** With that period, each recent onset is tried as the origin of a beat grid; the grid
holding the most onset strength within ±7 % of a period wins (so a strong on-beat beats weaker
off-beats). Three or more of its onsets spanning two beats or more, holding at least
:data:`LOCK_SHARE` of the recent strength, lock the tracker: a least-squares line through their
(beat number, time) pairs gives phase and period. Beat 0 is the earliest of them.

**Tracking.** Each later onset within ±20 % of a period of the nearest predicted beat moves that
beat by ``α·w·e`` and (following tempo) the period by ``β·w·e/k``, where ``e`` is the timing error,
``k`` the beats since the last correction's beat, α = 0.4, β = 0.25, and ``w ≤ 1`` is twice the
onset's amplitude over the running average (capped at 1) times a Gaussian in ``e`` (σ = 8 % of a
period): a second-order loop, which follows a tempo step with no phase error and a linear tempo
drift with a constant lag of ``ΔP/β``, ``ΔP`` the period's change per beat. Every half second
the induction is run again on the last 3 s: if its tempo disagrees (beyond 5 %, octave errors
forgiven) twice running, or a grid at another phase holds half as much strength again as the
tracked one over the last 2 s twice running, the tracker relocks.

**Fixed tempo.** With ``fixed_bpm`` the period never changes; the first onset sets the phase (a
metronome runs from the start of the stream before it), the loop corrects the phase only, and
the phase check above still applies. With an ``anchor`` too (the room metronome's beat zero),
tempo and phase are both given: the grid is the room's, and onsets do not move it.

Delay: none on the prediction side — ``next_beat`` is always in the future. Measured by
``tests/unit/test_listen.py`` (click tracks, 16 kHz): locked 13–21 ms after the third click (the
onset delay), so the fourth beat is already predicted; from then on predictions (the last made
before each beat) are within 0.4 ms of the true beats at a steady 100 BPM, 0.1 ms at 72 BPM, 0.6 ms
at 127 BPM, and 3.4 ms while the tempo drifts 100 → 104 BPM over 20 s (a drift of ``ΔP`` per beat
lags by ``ΔP/β``). After a jump from 100 to 130 BPM every beat from the 7th on is within 2 ms.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from numba import njit

from ai_accompany.listen.constants import MAX_BPM, MIN_BPM, ROOM_RATE

#: Onsets considered for induction and relocking.
HISTORY_S = 6.0
MAX_ONSETS = 64
#: Timing jitter assumed by the induction.
JITTER_S = 0.010
#: Multiples of the period an onset pair may span.
MULTIPLES = 4
#: Resolution of the induction's period grid.
PERIOD_STEP_S = 0.001
#: Log-normal tempo prior: centre and width (octaves).
PRIOR_BPM = 113.0
PRIOR_OCTAVES = 0.5
#: Grid membership: within this fraction of a period of a grid line.
GRID_TOLERANCE = 0.07
#: The doubled period is preferred when its grid holds this share of the strength.
DOUBLE_SHARE = 0.9
#: Share of the recent onset strength a grid must hold to lock.
LOCK_SHARE = 0.4
#: The loop: correction window and Gaussian width (fractions of a period), gains.
WINDOW = 0.2
ERROR_SIGMA = 0.08
ALPHA = 0.4
BETA = 0.25
#: Relock checks: interval, onsets looked at, tempo disagreement, phase advantage.
CHECK_S = 0.5
TEMPO_HISTORY_S = 3.0
PHASE_HISTORY_S = 2.0
TEMPO_DISAGREE = 0.05
TEMPO_CHECKS = 2
PHASE_ADVANTAGE = 1.5
PHASE_CHECKS = 2


@njit(cache=True, nogil=True)
def tempo_salience(times, strengths, min_period, step, sigma, multiples, out):
    """Vote every onset pair into the period grid ``min_period + i·step`` (seconds).

    Parameters
    ----------
    times : (N,) float64
        Onset times in seconds, ascending.
    strengths : (N,) float64
    out : (P,) float64
        Zeroed, then written.
    """
    out[:] = 0.0
    n_p = out.shape[0]
    max_period = min_period + (n_p - 1) * step
    max_span = multiples * max_period + 3.0 * sigma
    n = times.shape[0]
    for j in range(n):
        for i in range(j - 1, -1, -1):
            d = times[j] - times[i]
            if d > max_span:
                break
            w = strengths[i] * strengths[j]
            for k in range(1, multiples + 1):
                p = d / k
                s = sigma / k
                if p < min_period - 3.0 * s or p > max_period + 3.0 * s:
                    continue
                lo = max(0, math.floor((p - 3.0 * s - min_period) / step))
                hi = min(n_p - 1, math.ceil((p + 3.0 * s - min_period) / step))
                for m in range(lo, hi + 1):
                    z = (min_period + m * step - p) / s
                    out[m] += w * math.exp(-0.5 * z * z)


@njit(cache=True, nogil=True)
def grid_score(times, strengths, origin, period, tol):
    """Strength of the onsets within ``tol`` (seconds) of the grid ``origin + m·period``."""
    score = 0.0
    for j in range(times.shape[0]):
        r = (times[j] - origin) / period
        if abs(r - math.floor(r + 0.5)) * period <= tol:
            score += strengths[j]
    return score


@njit(cache=True, nogil=True)
def best_grid(times, strengths, period, tol):
    """Return ``(index, score)`` of the onset whose grid holds the most strength."""
    best = 0
    best_score = -1.0
    for a in range(times.shape[0]):
        s = grid_score(times, strengths, times[a], period, tol)
        if s > best_score:
            best_score = s
            best = a
    return best, best_score


@njit(cache=True, nogil=True)
def fit_grid(times, origin, period, tol):
    """Least-squares beat line through the onsets on the grid ``origin + m·period``.

    Returns ``(phase, period, m_min, m_max, count)``: the fitted time of beat ``m = 0``, the
    fitted period, the lowest and highest beat numbers with a member, and the member count.
    With fewer than two distinct beat numbers the grid's own phase and period come back.
    """
    n = 0
    sm = 0.0
    st = 0.0
    smm = 0.0
    smt = 0.0
    m_min = 1 << 30
    m_max = -(1 << 30)
    for j in range(times.shape[0]):
        r = (times[j] - origin) / period
        m = math.floor(r + 0.5)
        if abs(r - m) * period <= tol:
            n += 1
            sm += m
            st += times[j]
            smm += m * m
            smt += m * times[j]
            m_min = min(m_min, int(m))
            m_max = max(m_max, int(m))
    den = n * smm - sm * sm
    if n < 2 or den <= 0.0:
        return origin, period, m_min, m_max, n
    slope = (n * smt - sm * st) / den
    return (st - slope * sm) / n, slope, m_min, m_max, n


def induce_period(times: np.ndarray, strengths: np.ndarray) -> float | None:
    """The most salient beat period (seconds) of the onsets, or None with fewer than three."""
    if times.shape[0] < 3:
        return None
    min_period = 60.0 / MAX_BPM
    bins = round((60.0 / MIN_BPM - min_period) / PERIOD_STEP_S) + 1
    salience = np.empty(bins)
    tempo_salience(times, strengths, min_period, PERIOD_STEP_S, JITTER_S, MULTIPLES, salience)
    periods = min_period + PERIOD_STEP_S * np.arange(bins)
    salience *= np.exp(-0.5 * (np.log2(60.0 / periods / PRIOR_BPM) / PRIOR_OCTAVES) ** 2)
    i = int(np.argmax(salience))
    if salience[i] <= 0.0:
        return None
    shift = 0.0
    if 0 < i < bins - 1:
        a, b, c = salience[i - 1], salience[i], salience[i + 1]
        den = a - 2.0 * b + c
        if den < 0.0:
            shift = 0.5 * (a - c) / den
    return float(periods[i] + shift * PERIOD_STEP_S)


def choose_period(times: np.ndarray, strengths: np.ndarray) -> float | None:
    """The induced period, or its double when that grid holds nearly as much onset strength.

    Pairs of a slow click train vote as much for half its period as for the period itself
    until four beats are heard; the doubled grid holding :data:`DOUBLE_SHARE` of the strength
    shows that every other line of the faster one is empty.
    """
    period = induce_period(times, strengths)
    if period is None or 2.0 * period > 60.0 / MIN_BPM:
        return period
    tol = GRID_TOLERANCE * period
    _, fast = best_grid(times, strengths, period, tol)
    _, slow = best_grid(times, strengths, 2.0 * period, tol)
    return 2.0 * period if slow >= DOUBLE_SHARE * fast else period


class BeatTracker:
    """Beat tracker on the room clock: feed onsets, ask for the next beat.

    Parameters
    ----------
    fixed_bpm : float or None
        Tempo to keep (the phase still follows the onsets); None to find and follow it.
    anchor : int or None
        With ``fixed_bpm``: the room sample of a downbeat (the room metronome's beat zero):
        the grid is fixed there, whatever the onsets.
    """

    def __init__(self, fixed_bpm: float | None = None, anchor: int | None = None) -> None:
        self.fixed = fixed_bpm is not None
        #: The grid is the room metronome's: tempo and phase given, never moved.
        self.anchored = self.fixed and anchor is not None
        #: Beat period in room samples, None before the tempo is known.
        self.period: float | None = 60.0 * ROOM_RATE / fixed_bpm if self.fixed else None
        #: Whether phase (and tempo) have been locked to the onsets heard.
        self.locked = False
        self._anchor: float | None = None
        self._anchor_index = 0
        self._onsets: deque[tuple[float, float]] = deque()
        self._strength_ref = 0.0
        self._next_check = -math.inf
        self._tempo_votes = 0
        self._phase_votes = 0
        if self.anchored:
            self._anchor = float(anchor)  # type: ignore[arg-type]
            self.locked = True

    def start(self, room_sample: int) -> None:
        """The stream starts at ``room_sample``: a fixed tempo counts beats from here."""
        if self.fixed and self._anchor is None:
            self._anchor = float(room_sample)

    def add_onset(self, time: float, strength: float) -> None:
        """An onset at room sample ``time`` (in time order) with amplitude ``strength``."""
        self._onsets.append((time, strength))
        while len(self._onsets) > MAX_ONSETS or time - self._onsets[0][0] > HISTORY_S * ROOM_RATE:
            self._onsets.popleft()
        self._strength_ref += 0.1 * (strength - self._strength_ref)
        if self.anchored:
            return  # the room's grid: the players follow it, not it them
        if not self.locked:
            if self.fixed:
                self._anchor = time
                self._anchor_index = 0
                self.locked = True
                self._next_check = time + CHECK_S * ROOM_RATE
            else:
                self._try_lock()
            return
        self._correct(time, strength)
        if time >= self._next_check:
            self._next_check = time + CHECK_S * ROOM_RATE
            self._check()

    def predict(self, now: float) -> tuple[float | None, int]:
        """``(next_beat, beat_index)``: the first beat after room sample ``now`` and its number."""
        if self._anchor is None or self.period is None:
            return None, 0
        n = math.floor((now - self._anchor) / self.period) + 1
        return self._anchor + n * self.period, self._anchor_index + n

    def _recent(self, seconds: float = HISTORY_S) -> tuple[np.ndarray, np.ndarray, float]:
        """Onset times of the last ``seconds`` (seconds before the newest, ascending), their
        strengths, and the newest time (room samples)."""
        arr = np.array(self._onsets)
        newest = float(arr[-1, 0])
        times = (arr[:, 0] - newest) / ROOM_RATE
        keep = times >= -seconds
        return times[keep], arr[keep, 1], newest

    def _fit(self, period_s: float, seconds: float = HISTORY_S
             ) -> tuple[float, float, int, int, float] | None:
        """Best grid of the last ``seconds`` of onsets at ``period_s``: ``(anchor, period,
        index, count, score)`` on the room clock, the anchor its latest beat with a member, or
        None when no grid is good enough to lock."""
        times, strengths, newest = self._recent(seconds)
        tol = GRID_TOLERANCE * period_s
        a, score = best_grid(times, strengths, period_s, tol)
        phase, period, m_min, m_max, count = fit_grid(times, times[a], period_s, tol)
        if count < 3 or m_max - m_min < 2 or score < LOCK_SHARE * strengths.sum():
            return None
        if not 60.0 / MAX_BPM * 0.9 <= period <= 60.0 / MIN_BPM * 1.1:
            return None
        anchor = newest + (phase + m_max * period) * ROOM_RATE
        return anchor, period * ROOM_RATE, m_max - m_min, count, score

    def _try_lock(self) -> None:
        if self.fixed:
            return
        times, strengths, _ = self._recent()
        period_s = choose_period(times, strengths)
        if period_s is None:
            return
        fit = self._fit(period_s)
        if fit is None:
            return
        self._anchor, self.period, self._anchor_index, _, _ = fit
        self.locked = True
        self._next_check = self._anchor + CHECK_S * ROOM_RATE
        self._tempo_votes = self._phase_votes = 0

    def _correct(self, time: float, strength: float) -> None:
        period = self.period
        k = math.floor((time - self._anchor) / period + 0.5)
        e = time - (self._anchor + k * period)
        if abs(e) > WINDOW * period:
            return
        w = min(1.0, 2.0 * strength / self._strength_ref) if self._strength_ref > 0 else 1.0
        w *= math.exp(-0.5 * (e / (ERROR_SIGMA * period)) ** 2)
        self._anchor += k * period + ALPHA * w * e
        self._anchor_index += k
        if not self.fixed and k >= 1:
            self.period = min(max(period + BETA * w * e / k, ROOM_RATE * 60.0 / MAX_BPM),
                              ROOM_RATE * 60.0 / MIN_BPM)

    def _check(self) -> None:
        """Relock when the onsets have moved to another tempo or another phase."""
        if not self.fixed:
            times, strengths, _ = self._recent(TEMPO_HISTORY_S)
            period_s = choose_period(times, strengths)
            if period_s is not None:
                ratio = period_s * ROOM_RATE / self.period
                agree = any(abs(ratio / r - 1.0) <= TEMPO_DISAGREE for r in (0.5, 1.0, 2.0))
                self._tempo_votes = 0 if agree else self._tempo_votes + 1
                if self._tempo_votes >= TEMPO_CHECKS:
                    fit = self._fit(period_s, TEMPO_HISTORY_S)
                    if fit is not None:
                        self._relock(fit[0], fit[1])
                        return
        times, strengths, newest = self._recent(PHASE_HISTORY_S)
        period_s = self.period / ROOM_RATE
        tol = GRID_TOLERANCE * period_s
        origin = (self._anchor - newest) / ROOM_RATE
        tracked = grid_score(times, strengths, origin, period_s, tol)
        a, best = best_grid(times, strengths, period_s, tol)
        offset = (times[a] - origin) / period_s
        offset -= math.floor(offset + 0.5)
        if best > PHASE_ADVANTAGE * tracked and abs(offset) * period_s > tol:
            self._phase_votes += 1
        else:
            self._phase_votes = 0
        if self._phase_votes >= PHASE_CHECKS:
            phase, slope, _, m_max, count = fit_grid(times, times[a], period_s, tol)
            anchor = newest + (phase + m_max * slope) * ROOM_RATE
            # a slope through two onsets is no tempo to trust
            keep = self.fixed or count < 3
            self._relock(anchor, self.period if keep else slope * ROOM_RATE)

    def _relock(self, anchor: float, period: float) -> None:
        """Move the grid to ``anchor`` and ``period``, keeping the beat count continuous."""
        self._anchor_index += math.floor((anchor - self._anchor) / self.period + 0.5)
        self._anchor = anchor
        self.period = period
        self._tempo_votes = self._phase_votes = 0
