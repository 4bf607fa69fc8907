"""Which worker process holds which room, and where a new room goes (no I/O, no clock).

With ``serve --workers N`` (:mod:`server.routing.front`) every room lives on exactly one worker: a
room's mix needs all its members' streams in one process. The front keeps the table here:

- a join for a room that is open goes to the worker that holds it;
- a join for a new room *places* it on the worker with the least measured load: the sum over
  its rooms of each room's mean tick time over the last second divided by the 20 ms frame
  (:func:`server.tick.load.tick_load`; 1.0 is one tick thread busy all the time), as the worker's
  ``/healthz`` last said. Loads within :data:`LOAD_TIE` of each other count as equal, and the
  worker with fewer rooms is chosen (then the lower index);
- a room placed since the worker last reported counts *provisionally*: as much load as the
  mean measured room (at least :data:`MIN_ROOM_LOAD`) and one room more, so that a burst of new
  rooms between two polls is spread rather than all put on the worker that looked idle;
- each poll of a worker (:meth:`RoomPlacement.report`) is the truth about its rooms: rooms it
  holds are its own, rooms it no longer holds are forgotten (a room closes on its worker after
  its grace), except for :data:`HOLD_S` after a join was routed to them, since the poll may have
  been answered before that join arrived;
- a worker that is down (:meth:`RoomPlacement.down`) loses its rooms: their members reconnect
  through the front, and the rooms open again where the placement says.

Time comes in as ``now`` (monotonic seconds); the tests drive the table without a loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Loads closer than this count as equal (a twentieth of a tick thread: 1 ms per 20 ms frame),
#: so measurement noise does not decide between two idle workers: the room count does.
LOAD_TIE = 0.05
#: The least a placed room counts for until its worker reports it.
MIN_ROOM_LOAD = 0.02
#: A routed join keeps its room's entry this long without a report naming it (seconds).
HOLD_S = 5.0


@dataclass
class WorkerLoad:
    """What the front knows of one worker: whether it takes rooms, and its last report."""

    up: bool = False
    #: Measured tick load (tick threads busy; see the module).
    load: float = 0.0
    #: Each room's measured load, as last reported.
    rooms: dict[str, float] = field(default_factory=dict)


class RoomPlacement:
    """The room → worker table of a front with ``workers`` workers (indices 0 … N−1).

    Parameters
    ----------
    workers
        How many workers there are (≥ 1). None is up until it reports or :meth:`up` is called.
    hold_s
        See :data:`HOLD_S`.
    """

    def __init__(self, workers: int, hold_s: float = HOLD_S) -> None:
        if workers < 1:
            raise ValueError(f"a front needs at least one worker, got {workers}")
        self.workers = [WorkerLoad() for _ in range(workers)]
        self.hold_s = hold_s
        #: room → worker index, for every room known open or just placed.
        self.owner: dict[str, int] = {}
        #: room → until when its entry stands without a report naming it.
        self._held: dict[str, float] = {}
        #: rooms placed and not reported yet: room → worker index.
        self._provisional: dict[str, int] = {}

    # what the workers say ----------------------------------------------------------------

    def up(self, worker: int) -> None:
        """``worker`` is ready (started, answering) and takes rooms."""
        self.workers[worker].up = True

    def down(self, worker: int) -> list[str]:
        """``worker`` is gone or stopped answering: it takes no rooms, and its rooms are
        forgotten. Returns their names."""
        view = self.workers[worker]
        view.up, view.load, view.rooms = False, 0.0, {}
        gone = [room for room, owner in self.owner.items() if owner == worker]
        for room in gone:
            self._forget(room)
        return gone

    def report(self, worker: int, load: float, rooms: dict[str, float], now: float) -> None:
        """A poll of ``worker`` answered: its measured ``load`` and each room's."""
        view = self.workers[worker]
        view.up, view.load, view.rooms = True, max(0.0, load), dict(rooms)
        for room in rooms:
            self.owner[room] = worker
            self._provisional.pop(room, None)
        for room in [r for r, w in self.owner.items() if w == worker and r not in rooms]:
            if self._held.get(room, -1.0) < now:
                self._forget(room)
        for room in [r for r, until in self._held.items() if until < now]:
            del self._held[room]
            if self._provisional.pop(room, None) is not None:  # its join never opened it
                self.owner.pop(room, None)

    # routing -----------------------------------------------------------------------------

    def route(self, room: str, now: float) -> int | None:
        """The worker a join for ``room`` goes to: its owner, or a new placement (None when
        no worker is up)."""
        worker = self.owner.get(room)
        if worker is None or not self.workers[worker].up:
            worker = self.least_loaded()
            if worker is None:
                return None
            self.owner[room] = worker
            self._provisional[room] = worker
        self._held[room] = now + self.hold_s
        return worker

    def least_loaded(self) -> int | None:
        """The up worker a new room would go to (None when none is up)."""
        up = [w for w, view in enumerate(self.workers) if view.up]
        if not up:
            return None
        return min(up, key=lambda w: (round(self.effective_load(w) / LOAD_TIE),
                                      self.room_count(w), w))

    def effective_load(self, worker: int) -> float:
        """The worker's measured load plus its provisional rooms' estimate."""
        pending = sum(1 for w in self._provisional.values() if w == worker)
        return self.workers[worker].load + pending * self.room_estimate()

    def room_count(self, worker: int) -> int:
        """Rooms the worker reported, and those placed on it since."""
        view = self.workers[worker]
        return len(view.rooms) + sum(1 for room, w in self._provisional.items()
                                     if w == worker and room not in view.rooms)

    def room_estimate(self) -> float:
        """What a room not measured yet counts for: the mean measured room's load, at least
        :data:`MIN_ROOM_LOAD`."""
        loads = [load for view in self.workers for load in view.rooms.values()]
        return max(MIN_ROOM_LOAD, sum(loads) / len(loads)) if loads else MIN_ROOM_LOAD

    def _forget(self, room: str) -> None:
        self.owner.pop(room, None)
        self._held.pop(room, None)
        self._provisional.pop(room, None)
