"""Note events on the room's sample clock: what the AI accompanist plays.

Shared by the sidecar (which produces them), the server (which passes them on) and the
synthesiser (:mod:`dsp.synth`, which renders them); it lives in ``dsp/`` so that the engine
depends on nothing above it. Deliberately free of heavy imports, so that every side can import
it cheaply.

Times are integers on the room clock: 48 kHz samples since the room started
(:data:`hrtf.constants.SAMPLE_RATE`). A note sounds on samples ``start … start + duration − 1``
and is released at ``start + duration``.

Lines: in a voice of :data:`LINE_VOICES` (the AI's alto, tenor, bass and lead), a note ends
where the same voice's next note starts, if it has not ended before. So a note can be sent
long and cut when its line moves on (:func:`cut_lines`), which lets the AI decide each note
just before it sounds without knowing how long it will hold. A note of velocity 0 in such a
voice only ends the one before (MIDI's note-on at velocity 0): the line rests.

Wire form: :meth:`NoteEvent.to_tuple` gives ``(start, duration, pitch, velocity, voice)``, plain
Python scalars that pickle, msgpack or JSON-encode compactly; :meth:`NoteEvent.from_tuple`
validates on the way back in, since the other side of an IPC channel is outside input.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from numbers import Integral, Real

#: Longest accepted voice name (a MIDI track name, a key for per-voice instruments).
MAX_VOICE_LEN = 32
#: Voices that are one line each: a voice's next note ends the one before.
LINE_VOICES = frozenset({"alto", "tenor", "bass", "lead"})


@dataclass(frozen=True, slots=True)
class NoteEvent:
    """One note: when it starts, how long it lasts, which key, how hard, for which voice.

    Raises ``ValueError`` (``TypeError`` for a value of the wrong kind) on construction when a
    field is out of range, so an invalid event never reaches the synthesiser.
    """

    start: int  #: room sample clock (48 kHz samples) when the note begins, ≥ 0
    duration: int  #: samples, > 0
    pitch: int  #: MIDI note number 0..127 (69 = A4 = 440 Hz)
    velocity: float  #: 0..1
    voice: str = ""  #: e.g. "bass", "alto", "lead": MIDI track and per-voice instrument

    def __post_init__(self) -> None:
        for name in ("start", "duration", "pitch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral):
                raise TypeError(f"NoteEvent.{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if isinstance(self.velocity, bool) or not isinstance(self.velocity, Real):
            raise TypeError(f"NoteEvent.velocity must be a number, got {self.velocity!r}")
        object.__setattr__(self, "velocity", float(self.velocity))
        if not isinstance(self.voice, str):
            raise TypeError(f"NoteEvent.voice must be a string, got {self.voice!r}")
        if self.start < 0:
            raise ValueError(f"NoteEvent.start must be ≥ 0 (room samples), got {self.start}")
        if self.duration <= 0:
            raise ValueError(f"NoteEvent.duration must be > 0 samples, got {self.duration}")
        if not 0 <= self.pitch <= 127:
            raise ValueError(f"NoteEvent.pitch must be a MIDI note 0..127, got {self.pitch}")
        if not (math.isfinite(self.velocity) and 0.0 <= self.velocity <= 1.0):
            raise ValueError(f"NoteEvent.velocity must be in 0..1, got {self.velocity!r}")
        if len(self.voice) > MAX_VOICE_LEN or not self.voice.isprintable():
            raise ValueError(
                f"NoteEvent.voice must be printable and at most {MAX_VOICE_LEN} characters, "
                f"got {self.voice!r}")

    @property
    def end(self) -> int:
        """The sample of the note-off (first sample after the note)."""
        return self.start + self.duration

    def to_tuple(self) -> tuple[int, int, int, float, str]:
        """``(start, duration, pitch, velocity, voice)``: the IPC wire form."""
        return (self.start, self.duration, self.pitch, self.velocity, self.voice)

    @classmethod
    def from_tuple(cls, data: tuple | list) -> NoteEvent:
        """Inverse of :meth:`to_tuple`; the voice may be left out. Validates every field."""
        if not isinstance(data, tuple | list) or not 4 <= len(data) <= 5:
            raise ValueError(
                "a note event on the wire is (start, duration, pitch, velocity[, voice]), "
                f"got {data!r}")
        return cls(*data)


def cut_lines(events: Iterable[NoteEvent], voices: Collection[str] = LINE_VOICES
              ) -> list[NoteEvent]:
    """``events`` as they sound: in each of ``voices``, a note cut where the voice's next note
    starts (a later note at the same start replaces it)."""
    out: list[NoteEvent | None] = []
    last: dict[str, int] = {}  # voice → index in out of its sounding note
    for e in sorted(events, key=lambda e: e.start):
        if e.voice in voices and e.voice in last:
            k = last[e.voice]
            before = out[k]
            if before is not None and before.end > e.start:
                if before.start >= e.start:
                    out[k] = None  # replaced at the same start
                else:
                    out[k] = NoteEvent(before.start, e.start - before.start, before.pitch,
                                       before.velocity, before.voice)
        if e.voice in voices:
            last[e.voice] = len(out)
        out.append(e)
    return [e for e in out if e is not None and not (e.voice in voices and e.velocity == 0)]
