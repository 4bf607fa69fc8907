"""Client→server messages: frozen dataclasses, and :func:`parse_message` to build them.

Validation is exact: a known ``type``, no unknown field, every required field, JSON types taken
literally, lengths, character sets and finite numeric ranges from :mod:`signaling.limits`.
Optional fields may be left out or sent as ``null``. Every message may carry a client ``id``
(a string of up to 64 printable characters, or an integer JavaScript holds exactly) that the
server echoes in its reply or error.

The connection messages live here; the stage and personal-mix messages (SOFA coordinates:
x ahead, y to the left, z up, metres; angles in degrees) live in
:mod:`signaling.stage_messages`, the rendering and HRTF upload ones in
:mod:`signaling.render_messages`; both are re-exported here.

The same dataclasses serve the other direction where the shape is shared (``offer``,
``answer``, ``ice``): :func:`signaling.wire.encode` writes any of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from signaling import limits
from signaling.admin_messages import Kick, LockRoom, SetFrame
from signaling.ai_messages import AiAdd, AiRemove, AiUpdate
from signaling.errors import ErrorCode, MessageId, ProtocolError
from signaling.fields import Reader, json_type
from signaling.metronome_messages import HearMetronome, SetMetronome
from signaling.recording_messages import ListRecordings, StartRecording, StopRecording
from signaling.render_messages import HrtfUpload, SetRendering, SetRoomAcoustics
from signaling.social_messages import MuteSelf, SendChat
from signaling.stage_messages import HeadPose, MixOverride, MixReset, MoveSource, TurnSource
from signaling.wire import WireMessage, decode, describe

_SDP_START_RE = re.compile(r"v=0\r?\n")
_SDP_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _sdp(r: Reader) -> str:
    sdp = r.obj.get("sdp")
    if not isinstance(sdp, str):
        raise r.fail(ErrorCode.BAD_TYPE, "sdp", f"must be a string, got {json_type(sdp)}")
    try:
        size = len(sdp.encode("utf-8"))
    except UnicodeEncodeError:
        raise r.fail(ErrorCode.BAD_SDP, "sdp", "must be valid UTF-8 text") from None
    if size > limits.MAX_SDP_BYTES:
        raise r.fail(ErrorCode.TOO_LARGE, "sdp",
                     f"may be at most {limits.MAX_SDP_BYTES} bytes, got {size}")
    if not _SDP_START_RE.match(sdp):
        raise r.fail(ErrorCode.BAD_SDP, "sdp",
                     f"must be an SDP description starting with 'v=0' and a line break "
                     f"(RFC 8866, section 5), got {describe(sdp)}")
    if _SDP_CONTROL_RE.search(sdp):
        raise r.fail(ErrorCode.BAD_SDP, "sdp", "must not contain control characters")
    return sdp


@dataclass(frozen=True, slots=True)
class Join(WireMessage):
    """Enter a room (created on first join). ``seat`` rejoins the seat a ``joined`` handed out."""

    TYPE: ClassVar[str] = "join"
    REQUIRED: ClassVar[tuple[str, ...]] = ("room", "name")
    OPTIONAL: ClassVar[tuple[str, ...]] = ("instrument", "seat", "token")

    room: str
    name: str
    instrument: str = ""
    seat: str | None = None
    token: str | None = None
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> Join:
        return cls(
            room=r.string("room", max_chars=64, pattern=limits.ROOM_RE,
                          expected="1 to 64 letters, digits, '-' or '_'"),
            name=r.string("name", max_chars=limits.MAX_NAME_CHARS, printable=True, strip=True),
            instrument=r.string("instrument", min_chars=0, max_chars=limits.MAX_INSTRUMENT_CHARS,
                                printable=True, strip=True) if r.present("instrument") else "",
            seat=r.string("seat", max_chars=128, pattern=limits.SEAT_RE,
                          expected="a seat token from 'joined'") if r.present("seat") else None,
            token=r.string("token", max_chars=1024, pattern=limits.TOKEN_RE,
                           expected="a room access token") if r.present("token") else None,
            msg_id=msg_id,
        )


@dataclass(frozen=True, slots=True)
class Offer(WireMessage):
    """An SDP offer (RFC 8829): the client's to start, the server's to renegotiate."""

    TYPE: ClassVar[str] = "offer"
    REQUIRED: ClassVar[tuple[str, ...]] = ("sdp",)
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    sdp: str
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> Offer:
        return cls(sdp=_sdp(r), msg_id=msg_id)


@dataclass(frozen=True, slots=True)
class Answer(WireMessage):
    """An SDP answer to the other side's offer."""

    TYPE: ClassVar[str] = "answer"
    REQUIRED: ClassVar[tuple[str, ...]] = ("sdp",)
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    sdp: str
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> Answer:
        return cls(sdp=_sdp(r), msg_id=msg_id)


@dataclass(frozen=True, slots=True)
class Ice(WireMessage):
    """A trickled ICE candidate, shaped like the browser's ``RTCIceCandidate.toJSON()``.

    ``candidate`` is ``None`` at the end of candidates (sent as ``null`` or ``""``).
    """

    TYPE: ClassVar[str] = "ice"
    REQUIRED: ClassVar[tuple[str, ...]] = ("candidate",)
    OPTIONAL: ClassVar[tuple[str, ...]] = ("sdpMid", "sdpMLineIndex", "usernameFragment")
    WIRE_NAMES: ClassVar[dict[str, str]] = {
        "sdp_mid": "sdpMid", "sdp_mline_index": "sdpMLineIndex",
        "username_fragment": "usernameFragment",
    }
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"candidate"})

    candidate: str | None
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None
    username_fragment: str | None = None
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> Ice:
        def ascii_field(field: str, max_chars: int, min_chars: int = 1) -> str | None:
            if not r.present(field):
                return None
            return r.string(field, min_chars=min_chars, max_chars=max_chars,
                            pattern=limits.PRINTABLE_ASCII_RE, expected="printable ASCII")

        candidate = ascii_field("candidate", limits.MAX_CANDIDATE_CHARS, min_chars=0) or None
        if candidate is not None and not candidate.startswith("candidate:"):
            raise r.fail(ErrorCode.BAD_VALUE, "candidate",
                         f"must start with 'candidate:' (RFC 8839, section 5.1), "
                         f"got {describe(candidate)}")
        mid = ascii_field("sdpMid", limits.MAX_SDP_MID_CHARS)
        index = (r.integer("sdpMLineIndex", 0, limits.MAX_MLINE_INDEX)
                 if r.present("sdpMLineIndex") else None)
        if candidate is not None and mid is None and index is None:
            raise ProtocolError(ErrorCode.MISSING_FIELD,
                                "'ice' with a candidate needs 'sdpMid' or 'sdpMLineIndex'")
        return cls(candidate=candidate, sdp_mid=mid, sdp_mline_index=index,
                   username_fragment=ascii_field("usernameFragment", limits.MAX_UFRAG_CHARS),
                   msg_id=msg_id)


@dataclass(frozen=True, slots=True)
class Leave(WireMessage):
    """Leave the room; the connection may join again."""

    TYPE: ClassVar[str] = "leave"
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> Leave:
        return cls(msg_id=msg_id)


@dataclass(frozen=True, slots=True)
class Ping(WireMessage):
    """Round-trip probe: the server answers ``pong`` with the same ``t_ms`` at once."""

    TYPE: ClassVar[str] = "ping"
    REQUIRED: ClassVar[tuple[str, ...]] = ("t_ms",)
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    t_ms: float
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> Ping:
        return cls(t_ms=r.number("t_ms", -limits.MAX_SAFE_INTEGER, limits.MAX_SAFE_INTEGER),
                   msg_id=msg_id)


ClientMessage = (Join | Offer | Answer | Ice | Leave | MoveSource | TurnSource | HeadPose
                 | MixOverride | MixReset | Ping | AiAdd | AiUpdate | AiRemove | Kick | LockRoom
                 | SetRendering | SetRoomAcoustics | HrtfUpload | StartRecording | StopRecording
                 | ListRecordings | SendChat | MuteSelf | SetMetronome | HearMetronome | SetFrame)

#: Every client→server message class by its ``type``.
CLIENT_MESSAGES: dict[str, type[ClientMessage]] = {
    cls.TYPE: cls for cls in (Join, Offer, Answer, Ice, Leave, MoveSource, TurnSource, HeadPose,
                              MixOverride, MixReset, Ping, AiAdd, AiUpdate, AiRemove, Kick,
                              LockRoom, SetRendering, SetRoomAcoustics, HrtfUpload,
                              StartRecording, StopRecording, ListRecordings, SendChat,
                              MuteSelf, SetMetronome, HearMetronome, SetFrame)
}
_SERVER_ONLY = frozenset({"joined", "room_state", "error", "pong", "stats",
                          "server_closing", "rendering", "hrtf_uploaded", "recording",
                          "recordings", "chat_history", "levels", "ai_hears",
                          "frame_changed"})


def _read_id(obj: dict[str, Any]) -> MessageId | None:
    value = obj.get("id")
    if value is None:
        return None
    if isinstance(value, str):
        if 1 <= len(value) <= limits.MAX_CLIENT_ID_CHARS and value.isprintable():
            return value
        raise ProtocolError(ErrorCode.BAD_VALUE,
                            f"'id' must have 1 to {limits.MAX_CLIENT_ID_CHARS} printable "
                            f"characters, got {describe(value)}")
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) <= limits.MAX_SAFE_INTEGER:
            return value
        raise ProtocolError(ErrorCode.OUT_OF_RANGE,
                            f"'id' must be an integer within +/-(2**53 - 1), got {describe(value)}")
    raise ProtocolError(ErrorCode.BAD_TYPE,
                        f"'id' must be a string or an integer, got {json_type(value)}")


def parse_object(obj: Any) -> ClientMessage:
    """Validate one decoded JSON value as a client message.

    Raises
    ------
    ProtocolError
        With the message's client ``id`` attached when the ``id`` itself was readable.
    """
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.NOT_AN_OBJECT,
                            f'a message must be a JSON object like {{"type": "ping", '
                            f'"t_ms": 0}}, got {json_type(obj)}')
    msg_id = _read_id(obj)
    try:
        message_type = obj.get("type")
        if message_type is None:
            raise ProtocolError(ErrorCode.MISSING_FIELD, "every message needs a 'type'")
        if not isinstance(message_type, str):
            raise ProtocolError(ErrorCode.BAD_TYPE,
                                f"'type' must be a string, got {json_type(message_type)}")
        cls = CLIENT_MESSAGES.get(message_type)
        if cls is None:
            hint = ("is sent by the server, not by clients" if message_type in _SERVER_ONLY
                    else f"is not a message type; known: {', '.join(CLIENT_MESSAGES)}")
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"{describe(message_type)} {hint}")
        allowed = {"type", "id", *cls.REQUIRED, *cls.OPTIONAL}
        unknown = sorted(obj.keys() - allowed)
        if unknown:
            raise ProtocolError(ErrorCode.UNKNOWN_FIELD,
                                f"{message_type!r} has no field {describe(unknown[0])}; "
                                f"its fields are {', '.join(sorted(allowed))}")
        missing = [field for field in cls.REQUIRED if field not in obj]
        if missing:
            raise ProtocolError(ErrorCode.MISSING_FIELD,
                                f"{message_type!r} needs the field {missing[0]!r}")
        return cls.read(Reader(obj, message_type), msg_id)
    except ProtocolError as exc:
        exc.msg_id = msg_id
        raise


def parse_message(text: str) -> ClientMessage:
    """Decode and validate one client message from a WebSocket text frame.

    Raises
    ------
    ProtocolError
        For anything the protocol refuses; never anything else.
    """
    return parse_object(decode(text))
