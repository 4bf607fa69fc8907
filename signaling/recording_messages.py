"""Session recording messages: a room's admin starts and stops recording; members list the
room's finished recordings and download their files over HTTP
(``GET /recordings/ROOM/ID/FILE``, with the room's access token where tokens are used).

Client→server: ``start_recording`` (optional ``binaural_of``: also record that member's
binaural mix) and ``stop_recording``, both the ``admin`` grant's (checked by the server, not
here: these parse alike for everyone), and ``list_recordings`` (any member). Server→client:
``recording`` (the reply to a start or a stop: the recording as it stands),
``recordings`` (the reply to a list) and :class:`RecordingNow`, the ``recording`` field of
``room_state`` while the room is being recorded.

The client messages are re-exported by :mod:`signaling.messages`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from signaling import limits
from signaling.errors import MessageId
from signaling.fields import Reader
from signaling.wire import WireMessage

#: What a recording's ``status`` says: being written now, stopped and closed, cut short (the
#: server died while writing it: its files hold what was written up to about a second before),
#: or stopped early by a disk that failed (its files hold what was written until then).
RECORDING_STATUSES = ("recording", "finished", "interrupted", "failed")


@dataclass(frozen=True, slots=True)
class StartRecording(WireMessage):
    """Start recording the room (the ``admin`` grant): every member's own microphone to its
    own FLAC file, the AI musician's notes as MIDI, the stage over time as JSON Lines and,
    with ``binaural_of``, that member's binaural mix as a stereo FLAC file."""

    TYPE: ClassVar[str] = "start_recording"
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    OPTIONAL: ClassVar[tuple[str, ...]] = ("binaural_of",)

    binaural_of: str | None = None
    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> StartRecording:
        return cls(binaural_of=(r.string("binaural_of", max_chars=64, pattern=limits.SOURCE_ID_RE,
                                         expected="a member id from 'room_state'")
                                if r.present("binaural_of") else None),
                   msg_id=msg_id)


@dataclass(frozen=True, slots=True)
class StopRecording(WireMessage):
    """Stop the room's recording (the ``admin`` grant): its files are closed and listed."""

    TYPE: ClassVar[str] = "stop_recording"
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> StopRecording:
        return cls(msg_id=msg_id)


@dataclass(frozen=True, slots=True)
class ListRecordings(WireMessage):
    """Ask for the room's finished (and interrupted) recordings, newest first."""

    TYPE: ClassVar[str] = "list_recordings"
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    msg_id: MessageId | None = None

    @classmethod
    def read(cls, r: Reader, msg_id: MessageId | None) -> ListRecordings:
        return cls(msg_id=msg_id)


# server → client ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RecordingFile(WireMessage):
    """One file of a recording: its ``name``, its size in bytes and where to download it
    (``url``: add ``?token=…`` where the server needs tokens)."""

    name: str
    size_bytes: int
    url: str


@dataclass(frozen=True, slots=True)
class RecordingInfo(WireMessage):
    """A recording: its ``id``, when it started (``started_at``, Unix seconds), how long it is
    (``duration_s``, room-clock time), its ``status`` (:data:`RECORDING_STATUSES`), the 20 ms
    frames the writer could not keep up with (``dropped_frames``: written as silence) and its
    ``files`` (none while it is being recorded)."""

    id: str
    started_at: float
    duration_s: float
    status: str
    dropped_frames: int
    files: tuple[RecordingFile, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RecordingInfo:
        """From its wire form (``to_dict()``)."""
        return cls(id=d["id"], started_at=d["started_at"], duration_s=d["duration_s"],
                   status=d["status"], dropped_frames=d["dropped_frames"],
                   files=tuple(RecordingFile(**f) for f in d.get("files", ())))


@dataclass(frozen=True, slots=True)
class RecordingNow(WireMessage):
    """``room_state``'s ``recording`` while the room is recorded (absent otherwise): the
    recording's ``id``, ``started_at`` (Unix seconds) and whose mix is recorded binaurally
    (``binaural_of``, absent when nobody's)."""

    id: str
    started_at: float
    active: bool = True
    binaural_of: str | None = None


@dataclass(frozen=True, slots=True)
class Recording(WireMessage):
    """The reply to ``start_recording`` and ``stop_recording``: whether the room is being
    recorded now (``active``) and the recording started or stopped (``null`` after a stop
    when nothing was being recorded). The ``id`` is the message's that caused it."""

    TYPE: ClassVar[str] = "recording"
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"recording"})

    active: bool
    recording: RecordingInfo | None
    msg_id: MessageId | None = None


@dataclass(frozen=True, slots=True)
class Recordings(WireMessage):
    """The reply to ``list_recordings``: the ``room``'s recordings that are not being written,
    newest first (at most 50)."""

    TYPE: ClassVar[str] = "recordings"

    room: str
    recordings: tuple[RecordingInfo, ...]
    msg_id: MessageId | None = None
