"""Messages between the people in a room: chat, and muting yourself for everyone.

Re-exported by :mod:`signaling.messages` (client→server) and :mod:`signaling.server_messages`
(server→client). Chat is plain text: clients show it as text, never as markup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from signaling import limits
from signaling.errors import MessageId
from signaling.fields import Reader
from signaling.wire import WireMessage


@dataclass(frozen=True, slots=True)
class SendChat(WireMessage):
    """A line of chat to everyone in the room (1 to :data:`~signaling.limits.MAX_CHAT_CHARS`
    printable characters, stripped)."""

    TYPE: ClassVar[str] = "chat"
    REQUIRED: ClassVar[tuple[str, ...]] = ("text",)
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    text: str
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> SendChat:
        return cls(text=r.string("text", max_chars=limits.MAX_CHAT_CHARS, printable=True,
                                 strip=True), msg_id=msg_id)


@dataclass(frozen=True, slots=True)
class MuteSelf(WireMessage):
    """Mute (or unmute) your own sound for everyone: nobody in the room hears you, the AI
    musician does not listen to you and recordings take silence, until you unmute. The room
    shows it (``muted`` in ``room_state``'s members)."""

    TYPE: ClassVar[str] = "mute_self"
    REQUIRED: ClassVar[tuple[str, ...]] = ("muted",)
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    muted: bool
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> MuteSelf:
        return cls(muted=r.boolean("muted"), msg_id=msg_id)


@dataclass(frozen=True, slots=True)
class ChatLine(WireMessage):
    """One line of chat as the room saw it: who said it (``member``, with their ``name`` then),
    when (``at_s``: seconds since the Unix epoch, the server's clock) and what (``text``)."""

    TYPE: ClassVar[str] = "chat"

    member: str
    name: str
    text: str
    at_s: float


@dataclass(frozen=True, slots=True)
class ChatHistory(WireMessage):
    """Sent after ``joined``: the room's last :data:`~signaling.limits.CHAT_HISTORY` lines of
    chat, oldest first (none: an empty list)."""

    TYPE: ClassVar[str] = "chat_history"

    lines: tuple[ChatLine, ...]


@dataclass(frozen=True, slots=True)
class Levels(WireMessage):
    """A few times a second, to everyone in the room: how loud each source is now (its peak
    since the last ``levels``, dBFS, -120 for silence; a muted member's is -120), by source
    id. Clients show who is playing."""

    TYPE: ClassVar[str] = "levels"

    levels: dict[str, float]
