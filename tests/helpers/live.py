"""Around a live ``spatialjam serve``: what a bot hears, access tokens and refused handshakes,
the server's ``/metrics``, its AI sidecar processes, waiting for a condition."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import websockets

from bench.bot import Bot
from signaling.access import mint

#: Time for a move or a join to reach the ears before listening, and how long to listen.
SETTLE_S = 0.8
LISTEN_S = 0.6


async def heard(bot: Bot) -> np.ndarray:
    """What ``bot`` hears once its mix flows and has settled after the last change."""
    await bot.flowing()
    await asyncio.sleep(SETTLE_S)
    return await bot.listen(LISTEN_S)


def mint_for(secret: bytes, room: str, identity: str, *grants: str, ttl_s=600.0) -> str:
    return mint(secret, room=room, identity=identity, grants=grants or ("join", "publish"),
                ttl_s=ttl_s, now=time.time())


def handshake_refusal(url: str) -> tuple[int, dict]:
    async def attempt():
        with pytest.raises(websockets.InvalidStatus) as caught:
            async with websockets.connect(url):
                pass
        response = caught.value.response
        return response.status_code, json.loads(response.body)

    return asyncio.run(attempt())


def metrics(srv) -> dict[str, float]:
    text = urllib.request.urlopen(f"{srv.http}/metrics", timeout=5).read().decode()
    return {line.split()[0].removeprefix("spatialjam_"): float(line.split()[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def sidecar_pids(server_pid: int) -> list[int]:
    """The server's children running the AI sidecar."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == server_pid and b"ai_accompany.sidecar" in cmdline:
            pids.append(int(entry.name))
    return pids


async def metrics_off_loop(srv) -> dict[str, float]:
    """:func:`metrics`, fetched in a thread: a test whose bots live on this event loop must not
    stop it for an HTTP round trip (the server can take a while to answer, e.g. while a new AI
    sidecar starts; the bots' packets then wait, and the wait reads as a gap in a mix)."""
    return await asyncio.to_thread(metrics, srv)


async def wait_for(predicate, timeout: float, step: float = 0.1):
    """Poll ``predicate`` (a function, or a coroutine function) until it is true or
    ``timeout`` seconds have passed; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(step)


#: How long :func:`steady_listen` waits at most for two more of the server's ``stats`` (every
#: second) after a window: the second was made after it, however late it arrives.
REPORTS_WITHIN_S = 15.0


async def steady_listen(bot: Bot, seconds: float, holds, tries: int = 3) -> np.ndarray:
    """What ``bot`` hears in the next ``seconds``, taken when ``holds(heard)`` is true or when
    nothing moved that audio in time meanwhile.

    A window with a break in the received stream (a frame lost, late or reordered:
    :meth:`~bench.bot.Bot.breaks`) or a tick the room skipped is no verdict on timing: it is
    taken again, up to ``tries`` times, and the test is skipped, saying why, if every window
    was broken. A window that fails with nothing broken is returned for the caller's assert
    to fail on."""
    for _ in range(tries):
        skipped = (bot.stats or {}).get("skipped_ticks", 0)
        start = len(bot.received)
        got = await bot.listen(seconds)
        stop = len(bot.received)  # no await since listen() took its frames: the same ones
        if holds(got):
            return got
        # The second report from now was made after the window, however late it arrives.
        seen = bot.stats_seen
        await wait_for(lambda seen=seen: bot.stats_seen >= seen + 2, REPORTS_WITHIN_S)
        if bot.breaks(start, stop) == 0 and (bot.stats or {}).get("skipped_ticks", 0) == skipped:
            return got
    pytest.skip(f"{bot.name}'s received audio broke (a frame lost, late or reordered, or a "
                f"tick skipped) in each of {tries} windows: not a verdict on its timing")
