"""The AI sidecar process: ``python -m ai_accompany.sidecar`` (started by the server).

It reads frames (:mod:`ai_accompany.ipc`) on stdin and writes frames on stdout; stderr is its
log. Per room with an AI musician it keeps a :class:`~ai_accompany.brain.Brain` that listens
to the room's analysis audio and sends note events on the room's clock, each decided just
before it sounds (:data:`~ai_accompany.brain.DEFAULT_LEAD_MS`).
It never talks to anyone but the server, and the server never waits for it: if it dies or
stops answering, the server starts another one and sends it the rooms' settings again.

Run alone for development: ``python -m ai_accompany.sidecar < frames > frames`` (or drive it
from a test with :class:`subprocess.Popen`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import sys
import time

from ai_accompany.brain import Brain, BrainConfig
from ai_accompany.ipc import ChannelError, FrameReader, audio_of, encode

log = logging.getLogger("ai_accompany.sidecar")


#: A block handled this long after it was read is stale: its room's clock has moved on.
STALE_S = 0.05
#: A room whose brain fails this many blocks in a row is given up (its AI falls silent).
MAX_FAILURES = 50


class Sidecar:
    """The sidecar's state: one brain per room. Pure: messages in, frames out."""

    def __init__(self) -> None:
        self.brains: dict[str, Brain] = {}
        self.failures: dict[str, int] = {}

    def handle_safely(self, header: dict, body: bytes, latest: bool = True) -> list[bytes]:
        """:meth:`handle`, with one room's failure kept to that room: logged once, counted,
        and after :data:`MAX_FAILURES` in a row its brain is dropped and the server told."""
        room = header.get("room")
        try:
            frames = self.handle(header, body, latest)
        except Exception as exc:
            count = self.failures[room] = self.failures.get(room, 0) + 1
            if count == 1:
                log.exception("room %s: %s failed", room, header.get("type"))
            if count < MAX_FAILURES or room not in self.brains:
                return []
            del self.brains[room]
            log.error("room %s: giving up after %d failures in a row", room, count)
            return [encode({"type": "status", "room": room,
                            "error": f"the AI stopped: {type(exc).__name__}: {exc}"[:300]})]
        self.failures.pop(room, None)
        return frames

    def handle(self, header: dict, body: bytes, latest: bool = True) -> list[bytes]:
        kind, room = header["type"], header.get("room")
        if kind == "ping":
            return [encode({"type": "pong", "t": header.get("t")})]
        if not isinstance(room, str):
            return []
        if kind == "config":
            config = BrainConfig.from_dict(header.get("ai") or {})
            brain = self.brains.get(room)
            if brain is None:
                self.brains[room] = Brain(config)
            else:
                brain.configure(config)
            return []
        if kind == "remove":
            self.brains.pop(room, None)
            return []
        if kind == "audio":
            brain = self.brains.get(room)
            if brain is None:
                return []
            events, _ = brain.hear(int(header["sample"]), audio_of(body), plan=latest,
                                   report=False)
            if events:
                return [encode({"type": "events", "room": room,
                                "events": [e.to_tuple() for e in events]})]
        return []

    def statuses(self) -> list[bytes]:
        """The statuses that came due, after the notes have gone out (working out the plan
        takes a few milliseconds the notes should not wait for)."""
        out = []
        for room, brain in list(self.brains.items()):
            if brain.status_due:
                brain.status_due = False
                try:
                    out.append(encode({"type": "status", "room": room, **brain.status()}))
                except Exception:  # a status is not worth a room: logged, and skipped
                    log.exception("room %s: status failed", room)
        return out


def warm_up() -> None:
    """Load the models and compile the listening kernels now, before the first room needs
    them (on a fresh install numba compiles for seconds), so no room's music waits on it."""
    import numpy as np

    brain = Brain(BrainConfig(bpm=120.0))
    noise = np.random.default_rng(0).standard_normal(320).astype(np.float32) * 0.1
    for k in range(60):
        brain.hear(k * 960, noise)


#: Below the server's threads in the CPU scheduler's eyes (nice 0 is the default, 19 the least).
NICENESS = 5


def main() -> int:
    logging.basicConfig(level=os.environ.get("SPATIALJAM_AI_LOG", "WARNING"),
                        format="%(asctime)s sidecar %(levelname)s: %(message)s", stream=sys.stderr)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # The room clocks come first: warming up (and each decision) may wait for a core, a tick
    # may not. The AI decides its lead (40 ms) ahead: it has a few milliseconds to wait.
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    try:
        warm_up()
    except Exception:  # the rooms will say what is wrong, room by room
        log.exception("warming up failed")
    reader, sidecar = FrameReader(), Sidecar()
    while True:
        data = stdin.read1(1 << 16)
        if not data:
            return 0  # the server closed the channel: done
        # Take all that has queued up (after a slow start, say) before deciding anything.
        while select.select([stdin], [], [], 0)[0]:
            more = stdin.read1(1 << 16)
            if not more:
                break
            data += more
        try:
            messages = reader.feed(data)
        except ChannelError as exc:
            log.error("unreadable input: %s", exc)
            return 2
        # Only each room's newest block decides, and only while it is fresh: blocks that queued
        # up (behind newer ones, or while a brain was loading) are only heard.
        read_at = time.monotonic()
        newest = {h.get("room"): k for k, (h, _) in enumerate(messages) if h["type"] == "audio"}
        for k, (header, body) in enumerate(messages):
            fresh = time.monotonic() - read_at < STALE_S
            latest = header["type"] != "audio" or (newest.get(header.get("room")) == k and fresh)
            for frame in sidecar.handle_safely(header, body, latest):
                stdout.write(frame)
        stdout.flush()
        if statuses := sidecar.statuses():
            stdout.write(b"".join(statuses))
            stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
