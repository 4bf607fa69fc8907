"""Listeners' own HRTF sets: SOFA files uploaded over signaling, parsed in isolation, kept by
content.

An upload is ``hrtf_upload`` {name, size} and then the file's bytes as binary WebSocket frames
(docs/PROTOCOL.md). :class:`Upload` is its bookkeeping, without I/O: bytes and frames against
what was announced, and when the last chunk came. :class:`HrtfUploads` is the asyncio shell:

- the bytes go to a private temporary file (mode 0600), written on a thread of its own, never
  on the event loop;
- a complete file is parsed *and prepared for the renderer* by :func:`hrtf.sofa.prepare_sofa`
  (a child process capped in memory, CPU and time: a file that crashes the HDF5 parser kills
  that child only, and every temporary of the work is the child's) on one of
  :data:`MAX_PARSES` threads; more uploads wait their turn; the file is deleted after;
- the child refuses a set whose prepared form would hold more than the registry's per-set
  budget (``MAX_HRTF_SET_BYTES``); the serving process then makes room for it within the
  total budget of uploaded sets (``HRTF_UPLOADS_BUDGET_BYTES``: the least recently used set
  that no listener uses is forgotten first, a set in use never) or refuses it in words, and
  only then reads the prepared set, whose size is all it costs;
- the upload ends with ``upload_failed`` (the connection stays) when more bytes come than were
  announced, when a second ``hrtf_upload`` comes while one is open, or when nothing comes for
  :data:`STALL_S`; a file the parser refuses ends with ``bad_sofa`` and the parser's words.

Prepared sets go into the :class:`~server.rooms.hrtf_registry.HrtfRegistry`, one per content
(:attr:`HrirSet.digest`), so that ``"hrtf": "sofa:<digest>"`` chooses one again and many
listeners of one set cost its memory once.

Why: a 1.4 MB SOFA file may declare 41,527 directions; loaded and prepared in the serving
process (as uploads were before issue 16, which also kept them in :mod:`hrtf.sofa`'s caches,
out of the registry's reach) it raised that process's peak resident memory by 821 MiB, 742 MiB
of it the set kept (its spectra for the renderer are nine times its responses). Now the child
refuses it over the per-set budget and the serving process's peak grows by about 2 MiB
(``tests/integration/test_hrtf_upload_memory.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hrtf.errors import HrtfError
from hrtf.hrirset import HrirSet
from hrtf.sofa import PreparedFile, prepare_sofa, stop_parsers
from server.rooms.hrtf_registry import MIB, HrtfRegistry, OverBudget, UploadedSet
from signaling.errors import ErrorCode, MessageId
from signaling.limits import MAX_HRTF_UPLOAD_BYTES, MAX_UPLOAD_CHUNK_BYTES
from signaling.ratelimit import TokenBucket
from signaling.render_messages import HrtfUpload
from signaling.server_messages import ErrorMessage
from signaling.session import SignalingSession, State

log = logging.getLogger(__name__)

#: Uploads the server takes at once (receiving, or waiting for or in the parser); past it an
#: upload is refused until one ends. Each holds at most one file on disk.
MAX_OPEN_UPLOADS = 16
#: SOFA files parsed at once (each in a child process of up to 1 GiB); others wait.
MAX_PARSES = 2
#: An upload with no chunk for this long is ended (seconds).
STALL_S = 10.0
#: An upload may come in as many frames as one per this many bytes on average (and one more):
#: a file sliced into crumbs is a flood, not an upload.
MIN_MEAN_CHUNK_BYTES = 4096
#: One connection may start this many uploads in a burst, then one per
#: ``60 / UPLOADS_PER_MINUTE`` seconds.
UPLOADS_PER_MINUTE = 6
UPLOAD_BURST = 4


class UploadError(Exception):
    """An upload that cannot go on; the message says why, for people."""


class Upload:
    """One upload's bookkeeping, without I/O: what was announced, what has come, and when.

    Parameters
    ----------
    name : str
        The file's name, for messages.
    size : int
        Bytes announced.
    now : float
        When it was announced (seconds, monotonic).
    stall_s : float
        How long it may go without a chunk.
    """

    def __init__(self, name: str, size: int, now: float, stall_s: float = STALL_S) -> None:
        self.name = name
        self.size = size
        self.stall_s = stall_s
        self.received = 0
        self.frames = 0
        self.max_frames = size // MIN_MEAN_CHUNK_BYTES + 1
        self.last_at = now

    @property
    def complete(self) -> bool:
        return self.received == self.size

    @property
    def missing(self) -> int:
        """Bytes announced that have not come."""
        return self.size - self.received

    @property
    def deadline(self) -> float:
        """When it stalls if no chunk comes before."""
        return self.last_at + self.stall_s

    def take(self, n_bytes: int, now: float) -> None:
        """Count one chunk of ``n_bytes`` that came at ``now``.

        Raises
        ------
        UploadError
            A chunk over :data:`MAX_UPLOAD_CHUNK_BYTES`, more bytes than announced, or more
            frames than :data:`MIN_MEAN_CHUNK_BYTES` allows.
        """
        if n_bytes > MAX_UPLOAD_CHUNK_BYTES:
            raise UploadError(f"a binary frame of {n_bytes} bytes came; each may have at most "
                              f"{MAX_UPLOAD_CHUNK_BYTES} bytes (256 KiB)")
        if self.received + n_bytes > self.size:
            raise UploadError(f"more bytes came than 'hrtf_upload' announced: it said "
                              f"{self.size}, and {self.received + n_bytes} have come")
        self.frames += 1
        if self.frames > self.max_frames:
            raise UploadError(f"{self.frames} frames for {self.size} bytes: send chunks of "
                              f"{MIN_MEAN_CHUNK_BYTES} bytes or more (up to 256 KiB)")
        self.received += n_bytes
        self.last_at = now

    def stalled(self, now: float) -> bool:
        """Whether it is incomplete and nothing came for :attr:`stall_s` until ``now``."""
        return not self.complete and now >= self.deadline


# the shell ---------------------------------------------------------------------------------------

class Uploader(Protocol):
    """Who uploads: a signaling connection (the hub's ``Participant``)."""

    session: SignalingSession

    def flush(self) -> None: ...


#: Called on the loop with the uploader, the set and the ``hrtf_upload``'s id once a file parsed.
OnLoaded = Callable[[Uploader, UploadedSet, MessageId | None], Awaitable[None]]
#: ``loader(path, max_bytes=…, max_set_bytes=…)``, raising :class:`HrtfError`:
#: :func:`hrtf.sofa.prepare_sofa`.
Loader = Callable[..., PreparedFile]


@dataclass(eq=False)
class _Open:
    """An upload taken: receiving into ``file`` at ``path``, then parsing."""

    upload: Upload
    msg_id: MessageId | None
    path: Path
    file: object
    watchdog: asyncio.Task | None = None
    parsing: asyncio.Task | None = None


def _private_file() -> tuple[Path, object]:
    handle, name = tempfile.mkstemp(prefix="spatialjam-upload-", suffix=".sofa")  # mode 0600
    return Path(name), os.fdopen(handle, "wb")


def _discard(path: Path, file) -> None:
    with contextlib.suppress(OSError):
        file.close()
    path.unlink(missing_ok=True)


def _parse_and_delete(loader: Loader, path: Path, max_set_bytes: int) -> PreparedFile:
    """Parse and prepare the uploaded file (blocking: on a parse thread), then delete it
    whatever came."""
    try:
        return loader(path, max_bytes=MAX_HRTF_UPLOAD_BYTES, max_set_bytes=max_set_bytes)
    finally:
        path.unlink(missing_ok=True)


def _discard_result(future) -> None:
    """A parse nobody waits for any more: delete the set it prepared, if it did."""
    if not future.cancelled() and future.exception() is None:
        future.result().discard()


def _for_people(exc: HrtfError, path: Path, name: str) -> str:
    """The parser's message about the temporary file, told of the file the listener sent."""
    problem = str(exc).split(f"{path}: ", 1)[-1]
    return f"{name!r} cannot be used as an HRTF set: {problem}"


class HrtfUploads:
    """Every upload of this process: the asyncio shell around :class:`Upload`.

    Parameters
    ----------
    registry : HrtfRegistry
        Where parsed sets are kept, within its budgets.
    on_loaded : callable
        Awaited on the loop once a file parsed: it makes the set the uploader's HRTF and tells
        them (``hrtf_uploaded``, ``rendering``).
    stall_s : float
        How long an upload may go without a chunk.
    loader : callable
        ``loader(path, max_bytes=…, max_set_bytes=…) -> PreparedFile``, raising
        :class:`HrtfError`: :func:`hrtf.sofa.prepare_sofa`.
    """

    def __init__(self, registry: HrtfRegistry, on_loaded: OnLoaded, *,
                 max_open: int = MAX_OPEN_UPLOADS, stall_s: float = STALL_S,
                 loader: Loader = prepare_sofa) -> None:
        self.registry = registry
        self.on_loaded = on_loaded
        self.max_open = max_open
        self.stall_s = stall_s
        self.loader = loader
        self._open: dict[Uploader, _Open] = {}
        #: Parses handed to the parse threads and not finished (cancelled ones included).
        self._parsing = 0
        self._buckets: weakref.WeakKeyDictionary[Uploader, TokenBucket] = \
            weakref.WeakKeyDictionary()
        self._parse_pool = ThreadPoolExecutor(MAX_PARSES, thread_name_prefix="hrtf-parse")
        self._io_pool = ThreadPoolExecutor(1, thread_name_prefix="hrtf-upload-io")
        #: Uploads parsed and taken, refused by the parser, and ended early (for /metrics).
        self.counts: Counter[str] = Counter()

    @property
    def busy(self) -> int:
        """Uploads receiving, and parses waiting or running."""
        return sum(1 for o in self._open.values() if o.parsing is None) + self._parsing

    async def begin(self, who: Uploader, message: HrtfUpload) -> None:
        """Take an announced upload, or refuse it (its bytes, when they come, are dropped)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        current = self._open.get(who)
        if current is not None and current.parsing is not None:
            return self._refuse(who, message, f"your file {current.upload.name!r} is still being "
                                "checked: wait for its result before sending another")
        if current is not None:
            self._end(who, current, "'hrtf_upload' came again before its bytes were all sent; "
                      "send one file at a time", drain_bytes=0)
            return self._refuse(who, message, "another upload was open (both are ended): send "
                                "one file at a time, announcing each with 'hrtf_upload'")
        bucket = self._buckets.setdefault(
            who, TokenBucket(UPLOADS_PER_MINUTE / 60.0, UPLOAD_BURST))
        if not bucket.allow(now):
            who.session.close_upload(message.size)
            who.session.refuse(message, ErrorCode.RATE_LIMITED,
                               f"at most {UPLOADS_PER_MINUTE} HRTF uploads a minute, in bursts "
                               f"of {UPLOAD_BURST}: try again in a few seconds", now)
            return None
        if self.busy >= self.max_open:
            return self._refuse(who, message, f"the server is taking {self.max_open} uploads "
                                "at once, its most: try again in a minute")
        path, file = await loop.run_in_executor(self._io_pool, _private_file)
        record = _Open(Upload(message.name, message.size, now, self.stall_s), message.msg_id,
                       path, file)
        if who.session.state is not State.JOINED:  # it left or went while the file was made
            loop.run_in_executor(self._io_pool, _discard, path, file)
            return None
        self._open[who] = record
        who.session.open_upload()
        record.watchdog = loop.create_task(self._watch(who, record))
        log.info("HRTF upload of %r (%d bytes) begins", message.name, message.size)
        return None

    async def chunk(self, who: Uploader, data: bytes) -> None:
        """Take one binary frame of ``who``'s open upload."""
        record = self._open.get(who)
        if record is None or record.parsing is not None:
            return
        loop = asyncio.get_running_loop()
        try:
            record.upload.take(len(data), loop.time())
        except UploadError as exc:  # what it still sends of the file is dropped quietly
            self._end(who, record, str(exc), drain_bytes=record.upload.missing)
            return
        try:
            await loop.run_in_executor(self._io_pool, record.file.write, data)
            if record.upload.complete:
                await loop.run_in_executor(self._io_pool, record.file.close)
        except (OSError, ValueError) as exc:  # ValueError: the file was closed, the upload ended
            if self._open.get(who) is record:
                log.warning("HRTF upload of %r cannot be written: %s", record.upload.name, exc)
                self._end(who, record, "the server could not store it", record.upload.missing)
            return
        if record.upload.complete and self._open.get(who) is record:
            who.session.close_upload()
            if record.watchdog is not None:
                record.watchdog.cancel()
            self._parsing += 1
            future = self._parse_pool.submit(_parse_and_delete, self.loader, record.path,
                                             self.registry.set_budget_bytes)
            future.add_done_callback(
                lambda done, path=record.path: self._parse_done(done, path, loop))
            record.parsing = loop.create_task(self._finish(who, record, future))

    def _parse_done(self, future, path: Path, loop: asyncio.AbstractEventLoop) -> None:
        """On any thread, as a parse ends: count it; a parse cancelled before it began (at
        shutdown) deletes its file here."""
        if future.cancelled():
            path.unlink(missing_ok=True)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody counts any more
            loop.call_soon_threadsafe(self._parsed)

    def _parsed(self) -> None:
        self._parsing -= 1

    async def _finish(self, who: Uploader, record: _Open, future) -> None:
        name = record.upload.name
        try:
            hrirs, reserved = await self._prepared(future, name)
        except OverBudget as exc:
            self.counts["refused"] += 1
            log.info("HRTF upload of %r refused: %s", name, exc)
            who.session.send(ErrorMessage(ErrorCode.UPLOAD_FAILED, str(exc), record.msg_id))
            who.flush()
            return
        except HrtfError as exc:
            self.counts["refused"] += 1
            log.info("HRTF upload of %r refused: %s", name, exc)
            who.session.send(ErrorMessage(ErrorCode.BAD_SOFA, _for_people(exc, record.path, name),
                                          record.msg_id))
            who.flush()
            return
        except Exception as exc:  # the parse thread itself failed: the server's fault
            log.exception("HRTF upload of %r: parsing failed", name)
            who.session.send(ErrorMessage(ErrorCode.INTERNAL_ERROR,
                                          f"{name!r} could not be checked: {exc}"[:300],
                                          record.msg_id))
            who.flush()
            return
        finally:
            if self._open.get(who) is record:
                del self._open[who]
        self.counts["taken"] += 1
        entry = self.registry.add(hrirs, name, reserved)
        log.info("HRTF upload of %r taken: set %s…, %d directions, %d taps, %.1f MB", name,
                 entry.digest[:12], len(hrirs.directions), hrirs.taps, hrirs.nbytes / MIB)
        self.registry.use(entry.digest)  # not to be forgotten for another before its uploader
        try:                             # hears through it
            await self.on_loaded(who, UploadedSet(entry.hrirs, name), record.msg_id)  # its name
        finally:
            self.registry.release(entry.digest)

    async def _prepared(self, future, name: str) -> tuple[HrirSet, int]:
        """The set the parse prepared, read once the registry made room for it (or the set
        kept already, if the file gave one the registry holds), and the bytes reserved for it.

        Raises
        ------
        OverBudget
            The registry cannot make room (the prepared set is deleted unread).
        HrtfError
            The parser refused the file, or its output could not be read.
        """
        loop = asyncio.get_running_loop()
        try:
            prepared = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.add_done_callback(_discard_result)
            raise
        kept = self.registry.get(prepared.digest)
        if kept is not None:  # the same content again: nothing to read, nothing to reserve
            loop.run_in_executor(self._io_pool, prepared.discard)
            return kept.hrirs, 0
        try:
            self.registry.reserve(prepared.nbytes, name)
        except OverBudget:
            loop.run_in_executor(self._io_pool, prepared.discard)
            raise
        try:
            hrirs = await loop.run_in_executor(self._parse_pool, prepared.read, name)
        except BaseException:  # unreadable, or cancelled (perhaps before the read began)
            self.registry.cancel(prepared.nbytes)
            prepared.discard()
            raise
        return hrirs, prepared.nbytes

    async def _watch(self, who: Uploader, record: _Open) -> None:
        """End ``record`` once no chunk came for :attr:`stall_s`."""
        loop = asyncio.get_running_loop()
        while self._open.get(who) is record and record.parsing is None:
            if record.upload.stalled(loop.time()):
                record.watchdog = None  # this task: not to be cancelled by _end
                self._end(who, record, f"nothing came for {self.stall_s:g} s "
                          f"({record.upload.received} of {record.upload.size} bytes arrived)",
                          drain_bytes=record.upload.missing)
                return
            await asyncio.sleep(max(0.0, record.upload.deadline - loop.time()) + 0.01)

    def _end(self, who: Uploader, record: _Open, why: str, drain_bytes: int) -> None:
        """End an upload early: tell ``who`` (``upload_failed``), forget its file."""
        self.counts["ended"] += 1
        log.info("HRTF upload of %r ended: %s", record.upload.name, why)
        self._close(who, record, drain_bytes)
        who.session.send(ErrorMessage(ErrorCode.UPLOAD_FAILED,
                                      f"the upload of {record.upload.name!r} was ended: {why}",
                                      record.msg_id))
        who.flush()

    def _refuse(self, who: Uploader, message: HrtfUpload, why: str) -> None:
        """Refuse a new upload (not a strike: the client could not know); drop its bytes."""
        who.session.close_upload(message.size)
        who.session.send(ErrorMessage(ErrorCode.UPLOAD_FAILED, why, message.msg_id))
        who.flush()

    def _close(self, who: Uploader, record: _Open, drain_bytes: int) -> None:
        if self._open.get(who) is record:
            del self._open[who]
        if record.watchdog is not None:
            record.watchdog.cancel()
        if record.parsing is not None:
            record.parsing.cancel()  # the parse thread finishes and deletes the file itself
        else:
            who.session.close_upload(drain_bytes)
            asyncio.get_running_loop().run_in_executor(self._io_pool, _discard, record.path,
                                                       record.file)

    def cancel(self, who: Uploader) -> None:
        """``who`` left or went: end its upload, if any, silently."""
        record = self._open.get(who)
        if record is not None:
            self._close(who, record, 0)

    def close(self) -> None:
        """At shutdown: end every upload, and stop the parses under way (their children are
        killed, so the process does not wait up to a parse's time limit to exit)."""
        for who, record in list(self._open.items()):
            self._close(who, record, 0)
        self._parse_pool.shutdown(wait=False, cancel_futures=True)
        stop_parsers()
        self._io_pool.shutdown(wait=False)
