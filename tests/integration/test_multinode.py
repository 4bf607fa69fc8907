"""Two nodes on loopback sharing a real Redis server (``serve --redis``): a join on node B for a
room that lives on node A ends in that room, and hears it; killing node A (front and worker,
SIGKILL) opens its room again on B, where the players rejoin their seats with the stage layout
and their personal mixes as they were."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request

import numpy as np
import pytest
import redis

from bench.bot import Bot, tone
from bench.serverproc import ServerProcess
from tests.helpers.audio import band_ild_db, band_level_db

TONE_HZ = 1000.0
SETTLE_S = 1.0
LISTEN_S = 1.0
#: Joins timed per path for the routing delay (printed, not asserted).
TIMED_JOINS = 5


def node(redis_url: str) -> ServerProcess:
    return ServerProcess("--workers", "1", "--redis", redis_url)


def health(srv: ServerProcess) -> dict:
    with urllib.request.urlopen(f"{srv.http}/healthz", timeout=5) as reply:
        return json.load(reply)


async def until(check, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(check):
            return True
        await asyncio.sleep(0.1)
    return False


def rooms_on(srv: ServerProcess) -> int:
    """Rooms open on the node, as its last poll of its workers saw (twice a second)."""
    return health(srv)["rooms"]


async def timed_join(url: str, room: str, name: str) -> float:
    """Seconds from opening the WebSocket to ``joined``."""
    bot = Bot(url, room, name)
    started = time.perf_counter()
    await bot.connect()
    took = time.perf_counter() - started
    await bot.close()
    return took


async def test_a_join_on_node_b_for_a_room_on_node_a_ends_in_it(redis_url):
    with node(redis_url) as a, node(redis_url) as b:
        assert health(a)["node"]["id"] != health(b)["node"]["id"]
        source = Bot(a.ws, "band", "S", tone(TONE_HZ))
        await source.connect()
        listener = Bot(b.ws, "band", "L")  # through node B
        await listener.connect()
        try:
            assert {m["name"] for m in listener.state["members"]} == {"S", "L"}
            assert await until(lambda: rooms_on(a) == 1 and rooms_on(b) == 0)  # one room, on A
            for bot, xyz in ((source, [0, 2, 1.2]), (listener, [0, 0, 1.2])):
                await bot.send({"type": "move_source", "source": bot.participant,
                                "position_m": xyz})
            await listener.send({"type": "head_pose", "yaw_deg": 0})
            await listener.flowing()
            await asyncio.sleep(SETTLE_S)
            heard = await listener.listen(LISTEN_S)
            print(f"\nL through node B hears S at {band_level_db(heard, TONE_HZ):.1f} dB, "
                  f"ILD {band_ild_db(heard, TONE_HZ):.1f} dB")
            assert band_level_db(heard, TONE_HZ) > -45  # the media comes from A's worker
            assert band_ild_db(heard, TONE_HZ) > 2.0  # S is on L's left
        finally:
            await source.close()
            await listener.close()

        # the routing delay: joins of an open room, straight to its node and through the other
        holder = Bot(a.ws, "timing", "H")
        await holder.connect()
        try:
            owner_id = redis.Redis.from_url(redis_url).get("spatialjam:room:timing").decode()
            home, other = (a, b) if owner_id == health(a)["node"]["id"] else (b, a)
            direct, relayed = [], []
            for k in range(TIMED_JOINS):
                direct.append(await timed_join(home.ws, "timing", f"d{k}"))
                relayed.append(await timed_join(other.ws, "timing", f"r{k}"))
        finally:
            await holder.close()
        print(f"join → joined, median of {TIMED_JOINS}: straight to the room's node "
              f"{1e3 * np.median(direct):.1f} ms, through another node "
              f"{1e3 * np.median(relayed):.1f} ms")


async def test_a_join_the_rooms_node_refuses_is_told_why_through_the_other_node(redis_url):
    """Node A is full (one connection at most): a join through B for A's room is refused by
    A, and the client reads A's reason as a signaling error."""
    with ServerProcess("--workers", "1", "--redis", redis_url, "--max-connections", "1") as a, \
            node(redis_url) as b:
        holder = Bot(a.ws, "full", "H")
        await holder.connect()
        late = Bot(b.ws, "full", "L")
        try:
            with pytest.raises(Exception, match="refused the connection") as refused:
                await late.connect()
            print(f"\nthrough B: {refused.value}")
            assert any("HTTP 503" in e["message"] for e in late.errors), late.errors
        finally:
            await late.close()
            await holder.close()


async def test_members_of_a_room_another_node_took_over_are_sent_to_it(redis_url):
    """As if node A had been cut off from Redis long enough for B to take its room: A finds
    the room taken at its next heartbeat, closes its members' connections with 1012, and their
    joins through A then reach the room on B."""
    with node(redis_url) as a, node(redis_url) as b:
        store = redis.Redis.from_url(redis_url)
        member = Bot(a.ws, "split", "M")
        await member.connect()
        owner = store.get("spatialjam:room:split").decode()
        home, other = (a, b) if owner == health(a)["node"]["id"] else (b, a)
        if home is not a:  # placed on B: the member talks to its room's own node
            await member.close()
            member = Bot(home.ws, "split", "M", seat=member.seat)
            await member.connect()
        store.set("spatialjam:room:split", health(other)["node"]["id"], px=3000)  # taken
        await asyncio.wait_for(member._ws.wait_closed(), 10)
        assert member._ws.close_code == 1012, member._ws.close_code
        assert "moved to another server" in member._ws.close_reason
        await member.close()
        back = Bot(home.ws, "split", "M", seat=member.seat)
        await back.connect()  # through the old node, to the room's node
        try:
            assert back.participant == member.participant
            assert await until(lambda: rooms_on(other) == 1)
            assert store.get("spatialjam:room:split").decode() == health(other)["node"]["id"]
        finally:
            await back.close()


def kill_node(srv: ServerProcess) -> None:
    """Node loss: the front and its workers die at once, with no chance to say goodbye."""
    pids = [w["pid"] for w in health(srv)["workers"] if w["pid"]]
    for pid in (srv.proc.pid, *pids):
        os.kill(pid, signal.SIGKILL)
    srv.proc.wait(10)


async def rejoin(url: str, room: str, name: str, seat: str, signal_=None,
                 timeout_s: float = 30.0) -> Bot:
    """Join again with ``seat`` until a node takes it (clients retry as the web client does)."""
    deadline = time.monotonic() + timeout_s
    while True:
        bot = Bot(url, room, name, signal_ or (lambda start, n: np.zeros(n, np.float32)),
                  seat=seat)
        try:
            await bot.connect()
            return bot
        except Exception:
            await bot.close()
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_a_dead_nodes_room_opens_on_another_with_its_layout_and_mixes(redis_url):
    a = node(redis_url).__enter__()
    try:
        with node(redis_url) as b:
            x = Bot(a.ws, "gig", "X", tone(TONE_HZ))
            await x.connect()
            y = Bot(b.ws, "gig", "Y")  # through B, to the room on A
            await y.connect()
            for bot, xyz in ((x, [1.0, 2.0, 1.2]), (y, [-1.0, 0.0, 1.2])):
                await bot.send({"type": "move_source", "source": bot.participant,
                                "position_m": xyz})
            await x.send({"type": "turn_source", "source": x.participant, "yaw_deg": -120.0})
            await y.flowing()
            await asyncio.sleep(SETTLE_S)
            level_on = band_level_db(await y.listen(LISTEN_S), TONE_HZ)
            await y.send({"type": "mix_override", "source": x.participant, "mute": True})
            await asyncio.sleep(1.0)  # saved (every 200 ms at most)
            stage = {p["source"]: p for p in x.state["stage"]}
            seats = {"X": (x.participant, x.seat), "Y": (y.participant, y.seat)}
            assert await until(lambda: rooms_on(a) == 1 and rooms_on(b) == 0)

            killed = time.monotonic()
            await asyncio.to_thread(kill_node, a)
            for bot in (x, y):
                await bot.close()
            y2 = await rejoin(b.ws, "gig", "Y", seats["Y"][1])
            recovered_s = time.monotonic() - killed
            x2 = await rejoin(b.ws, "gig", "X", seats["X"][1], tone(TONE_HZ))
            try:
                print(f"\nnode A killed → Y back in the room on node B in {recovered_s:.2f} s")
                assert await until(lambda: rooms_on(b) == 1)
                assert (x2.participant, y2.participant) == (seats["X"][0], seats["Y"][0])
                again = {p["source"]: p for p in x2.state["stage"]}
                for source in (x2.participant, y2.participant):
                    assert again[source]["position_m"] == stage[source]["position_m"]
                    assert again[source]["yaw_deg"] == stage[source]["yaw_deg"]
                await y2.send({"type": "head_pose", "yaw_deg": 0})
                await y2.flowing()
                await asyncio.sleep(SETTLE_S)
                muted = band_level_db(await y2.listen(LISTEN_S), TONE_HZ)
                await y2.send({"type": "mix_reset", "source": x2.participant})
                await asyncio.sleep(SETTLE_S)
                unmuted = band_level_db(await y2.listen(LISTEN_S), TONE_HZ)
                print(f"Y hears X at {level_on:.1f} dB before, muted {muted:.1f} dB after the "
                      f"move, {unmuted:.1f} dB once Y resets the mute")
                assert unmuted > -45 and muted < unmuted - 30  # the personal mute came back
            finally:
                await x2.close()
                await y2.close()
    finally:
        if a.proc.poll() is None:
            a.stop()
        with pytest.raises(OSError):
            health(a)


@pytest.mark.parametrize(("argv", "words"), [
    (["--redis", "localhost:6379"], "is not a Redis URL: use redis://HOST:PORT[/DB]"),
    (["--redis", "redis://127.0.0.1:1/0", "--state", "none"], "leave out --state"),
    (["--redis", "redis://127.0.0.1:1/0", "--host", "0.0.0.0"], "--public-url ws://HOST:PORT/ws"),
])
def test_serve_refuses_a_bad_deployment_in_words(capsys, monkeypatch, argv, words):
    from server.cli.main import main

    monkeypatch.setenv("SPATIALJAM_SECRET", "s" * 48)  # listening on 0.0.0.0 needs one
    assert main(["serve", "--workers", "1", *argv]) != 0
    assert words in capsys.readouterr().err


def test_a_node_that_cannot_reach_redis_says_so_and_exits(capsys):
    from server.cli.main import main

    assert main(["serve", "--workers", "1", "--port", "0",
                 "--redis", "redis://127.0.0.1:1/0"]) != 0
    assert "cannot use Redis at redis://127.0.0.1:1/0" in capsys.readouterr().err


def test_a_redis_url_reaches_the_workers_by_environment_not_command_line():
    """A password in ``--redis`` would show in every local user's process list."""
    from server.cli.main import build_parser
    from server.routing.workers import STATE_URL_ENV, worker_command, worker_env

    url = "redis://:hunter2@db.example:6379/0"
    args = build_parser().parse_args(["serve", "--workers", "2", "--redis", url])
    args.state = url  # as the front sets it
    assert not any("hunter2" in part for part in worker_command(args, 0))
    assert worker_env(2, {}, state=args.state)[STATE_URL_ENV] == url
    assert STATE_URL_ENV not in worker_env(2, {}, state="/var/lib/spatialjam/rooms.sqlite3")
