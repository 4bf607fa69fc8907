"""The people in a room: chat (``chat``), muting yourself (``mute_self``) and who is playing
(``levels``).

Chat is kept for the room's life (its last :data:`~signaling.limits.CHAT_HISTORY` lines, sent
to each joiner as ``chat_history``) and is paced per member: bursts of
:data:`~signaling.limits.CHAT_BURST` lines, then one per
:data:`~signaling.limits.CHAT_INTERVAL_S`. A line past that is refused in words
(``rate_limited``) and is no strike: a person typing fast is not misbehaving. Muting yourself
silences your sound at the room's clock (:class:`~server.tick.mutes.MuteFades`)
and shows in ``room_state``. The levels come from the clock (its ``on_levels``) and go to every
member, one encoded message for all.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

import numpy as np

from signaling import limits
from signaling.errors import ErrorCode
from signaling.ratelimit import TokenBucket
from signaling.server_messages import ErrorMessage
from signaling.social_messages import ChatHistory, ChatLine, Levels, MuteSelf, SendChat
from signaling.wire import encode

if TYPE_CHECKING:
    from server.rooms.live import LiveRoom, Participant, RoomHost

#: The level a silent (or muted) source reports, dBFS.
SILENCE_DB = -120.0


def levels_db(peaks: np.ndarray) -> np.ndarray:
    """Linear peaks as dBFS, rounded to 0.1 dB, floored at :data:`SILENCE_DB`."""
    with np.errstate(divide="ignore"):
        db = 20.0 * np.log10(np.maximum(peaks, 0.0))
    return np.round(np.maximum(db, SILENCE_DB), 1)


class Social:
    """Chat, mute-yourself and levels for ``hub``'s rooms."""

    def __init__(self, hub: RoomHost) -> None:
        self.hub = hub
        self._buckets: WeakKeyDictionary[Participant, TokenBucket] = WeakKeyDictionary()

    async def chat(self, p: Participant, message: SendChat) -> None:
        live = p.live
        if live is None or p.member_id is None:
            return
        bucket = self._buckets.setdefault(
            p, TokenBucket(1.0 / limits.CHAT_INTERVAL_S, limits.CHAT_BURST))
        if not bucket.allow(asyncio.get_running_loop().time()):
            p.session.send(ErrorMessage(
                ErrorCode.RATE_LIMITED,
                f"chat is paced: {limits.CHAT_BURST} lines in a row, then one every "
                f"{limits.CHAT_INTERVAL_S:g} s; this line was not sent", message.msg_id))
            p.flush()
            return
        member = live.room.member(p.member_id)
        line = ChatLine(member=member.id, name=member.name, text=message.text,
                        at_s=round(time.time(), 3))
        live.chat.append(line)
        live.send_all(encode(line))

    def history(self, p: Participant) -> None:
        """Send ``p``, just joined, the room's chat so far."""
        if p.live is not None:
            p.session.send(ChatHistory(tuple(p.live.chat)))
            p.flush()

    async def mute(self, p: Participant, message: MuteSelf) -> None:
        live = p.live
        if live is None or p.member_id is None:
            return
        live.room.set_muted(p.member_id, message.muted)
        self.hub.broadcast(live)

    def send_levels(self, live: LiveRoom, peaks: np.ndarray) -> None:
        """Every member's level (and each AI musician's) to everyone in the room."""
        if not live.participants:
            return
        db = levels_db(peaks)
        room = live.room
        text = encode(Levels({m.id: float(db[m.slot]) for m in room.members.values()}))
        if text == live.levels_sent:
            return  # nothing new (a silent room): the pages still show the last
        live.levels_sent = text
        live.send_all(text)
