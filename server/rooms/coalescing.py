"""The writer every store of saved rooms shares (:mod:`server.rooms.store`): the loop files a
room's latest snapshot and returns at once; a thread writes each room at most once per
interval, the latest state of a burst.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from server.rooms.room import RoomSnapshot, SavedRoom

log = logging.getLogger("server.rooms.store")  # one logger for saved rooms, as operators filter it

#: A room is written at most this often (seconds): the latest state of each burst.
SAVE_INTERVAL_S = 0.2
#: Rooms whose snapshots may wait for the writer at once; past it, new rooms' saves are dropped
#: (and counted) until the writer catches up.
MAX_PENDING_ROOMS = 4096


class CoalescingStore:
    """What every store of saved rooms shares: :meth:`save` files a room's latest snapshot
    and returns at once; a writer thread writes each room at most once per ``interval_s``
    (the latest state of a burst), and :meth:`flush`/:meth:`close` wait for it, bounded.

    A store supplies :meth:`_open_writer` (the writer thread's handle, or None when nothing
    can be written), :meth:`_store` (write one saved room, raising one of
    :attr:`WRITE_ERRORS` on failure: the room is tried again later), :meth:`_close_writer`
    and :meth:`_close_reader`.
    """

    WRITE_ERRORS: tuple[type[Exception], ...] = (OSError,)

    def _start_writer(self, interval_s: float, clock: Callable[[], float], name: str) -> None:
        self.interval_s = interval_s
        self.clock = clock
        #: Rooms written, saves dropped because too many rooms were waiting, failed writes.
        self.writes = 0
        self.dropped = 0
        self.failures = 0
        self._cond = threading.Condition()
        self._pending: dict[str, RoomSnapshot] = {}
        self._writing: RoomSnapshot | None = None
        self._last_write: dict[str, float] = {}
        self._stopping = False
        self._flushing = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _waiting(self, room: str) -> SavedRoom | None:
        """The room's snapshot not written yet (or being written), as records; else None."""
        with self._cond:
            waiting = self._pending.get(room)
            if waiting is None and self._writing is not None and self._writing.name == room:
                waiting = self._writing
        return waiting.saved() if waiting is not None else None

    def _open_writer(self):
        raise NotImplementedError

    def _store(self, handle, saved: SavedRoom) -> None:
        raise NotImplementedError

    def _close_writer(self, handle) -> None:
        pass

    def _close_reader(self) -> None:
        pass

    def save(self, snapshot: RoomSnapshot) -> None:
        """File the room's latest state for the writer; returns at once (never does I/O)."""
        with self._cond:
            if self._stopping:
                return
            if snapshot.name not in self._pending and len(self._pending) >= MAX_PENDING_ROOMS:
                self.dropped += 1
                return
            self._pending[snapshot.name] = snapshot
            self._cond.notify()

    def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` until every snapshot saved so far is written.

        Returns
        -------
        bool
            Whether everything was written: False after ``timeout_s``, or as soon as a write
            fails (what failed stays pending, to be tried again).
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            failures = self.failures
            self._flushing += 1  # the writer stops waiting out intervals
            self._cond.notify_all()
            try:
                while (self._pending or self._writing is not None) and self.failures == failures:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
            finally:
                self._flushing -= 1
            return self.failures == failures

    def close(self, timeout_s: float = 5.0) -> bool:
        """Write what is pending (at most ``timeout_s``, no second try of a failed write), stop
        the writer, close the file. Later saves are ignored.

        Returns
        -------
        bool
            Whether everything was written.
        """
        with self._cond:
            failures = self.failures
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("room state: %d rooms not written within %.1f s", len(self._pending),
                        timeout_s)
            return False
        self._close_reader()
        return self.failures == failures

    # the writer thread --------------------------------------------------------------------------

    def _run(self) -> None:
        handle = self._open_writer()
        if handle is None:  # nothing can be written: saves are dropped from now on
            with self._cond:
                self._pending.clear()
                self._stopping = True
                self._cond.notify_all()
            return
        try:
            while (snapshot := self._next()) is not None:
                self._write(handle, snapshot)
        finally:
            self._close_writer(handle)

    def _next(self) -> RoomSnapshot | None:
        """The next room due for writing (waiting as needed), or None once stopping and done.

        While stopping or flushing, rooms are written without waiting for their interval.
        """
        with self._cond:
            self._writing = None
            self._cond.notify_all()  # flush() may be waiting for this
            while True:
                now = self.clock()
                if len(self._last_write) > len(self._pending) + 1024:  # forget old rooms
                    self._last_write = {name: at for name, at in self._last_write.items()
                                        if now - at < self.interval_s}
                due_at = None
                for name in self._pending:
                    at = self._last_write.get(name, -float("inf")) + self.interval_s
                    if self._stopping or self._flushing or at <= now:
                        self._writing = self._pending.pop(name)
                        return self._writing
                    due_at = at if due_at is None else min(due_at, at)
                if self._stopping:
                    return None
                self._cond.wait(None if due_at is None else due_at - now)

    def _write(self, handle, snapshot: RoomSnapshot) -> None:
        saved = snapshot.saved()
        try:
            self._store(handle, saved)
        except self.WRITE_ERRORS as exc:
            with self._cond:  # try again later, unless a newer state waits or we are stopping
                self.failures += 1
                if not self._stopping:
                    self._pending.setdefault(saved.name, snapshot)
            if self.failures == 1 or self.failures % 100 == 0:
                log.warning("room state: cannot write room %s (%s; %d failed writes so far)",
                            saved.name, exc, self.failures)
        else:
            self.writes += 1
        self._last_write[saved.name] = self.clock()
