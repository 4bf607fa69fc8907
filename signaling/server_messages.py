"""Server→client messages, as frozen dataclasses that :func:`signaling.wire.encode` writes.

``offer``, ``answer`` and ``ice`` share their shape with the client's and reuse
:class:`~signaling.messages.Offer`, :class:`~signaling.messages.Answer` and
:class:`~signaling.messages.Ice`. Replies to a client message carry its ``id`` as ``msg_id``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from signaling.ai_messages import AiHears
from signaling.errors import ErrorCode, MessageId, ProtocolError
from signaling.messages import Answer, Ice, Offer
from signaling.metronome_messages import MetronomeState
from signaling.recording_messages import Recording, RecordingNow, Recordings
from signaling.render_messages import HrtfUploaded, Rendering, RoomAcoustics
from signaling.social_messages import ChatHistory, ChatLine, Levels
from signaling.stage_messages import Vec3
from signaling.wire import WireMessage


@dataclass(frozen=True, slots=True)
class Member(WireMessage):
    """One participant of a room, as the others see them: ``muted`` while they have muted
    themselves (``mute_self``: nobody hears them), ``ai`` for an AI musician."""

    id: str
    name: str
    instrument: str
    muted: bool = False
    ai: bool = False


@dataclass(frozen=True, slots=True)
class Placement(WireMessage):
    """Where one source stands on the shared stage and where it faces.

    ``source`` is a participant's id or an AI accompanist's (``ai-1``); ``label`` is what the
    client shows on its marker. Facing: yaw 0 looks along +x, 90 along +y (left); degrees.
    """

    source: str
    label: str
    position_m: Vec3
    yaw_deg: float = 0.0
    pitch_deg: float = 0.0


@dataclass(frozen=True, slots=True)
class RoomState(WireMessage):
    """A room's members and stage layout, broadcast to every member whenever either changes.

    ``revision`` grows by one with every change, so a client can drop a stale state.
    ``frame_ms`` is the room's frame: its clock ticks, and every packet of its audio lasts,
    that many milliseconds (20 by default; 10, 5 or 2.5 in low-latency rooms).
    ``acoustics`` is the room's acoustics (``null``: none, the room is dry). ``recording`` is
    there while the room is being recorded (:mod:`signaling.recording_messages`), ``metronome``
    once an admin has set the room's metronome (:mod:`signaling.metronome_messages`).
    """

    TYPE: ClassVar[str] = "room_state"
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"acoustics"})

    room: str
    revision: int
    members: tuple[Member, ...]
    stage: tuple[Placement, ...]
    #: Locked by an admin: only members holding a seat here, and admins, may join.
    locked: bool = False
    acoustics: RoomAcoustics | None = None
    recording: RecordingNow | None = None
    frame_ms: float = 20.0
    #: The room's metronome, once an admin has set one (on or off).
    metronome: MetronomeState | None = None


@dataclass(frozen=True, slots=True)
class IceServer(WireMessage):
    """A STUN or TURN server for the client's peer connection, as the browser's
    ``RTCIceServer`` dictionary takes it. ``username`` and ``credential`` come with TURN URLs
    only: short-lived, minted for this participant (coturn's ``use-auth-secret`` scheme)."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True, slots=True)
class Joined(WireMessage):
    """The reply to ``join``: your participant id, your seat token, the room as it is, what
    you may do in it (``grants``: see :mod:`signaling.access`), and the STUN and TURN servers
    your peer connection uses (``ice_servers``; empty: the server is reached directly).
    ``frame_ms``, the room's frame (as in ``state``): the packet length a client's encoder
    should use."""

    TYPE: ClassVar[str] = "joined"

    participant: str
    seat: str
    state: RoomState
    grants: tuple[str, ...] = ()
    ice_servers: tuple[IceServer, ...] = ()
    frame_ms: float = 20.0
    msg_id: MessageId | None = None


@dataclass(frozen=True, slots=True)
class ErrorMessage(WireMessage):
    """A refusal with a stable ``code``; the connection stays open unless a close follows."""

    TYPE: ClassVar[str] = "error"

    code: ErrorCode
    message: str
    msg_id: MessageId | None = None

    @classmethod
    def from_exception(cls, exc: ProtocolError) -> ErrorMessage:
        """The error message reporting ``exc`` to the client."""
        return cls(code=exc.code, message=exc.message, msg_id=exc.msg_id)


@dataclass(frozen=True, slots=True)
class Pong(WireMessage):
    """The reply to ``ping``: the client's own ``t_ms``, so it can compute the round trip."""

    TYPE: ClassVar[str] = "pong"

    t_ms: float
    msg_id: MessageId | None = None


@dataclass(frozen=True, slots=True)
class Stats(WireMessage):
    """Once a second, what the server holds of this member's audio (for the latency panel).

    ``tick_ms_p50``/``tick_ms_p95``: the room's render-and-encode time per tick (one per
    ``frame_ms``);
    ``late_ticks``/``skipped_ticks``: ticks that started late or were skipped since the room
    opened; ``uplink_buffer_ms`` and ``uplink_target_ms``: your source's receive buffer now and
    its target; ``concealed``: your frames concealed so far (lost or late), of which
    ``concealed_fec`` were rebuilt from the next packet's in-band FEC and ``concealed_plc``
    continued by Opus packet-loss concealment (the rest faded to silence);
    ``downlink_queue_ms``: your mix waiting to be sent; ``uplink_wait_ms_p50``/``_p95``: how
    long your frames waited at the server, from arrival to the tick that mixed them (receive
    buffer and wait for the tick); ``downlink_wait_ms_p95``: how long your mixed packets waited
    between their tick and being sent. A path's server-added delay is the speaker's uplink
    wait plus the tick plus the listener's downlink wait. ``sources_cap``: when the room is
    overloaded, the most sources each mix holds (the most audible kept); 0 when all are.
    ``uplink_tick_wait_ms_p50``: of your frames' wait, the part spent waiting for the first
    tick after arriving (the rest is the receive buffer's depth); ``decode_ms_p50``,
    ``render_ms_p50``, ``encode_ms_p50``: the tick's parts (decoding and concealing the
    sources, rendering every mix, encoding them).
    """

    TYPE: ClassVar[str] = "stats"

    tick_ms_p50: float
    tick_ms_p95: float
    late_ticks: int
    skipped_ticks: int
    uplink_buffer_ms: float
    uplink_target_ms: float
    concealed: int
    downlink_queue_ms: float
    uplink_wait_ms_p50: float = 0.0
    uplink_wait_ms_p95: float = 0.0
    downlink_wait_ms_p95: float = 0.0
    sources_cap: int = 0
    concealed_fec: int = 0
    concealed_plc: int = 0
    uplink_tick_wait_ms_p50: float = 0.0
    decode_ms_p50: float = 0.0
    render_ms_p50: float = 0.0
    encode_ms_p50: float = 0.0


@dataclass(frozen=True, slots=True)
class ServerClosing(WireMessage):
    """The server is shutting down or restarting: it closes this connection next (1001,
    going away). ``reason`` is for people; ``retry_after_s`` is when to join again (seconds),
    with the seat token, to get the same seat, place and personal mix back."""

    TYPE: ClassVar[str] = "server_closing"

    reason: str
    retry_after_s: float


@dataclass(frozen=True, slots=True)
class FrameChanged(WireMessage):
    """The room's admin (``by``: their member id) set the room's frame to ``frame_ms``: the
    server has closed this member's media connection, and the member makes a new one (a new
    ``offer``, as after ``joined``) at the new frame. Its seat, place and mix stay."""

    TYPE: ClassVar[str] = "frame_changed"

    frame_ms: float
    by: str


ServerMessage = (Joined | RoomState | Offer | Answer | Ice | ErrorMessage | Pong | Stats
                 | ServerClosing | Rendering | HrtfUploaded | Recording | Recordings
                 | FrameChanged)

#: Every server→client message type.
SERVER_MESSAGE_TYPES: tuple[str, ...] = tuple(
    cls.TYPE for cls in (Joined, RoomState, Offer, Answer, Ice, ErrorMessage, Pong, Stats,
                         ServerClosing, Rendering, HrtfUploaded, Recording, Recordings,
                         ChatLine, ChatHistory, Levels, AiHears, FrameChanged)
)
