"""Saved rooms: every room's seats, stage layout and personal mixes in one SQLite file (or,
for a deployment of several nodes, in Redis: :class:`RedisRoomStore`); the writer they share
is :mod:`server.rooms.coalescing`.

What is kept, per room (see :class:`~server.rooms.room.SavedRoom`): for each seat token, its
participant id, name, instrument, slot, stage place (metres), facing (degrees) and
self-monitoring; for each (listener seat, source seat) pair that differs from the stage
layout, the overriding place, the personal gain (linear) and the mute; the acoustics an admin
chose (``set_room_acoustics``' preset and values, as JSON), its metronome, and the frame an admin
set (``set_frame``). Head poses are not kept, nor
listeners' rendering settings (they live with the connection).

Writing never holds up the room clock or the event loop: the loop hands over a
:class:`~server.rooms.room.RoomSnapshot` (array copies) with :meth:`RoomStore.save`, which only
files it under its room, replacing an older one not yet written; a writer thread turns
snapshots into rows and writes each room at most once per ``interval_s`` (200 ms), so a
45-edits-a-second drag costs five small transactions a second, each of the latest state.
:meth:`RoomStore.flush` waits (bounded) for what is pending, at shutdown.

Reading (:meth:`RoomStore.load`) happens on the loop when a room opens: one indexed read of a
few dozen rows (about a tenth of a millisecond) before the room exists, so nothing is waiting
on it but the join that opens the room. In WAL mode it never waits for the writer.

A database that cannot be read (not SQLite, damaged, of an unknown schema) never stops the
server: it is moved aside as ``rooms.sqlite3.corrupt-<time>``, one warning says so, and the
store starts empty. Where even that fails, :func:`open_store` warns and the server keeps
nothing.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import redis

from server.rooms.coalescing import SAVE_INTERVAL_S, CoalescingStore
from server.rooms.room import (
    RoomSnapshot,
    SavedMix,
    SavedRoom,
    SavedSeat,
    saved_frame,
    saved_metronome,
)
from server.routing.cluster import (
    DEFAULT_PREFIX,
    LOAD_TIMEOUT_S,
    ClusterError,
    check_redis_url,
    redacted,
)

log = logging.getLogger(__name__)

#: Bumped when the tables change; a file of another version is moved aside, not guessed at.
SCHEMA_VERSION = 1
#: ``--state`` values that keep nothing.
NO_STATE = ("none", ":memory:")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rooms (
    room TEXT PRIMARY KEY,
    saved_at REAL NOT NULL            -- Unix time of the last write, for operators pruning
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seats (
    room TEXT NOT NULL,
    seat TEXT NOT NULL,
    participant TEXT NOT NULL,
    name TEXT NOT NULL,
    instrument TEXT NOT NULL,
    slot INTEGER NOT NULL,
    x_m REAL NOT NULL, y_m REAL NOT NULL, z_m REAL NOT NULL,
    yaw_deg REAL NOT NULL,
    pitch_deg REAL NOT NULL,
    self_monitor INTEGER NOT NULL,
    PRIMARY KEY (room, seat)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mixes (
    room TEXT NOT NULL,
    listener_seat TEXT NOT NULL,
    source_seat TEXT NOT NULL,
    x_m REAL, y_m REAL, z_m REAL,     -- NULL: the stage's place applies
    gain REAL NOT NULL,
    mute INTEGER NOT NULL,
    PRIMARY KEY (room, listener_seat, source_seat)
) WITHOUT ROWID;
"""
#: Tables added since version 1 was first written: made when missing, so older files of the
#: same version stay readable (and older servers read newer files, ignoring these).
_ADDED_TABLES = """
CREATE TABLE IF NOT EXISTS acoustics (
    room TEXT PRIMARY KEY,
    settings TEXT NOT NULL            -- JSON: {"preset": ..., "dims_m": ..., ...}
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS metronome (
    room TEXT PRIMARY KEY,
    settings TEXT NOT NULL            -- JSON: {"on": ..., "bpm": ..., "beats_per_bar": ..., ...}
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS frame (
    room TEXT PRIMARY KEY,
    frame_ms REAL NOT NULL            -- the frame the room's admin set (set_frame)
) WITHOUT ROWID;
"""


def _json_row(row: tuple | None) -> object:
    """A settings row's JSON, or None (no row, or not JSON)."""
    if row is None:
        return None
    try:
        return json.loads(row[0])
    except (TypeError, ValueError):
        return None


def _acoustics(room: str, row: tuple | None) -> dict | None:
    """A room's saved acoustics settings, or None (not saved, or not readable: a warning)."""
    if row is None:
        return None
    settings = _json_row(row)
    if not isinstance(settings, dict):
        log.warning("room state: room %s has unreadable acoustics settings; it opens without",
                    room)
        return None
    return settings


class StoreUnreadable(Exception):
    """The database file is not one this store can use."""


def _busy(exc: Exception) -> bool:
    """Whether SQLite failed because another connection holds the file (not a bad file)."""
    return getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))


def default_state_path() -> Path:
    """``$SPATIALJAM_STATE_DIR/rooms.sqlite3``, else ``$XDG_STATE_HOME/spatialjam/…``, else
    ``~/.local/state/spatialjam/rooms.sqlite3``."""
    folder = os.environ.get("SPATIALJAM_STATE_DIR")
    if folder:
        return Path(folder) / "rooms.sqlite3"
    state_home = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state_home) / "spatialjam" / "rooms.sqlite3"


def open_store(spec: str | None) -> RoomStore | None:
    """The store ``serve --state`` names: a path, None for the default, ``none``/``:memory:``
    for none. A file that cannot be used is moved aside (see the module); a place where no
    file can be made at all gives None, with a warning."""
    if spec is not None and spec.lower() in NO_STATE:
        log.info("room state: not kept (--state %s)", spec)
        return None
    if spec is not None and spec.startswith(("redis://", "rediss://", "unix://")):
        from server.routing.cluster import ClusterError  # serve --redis: rooms shared by the nodes

        try:
            store = RedisRoomStore(spec)
        except ClusterError as exc:
            log.warning("room state: %s; saved rooms will not survive a restart", exc)
            return None
        log.info("room state: in Redis")
        return store
    path = Path(spec).expanduser() if spec is not None else default_state_path()
    try:
        store = RoomStore(path)
    except (OSError, sqlite3.Error, StoreUnreadable) as exc:
        log.warning("room state: cannot keep rooms in %s (%s); saved rooms will not survive a "
                    "restart", path, exc)
        return None
    log.info("room state: %s", path)
    return store


class RoomStore(CoalescingStore):
    """One SQLite file (WAL) of saved rooms, written by its own thread.

    Parameters
    ----------
    path : Path
        The database file; its folder is made if missing.
    interval_s : float
        The shortest time between two writes of one room (seconds).
    clock : callable
        Monotonic seconds (injected by tests).

    Raises
    ------
    OSError, sqlite3.Error, StoreUnreadable
        If no usable database can be made at ``path``, even after moving a bad one aside.
    """

    def __init__(self, path: Path, interval_s: float = SAVE_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._reader = self._connect()
        except (sqlite3.DatabaseError, StoreUnreadable) as exc:
            if not self.path.is_file() or _busy(exc):
                raise  # nothing to move aside, or a good file in use by another process
            self._move_aside(exc)
            self._reader = self._connect()
        self._start_writer(interval_s, clock, "room-store")

    # opening ----------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        """The reader's connection, to a checked database with our tables (made if new)."""
        db = sqlite3.connect(self.path, timeout=0.5, isolation_level=None,
                             check_same_thread=False)
        try:
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise StoreUnreadable("the integrity check failed")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {row[0] for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if version == 0 and tables:
                raise StoreUnreadable(f"tables {sorted(tables)} of another program")
            if version not in (0, SCHEMA_VERSION):
                raise StoreUnreadable(f"schema version {version}, this server reads "
                                      f"{SCHEMA_VERSION}")
            if version == 0:  # a new file
                db.execute("PRAGMA journal_mode = WAL")  # kept in the file
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.executescript(_ADDED_TABLES)
        except BaseException:
            db.close()
            raise
        return db

    def _move_aside(self, exc: Exception) -> None:
        """Rename the bad file (and its WAL files) to ``….corrupt-<time>``, then warn once."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        for suffix in ("", "-wal", "-shm"):
            part = self.path.with_name(self.path.name + suffix)
            if part.exists():
                part.replace(aside.with_name(aside.name + suffix))
        log.warning("room state: %s cannot be read (%s): moved aside to %s; starting with no "
                    "saved rooms", self.path, exc, aside.name)

    # the loop's side ----------------------------------------------------------------------------

    def load(self, room: str) -> SavedRoom | None:
        """The room as last saved (or still waiting to be written), or None if never saved.

        A failed read logs a warning and gives None: the room opens empty.
        """
        waiting = self._waiting(room)
        if waiting is not None:
            return waiting
        try:
            seat_rows = self._reader.execute(
                "SELECT seat, participant, name, instrument, slot, x_m, y_m, z_m, yaw_deg, "
                "pitch_deg, self_monitor FROM seats WHERE room = ? ORDER BY slot",
                (room,)).fetchall()
            mix_rows = self._reader.execute(
                "SELECT m.listener_seat, m.source_seat, m.x_m, m.y_m, m.z_m, m.gain, m.mute "
                "FROM mixes m JOIN seats l ON l.room = m.room AND l.seat = m.listener_seat "
                "JOIN seats s ON s.room = m.room AND s.seat = m.source_seat "
                "WHERE m.room = ? ORDER BY l.slot, s.slot", (room,)).fetchall()
            acoustics_row = self._reader.execute(
                "SELECT settings FROM acoustics WHERE room = ?", (room,)).fetchone()
            metronome_row = self._reader.execute(
                "SELECT settings FROM metronome WHERE room = ?", (room,)).fetchone()
            frame_row = self._reader.execute(
                "SELECT frame_ms FROM frame WHERE room = ?", (room,)).fetchone()
        except sqlite3.Error as exc:
            log.warning("room state: cannot read room %s (%s); it opens empty", room, exc)
            return None
        if not seat_rows:
            return None
        seats = tuple(SavedSeat(seat, participant, name, instrument, slot, (x, y, z), yaw, pitch,
                                bool(monitor))
                      for seat, participant, name, instrument, slot, x, y, z, yaw, pitch, monitor
                      in seat_rows)
        mixes = tuple(SavedMix(listener, source, None if x is None else (x, y, z), gain,
                               bool(mute))
                      for listener, source, x, y, z, gain, mute in mix_rows)
        return SavedRoom(room, seats, mixes, _acoustics(room, acoustics_row),
                         saved_metronome(_json_row(metronome_row)),
                         saved_frame(frame_row[0] if frame_row else None))

    # the writer thread ---------------------------------------------------------------------------

    WRITE_ERRORS = (sqlite3.Error,)

    def _open_writer(self) -> sqlite3.Connection | None:
        # The file was checked and set up by the reader's connection; this one only writes
        # (no lock is taken until the first write, which waits out another writer's briefly).
        try:
            db = sqlite3.connect(self.path, timeout=1.0, isolation_level=None)
            # With WAL, a crash of the process loses nothing committed; a power cut may lose
            # the last commits but never corrupts the file.
            db.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            log.warning("room state: the writer cannot open %s (%s); nothing more is saved",
                        self.path, exc)
            return None
        return db

    def _close_writer(self, handle: sqlite3.Connection) -> None:
        handle.close()

    def _close_reader(self) -> None:
        self._reader.close()

    def _store(self, db: sqlite3.Connection, saved: SavedRoom) -> None:
        seat_rows = [(saved.name, s.seat, s.participant, s.name, s.instrument, s.slot,
                      *s.position_m, s.yaw_deg, s.pitch_deg, int(s.self_monitor))
                     for s in saved.seats]
        mix_rows = [(saved.name, m.listener_seat, m.source_seat,
                     *(m.position_m if m.position_m is not None else (None, None, None)),
                     m.gain, int(m.mute)) for m in saved.mixes]
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM seats WHERE room = ?", (saved.name,))
            db.execute("DELETE FROM mixes WHERE room = ?", (saved.name,))
            db.executemany("INSERT INTO seats VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           seat_rows)
            db.executemany("INSERT INTO mixes VALUES (?, ?, ?, ?, ?, ?, ?, ?)", mix_rows)
            db.execute("DELETE FROM acoustics WHERE room = ?", (saved.name,))
            if saved.acoustics is not None:
                db.execute("INSERT INTO acoustics VALUES (?, ?)",
                           (saved.name, json.dumps(saved.acoustics)))
            db.execute("DELETE FROM metronome WHERE room = ?", (saved.name,))
            if saved.metronome is not None:
                db.execute("INSERT INTO metronome VALUES (?, ?)",
                           (saved.name, json.dumps(saved.metronome)))
            db.execute("DELETE FROM frame WHERE room = ?", (saved.name,))
            if saved.frame_ms is not None:
                db.execute("INSERT INTO frame VALUES (?, ?)", (saved.name, saved.frame_ms))
            db.execute("INSERT OR REPLACE INTO rooms VALUES (?, ?)", (saved.name, time.time()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


# -- saved rooms in Redis -------------------------------------------------------------------------

def saved_to_json(saved: SavedRoom) -> str:
    """A saved room as JSON (the form :class:`RedisRoomStore` keeps)."""
    return json.dumps({
        "name": saved.name,
        "seats": [[s.seat, s.participant, s.name, s.instrument, s.slot, list(s.position_m),
                   s.yaw_deg, s.pitch_deg, s.self_monitor] for s in saved.seats],
        "mixes": [[m.listener_seat, m.source_seat,
                   None if m.position_m is None else list(m.position_m), m.gain, m.mute]
                  for m in saved.mixes],
        "acoustics": saved.acoustics,
        "metronome": saved.metronome,
        "frame_ms": saved.frame_ms,
        "saved_at": time.time(),
    })


def saved_from_json(text: str | bytes) -> SavedRoom:
    """The inverse of :func:`saved_to_json`; ValueError/KeyError/TypeError on other text."""
    data = json.loads(text)
    seats = tuple(SavedSeat(str(seat), str(participant), str(name), str(instrument), int(slot),
                            tuple(float(v) for v in position), float(yaw), float(pitch),
                            bool(monitor))
                  for seat, participant, name, instrument, slot, position, yaw, pitch, monitor
                  in data["seats"])
    mixes = tuple(SavedMix(str(listener), str(source),
                           None if position is None else tuple(float(v) for v in position),
                           float(gain), bool(mute))
                  for listener, source, position, gain, mute in data["mixes"])
    acoustics = data.get("acoustics")
    return SavedRoom(str(data["name"]), seats, mixes,
                     acoustics if isinstance(acoustics, dict) else None,
                     saved_metronome(data.get("metronome")), saved_frame(data.get("frame_ms")))


class RedisRoomStore(CoalescingStore):
    """:class:`server.rooms.store.RoomStore`'s interface, kept in Redis so any node can restore a
    room: ``load`` reads on the loop (one GET), ``save`` only files the snapshot, and the
    writer thread (:class:`~server.rooms.store.CoalescingStore`) writes each room's latest state at
    most every ``interval_s``.
    """

    WRITE_ERRORS = (redis.RedisError,)

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX,
                 interval_s: float = SAVE_INTERVAL_S) -> None:
        self.url = check_redis_url(url)
        self.prefix = prefix
        # (the load runs on the worker's loop when a room opens: a short wait at most)
        self.redis = redis.Redis.from_url(url, socket_timeout=LOAD_TIMEOUT_S,
                                          socket_connect_timeout=LOAD_TIMEOUT_S)
        #: Rooms whose saved state could not be read as they opened: not saved over.
        self.unread: set[str] = set()
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            raise ClusterError(f"cannot use Redis at {redacted(url)}: {exc}") from None
        self._start_writer(interval_s, time.monotonic, "redis-room-store")

    def _key(self, room: str) -> str:
        return f"{self.prefix}state:{room}"

    def load(self, room: str) -> SavedRoom | None:
        waiting = self._waiting(room)
        if waiting is not None:
            return waiting
        try:
            raw = self.redis.get(self._key(room))
        except redis.RedisError as exc:
            # what is saved is kept: this opening of the room saves nothing over it
            self.unread.add(room)
            log.warning("room state: cannot read room %s from Redis (%s); it opens empty, and "
                        "what was saved of it is kept (not overwritten)", room,
                        redacted(str(exc)))
            return None
        self.unread.discard(room)
        if raw is None:
            return None
        try:
            return saved_from_json(raw)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("room state: room %s in Redis cannot be read (%s); it opens empty",
                        room, exc)
            return None

    def save(self, snapshot: RoomSnapshot) -> None:
        if snapshot.name not in self.unread:
            super().save(snapshot)

    def _open_writer(self) -> redis.Redis:
        return self.redis

    def _store(self, handle: redis.Redis, saved: SavedRoom) -> None:
        handle.set(self._key(saved.name), saved_to_json(saved))

    def _close_reader(self) -> None:
        self.redis.close()
