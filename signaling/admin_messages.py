"""Client→server messages of a room's admin (the ``admin`` grant): remove a member, lock the room,
set the room's frame.

Re-exported by :mod:`signaling.messages`. The grant is checked by the server, not here: these
parse alike for everyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from signaling import limits
from signaling.errors import ErrorCode, MessageId
from signaling.fields import Reader
from signaling.wire import WireMessage


@dataclass(frozen=True, slots=True)
class Kick(WireMessage):
    """Remove a member from the room: told ``kicked``, disconnected, and kept out while the
    room is open (by identity where tokens are used, by seat otherwise)."""

    TYPE: ClassVar[str] = "kick"
    REQUIRED: ClassVar[tuple[str, ...]] = ("member",)
    OPTIONAL: ClassVar[tuple[str, ...]] = ("reason",)

    member: str
    reason: str = ""
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> Kick:
        return cls(member=r.string("member", max_chars=64, pattern=limits.SOURCE_ID_RE,
                                   expected="a member id from 'room_state'"),
                   reason=r.string("reason", min_chars=0, max_chars=120, printable=True,
                                   strip=True) if r.present("reason") else "",
                   msg_id=msg_id)


@dataclass(frozen=True, slots=True)
class LockRoom(WireMessage):
    """Lock (or unlock) the room: while locked, only members who hold a seat here, and
    admins, may join."""

    TYPE: ClassVar[str] = "lock_room"
    REQUIRED: ClassVar[tuple[str, ...]] = ("locked",)
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    locked: bool
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> LockRoom:
        return cls(locked=r.boolean("locked"), msg_id=msg_id)


#: The frames a room may tick at (ms): ``hrtf.constants.FRAME_CHOICES_MS``, repeated here so
#: that the protocol's core needs no audio package (a unit test keeps the two equal).
FRAME_CHOICES_MS = (2.5, 5.0, 10.0, 20.0)


@dataclass(frozen=True, slots=True)
class SetFrame(WireMessage):
    """The room's frame (ms): how often its clock ticks, and the length of the Opus packets
    of its low-latency transport. Every member's media connection restarts at the new frame
    (``frame_changed``); the room keeps it, saved with its seats."""

    TYPE: ClassVar[str] = "set_frame"
    REQUIRED: ClassVar[tuple[str, ...]] = ("frame_ms",)
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    frame_ms: float
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> SetFrame:
        choices = ", ".join(f"{ms:g}" for ms in FRAME_CHOICES_MS)
        frame_ms = r.number("frame_ms", FRAME_CHOICES_MS[0], FRAME_CHOICES_MS[-1])
        if frame_ms not in FRAME_CHOICES_MS:
            raise r.fail(ErrorCode.BAD_VALUE, "frame_ms",
                         f"must be one of {choices} (ms), got {frame_ms:g}")
        return cls(frame_ms=frame_ms, msg_id=msg_id)
