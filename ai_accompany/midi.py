"""Keep what the AI played: Standard MIDI Files of :class:`~dsp.notes.NoteEvent` s.

Written with :mod:`struct` to the Standard MIDI File 1.0 specification (MMA, 1996): format 1,
track 0 a conductor track (name, tempo, 4/4 time signature), then one track per voice
(``NoteEvent.voice``, in order of first note; the unnamed voice is called ``"ai"``), each on its
own channel (0–15 without 9, the GM drum channel; wrapping past 15 voices).

Timing: the file's tempo is the ``bpm`` given (rounded to a whole microsecond per quarter note),
so a DAW's bars line up with the music when the AI played at that tempo. The division is
:data:`PPQ` ticks per quarter note, raised for slow tempi so that a tick never exceeds 1 ms.
Room samples map to ticks by rounding the exact ratio of absolute times, so errors never
accumulate: every note lands within half a tick (≤ 0.5 ms) of its room time. Time 0 of the file
is ``origin`` on the room clock (by default the first note's start).

Notes of the same pitch that overlap in one voice are cut at the next one's start (MIDI cannot
tell overlapping notes of one key apart); two starting on the same tick merge into one.

Files are written to a temporary file beside the target and renamed over it, so a session file
is either the old one or the complete new one, never half written.
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dsp.notes import NoteEvent, cut_lines
from hrtf.constants import SAMPLE_RATE

#: Ticks per quarter note (raised for tempi below 62.5 BPM, keeping a tick ≤ 1 ms).
PPQ = 960
#: Accepted tempo range (BPM); the tempo meta event holds at most 2²⁴ − 1 µs per quarter.
BPM_RANGE = (10.0, 1000.0)
#: Name of the track for events without a voice.
DEFAULT_TRACK = "ai"
#: Name of the conductor track.
TITLE = "spatialjam AI"

_CHANNELS = tuple(c for c in range(16) if c != 9)
_NOTE_OFF, _NOTE_ON = 0x80, 0x90


@dataclass(frozen=True, slots=True)
class MidiSong:
    """What :func:`read_midi` found: the division, the first tempo, the tracks and the notes."""

    ppq: int
    bpm: float
    track_names: tuple[str, ...]  #: every MTrk chunk's name, the conductor track's first
    events: tuple[NoteEvent, ...]  #: sorted by start; ``voice`` is the track's name


def _timing(bpm: float) -> tuple[int, int]:
    """``(ticks per quarter, µs per quarter)`` for ``bpm``."""
    if not (isinstance(bpm, int | float) and math.isfinite(bpm)
            and BPM_RANGE[0] <= bpm <= BPM_RANGE[1]):
        raise ValueError(f"bpm must be a number in {BPM_RANGE[0]:g}..{BPM_RANGE[1]:g}, "
                         f"got {bpm!r}")
    tempo_us = round(60e6 / bpm)
    return max(PPQ, math.ceil(tempo_us / 1000)), tempo_us


def _vlq(value: int) -> bytes:
    """A MIDI variable-length quantity: 7 bits per byte, most significant first."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _meta(kind: int, data: bytes) -> bytes:
    return bytes((0xFF, kind)) + _vlq(len(data)) + data


def _chunk(kind: bytes, data: bytes) -> bytes:
    return kind + struct.pack(">I", len(data)) + data


def _track(messages: list[tuple[int, bytes]]) -> bytes:
    """``(absolute tick, message)`` pairs, already in order, as an MTrk chunk."""
    body, last = bytearray(), 0
    for tick, message in messages:
        body += _vlq(tick - last) + message
        last = tick
    body += _vlq(0) + _meta(0x2F, b"")  # end of track
    return _chunk(b"MTrk", bytes(body))


def _voice_track(name: str, channel: int, notes: list[tuple[int, int, int, int]]) -> bytes:
    """Notes ``(on tick, off tick, pitch, velocity 1..127)`` of one voice as a track."""
    by_pitch: dict[int, list[list[int]]] = {}
    for on, off, pitch, vel in sorted(notes):
        same = by_pitch.setdefault(pitch, [])
        if same and same[-1][0] == on:  # two notes of one key at once: keep the longer
            same[-1][1] = max(same[-1][1], off)
            same[-1][3] = max(same[-1][3], vel)
            continue
        if same and same[-1][1] > on:  # overlap: the earlier note ends where this one starts
            same[-1][1] = on
        same.append([on, off, pitch, vel])
    messages = []
    for pitch, items in by_pitch.items():
        for on, off, _, vel in items:
            messages.append((on, 1, pitch, bytes((_NOTE_ON | channel, pitch, vel))))
            messages.append((off, 0, pitch, bytes((_NOTE_OFF | channel, pitch, 0))))
    messages.sort(key=lambda m: m[:3])  # offs before ons on a tick, so repeated keys re-strike
    return _track([(0, _meta(0x03, name.encode()))] + [(m[0], m[3]) for m in messages])


def midi_bytes(events: Iterable[NoteEvent], bpm: float = 120.0, origin: int | None = None,
               sample_rate: int = SAMPLE_RATE) -> bytes:
    """The Standard MIDI File for ``events`` (see the module docstring for the layout)."""
    events = list(events)
    for ev in events:
        if not isinstance(ev, NoteEvent):
            raise TypeError(f"MIDI files are written from NoteEvents, got {ev!r}")
    events.sort(key=lambda e: (e.start, e.pitch))
    ppq, tempo_us = _timing(bpm)
    if origin is None:
        origin = events[0].start if events else 0
    if events and events[0].start < origin:
        raise ValueError(f"origin {origin} lies after the first note (room sample "
                         f"{events[0].start}); it must be ≤ every event's start")
    # tick = samples / sample_rate [s] · 1e6 / tempo_us [quarters/s] · ppq, rounded half up
    num, den = ppq * 1_000_000, tempo_us * sample_rate

    def tick(sample: int) -> int:
        return (2 * (sample - origin) * num + den) // (2 * den)

    voices: dict[str, list[tuple[int, int, int, int]]] = {}
    for ev in events:
        on = tick(ev.start)
        voices.setdefault(ev.voice or DEFAULT_TRACK, []).append(
            (on, max(on + 1, tick(ev.end)), ev.pitch, max(1, round(ev.velocity * 127))))
    conductor = _track([(0, _meta(0x03, TITLE.encode())),
                        (0, _meta(0x51, tempo_us.to_bytes(3, "big"))),
                        (0, _meta(0x58, bytes((4, 2, 24, 8))))])
    tracks = [_voice_track(name, _CHANNELS[i % len(_CHANNELS)], notes)
              for i, (name, notes) in enumerate(voices.items())]
    header = _chunk(b"MThd", struct.pack(">HHH", 1, 1 + len(tracks), ppq))
    return header + conductor + b"".join(tracks)


def write_midi(path: str | os.PathLike, events: Iterable[NoteEvent], bpm: float = 120.0,
               origin: int | None = None, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write ``events`` as a Standard MIDI File at ``path``, atomically; return the path.

    ``origin`` is the room sample that becomes the file's time 0 (default: the first note's
    start). The file appears complete or not at all: it is written to a temporary file in the
    same folder, flushed to disk, then renamed over ``path``.
    """
    data = midi_bytes(events, bpm, origin, sample_rate)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------------------------
# Reading back (for tests and tools): enough of the format for files like ours and most others


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"{self.what}: truncated MIDI data at byte {self.pos}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def vlq(self) -> int:
        value = 0
        for _ in range(4):
            b = self.byte()
            value = (value << 7) | (b & 0x7F)
            if not b & 0x80:
                return value
        raise ValueError(f"{self.what}: variable-length quantity longer than 4 bytes")


def _parse_track(data: bytes, what: str):
    """``(name, tempo changes [(tick, µs)], notes [(on tick, off tick, pitch, velocity)])``."""
    r = _Reader(data, what)
    name, tempos, notes, status, tick = "", [], [], 0, 0
    sounding: dict[tuple[int, int], list[tuple[int, int]]] = {}
    while r.pos < len(data):
        tick += r.vlq()
        first = r.byte()
        if first == 0xFF:
            kind = r.byte()
            length = r.vlq()
            body = r.take(length)
            if kind == 0x03 and not name:
                name = body.decode("utf-8", "replace")
            elif kind == 0x51 and length == 3:
                tempos.append((tick, int.from_bytes(body, "big")))
            elif kind == 0x2F:
                break
            continue
        if first in (0xF0, 0xF7):  # system exclusive
            r.take(r.vlq())
            continue
        if first & 0x80:
            status, d1 = first, r.byte()
        elif status:
            d1 = first  # running status
        else:
            raise ValueError(f"{what}: data byte without a status at byte {r.pos - 1}")
        kind, channel = status & 0xF0, status & 0x0F
        d2 = r.byte() if kind not in (0xC0, 0xD0) else 0
        key = (channel, d1)
        if kind == _NOTE_ON and d2 > 0:
            sounding.setdefault(key, []).append((tick, d2))
        elif kind in (_NOTE_OFF, _NOTE_ON) and sounding.get(key):  # FIFO per key
            on, vel = sounding[key].pop(0)
            notes.append((on, tick, d1, vel))
    return name, tempos, notes


def read_midi(path: str | os.PathLike, origin: int = 0,
              sample_rate: int = SAMPLE_RATE) -> MidiSong:
    """Read a Standard MIDI File's notes back as :class:`NoteEvent` s on a room clock.

    Ticks become samples through the file's tempo map (default 120 BPM); ``origin`` is added,
    so reading a file written with ``origin=o`` and passing the same ``o`` gives back room time.
    Raises ``ValueError`` naming the file when it is not a MIDI file this reader understands
    (SMPTE time division, for instance).
    """
    path = Path(path)
    r = _Reader(path.read_bytes(), str(path))
    if r.take(4) != b"MThd":
        raise ValueError(f"{path}: not a Standard MIDI File (no MThd header)")
    header = r.take(struct.unpack(">I", r.take(4))[0])
    if len(header) < 6:
        raise ValueError(f"{path}: MThd header too short")
    _, n_tracks, ppq = struct.unpack(">HHH", header[:6])
    if ppq & 0x8000 or ppq == 0:
        raise ValueError(f"{path}: SMPTE or zero time division is not supported")
    parsed = []
    while r.pos < len(r.data) and len(parsed) < n_tracks:
        kind = r.take(4)
        body = r.take(struct.unpack(">I", r.take(4))[0])
        if kind == b"MTrk":
            parsed.append(_parse_track(body, f"{path} track {len(parsed)}"))
    tempos = sorted(t for _, track_tempos, _ in parsed for t in track_tempos)
    if not tempos or tempos[0][0] > 0:
        tempos.insert(0, (0, 500_000))

    def sample(tick: int) -> int:
        """Room sample of ``tick``: µs·ppq summed over the tempo map, then rounded."""
        acc, last_tick, tempo = 0, 0, tempos[0][1]
        for at, us in tempos[1:]:
            if at >= tick:
                break
            acc += (at - last_tick) * tempo
            last_tick, tempo = at, us
        acc += (tick - last_tick) * tempo
        return origin + (2 * acc * sample_rate + ppq * 1_000_000) // (2 * ppq * 1_000_000)

    events = []
    for name, _, notes in parsed:
        for on, off, pitch, vel in notes:
            start = sample(on)
            events.append(NoteEvent(start, max(1, sample(off) - start), pitch, vel / 127, name))
    events.sort(key=lambda e: (e.start, e.pitch, e.voice))
    return MidiSong(ppq, 60e6 / tempos[0][1], tuple(name for name, _, _ in parsed),
                    tuple(events))


class NoteLog:
    """The notes an AI musician played in a session, kept for :meth:`write` (bounded).

    The server adds the events its synthesiser accepted; past ``max_events`` the oldest are
    forgotten, so a session that runs for days cannot grow without limit.
    """

    def __init__(self, max_events: int = 200_000) -> None:
        self.max_events = max_events
        self.events: list[NoteEvent] = []
        self.forgotten = 0

    def add(self, events: Iterable[NoteEvent]) -> None:
        self.events.extend(events)
        excess = len(self.events) - self.max_events
        if excess > 0:
            del self.events[:excess]
            self.forgotten += excess

    def write(self, path: str | os.PathLike, bpm: float = 120.0,
              origin: int | None = None) -> Path:
        """:func:`write_midi` of everything kept, each line's notes as they sounded
        (:func:`dsp.notes.cut_lines`)."""
        return write_midi(path, cut_lines(self.events), bpm, origin)
