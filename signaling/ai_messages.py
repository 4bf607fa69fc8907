"""Client→server messages for the AI musician: add one to the room, change it, remove it.

The AI musician is a source on the stage like any other (its id, ``ai-…``, moves with
``move_source``); these set how it plays. Re-exported by :mod:`signaling.messages`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, TypedDict

from signaling import limits
from signaling.errors import ErrorCode, MessageId
from signaling.fields import Reader
from signaling.wire import WireMessage, describe

#: How the AI plays: harmony and bass under the humans' melody; melodic lines over their
#: progression; or answers in the humans' pauses.
AI_ROLES = ("accompany", "improvise", "call_response")
#: The synthesiser's instruments (dsp/synth.py).
AI_INSTRUMENTS = ("epiano", "organ", "bass")
#: The accompaniment's textures (ai_accompany/texture.py, kept equal by a unit test).
AI_STYLES = ("chorale", "folk", "pop", "blues")
#: What an AI musician may be waiting for before it plays (``ai_hears.waiting``).
AI_WAITING = ("beat", "key", "players")
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.1, 2.0
#: A fixed tempo, or 0 to follow the players.
MIN_BPM, MAX_BPM = 40.0, 240.0
MAX_AI_VOLUME = 4.0
_CHOICE_RE = re.compile(r"[a-z_]{1,32}")
_SETTINGS = ("role", "instrument", "style", "temperature", "bpm", "volume", "metronome")


class AiSettings(TypedDict, total=False):
    """The AI settings a message sets; absent keys keep their current value."""

    role: str
    instrument: str
    style: str
    temperature: float
    bpm: float
    volume: float
    metronome: bool


def read_settings(r: Reader) -> AiSettings:
    """The AI settings present in a message (absent ones keep their current value)."""

    def choice(field: str, allowed: tuple[str, ...]) -> str:
        value = r.string(field, max_chars=32, pattern=_CHOICE_RE,
                         expected=f"one of {', '.join(allowed)}")
        if value not in allowed:
            raise r.fail(ErrorCode.BAD_VALUE, field,
                         f"must be one of {', '.join(allowed)}, got {describe(value)}")
        return value

    settings: AiSettings = {}
    if r.present("role"):
        settings["role"] = choice("role", AI_ROLES)
    if r.present("instrument"):
        settings["instrument"] = choice("instrument", AI_INSTRUMENTS)
    if r.present("style"):
        settings["style"] = choice("style", AI_STYLES)
    if r.present("temperature"):
        settings["temperature"] = r.number("temperature", MIN_TEMPERATURE, MAX_TEMPERATURE)
    if r.present("bpm"):
        bpm = r.number("bpm", 0.0, MAX_BPM)
        if 0.0 < bpm < MIN_BPM:
            raise r.fail(ErrorCode.OUT_OF_RANGE, "bpm",
                         f"must be 0 (follow the players) or {MIN_BPM:g} to {MAX_BPM:g}, "
                         f"got {bpm:g}")
        settings["bpm"] = bpm
    if r.present("volume"):
        settings["volume"] = r.number("volume", 0.0, MAX_AI_VOLUME)
    if r.present("metronome"):
        settings["metronome"] = r.boolean("metronome")
    return settings


class _Settings:
    """The settings fields an AI message carries, as a dict of those present."""

    __slots__ = ()

    @property
    def settings(self) -> dict[str, str | float | bool]:
        return {name: getattr(self, name) for name in _SETTINGS
                if getattr(self, name) is not None}


def _ai(r: Reader) -> str:
    return r.string("ai", max_chars=64, pattern=limits.SOURCE_ID_RE,
                    expected="1 to 64 letters, digits, '-' or '_'")


@dataclass(frozen=True, slots=True)
class AiAdd(_Settings, WireMessage):
    """Add an AI musician to the room (one per room); it appears on the stage as a source."""

    TYPE: ClassVar[str] = "ai_add"
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    OPTIONAL: ClassVar[tuple[str, ...]] = _SETTINGS

    role: str | None = None
    instrument: str | None = None
    style: str | None = None
    temperature: float | None = None
    bpm: float | None = None
    volume: float | None = None
    metronome: bool | None = None
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> AiAdd:
        return cls(**read_settings(r), msg_id=msg_id)


@dataclass(frozen=True, slots=True)
class AiUpdate(_Settings, WireMessage):
    """Change how the room's AI musician ``ai`` plays."""

    TYPE: ClassVar[str] = "ai_update"
    REQUIRED: ClassVar[tuple[str, ...]] = ("ai",)
    OPTIONAL: ClassVar[tuple[str, ...]] = _SETTINGS

    ai: str
    role: str | None = None
    instrument: str | None = None
    style: str | None = None
    temperature: float | None = None
    bpm: float | None = None
    volume: float | None = None
    metronome: bool | None = None
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> AiUpdate:
        return cls(ai=_ai(r), **read_settings(r), msg_id=msg_id)


@dataclass(frozen=True, slots=True)
class AiRemove(WireMessage):
    """Take the AI musician ``ai`` out of the room."""

    TYPE: ClassVar[str] = "ai_remove"
    REQUIRED: ClassVar[tuple[str, ...]] = ("ai",)
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    ai: str
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> AiRemove:
        return cls(ai=_ai(r), msg_id=msg_id)


@dataclass(frozen=True, slots=True)
class AiHears(WireMessage):
    """What the room's AI musician ``ai`` hears now, to everyone in the room (when it changes,
    every second or so): the tempo it plays at (``bpm``), the key and the chord it hears
    (``key``: "D major"; ``chord``: "A7"), each ``null`` until it knows; ``locked`` once it
    follows the players' beat; ``waiting`` what it waits for before it plays (``beat``,
    ``key``, ``players`` while they rest; ``null``: it plays); ``lead_ms`` how long before a
    note sounds it decides it; ``style`` its texture; ``playing`` the chord its voices sound
    and ``coming`` the one it plans for the next beat (an accompanist's; ``null`` while it
    waits); ``arrives_ms``: how long before their time its events reached the room's clock,
    the median of its recent ones in whole ms (negative: late; ``null`` before any), and
    ``late``: its events so far that came too late to sound (dropped)."""

    TYPE: ClassVar[str] = "ai_hears"
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"bpm", "key", "chord", "waiting",
                                                     "lead_ms", "style", "playing", "coming",
                                                     "arrives_ms"})

    ai: str
    bpm: float | None
    key: str | None
    chord: str | None
    locked: bool
    waiting: str | None = None
    lead_ms: float | None = None
    style: str | None = None
    playing: str | None = None
    coming: str | None = None
    arrives_ms: float | None = None
    late: int = 0
