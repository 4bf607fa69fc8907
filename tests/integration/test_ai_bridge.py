"""The sidecar's supervision: a slow start is waited for, a silent or dead sidecar replaced."""

from __future__ import annotations

import asyncio
import sys

import server.ai.bridge as ai
from server.ai.bridge import AiBridge

SLOW_START = ("import time, runpy; time.sleep(4); "
              "runpy.run_module('ai_accompany.sidecar', run_name='__main__')")
NEVER_ANSWERS = "import time; time.sleep(600)"


async def until(predicate, timeout: float) -> bool:
    for _ in range(int(timeout / 0.1)):
        if predicate():
            return True
        await asyncio.sleep(0.1)
    return predicate()


async def test_a_sidecar_warming_up_is_waited_for_not_killed():
    bridge = AiBridge(lambda room, events: None, command=[sys.executable, "-c", SLOW_START])
    try:
        bridge.configure("r", {"role": "accompany", "bpm": 100.0})
        assert await until(lambda: bridge._answered, 30.0), "it never answered"
        assert bridge.restarts == 0
    finally:
        await bridge.close()


async def test_a_sidecar_that_never_answers_is_replaced(monkeypatch):
    monkeypatch.setattr(ai, "STARTUP_S", 1.0)
    bridge = AiBridge(lambda room, events: None, command=[sys.executable, "-c", NEVER_ANSWERS])
    try:
        bridge.configure("r", {})
        assert await until(lambda: bridge.restarts >= 1, 10.0)
        first = bridge.proc.pid if bridge.proc else None
        assert await until(lambda: bridge.restarts >= 2 and bridge.proc is not None
                           and bridge.proc.pid != first, 10.0)
    finally:
        await bridge.close()
    assert bridge.proc is None  # closed: nothing left running
