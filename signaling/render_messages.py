"""Rendering messages: what a listener hears through (HRTF set, room acoustics, reference mode),
the room's acoustics, and uploading one's own HRTF set as a SOFA file.

Client→server: ``set_rendering`` (personal), ``set_room_acoustics`` (the room's admin: the grant
is checked by the server, not here) and ``hrtf_upload``, which announces a file whose bytes then
follow as binary WebSocket frames (:class:`HrtfChunk`, each at most
:data:`~signaling.limits.MAX_UPLOAD_CHUNK_BYTES`). Server→client: ``rendering`` (the listener's
settings now), ``hrtf_uploaded`` (an upload parsed and taken) and :class:`RoomAcoustics`, the
``acoustics`` field of ``room_state``.

The client messages are re-exported by :mod:`signaling.messages`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from signaling import limits
from signaling.errors import ErrorCode, MessageId, ProtocolError
from signaling.fields import Reader
from signaling.wire import WireMessage, describe

#: ``set_room_acoustics`` presets: no acoustics, a named room, or a shoebox set by hand.
ROOM_CHOICES = ("off", *limits.ROOM_PRESETS, "custom")
_ROOM_FIELDS = ("dims_m", "rt60_s", "wet", "max_order")


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.1f} MiB"


@dataclass(frozen=True, slots=True)
class SetRendering(WireMessage):
    """How the sender hears the room: HRTF set, room acoustics on or off, reference mode.

    Fields left out keep their current value. ``hrtf`` is ``kemar`` (MIT KEMAR),
    ``spherical-head`` (the analytic head, of radius ``head_radius_m``) or ``sofa:<digest>``,
    a set uploaded to this server (the digest ``hrtf_uploaded`` gave). ``reference`` renders
    plain constant-power stereo panning without HRTF, for A/B comparison.
    """

    TYPE: ClassVar[str] = "set_rendering"
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    OPTIONAL: ClassVar[tuple[str, ...]] = ("hrtf", "head_radius_m", "acoustics", "reference")

    hrtf: str | None = None
    head_radius_m: float | None = None
    acoustics: bool | None = None
    reference: bool | None = None
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> SetRendering:
        if not any(r.present(f) for f in cls.OPTIONAL):
            raise ProtocolError(ErrorCode.MISSING_FIELD,
                                "'set_rendering' needs at least one of 'hrtf', "
                                "'head_radius_m', 'acoustics', 'reference'")
        hrtf = (r.string("hrtf", max_chars=70, pattern=limits.HRTF_RE,
                         expected="'kemar', 'spherical-head' or 'sofa:' and the 64 lowercase "
                                  "hex digits 'hrtf_uploaded' gave")
                if r.present("hrtf") else None)
        radius = None
        if r.present("head_radius_m"):
            if hrtf != "spherical-head":
                raise r.fail(ErrorCode.BAD_VALUE, "head_radius_m",
                             "is the spherical head's radius: send it with "
                             "\"hrtf\": \"spherical-head\"")
            radius = r.number("head_radius_m", limits.MIN_HEAD_RADIUS_M,
                              limits.MAX_HEAD_RADIUS_M)
        return cls(hrtf=hrtf, head_radius_m=radius,
                   acoustics=r.boolean("acoustics") if r.present("acoustics") else None,
                   reference=r.boolean("reference") if r.present("reference") else None,
                   msg_id=msg_id)


@dataclass(frozen=True, slots=True)
class SetRoomAcoustics(WireMessage):
    """The room's acoustics, for everyone (the ``admin`` grant): off, a preset, or by hand.

    A preset's own values may be changed: ``dims_m`` (the shoebox's length, width and height,
    metres), ``rt60_s`` (reverberation time, seconds), ``wet`` (0 dry to 1 all reverb) and
    ``max_order`` (image-source reflection order). ``custom`` starts from none: it needs
    ``dims_m`` and ``rt60_s``. ``off`` takes no other field.
    """

    TYPE: ClassVar[str] = "set_room_acoustics"
    REQUIRED: ClassVar[tuple[str, ...]] = ("preset",)
    OPTIONAL: ClassVar[tuple[str, ...]] = _ROOM_FIELDS

    preset: str
    dims_m: tuple[float, float, float] | None = None
    rt60_s: float | None = None
    wet: float | None = None
    max_order: int | None = None
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> SetRoomAcoustics:
        preset = r.string("preset", max_chars=32, expected=f"one of {', '.join(ROOM_CHOICES)}")
        if preset not in ROOM_CHOICES:
            raise r.fail(ErrorCode.BAD_VALUE, "preset",
                         f"must be one of {', '.join(ROOM_CHOICES)}, got {describe(preset)}")
        given = [f for f in _ROOM_FIELDS if r.present(f)]
        if preset == "off" and given:
            raise r.fail(ErrorCode.BAD_VALUE, given[0],
                         "cannot be set with \"preset\": \"off\" (no acoustics)")
        if preset == "custom":
            for field in ("dims_m", "rt60_s"):
                if field not in given:
                    raise ProtocolError(ErrorCode.MISSING_FIELD,
                                        f"'set_room_acoustics' with \"preset\": \"custom\" "
                                        f"needs {field!r}")
        dims = None
        if r.present("dims_m"):
            dims = r.vector("dims_m", 3, limits.MAX_ROOM_SIDE_M)
            for i, side in enumerate(dims):
                if side < limits.MIN_ROOM_SIDE_M:
                    raise r.fail(ErrorCode.OUT_OF_RANGE, f"dims_m[{i}]",
                                 f"must be a room side from {limits.MIN_ROOM_SIDE_M:g} to "
                                 f"{limits.MAX_ROOM_SIDE_M:g} m, got {side:g}")
        return cls(preset=preset, dims_m=dims,  # type: ignore[arg-type]
                   rt60_s=(r.number("rt60_s", limits.MIN_RT60_S, limits.MAX_RT60_S)
                           if r.present("rt60_s") else None),
                   wet=r.number("wet", 0.0, 1.0) if r.present("wet") else None,
                   max_order=(r.integer("max_order", 0, limits.MAX_REFLECTION_ORDER)
                              if r.present("max_order") else None),
                   msg_id=msg_id)

    def settings(self) -> dict:
        """The values given, as ``dsp.room_model.room_model`` takes them (preset aside)."""
        return {f: getattr(self, f) for f in _ROOM_FIELDS if getattr(self, f) is not None}


@dataclass(frozen=True, slots=True)
class HrtfUpload(WireMessage):
    """Announce an HRTF set upload: a SOFA file of ``size`` bytes, sent next as binary frames.

    ``name`` is the file's name, for people. One upload at a time per connection; larger than
    :data:`~signaling.limits.MAX_HRTF_UPLOAD_BYTES` is refused here, before any byte is sent.
    """

    TYPE: ClassVar[str] = "hrtf_upload"
    REQUIRED: ClassVar[tuple[str, ...]] = ("name", "size")
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    name: str
    size: int
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> HrtfUpload:
        name = r.string("name", max_chars=limits.MAX_UPLOAD_NAME_CHARS, printable=True,
                        strip=True)
        size = r.integer("size", 1, limits.MAX_SAFE_INTEGER)
        if size > limits.MAX_HRTF_UPLOAD_BYTES:
            raise r.fail(ErrorCode.OUT_OF_RANGE, "size",
                         f"says the file has {size} bytes ({_mib(size)}); an HRTF file may "
                         f"have at most {limits.MAX_HRTF_UPLOAD_BYTES} bytes "
                         f"({_mib(limits.MAX_HRTF_UPLOAD_BYTES)})")
        return cls(name=name, size=size, msg_id=msg_id)


@dataclass(frozen=True, slots=True)
class HrtfChunk:
    """Bytes of the open upload: one binary frame, handed on by the session (not JSON)."""

    data: bytes
    msg_id: MessageId | None = None
    TYPE: ClassVar[str] = "hrtf_upload (binary frame)"


# server → client ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RoomAcoustics(WireMessage):
    """A room's acoustics as ``room_state`` shows them: preset ``name`` (or ``custom``),
    shoebox ``dims_m`` (metres), ``rt60_s`` (seconds), image-source ``max_order`` and
    ``wet`` (0–1)."""

    name: str
    dims_m: tuple[float, float, float]
    rt60_s: float
    max_order: int
    wet: float

    @classmethod
    def from_description(cls, described: dict) -> RoomAcoustics:
        """From ``RoomModel.describe()``."""
        return cls(name=str(described["name"]),
                   dims_m=tuple(round(float(v), 4) for v in described["dims_m"]),  # type: ignore[arg-type]
                   rt60_s=round(float(described["rt60_s"]), 4),
                   max_order=int(described["max_order"]),
                   wet=round(float(described["wet"]), 4))


@dataclass(frozen=True, slots=True)
class Rendering(WireMessage):
    """How this listener hears now: the reply to ``set_rendering``, also sent after ``joined``.

    ``hrtf`` as ``set_rendering`` names it, ``hrtf_name`` for people, ``head_radius_m`` the
    spherical head's radius (``null`` for other sets), ``acoustics`` whether this listener hears
    the room's acoustics, ``reference`` whether the reference (no HRTF) rendering is on.
    """

    TYPE: ClassVar[str] = "rendering"
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"head_radius_m"})

    hrtf: str
    hrtf_name: str
    head_radius_m: float | None
    acoustics: bool
    reference: bool
    msg_id: MessageId | None = None


@dataclass(frozen=True, slots=True)
class HrtfUploaded(WireMessage):
    """An uploaded SOFA file was parsed and is now the listener's HRTF set: its ``digest``
    (``"hrtf": "sofa:<digest>"`` chooses it again), the file's ``name``, its measured
    ``directions`` and its length in ``taps`` at 48 kHz."""

    TYPE: ClassVar[str] = "hrtf_uploaded"

    digest: str
    name: str
    directions: int
    taps: int
    msg_id: MessageId | None = None
