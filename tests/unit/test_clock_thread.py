"""The room clock is a thread of its own (issue 17): it ticks on time whatever the event loop
is doing, and asks for real-time priority where the system allows it
(:mod:`server.tick.priority`)."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from hrtf.constants import frame_samples
from server.rooms.room import Room
from server.tick.priority import ClockPriority
from server.tick.runner import RoomRunner

FRAME_MS = 5.0


async def test_the_room_clock_ticks_on_while_the_event_loop_is_busy(kemar):
    """The loop blocked for 300 ms (a burst of signaling, a slow handler): the clock's thread
    ticks through it, and the ticks' packets reach their listeners once the loop is back. A
    clock on the loop (as before) would not tick at all meanwhile."""
    room = Room("busy", capacity=2)
    a, b = room.join("A"), room.join("B")
    runner = RoomRunner(room, kemar, frame=frame_samples(FRAME_MS), follow_phase=False)
    for member in (a, b):
        runner.attach(member.slot)
    runner.start()
    try:
        deadline = time.monotonic() + 120  # its first ticks: on a fresh install the first
        while runner.stats.ticks < 5 and time.monotonic() < deadline:  # compiles the kernels
            await asyncio.sleep(0.01)
        assert runner.stats.ticks >= 5
        before = runner.schedule.next_tick
        start = time.monotonic()
        time.sleep(0.3)  # the event loop runs nothing meanwhile
        elapsed = time.monotonic() - start
        ticked = runner.schedule.next_tick - before
        # 60 ticks are due; a starved machine may skip some, counted by the schedule.
        assert ticked + runner.schedule.skipped_ticks >= 0.8 * elapsed * 1e3 / FRAME_MS, ticked
        assert ticked >= 10, ticked
        finished = runner.stats.ticks
        await asyncio.sleep(0.05)  # the loop sends what the clock rendered meanwhile
        assert runner.stats.ticks >= finished + ticked - 2
    finally:
        await runner.stop()
    assert not runner._thread  # stopped: its thread has ended


def test_a_clock_runs_at_real_time_priority_where_allowed_and_a_core_is_left_over():
    """Where allowed, a clock runs at SCHED_FIFO, the threads it starts do not, a second clock
    finds no slot left, and release hands it back (where not allowed: said why)."""
    priority = ClockPriority("auto", slots=1)
    results: list[tuple[bool, int]] = []

    def clock(hold: threading.Event | None) -> None:
        got = priority.acquire()
        # (the threads a real-time clock starts are ordinary ones: SCHED_RESET_ON_FORK)
        results.append((got, os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK))
        if got:
            helper: list[int] = []
            spawned = threading.Thread(target=lambda: helper.append(os.sched_getscheduler(0)))
            spawned.start()
            spawned.join()
            assert helper == [os.SCHED_OTHER]
        if hold is not None:
            hold.wait(5)
        if got:
            priority.release()
            assert os.sched_getscheduler(0) == os.SCHED_OTHER

    hold = threading.Event()
    first = threading.Thread(target=clock, args=(hold,))
    first.start()
    while not results:
        time.sleep(0.01)
    got, policy = results[0]
    if not got:  # this machine does not allow it: said in words, and nothing asked again
        assert priority.refused and "CAP_SYS_NICE" in priority.refused
        assert policy == os.SCHED_OTHER
        hold.set()
        first.join()
        pytest.skip(f"real-time priority here: {priority.refused}")
    assert policy == os.SCHED_FIFO and priority.describe()["realtime_clocks"] == 1
    second = threading.Thread(target=clock, args=(None,))  # no slot left: an ordinary thread
    second.start()
    second.join()
    assert results[1] == (False, os.SCHED_OTHER)
    hold.set()
    first.join()
    assert priority.describe() == {"mode": "auto", "realtime_clocks": 0, "slots": 1}


def test_normal_asks_for_nothing_and_says_so():
    priority = ClockPriority("normal")
    assert not priority.acquire()
    assert priority.describe()["not_realtime_because"].endswith("(--clock-priority normal)")
    with pytest.raises(ValueError, match="one of auto, normal"):
        ClockPriority("fast")
