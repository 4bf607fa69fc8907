"""Session recording, the writing side: each recorded member's dry uplink to its own FLAC file,
sample-aligned on the room clock, by a thread the room clock never waits for.

What the room clock does per tick (:class:`RoomRecording`): on the loop, :meth:`~RoomRecording.
take` says which slots are recorded under which names (recomputed only when the room's
revision changes, which is also when the stage is logged); on the tick thread,
:meth:`Take.capture` copies those rows of the tick's ``(S, frame)`` float32 source audio (one
fancy-index copy; with ``binaural_of``, one copy of that listener's stereo mix) and offers them
to the writer's queue, bounded at :data:`QUEUE_TICKS`: past that the tick is dropped and counted
(:attr:`RecordingWriter.dropped_frames`, reported in the manifest, the ``recording`` reply and
``/metrics``), and its frames are written as silence, so the files stay aligned. The queue is a
:class:`queue.SimpleQueue` with a size check rather than a ``queue.Queue(maxsize)``: waking a
waiting writer through ``Queue.put_nowait`` (a Python condition variable) was measured at
16–27 µs on the tick, ``SimpleQueue.put`` (C) at about 5 µs.

Alignment: every file starts at the recording's first tick ``start``, and sample ``n`` of every
file belongs to room tick ``start + n // frame`` (room sample ``start * frame + n``), ``frame``
the room's (960 samples, 20 ms, by default; the manifest's ``frame``). A member
who joins late gets leading silence, one who is away (left, then back with their seat: the
same participant id, the same file) silence for those ticks, and at the end every file is
padded to the last tick: all files of a recording have the same length.

Crash safety: every :data:`SYNC_TICKS` (a second of room time) the writer makes each file
readable as far as it is on disk (:meth:`server.recording.flacfile.FlacFile.sync`), so a
server killed while recording leaves files that open and play up to about a second before it
died; the stage journal (``layout.jsonl``) is flushed line by line and the manifest
(``recording.json``) rewritten, whole, at each sync. SIGTERM stops recordings cleanly.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import tempfile
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ai_accompany.midi import write_midi
from hrtf.constants import FRAME, SAMPLE_RATE
from server.recording.flacfile import AudioFile, FlacFile
from server.rooms.room import Room

log = logging.getLogger(__name__)

#: Ticks of 20 ms the writer may fall behind before ticks are dropped (10 s of audio: rows of
#: a full 16-member room are 61 kB a tick, so at most about 30 MB wait); a room with shorter
#: frames queues as many seconds.
QUEUE_TICKS = 500
#: Make what was written readable this often (20 ms ticks of room time: one second).
SYNC_TICKS = 50
#: Silence is written at most this many 20 ms frames at a time (a second).
SILENCE_CHUNK_FRAMES = 50
MANIFEST = "recording.json"
LAYOUT = "layout.jsonl"
MIDI = "ai.mid"
#: How long the writer waits for work before it syncs what it has anyway (seconds).
IDLE_SYNC_S = 1.0

_STOP = object()


def file_stem(name: str, member_id: str) -> str:
    """A file name for a member's track: ``Zoë Kim`` and ``3f2a`` give ``Zoe-Kim-3f2a``
    (ASCII letters, digits, ``-`` and ``_``; the id keeps two members of one name apart)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", ascii_name).strip("-")[:40] or "member"
    return f"{safe}-{member_id}"


@dataclass
class _Track:
    """One file and the room tick its next frame belongs to."""

    file: AudioFile
    next_tick: int
    channels: int
    file_name: str
    member: str
    #: The member's name when the track began (for people; the file name holds it too).
    label: str
    kind: str
    #: Samples per tick: the room's frame.
    frame: int = FRAME

    def write(self, tick: int, frame: np.ndarray) -> None:
        self.pad_to(tick)
        self.file.write(frame)
        self.next_tick = tick + 1

    def pad_to(self, tick: int) -> None:
        """Silence up to (not including) ``tick``."""
        while self.next_tick < tick:
            n = min(tick - self.next_tick, SILENCE_CHUNK_FRAMES * FRAME // self.frame)
            samples = n * self.frame
            shape = (samples,) if self.channels == 1 else (samples, self.channels)
            self.file.write(np.zeros(shape, np.float32))
            self.next_tick += n


class RecordingWriter:
    """The writer thread of one recording, in ``folder``, and the bounded queue that feeds it.

    Parameters
    ----------
    folder : Path
        Made already; the files go here.
    manifest : dict
        What ``recording.json`` says about the recording (id, room, who started it…); the
        writer adds the timing, the tracks, the counts and the status.
    queue_ticks : int
        Ticks the queue holds (:data:`QUEUE_TICKS`, counted in 20 ms ticks when not given).
    open_file : callable
        ``(path, channels) -> AudioFile``; :class:`FlacFile` by default.
    frame : int
        Samples per tick: the room's frame.
    """

    def __init__(self, folder: Path, manifest: dict, queue_ticks: int | None = None,
                 open_file: Callable[[Path, int], AudioFile] = FlacFile,
                 frame: int = FRAME) -> None:
        self.folder = Path(folder)
        self.manifest = dict(manifest)
        self.open_file = open_file
        self.frame = frame
        #: How many of the room's ticks make one 20 ms tick's worth of time.
        self._per_tick = max(1, FRAME // frame)
        self.queue_ticks = queue_ticks if queue_ticks is not None \
            else QUEUE_TICKS * self._per_tick
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        #: The recording's first tick: set (on the loop) before the first frame is offered.
        self.start_tick: int | None = None
        #: Ticks offered while the queue was full (tick threads only).
        self.overflow_frames = 0
        #: Ticks the writer could not write (its disk failed; writer thread only).
        self.failed_frames = 0
        #: The newest tick offered (written or dropped): the recording ends after it.
        self.last_tick: int | None = None
        #: The newest tick the writer has taken from the queue (writer thread only).
        self._taken_tick: int | None = None
        #: Stage snapshots ``(tick, dict)`` from the loop, for the writer to journal.
        self.layouts: deque[tuple[int, dict]] = deque()
        self.error: str | None = None
        self.tracks: dict[str, _Track] = {}
        self._closing = False
        self._synced_tick: int | None = None
        self._layout_file = None
        self._finish: dict | None = None
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"recording-{self.manifest.get('id', '')}")

    @property
    def dropped_frames(self) -> int:
        """20 ms frames lost (written as silence): the queue was full, or the disk failed."""
        return self.overflow_frames + self.failed_frames

    def start(self) -> None:
        self._write_manifest("recording")
        self._thread.start()

    # the room clock's side (never blocks) -----------------------------------------------------

    def offer(self, tick: int, keys: tuple, rows: np.ndarray,
              stereo: tuple | None = None) -> bool:
        """Hand the writer tick ``tick``: ``rows[k]`` is the track ``keys[k]`` (``(member id,
        name)``); ``stereo`` is ``(key, (frame, 2) mix)`` or None. Never blocks; False when
        the tick was dropped (counted) or the recording is stopping."""
        if self._closing:
            return False
        self.last_tick = tick
        if self.queue.qsize() >= self.queue_ticks:  # one producer: the check holds till the put
            self.overflow_frames += 1
            return False
        self.queue.put((tick, keys, rows, stereo))
        return True

    # stopping (from a worker thread: it waits for the writer) ---------------------------------

    def finish(self, midi_events: list | None = None, bpm: float = 120.0,
               ended_by: str = "stopped", timeout_s: float = 10.0) -> dict:
        """Stop taking ticks, let the writer write what is queued, pad every file to the last
        tick, close the files, write the AI's notes (``midi_events``, room-clock
        :class:`~dsp.notes.NoteEvent` s; those of the recording's span) as MIDI and
        the final manifest, which is returned. Blocks up to about ``timeout_s``."""
        self._finish = {"midi_events": midi_events or [], "bpm": bpm, "ended_by": ended_by}
        self._closing = True
        self.queue.put(_STOP)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("recording %s: the writer is stuck; its files stay as last synced",
                      self.manifest.get("id"))
        return self.manifest

    # the writer thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=IDLE_SYNC_S)
            except queue.Empty:
                item = None
            if item is _STOP:
                break
            # A full disk, a folder taken away: writing stops, the frames from then on are
            # counted as dropped, and the error goes in the manifest.
            if item is not None:
                try:
                    self._write(*item)
                except Exception as exc:
                    self.failed_frames += 1
                    self._fail(exc)
            try:
                self._journal_layouts()
                if item is None or self._sync_due(item[0]):
                    self._sync()
            except Exception as exc:
                self._fail(exc)
        try:
            self._close()
        except Exception as exc:
            self._fail(exc)
            end = self._taken_tick + 1 if self._taken_tick is not None else None
            self._write_manifest("finished", end)

    def _write(self, tick: int, keys: tuple, rows: np.ndarray, stereo: tuple | None) -> None:
        self._taken_tick = tick
        if self.error is not None:
            self.failed_frames += 1
            return
        for (member, name), row in zip(keys, rows, strict=True):
            self._track(member, name, "dry", 1).write(tick, row)
        if stereo is not None:
            (member, name), mix = stereo
            self._track(f"binaural:{member}", name, "binaural", 2).write(tick, mix)

    def _track(self, key: str, name: str, kind: str, channels: int) -> _Track:
        track = self.tracks.get(key)
        if track is None:
            member = key.partition(":")[2] if kind == "binaural" else key
            stem = file_stem(name, member)
            path = self.folder / (f"binaural-{stem}.flac" if kind == "binaural" else
                                  f"{stem}.flac")
            track = _Track(self.open_file(path, channels), self.start_tick, channels,
                           path.name, member, name, kind, self.frame)
            self.tracks[key] = track
            log.info("recording %s: %s (%s) goes to %s", self.manifest.get("id"), member, kind,
                     path.name)
        return track

    def _journal_layouts(self) -> None:
        if not self.layouts or self.error is not None:
            return
        if self._layout_file is None:
            self._layout_file = open(self.folder / LAYOUT, "a", encoding="utf-8")  # noqa: SIM115
        while self.layouts:
            tick, state = self.layouts.popleft()
            offset = (tick - self.start_tick) * self.frame
            line = {"tick": tick, "sample": offset, "time_s": round(offset / SAMPLE_RATE, 3),
                    **state}
            self._layout_file.write(json.dumps(line, separators=(",", ":")) + "\n")
        self._layout_file.flush()

    def _sync_due(self, tick: int) -> bool:
        return self._synced_tick is None \
            or tick - self._synced_tick >= SYNC_TICKS * self._per_tick

    def _sync(self) -> None:
        if self.error is not None or self._taken_tick in (None, self._synced_tick):
            return
        for track in self.tracks.values():
            track.file.sync()
        self._synced_tick = self._taken_tick
        self._write_manifest("recording", self._taken_tick + 1)

    def _close(self) -> None:
        end = (self.last_tick + 1) if self.last_tick is not None else self.start_tick
        self._journal_layouts()
        if self._layout_file is not None:
            self._layout_file.close()
        for track in self.tracks.values():  # each closed, whatever befalls the others
            try:
                if self.error is None and end is not None:
                    track.pad_to(end)
            except Exception as exc:
                self._fail(exc)
            try:
                track.file.close()
            except Exception as exc:
                self._fail(exc)
        finish = self._finish or {}
        events = finish.get("midi_events") or []
        if end is not None and self.error is None:
            first, last = self.start_tick * self.frame, end * self.frame
            notes = [e for e in events if first <= e.start < last]
            if notes:
                write_midi(self.folder / MIDI, notes, bpm=finish.get("bpm", 120.0), origin=first)
                self.manifest["midi"] = MIDI
        self.manifest["ended_by"] = finish.get("ended_by", "stopped")
        self.manifest["ended_at"] = time.time()
        self._write_manifest("finished", end)
        log.info("recording %s finished: %d tracks, %.1f s, %d frames dropped",
                 self.manifest.get("id"), len(self.tracks), self.manifest["duration_s"],
                 self.dropped_frames)

    def _fail(self, exc: Exception) -> None:
        if self.error is None:
            log.error("recording %s: writing failed (%s): what was written so far is kept",
                      self.manifest.get("id"), exc)
            self.error = str(exc)[:300]

    def _write_manifest(self, status: str, end_tick: int | None = None) -> None:
        """``recording.json``, replaced whole (a reader never sees half of it); the span is
        ``start_tick`` to ``end_tick`` (exclusive)."""
        start = self.start_tick
        frames = (end_tick - start) if start is not None and end_tick is not None else 0
        self.manifest.update({
            "status": status, "sample_rate": SAMPLE_RATE, "frame": self.frame,
            "start_tick": start, "start_sample": start * self.frame if start is not None else None,
            "end_tick": end_tick, "duration_s": round(frames * self.frame / SAMPLE_RATE, 3),
            "dropped_frames": self.dropped_frames, "error": self.error,
            "tracks": [{"file": t.file_name, "member": t.member, "name": t.label,
                        "kind": t.kind} for t in self.tracks.values()],
            "layout": LAYOUT if self._layout_file is not None else None,
        })
        write_json_atomically(self.folder / MANIFEST, self.manifest)


def write_json_atomically(path: Path, value: dict) -> None:
    """``value`` as JSON at ``path``: written beside it, then renamed over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=1)
        os.chmod(tmp, 0o644)  # as the other files of the recording (mkstemp made it 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# the room clock's view ---------------------------------------------------------------------------


class Take:
    """What one tick records: filled on the loop, captured on the tick thread."""

    __slots__ = ("keys", "listener", "listener_key", "slots", "tick", "writer")

    def __init__(self, writer: RecordingWriter, tick: int, slots: np.ndarray, keys: tuple,
                 listener: int | None, listener_key: tuple | None) -> None:
        self.writer, self.tick, self.slots, self.keys = writer, tick, slots, keys
        self.listener, self.listener_key = listener, listener_key

    def capture(self, audio: np.ndarray, mixes: np.ndarray | None = None) -> bool:
        """On the tick thread, once the tick's sources are decoded (``audio``, ``(S, frame)``)
        and its mixes rendered (``mixes``, ``(L, frame, 2)``): copy what is recorded and offer
        it to the writer. Never blocks."""
        stereo = None
        if self.listener is not None and mixes is not None:
            stereo = (self.listener_key, mixes[self.listener].copy())
        return self.writer.offer(self.tick, self.keys, audio[self.slots], stereo)


class RoomRecording:
    """A room's recording as its clock sees it (:attr:`server.tick.runner.RoomRunner.recording`).

    Parameters
    ----------
    writer : RecordingWriter
        Started.
    binaural_of : str or None
        The member whose binaural mix is recorded too.
    """

    def __init__(self, writer: RecordingWriter, binaural_of: str | None = None) -> None:
        self.writer = writer
        self.binaural_of = binaural_of
        self._revision: int | None = None
        self._slots = np.zeros(0, np.intp)
        self._keys: tuple = ()
        self._listener: int | None = None
        self._listener_key: tuple | None = None

    def take(self, room: Room, tick: int) -> Take:
        """On the room clock's thread, as tick ``tick`` starts: the slots recorded and their
        tracks' keys.

        Recomputed when the room's revision moves (someone came, left or moved: the stage is
        journalled then), else the last answer is reused.
        """
        writer = self.writer
        if writer.start_tick is None:
            writer.start_tick = tick
        if room.version != self._revision:
            self._revision = room.version
            self._recast(room, tick)
        return Take(writer, tick, self._slots, self._keys, self._listener, self._listener_key)

    def _recast(self, room: Room, tick: int) -> None:
        heard = sorted((m for m in list(room.members.values())
                        if not room.is_ai[m.slot] and not room.listen_only[m.slot]),
                       key=lambda m: m.slot)
        self._slots = np.array([m.slot for m in heard], np.intp)
        self._keys = tuple((m.id, m.name) for m in heard)
        listener = room.members.get(self.binaural_of) if self.binaural_of else None
        if listener is not None and not room.is_ai[listener.slot]:
            self._listener, self._listener_key = listener.slot, (listener.id, listener.name)
        else:
            self._listener = self._listener_key = None
        state = room.describe().to_dict()
        self.writer.layouts.append((tick, {"revision": state["revision"],
                                           "members": state["members"],
                                           "stage": state["stage"]}))
