"""Nodes and rooms in a real Redis server (``server/routing/cluster.py``): registration, claims that
survive races, take-over after a node dies, placement by load, saved rooms any node restores."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import time

import pytest
import redis

from server.rooms.room import Room
from server.rooms.store import RedisRoomStore, saved_from_json, saved_to_json
from server.routing.cluster import Cluster, ClusterError, check_redis_url
from tests.helpers.rooms import a_band, restored

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (make test installs it)")

#: Short lives, so that a dead node's rooms are free within a second in these tests.
TTL_S = 0.8
BEAT_S = 0.2


@pytest.fixture
def prefix(request):
    """Each test its own keys."""
    return f"t-{request.node.name}:"


@contextlib.asynccontextmanager
async def running(redis_url, prefix, *names, loads=()):
    """Nodes ``names`` registered (with ``loads``, if given), stopped at the end."""
    nodes = [node(redis_url, prefix, name) for name in names]
    for n, load in zip(nodes, loads, strict=False):
        n.load = load
    for n in nodes:
        await n.start()
    try:
        yield nodes
    finally:
        for n in nodes:
            await n.stop()


def node(redis_url, prefix, name, **kw) -> Cluster:
    return Cluster(redis_url, f"ws://{name}.example:8000/ws", node_id=name, prefix=prefix,
                   ttl_s=TTL_S, heartbeat_s=BEAT_S, **kw)


async def test_nodes_register_and_leave(redis_url, prefix):
    a, b = node(redis_url, prefix, "a"), node(redis_url, prefix, "b")
    await a.start()
    await b.start()
    try:
        found = {n.id: n.url for n in await a.nodes()}
        assert found == {"a": "ws://a.example:8000/ws", "b": "ws://b.example:8000/ws"}
    finally:
        await b.stop()
    assert [n.id for n in await a.nodes()] == ["a"]  # a clean leave is seen at once
    await a.stop()


async def test_a_room_lives_on_the_node_that_claimed_it_first(redis_url, prefix):
    async with running(redis_url, prefix, "a", "b") as (a, b):
        assert (await a.claim("jam")).id == "a"
        assert (await b.claim("jam")).id == "a"
        assert (await b.locate("jam")).url == "ws://a.example:8000/ws"
        assert (await b.place("jam")).id == "a"
        assert await b.locate("elsewhere") is None
        await asyncio.sleep(3 * BEAT_S + TTL_S)  # heartbeats keep the claim past its TTL
        assert (await b.claim("jam")).id == "a"
        await a.release("jam")
        assert await b.locate("jam") is None


async def test_racing_claims_agree_on_one_node(redis_url, prefix):
    async with running(redis_url, prefix, *"abcd") as nodes:
        for k in range(20):
            owners = await asyncio.gather(*(n.claim(f"room-{k}") for n in nodes for _ in range(3)))
            assert len({o.id for o in owners}) == 1, owners
            held = [n.id for n in nodes if f"room-{k}" in n.rooms]
            assert held == [owners[0].id]


async def test_a_dead_nodes_rooms_are_taken_over(redis_url, prefix):
    async with running(redis_url, prefix, "a", "b") as (a, b):
        await a.claim("jam")
        a._task.cancel()  # a dies: no more heartbeats, no goodbye
        assert (await b.claim("jam")).id == "a"  # still registered
        started = time.monotonic()
        while (await b.claim("jam")).id != "b":
            assert time.monotonic() - started < 3 * TTL_S, "a's room was never freed"
            await asyncio.sleep(0.05)
        assert time.monotonic() - started >= TTL_S - 3 * BEAT_S - 0.1
        assert [n.id for n in await b.nodes()] == ["b"]
        assert (await b.locate("jam")).id == "b"


async def test_new_rooms_go_to_the_least_loaded_node(redis_url, prefix):
    async with running(redis_url, prefix, *"abc", loads=(0.6, 0.1, 0.3)) as (a, b, _):
        await seen_loads(a, {"a": 0.6, "b": 0.1, "c": 0.3})
        chosen = await a.place("new-room")
        assert chosen.id == "b"
        assert "new-room" not in a.rooms  # b claims it when the join reaches it
        assert (await b.place("new-room")).id == "b" and "new-room" in b.rooms
        b.load = 0.9
        await seen_loads(a, {"a": 0.6, "b": 0.9, "c": 0.3})  # b's next heartbeat says so
        assert (await a.place("another")).id == "c"


async def seen_loads(viewer: Cluster, loads: dict[str, float], within_s: float = 10.0) -> None:
    """Wait until ``viewer`` sees exactly the nodes of ``loads`` with those loads (their
    heartbeats: a busy machine may hold one back for longer than its beat)."""
    deadline = time.monotonic() + within_s
    while (seen := {n.id: n.load for n in await viewer.nodes()}) != loads:
        assert time.monotonic() < deadline, f"{viewer.id} sees {seen}, not {loads}"
        await asyncio.sleep(BEAT_S / 4)


async def test_unreachable_redis_is_said_plainly():
    with pytest.raises(ClusterError, match=re.escape("cannot use Redis at redis://127.0.0.1:1/0")):
        await Cluster("redis://127.0.0.1:1/0", "ws://x/ws").start()
    for bad in ("localhost:6379", "http://localhost:6379", ""):
        with pytest.raises(ClusterError, match="is not a Redis URL"):
            check_redis_url(bad)
    with pytest.raises(ClusterError, match="cannot use Redis"):
        RedisRoomStore("redis://127.0.0.1:1/0")


# -- saved rooms ------------------------------------------------------------------------------


def test_a_saved_room_reads_back_as_it_was():
    room, _ = a_band()
    saved = room.snapshot().saved()
    assert saved_from_json(saved_to_json(saved)) == saved


def test_another_node_restores_a_room_from_redis(redis_url, prefix):
    room, members = a_band()
    first = RedisRoomStore(redis_url, prefix=prefix, interval_s=0.05)
    first.save(room.snapshot())
    assert first.flush(5.0)
    assert first.close()
    second = RedisRoomStore(redis_url, prefix=prefix)
    try:
        saved = second.load("band")
        assert saved == room.snapshot().saved()
        again = restored(room)
        assert again.snapshot().saved() == saved
        assert second.load("never-saved") is None
        redis.Redis.from_url(redis_url).set(f"{prefix}state:broken", b"{not json")
        assert second.load("broken") is None  # a warning, and the room opens empty
    finally:
        second.close()
    assert members["a"].id in {s.participant for s in saved.seats}


async def test_a_node_vouches_for_relayed_clients_and_old_or_forged_words_do_not_count(
        redis_url, prefix):
    async with running(redis_url, prefix, "a", "b") as (a, b):
        said = a.vouch("203.0.113.7")
        assert b.vouched_host(said) == "203.0.113.7"  # one key for the deployment
        _, node_id, at, mac = said.split()
        assert b.vouched_host(f"198.51.100.1 {node_id} {at} {mac}") is None  # another client
        assert b.vouched_host(said, now=int(at) + 31) is None  # played again later
        assert b.vouched_host("203.0.113.7") is None
        outsider = node(redis_url, prefix + "other:", "x")
        await outsider.start()
        try:
            assert b.vouched_host(outsider.vouch("203.0.113.7")) is None  # another deployment
        finally:
            await outsider.stop()


async def test_a_room_taken_over_while_this_node_was_cut_off_is_not_claimed_back(
        redis_url, prefix):
    async with running(redis_url, prefix, "a", "b") as (a, b):
        await a.claim("jam")
        a._task.cancel()  # a is cut off from Redis long enough for b to take its room
        while (await b.claim("jam")).id != "b":
            await asyncio.sleep(0.05)
        await a._beat()  # a is back: its refresh finds the room taken
        assert "jam" in a.lost and "jam" not in a.rooms
        await a.hold({"jam"})  # its worker still has the old copy: not claimed back
        await a._beat()
        assert (await a.locate("jam")).id == "b"
        await a.hold(set())  # the old copy closed: forgotten
        assert not a.lost


def test_redis_addresses_are_shown_without_passwords():
    from server.routing.cluster import redacted

    assert redacted("redis://user:hunter2@db.example:6380/2") == "redis://db.example:6380/2"
    assert redacted("redis://db.example:6379/0?password=hunter2") == "redis://db.example:6379/0"
    assert redacted("unix:///run/redis.sock?db=1") == "unix:///run/redis.sock/1"


def test_a_room_whose_state_could_not_be_read_is_not_saved_over(redis_url, prefix,
                                                                 monkeypatch):
    room, _ = a_band()
    store = RedisRoomStore(redis_url, prefix=prefix, interval_s=0.01)
    try:
        store.save(room.snapshot())
        assert store.flush(5.0)
        kept = store.load("band")
        real_get = store.redis.get

        def unreachable(key):
            raise redis.ConnectionError("Redis went away")

        monkeypatch.setattr(store.redis, "get", unreachable)
        assert store.load("band") is None  # the room opens empty ...
        empty = Room("band", capacity=4)
        store.save(empty.snapshot())  # ... and its empty state is not written over the seats
        assert store.flush(5.0)
        monkeypatch.setattr(store.redis, "get", real_get)
        assert store.load("band") == kept
        store.save(empty.snapshot())  # read again: saved as usual
        assert store.flush(5.0)
        assert store.load("band").seats == ()
    finally:
        store.close()
