"""The listener: one 20 ms block of the room's analysis downmix in, one :class:`Analysis` out.

A pure core (no I/O, no threads, no clock of its own): the sidecar feeds it the blocks the
server sends, each with the room sample of its first sample, and reads what it heard. Stages and
their delays (each measured in ``tests/unit/test_listen.py`` and stated in its module):

========================  ====================================================================
stage                     delay
========================  ====================================================================
onsets (``onsets``)       stamped 0.1 ms (median), 4.6 ms (p95) off the true onset; reported
                          in the block that ends 4–28 ms after it
beat (``beat``)           predictive: ``next_beat`` is always ahead; locked on the 3rd beat
chord (``chords``)        the new chord named 140 ms (median) after a change
key (``key``)             named after 2 s of sound, 8 s memory
lead pitch (``pitch``)    the last 40 ms; right in the block that ends 20–50 ms after a change
========================  ====================================================================

Cost: about 0.11 ms per block (median; 0.2 ms at the 99th percentile) on one core of the
development machine, measured by ``bench/test_listen_benchmarks.py``.

Times are room samples (48 kHz): a stream sample ``i`` (at the analysis rate) of a block that
starts at room sample ``r`` with stream index ``c`` lies at ``r + (i − c) · 48000 / rate``. A
block stamped later than its predecessor's end (a gap) moves that mapping on; one stamped
earlier is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral

import numpy as np

from ai_accompany.listen.beat import BeatTracker
from ai_accompany.listen.chords import SILENCE_DB, ChordDetector
from ai_accompany.listen.chroma import ChromaAnalyzer
from ai_accompany.listen.constants import (
    ANALYSIS_RATE,
    MAX_FIXED_BPM,
    MIN_FIXED_BPM,
    ROOM_RATE,
    block_size,
    check_sample_rate,
)
from ai_accompany.listen.key import KeyDetector
from ai_accompany.listen.onsets import OnsetDetector
from ai_accompany.listen.pitch import PitchTracker


@dataclass(frozen=True)
class Analysis:
    """What the listener heard up to the end of one block. Times are room samples (48 kHz).

    Attributes
    ----------
    room_sample : int
        The block's first sample.
    onsets : tuple of int
        Onsets detected in this block (each may lie up to 32 ms before the block's start).
    onset_strengths : tuple of float
        The RMS amplitude (full scale) each added, in the same order.
    bpm : float or None
        Tempo; None until locked (always the given tempo in fixed-tempo mode).
    beat_period : float or None
        Room samples per beat (``60 · 48000 / bpm``).
    next_beat : int or None
        The first predicted beat after this block's end.
    beat_index : int
        The number of ``next_beat``, counted from 0 at the first beat of the lock (the bar
        position is ``beat_index % beats_per_bar`` if that beat was a downbeat); 0 before lock.
        With a fixed tempo, beats are counted from the stream's start until the first onset,
        which restarts the count at 0.
    locked : bool
        Whether phase (and tempo, unless fixed) are locked to the onsets heard. It stays True
        through silence: the beat runs on from the last correction.
    key_tonic : int or None
        Pitch class of the key's tonic (0 = C … 11 = B); None until 2 s of sound.
    key_mode : str or None
        ``'major'`` or ``'minor'``.
    key_confidence : float
        Correlation of the long-term chroma with the key's profile (−1..1).
    chord_root : int or None
        Pitch class of the chord's root; None in silence.
    chord_quality : str or None
        ``'maj'``, ``'min'``, ``'7'`` (dominant seventh) or ``'dim'``.
    chord_confidence : float
        Cosine between the smoothed chroma and the chord's template (0..1).
    lead_pitch : float or None
        MIDI note number (fractional) of the monophonic lead over the last 40 ms; None when
        unvoiced or silent.
    lead_confidence : float
        ``1 − d'`` at YIN's chosen lag (0..1).
    level_db : float
        RMS level of the block, dB full scale.
    chroma : tuple of float
        The newest 256 ms's pitch-class energy (C first), summing to 1, or all 0 in silence.
    """

    room_sample: int
    onsets: tuple[int, ...]
    onset_strengths: tuple[float, ...]
    bpm: float | None
    beat_period: float | None
    next_beat: int | None
    beat_index: int
    locked: bool
    key_tonic: int | None
    key_mode: str | None
    key_confidence: float
    chord_root: int | None
    chord_quality: str | None
    chord_confidence: float
    lead_pitch: float | None
    lead_confidence: float
    level_db: float
    chroma: tuple[float, ...]


class Listener:
    """Streaming analysis of the room's mono downmix.

    Parameters
    ----------
    sample_rate : int
        Of the downmix (Hz): a divisor of 48000 from 8000 up; blocks are 20 ms of it.
    fixed_bpm : float or None
        Keep this tempo and lock only the phase (20–300 BPM); None to find and follow the tempo
        (60–180 BPM).
    beat_zero : int or None
        With ``fixed_bpm``: the room sample of a downbeat (the room metronome's): the beat grid
        is fixed there.
    """

    def __init__(self, sample_rate: int = ANALYSIS_RATE, fixed_bpm: float | None = None,
                 beat_zero: int | None = None) -> None:
        self.sample_rate = check_sample_rate(sample_rate)
        if fixed_bpm is not None and not (
            isinstance(fixed_bpm, int | float) and MIN_FIXED_BPM <= fixed_bpm <= MAX_FIXED_BPM
        ):
            raise ValueError(
                f"fixed_bpm must be None or a tempo from {MIN_FIXED_BPM:g} to "
                f"{MAX_FIXED_BPM:g} BPM; got {fixed_bpm!r}"
            )
        #: Samples per block.
        self.block = block_size(sample_rate)
        self._ratio = ROOM_RATE // sample_rate
        self._onsets = OnsetDetector(sample_rate)
        self._beats = BeatTracker(fixed_bpm, beat_zero)
        self._chroma = ChromaAnalyzer(sample_rate)
        self._chords = ChordDetector()
        self._key = KeyDetector(self.block / sample_rate)
        self._pitch = PitchTracker(sample_rate)
        size = max(self._chroma.window, self._onsets.history + self.block, self._pitch.window)
        self._buf = np.zeros(size)
        self._count = 0
        self._offset: int | None = None

    def process(self, block: np.ndarray, room_sample: int) -> Analysis:
        """Analyse the next block.

        Parameters
        ----------
        block : (block,) float array
            The next 20 ms of the downmix, full scale ±1. A block holding NaN or ±Inf is
            analysed as silence.
        room_sample : int
            Room-clock sample (48 kHz) of the block's first sample; not before the end of the
            previous block.

        Raises
        ------
        ValueError
            For a block of the wrong shape or type, or a room sample out of order.
        """
        x = self._validate(block, room_sample)
        room_sample = int(room_sample)
        expected = None if self._offset is None else self._offset + self._ratio * self._count
        if expected is None:
            self._beats.start(room_sample)
        elif room_sample < expected:
            raise ValueError(
                f"room_sample {room_sample} is before the end of the previous block ({expected}); "
                "blocks must come in order (start a new Listener after a clock reset)"
            )
        if expected != room_sample:
            self._offset = room_sample - self._ratio * self._count
        n = self.block
        buf = self._buf
        buf[:-n] = buf[n:]
        buf[-n:] = x
        self._count += n

        onsets: list[int] = []
        strengths: list[float] = []
        hop = self._onsets.hop
        for back in range(n // hop - 1, -1, -1):
            end = buf.shape[0] - back * hop
            found = self._onsets.frame(buf[:end], self._count - back * hop)
            if found is not None:
                t = self._offset + self._ratio * found[0]
                onsets.append(round(t))
                strengths.append(found[1])
                self._beats.add_onset(t, found[1])

        now = self._offset + self._ratio * self._count
        next_beat, beat_index = self._beats.predict(now)
        period = self._beats.period
        show_tempo = self._beats.locked or self._beats.fixed

        chroma, bass_chroma, chroma_db = self._chroma.process(buf)
        root, quality, chord_score = self._chords.process(bass_chroma, chroma_db)
        tonic, mode, key_score = self._key.process(chroma, chroma_db)
        pitch_window = buf[-self._pitch.window:]
        pitch_db = 10.0 * math.log10(float(np.dot(pitch_window, pitch_window))
                                     / pitch_window.shape[0] + 1e-20)
        midi, pitch_conf = self._pitch.process(buf, pitch_db)
        total = chroma.sum()
        return Analysis(
            room_sample=room_sample,
            onsets=tuple(onsets),
            onset_strengths=tuple(strengths),
            bpm=60.0 * ROOM_RATE / period if show_tempo else None,
            beat_period=period if show_tempo else None,
            next_beat=round(next_beat) if next_beat is not None and show_tempo else None,
            beat_index=beat_index if show_tempo else 0,
            locked=self._beats.locked,
            key_tonic=tonic,
            key_mode=mode,
            key_confidence=key_score,
            chord_root=root,
            chord_quality=quality,
            chord_confidence=chord_score,
            lead_pitch=midi,
            lead_confidence=pitch_conf,
            level_db=10.0 * math.log10(float(np.dot(x, x)) / n + 1e-20),
            chroma=tuple((chroma / total).tolist()) if total > 0 and chroma_db >= SILENCE_DB
            else (0.0,) * 12,
        )

    def _validate(self, block: np.ndarray, room_sample: int) -> np.ndarray:
        if isinstance(room_sample, bool) or not isinstance(room_sample, Integral):
            raise ValueError(
                f"room_sample must be an integer room-clock sample; got {room_sample!r}"
            )
        arr = np.asarray(block)
        if arr.shape != (self.block,):
            raise ValueError(
                f"block must be {self.block} mono samples (20 ms at {self.sample_rate} Hz), "
                f"shape ({self.block},); got shape {arr.shape}"
            )
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(
                f"block must hold float samples (full scale ±1); got dtype {arr.dtype}"
            )
        x = arr.astype(np.float64)
        if not np.isfinite(x).all():
            x[:] = 0.0
        return x
