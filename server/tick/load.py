"""How busy this process's room clocks are: the load a front places new rooms by.

A room's load is its mean tick time (decode, render and encode, as
:class:`~server.tick.runner.TickStats` measures each tick) over its ticks of the last
:data:`LOAD_MS`, divided by its frame (20 ms by default): 0.25 is a quarter of one tick
thread's time. A room whose clock waits (nobody in it: an empty room in its grace) costs nothing and
counts 0. The process's load is the sum over its rooms. Read on a ``/healthz`` request, a few
array operations per room.
"""

from __future__ import annotations

#: How long (ms) a room's load is the mean over: its ticks of the last second.
LOAD_MS = 1000.0


def room_loads(rooms: dict) -> dict[str, float]:
    """``{room: load}`` for a hub's ``rooms`` (name → :class:`~server.rooms.hub.LiveRoom`)."""
    loads = {}
    for name, live in rooms.items():
        ticking = live.participants or live.runner.ai_voices
        frame_ms = live.runner.frame_ms
        ticks = round(LOAD_MS / frame_ms)
        recent = live.runner.stats.recent_ms.values()[-ticks:] if ticking else ()
        loads[name] = round(float(recent.mean()) / frame_ms, 4) if len(recent) else 0.0
    return loads


def tick_load(rooms: dict) -> float:
    """The sum of :func:`room_loads`."""
    return round(sum(room_loads(rooms).values()), 4)
