"""Client→server messages of a room's admin (the ``admin`` grant): remove a member, lock the room.

Re-exported by :mod:`signaling.messages`. The grant is checked by the server, not here: these
parse alike for everyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from signaling import limits
from signaling.errors import MessageId
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
