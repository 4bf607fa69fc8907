"""The room's metronome: an admin sets it for everyone (``set_metronome``), each player chooses
whether to hear it (``hear_metronome``). Re-exported by :mod:`signaling.messages`; the room's
metronome is in ``room_state`` (:class:`MetronomeState`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from signaling.errors import ErrorCode, MessageId
from signaling.fields import Reader
from signaling.wire import WireMessage

MIN_BPM, MAX_BPM = 30.0, 300.0
MAX_BEATS_PER_BAR = 16
MAX_COUNT_IN_BARS = 4
#: How a player hears the metronome: not at all, centred (in both ears alike, inside the head),
#: or from its place on the stage (rendered binaurally, like an instrument).
HEAR_MODES = ("off", "centre", "stage")
_WORD_RE = re.compile(r"[a-z]{1,16}")
#: A key's tonic as the room names it (flats as most players write them), by pitch class.
TONICS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MODES = ("major", "minor")
_SPELLINGS = {**{t.upper(): pc for pc, t in enumerate(TONICS)},
              "DB": 1, "D#": 3, "GB": 6, "G#": 8, "A#": 10, "CB": 11, "B#": 0, "FB": 4, "E#": 5}
KEY_HELP = 'a tonic and a mode, like "D major", "Bb minor" or "F# minor"; "" for none'


def key_parts(text: str) -> tuple[int, str] | None:
    """``"D major"`` → ``(2, "major")``: a key's tonic pitch class and mode, or None when
    ``text`` names no key (any case; ``♯``/``♭`` or ``#``/``b``; ``m`` for minor)."""
    words = text.replace("♯", "#").replace("♭", "b").split()
    if not 1 <= len(words) <= 2:
        return None
    tonic = _SPELLINGS.get(words[0].upper())
    mode = words[1].lower() if len(words) == 2 else "major"
    mode = {"m": "minor", "min": "minor", "maj": "major"}.get(mode, mode)
    if tonic is None or mode not in MODES:
        return None
    return tonic, mode


def key_name(tonic: int, mode: str) -> str:
    """The room's name of a key: ``(10, "minor")`` → ``"Bb minor"``."""
    return f"{TONICS[tonic % 12]} {mode}"


@dataclass(frozen=True, slots=True)
class SetMetronome(WireMessage):
    """The room's metronome on or off, its tempo (``bpm``), metre (``beats_per_bar``), whether
    the first beat of a bar is accented, how many bars of count-in an AI musician waits
    before it plays, and the key the room plays in (``key``: "D major"; "" for none), which an
    AI musician takes instead of listening for it. Fields left out keep their value (a first
    metronome: 100 bpm, 4 beats, accented, one bar, no key)."""

    TYPE: ClassVar[str] = "set_metronome"
    REQUIRED: ClassVar[tuple[str, ...]] = ("on",)
    OPTIONAL: ClassVar[tuple[str, ...]] = ("bpm", "beats_per_bar", "accent", "count_in_bars",
                                           "key")

    on: bool
    bpm: float | None = None
    beats_per_bar: int | None = None
    accent: bool | None = None
    count_in_bars: int | None = None
    #: The room's key in its own spelling ("Bb minor"), "" to declare none, None: unchanged.
    key: str | None = None
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> SetMetronome:
        key = None
        if r.present("key"):
            text = r.string("key", max_chars=16, min_chars=0, strip=True, printable=True)
            parts = key_parts(text) if text else None
            if text and parts is None:
                raise r.fail(ErrorCode.BAD_VALUE, "key", f"must be {KEY_HELP}, got {text!r}")
            key = key_name(*parts) if parts else ""
        return cls(
            on=r.boolean("on"),
            bpm=r.number("bpm", MIN_BPM, MAX_BPM) if r.present("bpm") else None,
            beats_per_bar=(r.integer("beats_per_bar", 1, MAX_BEATS_PER_BAR)
                           if r.present("beats_per_bar") else None),
            accent=r.boolean("accent") if r.present("accent") else None,
            count_in_bars=(r.integer("count_in_bars", 0, MAX_COUNT_IN_BARS)
                           if r.present("count_in_bars") else None),
            key=key, msg_id=msg_id)


@dataclass(frozen=True, slots=True)
class HearMetronome(WireMessage):
    """How you hear the room's metronome: ``off``, ``centre`` (the default) or ``stage``."""

    TYPE: ClassVar[str] = "hear_metronome"
    REQUIRED: ClassVar[tuple[str, ...]] = ("mode",)
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    mode: str
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> HearMetronome:
        mode = r.string("mode", max_chars=16, pattern=_WORD_RE,
                        expected=f"one of {', '.join(HEAR_MODES)}")
        if mode not in HEAR_MODES:
            raise r.fail(ErrorCode.BAD_VALUE, "mode",
                         f"must be one of {', '.join(HEAR_MODES)}, got {mode!r}")
        return cls(mode=mode, msg_id=msg_id)


@dataclass(frozen=True, slots=True)
class MetronomeState(WireMessage):
    """The room's metronome as ``room_state`` shows it: on or off, its tempo, metre, accent and
    count-in, and where its beats fall: ``beat_zero_s``, the room clock's time (seconds since
    the room's clock started) of a downbeat; beat ``k`` sounds at ``beat_zero_s + 60 k / bpm``;
    and the room's key (``key``: "D major", ``null`` when none is declared).
    """

    NULLABLE: ClassVar[frozenset[str]] = frozenset({"key"})

    on: bool
    bpm: float
    beats_per_bar: int
    accent: bool
    count_in_bars: int
    beat_zero_s: float
    key: str | None = None
