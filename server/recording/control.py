"""The rooms' session recordings: the shell between the recording messages (docs/PROTOCOL.md)
and the writer (:mod:`server.recording.capture`), and the folder the recordings live in.

On disk, ``ROOT/ROOM/ID/`` is one recording (``ID`` is its start time, UTC, and 4 hex digits):

- ``NAME-MEMBER.flac``: one per member heard, their own microphone as the server decoded it
  (mono, 48 kHz, 16-bit), every file starting at the recording's first tick;
- ``binaural-NAME-MEMBER.flac``: that member's binaural mix (stereo), when the start asked;
- ``ai.mid``: the AI musician's notes (time 0 is the recording's first sample), when it played;
- ``layout.jsonl``: the stage at the start and after every change, one JSON object per line
  with its room ``tick``, ``sample`` (in the files) and ``time_s``;
- ``recording.json``: the manifest: id, room, who started it, the room ticks it spans, the
  tracks, the frames dropped, its status.

Members list a room's recordings with ``list_recordings`` and download the files over HTTP
(``GET /recordings/ROOM/ID/FILE``; the token rules of ``/ai/ROOM.mid``). Disk work (making the
folder, closing the files, listing, reading a download) runs on worker threads, never on the
loop.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hrtf.constants import SAMPLE_RATE, frame_samples
from server.recording.capture import MANIFEST, RecordingWriter, RoomRecording
from server.rooms.store import NO_STATE, default_state_path
from signaling import limits
from signaling.errors import ErrorCode
from signaling.recording_messages import (
    ListRecordings,
    Recording,
    RecordingFile,
    RecordingInfo,
    RecordingNow,
    StartRecording,
)
from signaling.recording_messages import Recordings as RecordingList
from signaling.server_messages import ErrorMessage

if TYPE_CHECKING:
    from collections.abc import Callable

    from server.rooms.live import LiveRoom, Participant

log = logging.getLogger(__name__)

ID_RE = re.compile(r"\d{8}-\d{6}-[0-9a-f]{4}")
FILE_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
#: ``list_recordings`` answers with at most this many, newest first.
MAX_LISTED = 50
#: How long a stop waits for the writer to close its files (seconds); past it the files stay
#: as last synced (readable up to about a second before).
STOP_TIMEOUT_S = 10.0
#: The largest file served over HTTP: the response is built in memory and copied once on the
#: event loop (about 10 ms per 100 MB). Larger ones stay in the server's recordings folder.
MAX_DOWNLOAD_BYTES = 128 * 2**20
CONTENT_TYPES = {".flac": "audio/flac", ".mid": "audio/midi", ".json": "application/json",
                 ".jsonl": "application/jsonl"}


class RecordingUnavailable(Exception):
    """Recording cannot start (or stop) now; the message says why, for people."""


class RecordingFileError(Exception):
    """A download refused: the HTTP ``status`` and a ``message`` for people."""

    def __init__(self, status: http.HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def recordings_root(spec: str | None, state_spec: str | None = None) -> Path | None:
    """The folder ``serve --recordings`` names: a path; ``none`` for no recordings; by default
    ``recordings/`` beside the ``--state`` file (or beside the default state file)."""
    if spec is not None:
        return None if spec.lower() == "none" else Path(spec).expanduser()
    if state_spec is not None and state_spec.lower() not in NO_STATE \
            and "://" not in state_spec:  # (a Redis URL keeps no files)
        return Path(state_spec).expanduser().parent / "recordings"
    return default_state_path().parent / "recordings"


def new_recording_id(now: float) -> str:
    """``20260101-120000-3fa2``: the start (UTC) sorts the folders; 4 hex digits keep two
    starts in one second apart."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + "-" + secrets.token_hex(2)


@dataclass
class _Active:
    recording: RoomRecording
    now: RecordingNow
    folder: Path


class Recordings:
    """Every room's recording on this process, and the recordings folder.

    Parameters
    ----------
    root : Path or None
        Where recordings go (made when the first one starts); None: recording is off.
    """

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._active: dict[str, _Active] = {}
        #: Rooms whose recording is starting or stopping (awaiting the disk).
        self._busy: set[str] = set()
        #: Writers closing their files: their drops count until they are closed.
        self._closing: set[RecordingWriter] = set()
        self._closed_dropped = 0

    def starting(self, live: LiveRoom) -> bool:
        """Whether ``live``'s recording is starting or stopping now (awaiting the disk)."""
        return live.room.name in self._busy

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def dropped_frames_total(self) -> int:
        """Frames lost by every recording since start (``/metrics``: never goes down)."""
        writers = [a.recording.writer for a in self._active.values()] + list(self._closing)
        return self._closed_dropped + sum(w.dropped_frames for w in writers)

    # the messages --------------------------------------------------------------------------

    async def handle(self, p: Participant, message, broadcast: Callable[[LiveRoom], None]
                     ) -> None:
        """Apply ``start_recording``, ``stop_recording`` (the grant is checked already) or
        ``list_recordings`` from ``p``; ``broadcast`` sends the room's new ``room_state``."""
        live = p.live
        if live is None or p.member_id is None:
            return
        name = live.room.name
        if isinstance(message, ListRecordings):
            active = self._active.get(name)
            infos = await asyncio.to_thread(self.list, name, active.now.id if active else None)
            p.session.send(RecordingList(name, tuple(infos), message.msg_id))
            return
        if name in self._busy or live.changing_frame:
            what = ("frame is changing" if live.changing_frame
                    else "recording is starting or stopping")
            p.session.send(ErrorMessage(ErrorCode.RECORDING_UNAVAILABLE, f"this room's {what}: "
                                        "try again in a moment", message.msg_id))
            return
        try:
            if isinstance(message, StartRecording):
                info, changed = await self.start(live, p.member_id, message.binaural_of)
            else:
                info = await self.stop(live, f"stopped by {p.member_id}")
                changed = info is not None
        except RecordingUnavailable as exc:
            p.session.send(ErrorMessage(ErrorCode.RECORDING_UNAVAILABLE, str(exc),
                                        message.msg_id))
            return
        p.session.send(Recording(isinstance(message, StartRecording), info, message.msg_id))
        if changed:
            broadcast(live)

    # starting and stopping ------------------------------------------------------------------

    async def start(self, live: LiveRoom, by: str, binaural_of: str | None = None
                    ) -> tuple[RecordingInfo, bool]:
        """Start recording ``live`` (or find it recording): its info, and whether it started.

        Raises
        ------
        RecordingUnavailable
            Recording is off on this server, or its folder cannot be made.
        UnknownMember
            ``binaural_of`` is no member of the room.
        """
        room = live.room
        if self.root is None:
            raise RecordingUnavailable("this server keeps no recordings (it was started with "
                                       "--recordings none)")
        active = self._active.get(room.name)
        if active is not None:
            return self._info_now(active), False
        if binaural_of is not None:
            member = room.member(binaural_of)
            if room.is_ai[member.slot]:
                raise RecordingUnavailable(f"{binaural_of!r} is an AI musician: it has no ears "
                                           "and no mix to record; name a member who listens")
        now = time.time()
        rec_id = new_recording_id(now)
        folder = self.root / room.name / rec_id
        writer = RecordingWriter(folder, {"id": rec_id, "room": room.name,
                                          "started_at": round(now, 3), "started_by": by,
                                          "binaural_of": binaural_of},
                                 frame=frame_samples(room.frame_ms))
        self._busy.add(room.name)
        try:
            await asyncio.to_thread(self._open, folder, writer)
        except OSError as exc:
            raise RecordingUnavailable(f"the server cannot write the recording: "
                                       f"{exc.strerror or exc}") from None
        finally:
            self._busy.discard(room.name)
        active = self._active[room.name] = _Active(
            RoomRecording(writer, binaural_of), RecordingNow(rec_id, round(now, 3), True,
                                                             binaural_of), folder)
        live.runner.recording = active.recording
        room.recording = active.now
        room.version += 1
        log.info("room %s: recording %s started by %s%s", room.name, rec_id, by,
                 f" (binaural mix of {binaural_of})" if binaural_of else "")
        return self._info_now(active), True

    @staticmethod
    def _open(folder: Path, writer: RecordingWriter) -> None:
        folder.mkdir(parents=True)
        writer.start()

    async def stop(self, live: LiveRoom, ended_by: str) -> RecordingInfo | None:
        """Stop ``live``'s recording, if it has one: its files are closed (waiting at most
        :data:`STOP_TIMEOUT_S`) and its info returned; None when nothing was recorded."""
        room = live.room
        active = self._active.pop(room.name, None)
        if active is None:
            return None
        if live.runner.recording is active.recording:
            live.runner.recording = None
        room.recording = None
        room.version += 1
        writer = active.recording.writer
        notes = list(live.runner.ai_notes.events)  # the loop appends to it
        bpm = (live.ai_config or {}).get("bpm") or 120.0
        self._busy.add(room.name)
        self._closing.add(writer)
        try:
            manifest = await asyncio.wait_for(
                asyncio.to_thread(writer.finish, notes, bpm, ended_by), STOP_TIMEOUT_S)
        except TimeoutError:
            log.error("room %s: recording %s did not close in %.0f s; its files stay as last "
                      "written", room.name, active.now.id, STOP_TIMEOUT_S)
            manifest = writer.manifest
        finally:
            self._busy.discard(room.name)
            self._closing.discard(writer)
            self._closed_dropped += writer.dropped_frames
        info = await asyncio.to_thread(self._read_info, room.name, active.folder, manifest)
        log.info("room %s: recording %s %s", room.name, active.now.id, ended_by)
        return info

    def _info_now(self, active: _Active) -> RecordingInfo:
        writer = active.recording.writer
        start, last = writer.start_tick, writer.last_tick
        frames = last + 1 - start if start is not None and last is not None else 0
        return RecordingInfo(active.now.id, active.now.started_at,
                             round(frames * writer.frame / SAMPLE_RATE, 3), "recording",
                             writer.dropped_frames)

    # finished recordings (blocking: worker threads) -------------------------------------------

    def list(self, room: str, live_id: str | None = None) -> list[RecordingInfo]:
        """``room``'s recordings but ``live_id`` (being written), newest first: at most
        :data:`MAX_LISTED`; a folder whose manifest cannot be read is left out."""
        folder = self.root / room if self.root is not None else None
        if folder is None or not folder.is_dir():
            return []
        infos = []
        for entry in sorted((d for d in folder.iterdir() if ID_RE.fullmatch(d.name)),
                            key=lambda d: d.name, reverse=True):
            if entry.name == live_id:
                continue
            try:
                manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
                infos.append(self._read_info(room, entry, manifest))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.debug("recording %s left out of the list: %s", entry, exc)
            if len(infos) >= MAX_LISTED:
                break
        return infos

    @staticmethod
    def _read_info(room: str, folder: Path, manifest: dict) -> RecordingInfo:
        status = manifest["status"]
        files = tuple(RecordingFile(f.name, f.stat().st_size,
                                    f"/recordings/{room}/{folder.name}/{f.name}")
                      for f in sorted(folder.iterdir(), key=lambda f: f.name)
                      if f.is_file() and FILE_RE.fullmatch(f.name))
        return RecordingInfo(
            id=folder.name, started_at=float(manifest["started_at"]),
            duration_s=float(manifest.get("duration_s") or 0.0),
            status=("interrupted" if status == "recording" else
                    "failed" if manifest.get("error") else str(status)),
            dropped_frames=int(manifest.get("dropped_frames") or 0), files=files)

    def read_file(self, room: str, rec_id: str, name: str) -> tuple[bytes, str]:
        """The bytes and content type of a finished recording's file (blocking).

        Raises
        ------
        RecordingFileError
            404 for no such file (or no recordings here), 409 while it is being recorded,
            413 past :data:`MAX_DOWNLOAD_BYTES`.
        """
        valid = (limits.ROOM_RE.fullmatch(room) and ID_RE.fullmatch(rec_id)
                 and FILE_RE.fullmatch(name))
        path = self.root / room / rec_id / name if self.root is not None and valid else None
        if path is None or not path.is_file():
            raise RecordingFileError(http.HTTPStatus.NOT_FOUND,
                                     f"no recording file {room}/{rec_id}/{name} here")
        active = self._active.get(room)
        if active is not None and active.now.id == rec_id:
            raise RecordingFileError(http.HTTPStatus.CONFLICT, "this recording is still being "
                                     "made: download its files once it has stopped")
        size = path.stat().st_size
        if size > MAX_DOWNLOAD_BYTES:
            raise RecordingFileError(
                http.HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"{name} has {size / 2**20:.0f} MiB; files over {MAX_DOWNLOAD_BYTES // 2**20} MiB "
                "are not served over HTTP: ask the server's operator for it (it is in the "
                "server's recordings folder)")
        return path.read_bytes(), CONTENT_TYPES.get(path.suffix, "application/octet-stream")
