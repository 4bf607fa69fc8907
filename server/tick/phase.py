"""Where in its frame a room's tick falls: just after its sources' frames arrive (no I/O).

A frame waits at the server from its arrival to the tick that mixes it. The room clock ticks
every 20 ms whatever the senders do, so with a fixed phase that wait is anywhere in 0–20 ms,
decided by chance at join. :class:`PhaseAligner` watches the wait of every frame played and
moves the clock's phase so the tick comes as soon after the arrivals as it safely can:

- over each window (``window_ticks``), the *tightest* source's shortest wait is found (the
  source whose frames arrive closest before the tick: any earlier, and its frames would miss);
- if that wait exceeds ``margin_ms`` by at least ``min_step_ms``, the clock ticks earlier by
  the difference (at most ``max_step_ms`` at a time): every source's wait shrinks by as much,
  and none misses its tick;
- if it has fallen below half the margin (a sender's clock drifting, the network slowing),
  the clock ticks later instead, before frames start to miss;
- a window in which some source's frame came too late (an underrun) moves nothing earlier.

Sources whose buffers hold more than one frame (jittery networks) wait 20 ms or more and do
not constrain the others. One phase serves a whole room, so with several players it suits the
tightest one fully and the others partly (their waits all shrink by the same amount).
"""

from __future__ import annotations

from hrtf.constants import FRAME_MS

#: How long a window of observations lasts (ms): a hundred 20 ms ticks.
WINDOW_MS = 2000.0


class PhaseAligner:
    def __init__(self, margin_ms: float = 2.0, window_ticks: int | None = None,
                 min_step_ms: float = 1.0, max_step_ms: float = 5.0,
                 frame_ms: float = FRAME_MS) -> None:
        self.margin_ms = margin_ms
        #: Ticks per window: two seconds' of ``frame_ms`` ticks unless given.
        self.window_ticks = window_ticks if window_ticks is not None \
            else round(WINDOW_MS / frame_ms)
        self.frame_ms = frame_ms
        self.min_step_ms = min_step_ms
        self.max_step_ms = max_step_ms
        self._ticks = 0
        self._shortest: dict[int, float] = {}  # source -> shortest wait this window
        self._played: dict[int, int] = {}
        self._underruns = 0
        #: Total shift so far (ms; negative = earlier) and the number of shifts.
        self.shifted_ms = 0.0
        self.shifts = 0

    def observe(self, waits_ms: dict[int, float | None], underruns: int = 0) -> float:
        """One tick: each source's played frame's wait (None: nothing played; ``inf``: the
        tick played on in a packet an earlier tick began, :mod:`server.media.reframe`), and how
        many underruns happened. Returns how far to move the clock now (ms; negative = earlier),
        0 mostly."""
        for source, wait in waits_ms.items():
            if wait is None:
                continue
            self._played[source] = self._played.get(source, 0) + 1
            if wait < self._shortest.get(source, float("inf")):
                self._shortest[source] = wait
        self._underruns += underruns
        self._ticks += 1
        if self._ticks < self.window_ticks:
            return 0.0
        # Only sources that played most of the window speak for where their frames arrive.
        steady = [w for s, w in self._shortest.items()
                  if self._played[s] >= 0.9 * self.window_ticks]
        underruns = self._underruns
        self._ticks, self._underruns = 0, 0
        self._shortest.clear()
        self._played.clear()
        if not steady:
            return 0.0
        slack = min(steady) - self.margin_ms
        if slack >= self.min_step_ms and not underruns:
            step = -min(slack, self.max_step_ms, self.frame_ms / 2)
        elif slack < -self.margin_ms / 2:
            step = min(-slack, self.max_step_ms)
        else:
            return 0.0
        self.shifted_ms += step
        self.shifts += 1
        return step
