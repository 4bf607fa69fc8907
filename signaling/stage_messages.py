"""Client→server stage and personal-mix messages: move, turn, head pose, overrides, reset.

Coordinates follow SOFA: x ahead, y to the left, z up, in metres. Yaw turns left (positive)
about z, pitch raises the nose, roll raises the left ear; all angles in degrees. A source's
facing uses the same yaw and pitch: yaw 0 faces +x, yaw 90 faces +y.

:func:`signaling.messages.parse_message` builds these; they are re-exported from there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from signaling import limits
from signaling.errors import ErrorCode, MessageId, ProtocolError
from signaling.fields import Reader
from signaling.wire import WireMessage

Vec3 = tuple[float, float, float]
Quaternion = tuple[float, float, float, float]


def _source(r: Reader, field: str = "source") -> str:
    return r.string(field, max_chars=64, pattern=limits.SOURCE_ID_RE,
                    expected="1 to 64 letters, digits, '-' or '_'")


def _position(r: Reader) -> Vec3:
    return r.vector("position_m", 3, limits.MAX_COORDINATE_M)  # type: ignore[return-value]


def _angle(r: Reader, field: str) -> float:
    return r.number(field, -limits.MAX_ANGLE_DEG, limits.MAX_ANGLE_DEG)


@dataclass(frozen=True, slots=True)
class MoveSource(WireMessage):
    """Move a source on the room's shared stage, for everyone."""

    TYPE: ClassVar[str] = "move_source"
    REQUIRED: ClassVar[tuple[str, ...]] = ("source", "position_m")
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    source: str
    position_m: Vec3
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> MoveSource:
        return cls(source=_source(r), position_m=_position(r), msg_id=msg_id)


@dataclass(frozen=True, slots=True)
class TurnSource(WireMessage):
    """Turn a source on the shared stage: yaw 0 faces +x, 90 faces +y (left)."""

    TYPE: ClassVar[str] = "turn_source"
    REQUIRED: ClassVar[tuple[str, ...]] = ("source", "yaw_deg")
    OPTIONAL: ClassVar[tuple[str, ...]] = ("pitch_deg",)

    source: str
    yaw_deg: float
    pitch_deg: float = 0.0
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> TurnSource:
        return cls(source=_source(r), yaw_deg=_angle(r, "yaw_deg"),
                   pitch_deg=_angle(r, "pitch_deg") if r.present("pitch_deg") else 0.0,
                   msg_id=msg_id)


@dataclass(frozen=True, slots=True)
class HeadPose(WireMessage):
    """The listener's head orientation: yaw/pitch/roll degrees, or a unit quaternion (w, x, y, z).

    Exactly one form is set: either the three angles (pitch and roll default to 0) or
    ``quaternion`` (normalised here), the other form's fields being ``None``.
    """

    TYPE: ClassVar[str] = "head_pose"
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    OPTIONAL: ClassVar[tuple[str, ...]] = ("yaw_deg", "pitch_deg", "roll_deg", "quaternion")

    yaw_deg: float | None = None
    pitch_deg: float | None = None
    roll_deg: float | None = None
    quaternion: Quaternion | None = None
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> HeadPose:
        angles = [f for f in ("yaw_deg", "pitch_deg", "roll_deg") if r.present(f)]
        if r.present("quaternion"):
            if angles:
                raise r.fail(ErrorCode.BAD_VALUE, "quaternion",
                             f"cannot be sent with {angles[0]!r}: send one form or the other")
            q = r.vector("quaternion", 4, 1.0 + limits.QUATERNION_NORM_TOLERANCE)
            norm = math.sqrt(sum(c * c for c in q))
            if abs(norm - 1.0) > limits.QUATERNION_NORM_TOLERANCE:
                raise r.fail(ErrorCode.OUT_OF_RANGE, "quaternion",
                             f"must be a unit quaternion [w, x, y, z], got norm {norm:.4g}")
            return cls(quaternion=tuple(c / norm for c in q), msg_id=msg_id)  # type: ignore[arg-type]
        if "yaw_deg" not in angles:
            raise ProtocolError(ErrorCode.MISSING_FIELD,
                                "'head_pose' needs 'yaw_deg' (with optional 'pitch_deg' and "
                                "'roll_deg') or 'quaternion'")
        return cls(yaw_deg=_angle(r, "yaw_deg"),
                   pitch_deg=_angle(r, "pitch_deg") if r.present("pitch_deg") else 0.0,
                   roll_deg=_angle(r, "roll_deg") if r.present("roll_deg") else 0.0,
                   msg_id=msg_id)


@dataclass(frozen=True, slots=True)
class MixOverride(WireMessage):
    """Change one source in the sender's own mix only: position, linear gain and/or mute."""

    TYPE: ClassVar[str] = "mix_override"
    REQUIRED: ClassVar[tuple[str, ...]] = ("source",)
    OPTIONAL: ClassVar[tuple[str, ...]] = ("position_m", "gain", "mute")

    source: str
    position_m: Vec3 | None = None
    gain: float | None = None
    mute: bool | None = None
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> MixOverride:
        source = _source(r)
        if not any(r.present(f) for f in cls.OPTIONAL):
            raise ProtocolError(ErrorCode.MISSING_FIELD,
                                "'mix_override' needs at least one of 'position_m', 'gain', 'mute'")
        return cls(source=source,
                   position_m=_position(r) if r.present("position_m") else None,
                   gain=r.number("gain", 0.0, limits.MAX_GAIN) if r.present("gain") else None,
                   mute=r.boolean("mute") if r.present("mute") else None,
                   msg_id=msg_id)


@dataclass(frozen=True, slots=True)
class MixReset(WireMessage):
    """Put one source (``source``), or every source (``"all": true``), back to the stage layout.

    ``source`` is ``None`` when every source is reset.
    """

    TYPE: ClassVar[str] = "mix_reset"
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    OPTIONAL: ClassVar[tuple[str, ...]] = ("source", "all")

    source: str | None = None
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> MixReset:
        if r.present("source") and r.present("all"):
            raise ProtocolError(ErrorCode.BAD_VALUE,
                                "'mix_reset' takes 'source' or \"all\": true, not both")
        if not r.present("source") and not r.present("all"):
            raise ProtocolError(ErrorCode.MISSING_FIELD,
                                "'mix_reset' needs 'source' (one source) or \"all\": true")
        if r.present("all"):
            if not r.boolean("all"):
                raise r.fail(ErrorCode.BAD_VALUE, "all",
                             "must be true; to reset one source send 'source' instead")
            return cls(msg_id=msg_id)
        return cls(source=_source(r), msg_id=msg_id)

    def to_dict(self) -> dict[str, Any]:
        out = WireMessage.to_dict(self)
        if self.source is None:
            out["all"] = True
        return out
