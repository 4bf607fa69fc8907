"""The room clocks' priority: real-time scheduling (``SCHED_FIFO``) where the system allows it,
for as many clocks as leave a core to the event loop.

A room's clock is a thread of its own (:mod:`server.tick.runner`). Woken by the kernel at its
deadline, an ordinary thread waits its turn behind whatever else runs on the machine: measured
here (2 cores, 8 bots at 5 ms frames), a thread of the server woke p99 1.5–2.1 ms late, one at
``SCHED_FIFO`` 0.7–0.8 ms. So a clock asks for real-time priority as it starts, the way audio
servers (JACK, PipeWire) run their processing threads.

Two limits keep a real-time clock from starving the rest of the process (the event loop reads
every player's packets and sends every mix):

- at most ``cores - 1`` clocks hold it at once (none on one core; the cores this process may
  run on; shared out among ``serve --workers``' processes by ``SPATIALJAM_CLOCK_SLOTS``); the
  others run as ordinary threads, and an idle room's clock gives its slot back while it waits;
- threads a real-time clock starts (numba's OpenMP team, the encode helpers) start as ordinary
  threads (``SCHED_RESET_ON_FORK``): only the clock itself jumps the queue;
- a clock whose ticks keep taking more than :data:`HEAVY_SHARE` of its frame gives it back
  (:meth:`ClockPriority.heavy`): a room that busy is a load to share, not an emergency.

Without the permission (``CAP_SYS_NICE``, or an ``RLIMIT_RTPRIO`` of at least
:data:`REALTIME_PRIORITY`: ``LimitRTPRIO=`` under systemd, ``--ulimit rtprio=`` in Docker) the
clocks run as ordinary threads and ``/healthz`` says why. ``serve --clock-priority normal``
asks for nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading

log = logging.getLogger(__name__)

#: The clocks' SCHED_FIFO priority (1–99): above every ordinary thread, below the kernel's own
#: real-time threads and audio servers' (PipeWire's data thread asks for 88).
REALTIME_PRIORITY = 20
#: A clock whose ticks take more than this share of its frame, for :data:`HEAVY_TICKS_S` on
#: end, gives real-time priority back.
HEAVY_SHARE = 0.6
HEAVY_TICKS_S = 2.0
MODES = ("auto", "normal")
#: How many room clocks of this process may run at real-time priority (set by the front of
#: ``serve --workers N`` for its workers; by default the cores less one).
CLOCK_SLOTS_ENV = "SPATIALJAM_CLOCK_SLOTS"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def default_slots() -> int:
    """:data:`CLOCK_SLOTS_ENV` if set (a worker's share), else the usable cores less one."""
    try:
        return max(0, int(os.environ[CLOCK_SLOTS_ENV]))
    except (KeyError, ValueError):
        return usable_cores() - 1


class ClockPriority:
    """Which room clocks of this process run at real-time priority (thread-safe).

    Parameters
    ----------
    mode : str
        ``auto``: real-time where allowed, for up to ``slots`` clocks; ``normal``: never.
    slots : int or None
        How many clocks may hold it at once (default: the cores less one).
    """

    def __init__(self, mode: str = "auto", slots: int | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"clock priority {mode!r}: one of {', '.join(MODES)}")
        self.mode = mode
        self.slots = default_slots() if slots is None else slots
        self._lock = threading.Lock()
        self.held = 0
        #: Why clocks run as ordinary threads (None: they may hold real-time priority).
        self.refused: str | None = "asked for none (--clock-priority normal)" \
            if mode == "normal" else None

    def acquire(self) -> bool:
        """On a clock's thread as it starts: real-time priority for it, if allowed and a slot
        is free; whether it got it."""
        with self._lock:
            if self.refused is not None or self.held >= self.slots:
                return False
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK,
                                      os.sched_param(REALTIME_PRIORITY))
            except (PermissionError, OSError, AttributeError) as exc:
                self.refused = (f"not permitted ({exc.__class__.__name__}: give the server "
                                f"CAP_SYS_NICE or an RLIMIT_RTPRIO of {REALTIME_PRIORITY})")
                log.warning("room clocks run as ordinary threads: real-time priority is %s",
                            self.refused)
                return False
            self.held += 1
            return True

    def release(self) -> None:
        """On a clock's thread that holds it: back to an ordinary thread."""
        with self._lock:
            with contextlib.suppress(OSError):  # (lowering one's own is always allowed)
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            self.held = max(0, self.held - 1)

    def heavy_ticks(self, frame_ms: float) -> int:
        """How many heavy ticks in a row make a clock give its priority back."""
        return max(1, round(1e3 * HEAVY_TICKS_S / frame_ms))

    def describe(self) -> dict:
        """For ``/healthz``: the mode, the clocks holding real-time priority, and why none may."""
        with self._lock:
            return {"mode": self.mode, "realtime_clocks": self.held, "slots": self.slots,
                    **({"not_realtime_because": self.refused} if self.refused else {})}
