"""Saved rooms survive a restart; SIGTERM drains the server gracefully.

Unit tests drive :class:`server.rooms.room.Room` (snapshot and restore, no I/O) and
:class:`server.rooms.store.RoomStore` (a real SQLite file in a temporary folder). The live tests run
real ``spatialjam serve`` processes with ``--state`` in ``tmp_path`` and real aiortc bots: a
room is set up, the server gets SIGTERM, a new server opens the same file, and the bots come
back with their seats to the same places and the same personal mix (heard, not only read).
Also: a server killed without warning keeps what was edited before, and a corrupt file is
moved aside. The web client (real Chromium) rejoining its seat after the restart it was told of:
tests/e2e/test_browser_persistence.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import sqlite3
import time

import numpy as np
import pytest
import websockets

from bench.bot import Bot, tone
from bench.serverproc import ServerProcess
from server.rooms.room import Room, SavedMix, SavedRoom, SavedSeat
from server.rooms.store import RoomStore, default_state_path, open_store
from tests.helpers.audio import band_ild_db, band_level_db
from tests.helpers.rooms import a_band, restored

TONE_HZ = 2000.0
OTHER_HZ = 1000.0
SETTLE_S = 0.8
LISTEN_S = 0.8


# -- the room: snapshot and restore (no I/O) ------------------------------------------------


def test_members_who_come_back_with_their_seats_get_slot_id_place_and_mix_back():
    room, m = a_band()
    before = room.scene()
    again = restored(room)
    for key in ("c", "a", "b"):  # in another order than they first came
        old = m[key]
        back = again.join(old.name, old.instrument, seat=old.seat)
        assert (back.id, back.slot, back.seat) == (old.id, old.slot, old.seat)
    after = again.scene()
    np.testing.assert_array_equal(after.pair_gain, before.pair_gain)
    np.testing.assert_allclose(after.source_positions_per_pair(),
                               before.source_positions_per_pair())
    np.testing.assert_allclose(again.facing, room.facing)
    assert again.describe().stage == room.describe().stage


def test_a_head_pose_is_not_kept_the_head_faces_where_the_source_does():
    room, m = a_band()
    again = restored(room)
    b = again.join("Bo", seat=m["b"].seat)
    np.testing.assert_allclose(again.head[b.slot], (-90.0, 0.0, 0.0))


def test_an_away_seat_is_off_the_stage_until_its_member_comes_back():
    room, m = a_band()
    again = restored(room)
    b = again.join("Bo", seat=m["b"].seat)
    assert [p.source for p in again.describe().stage] == [b.id]
    assert again.scene().pair_gain[b.slot].sum() == 0  # nobody else to hear yet
    a = again.join("Ann", seat=m["a"].seat)
    scene = again.scene()
    assert scene.pair_gain[b.slot, a.slot] == 0.5
    np.testing.assert_allclose(scene.source_positions_per_pair()[b.slot, a.slot],
                               (0.0, 2.0, 1.2))
    np.testing.assert_allclose(again.position[a.slot], (0.0, -2.0, 1.2))


def test_a_newcomer_takes_a_free_slot_no_away_seat_holds():
    room, m = a_band()
    again = restored(room)
    newcomer = again.join("Di")
    assert newcomer.slot == 3 and newcomer.seat not in {x.seat for x in m.values()}
    back = again.join("Ann", seat=m["a"].seat)
    assert back.slot == m["a"].slot and back.id == m["a"].id


def test_when_only_away_seats_are_left_a_newcomer_takes_one_and_it_starts_clean():
    room = Room("duo", capacity=2)
    a, b = room.join("a"), room.join("b")
    room.move_source(a.id, (5.0, 5.0, 1.2))
    room.leave(a.id)
    c = room.join("c")
    assert c.slot == a.slot and c.id != a.id
    assert tuple(room.position[c.slot]) != (5.0, 5.0, 1.2)
    kept = {token for token, _ in room.snapshot().seats}  # a's seat is gone
    assert kept == {b.seat, c.seat}


def test_restore_leaves_out_what_does_not_fit_and_says_why():
    seat = SavedSeat("s1", "p1", "Ann", "", 0, (1.0, 0.0, 1.2), 0.0, 0.0, False)
    saved = SavedRoom("band", (
        seat,
        SavedSeat("s2", "p2", "Bo", "", 9, (0.0, 1.0, 1.2), 0.0, 0.0, False),  # beyond capacity
        SavedSeat("s3", "p3", "Cy", "", 0, (0.0, 1.0, 1.2), 0.0, 0.0, False),  # slot taken
    ), (SavedMix("s1", "s2", None, 2.0, False),))
    room = Room("band", capacity=2)
    skipped = room.restore(saved)
    assert len(skipped) == 3
    assert room.join("Ann", seat="s1").slot == 0
    assert room.join("Bo", seat="s2").seat != "s2"


def test_a_frame_the_admin_chose_is_kept_and_the_servers_default_is_not():
    room, _ = a_band()
    again = restored(room)
    assert (again.frame_ms, again.frame_chosen) == (5.0, True)
    room.frame_ms, room.frame_chosen = 10.0, False  # the server's default, not the room's
    assert room.snapshot().saved().frame_ms is None
    fresh = restored(room)
    assert (fresh.frame_ms, fresh.frame_chosen) == (20.0, False)
    for unusable in (7.0, "5", True, None):  # an edited file, say: the default frame
        saved = dataclasses.replace(again.snapshot().saved(), frame_ms=unusable)
        other = Room("band", capacity=4)
        other.restore(saved)
        assert (other.frame_ms, other.frame_chosen) == (20.0, False)


def test_restore_refuses_a_room_in_use():
    room, _ = a_band()
    with pytest.raises(ValueError, match="fresh room"):
        room.restore(room.snapshot().saved())


def test_a_snapshot_is_a_copy_that_later_edits_do_not_change():
    room, m = a_band()
    snapshot = room.snapshot()
    room.move_source(m["a"].id, (9.0, 9.0, 1.2))
    room.reset_override(m["b"].id)
    saved = snapshot.saved()
    seat_a = next(s for s in saved.seats if s.seat == m["a"].seat)
    assert seat_a.position_m == (0.0, -2.0, 1.2) and seat_a.self_monitor
    assert {(x.listener_seat, x.source_seat) for x in saved.mixes} == {
        (m["b"].seat, m["a"].seat), (m["b"].seat, m["c"].seat), (m["c"].seat, m["a"].seat)}


# -- the store: a real SQLite file ------------------------------------------------------------


def test_the_store_gives_back_what_it_was_given_after_a_reopen(tmp_path):
    room, _ = a_band()
    store = RoomStore(tmp_path / "rooms.sqlite3")
    store.save(room.snapshot())
    assert store.close()
    reopened = RoomStore(tmp_path / "rooms.sqlite3")
    try:
        assert reopened.load("band") == room.snapshot().saved()
        assert reopened.load("nowhere") is None
    finally:
        reopened.close()


class FrozenClock:
    """A monotonic clock that moves only when told (the writer's intervals)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_saves_is_written_as_the_latest_state_at_most_once_per_interval(tmp_path):
    room, m = a_band()
    clock = FrozenClock()
    store = RoomStore(tmp_path / "rooms.sqlite3", interval_s=0.2, clock=clock)
    try:
        for k in range(1000):  # a drag: every edit hands over a snapshot
            room.move_source(m["a"].id, (k / 100, 0.0, 1.2))
            store.save(room.snapshot())
        # Within one interval of the clock: the first state found, then nothing until flushed.
        assert store.flush(timeout_s=5.0)
        assert 1 <= store.writes <= 2
        seat = next(s for s in store.load("band").seats if s.seat == m["a"].seat)
        assert seat.position_m == (9.99, 0.0, 1.2)
        # Once the interval has passed, a save is written without a flush.
        written = store.writes
        clock.now += 0.25
        room.move_source(m["a"].id, (1.0, 1.0, 1.2))
        store.save(room.snapshot())
        for _ in range(200):
            if store.writes > written:
                break
            time.sleep(0.01)
        assert store.writes == written + 1
    finally:
        store.close()


def test_the_load_of_a_room_sees_a_save_not_yet_written(tmp_path):
    room, m = a_band()
    clock = FrozenClock()
    store = RoomStore(tmp_path / "rooms.sqlite3", interval_s=0.2, clock=clock)
    try:
        store.save(room.snapshot())
        assert store.flush(5.0)
        room.move_source(m["b"].id, (3.0, 3.0, 1.2))
        store.save(room.snapshot())  # waits for its interval (the clock does not move)
        seat = next(s for s in store.load("band").seats if s.seat == m["b"].seat)
        assert seat.position_m == (3.0, 3.0, 1.2)
    finally:
        store.close()


def test_a_write_that_fails_is_reported_by_flush_and_tried_again(tmp_path):
    room, _ = a_band()
    path = tmp_path / "rooms.sqlite3"
    store = RoomStore(path, interval_s=0.05)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the file
        store.save(room.snapshot())
        assert not store.flush(timeout_s=5.0)
        assert store.failures >= 1 and store.load("band") is not None  # still pending
        blocker.execute("ROLLBACK")
        assert store.flush(timeout_s=5.0)
        assert store.writes == 1
    finally:
        blocker.close()
        store.close()
    reopened = RoomStore(path)
    assert reopened.load("band") == room.snapshot().saved()
    reopened.close()


def damaged_sqlite(path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 16)


def other_programs_db(path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
    db.close()


def newer_version(path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
        db.execute("CREATE TABLE seats (x)")
    db.close()


@pytest.mark.parametrize("spoil", [
    lambda path: path.write_bytes(b"this is not a database\n" * 100),
    damaged_sqlite, other_programs_db, newer_version,
], ids=["not-sqlite", "damaged", "other-program", "newer-version"])
def test_an_unusable_file_is_moved_aside_with_one_warning_and_the_store_starts_empty(
        tmp_path, caplog, spoil):
    path = tmp_path / "rooms.sqlite3"
    spoil(path)
    original = path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="server.rooms.store"):
        store = RoomStore(path)
    try:
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "moved aside" in warnings[0].getMessage()
        aside = list(tmp_path.glob("rooms.sqlite3.corrupt-*"))
        assert len(aside) == 1 and aside[0].read_bytes() == original
        assert store.load("band") is None
        room, _ = a_band()
        store.save(room.snapshot())
        assert store.flush(5.0) and store.load("band") == room.snapshot().saved()
    finally:
        store.close()


def test_state_none_keeps_nothing_and_the_default_lives_in_the_state_dir(tmp_path,
                                                                        monkeypatch):
    assert open_store("none") is None and open_store(":memory:") is None
    monkeypatch.setenv("SPATIALJAM_STATE_DIR", str(tmp_path / "here"))
    assert default_state_path() == tmp_path / "here" / "rooms.sqlite3"
    store = open_store(None)
    try:
        assert store is not None and store.path == tmp_path / "here" / "rooms.sqlite3"
    finally:
        store.close()


def test_a_place_where_no_file_can_be_made_keeps_nothing_with_a_warning(tmp_path, caplog):
    (tmp_path / "file").write_text("a file, not a folder")
    with caplog.at_level(logging.WARNING, logger="server.rooms.store"):
        assert open_store(str(tmp_path / "file" / "rooms.sqlite3")) is None
    assert "will not survive a restart" in caplog.text


# -- live: SIGTERM, restart, rejoin --------------------------------------------------------


async def heard(bot: Bot) -> np.ndarray:
    """What ``bot`` hears once its mix flows and has settled after the last change."""
    await bot.flowing()
    await asyncio.sleep(SETTLE_S)
    return await bot.listen(LISTEN_S)


def stage_of(bot: Bot) -> dict[str, list[float]]:
    return {p["source"]: p["position_m"] for p in bot.state["stage"]}


async def wait_closed(bot: Bot) -> int | None:
    async with asyncio.timeout(10):
        await bot._ws.wait_closed()
    return bot._ws.close_code


async def test_a_room_survives_a_restart_and_sigterm_drains_the_clients(tmp_path):
    state = str(tmp_path / "rooms.sqlite3")
    with ServerProcess("--state", state) as first:
        url = first.ws
        a = Bot(url, "persist", "A", tone(TONE_HZ), instrument="violin")
        b = Bot(url, "persist", "B")
        c = Bot(url, "persist", "C", tone(OTHER_HZ))
        for bot in (a, b, c):
            await bot.connect()
        lurker = await websockets.connect(url)  # connected, never joined
        await b.send({"type": "move_source", "source": b.participant,
                      "position_m": [0, 0, 1.2]})
        await b.send({"type": "head_pose", "yaw_deg": 0})
        await a.send({"type": "move_source", "source": a.participant,
                      "position_m": [0, -2, 1.2]})  # B's right on the stage
        await c.send({"type": "move_source", "source": c.participant,
                      "position_m": [2, 0, 1.2]})
        other_on = band_level_db(await heard(b), OTHER_HZ)
        # B's own mix: A on B's left at half gain, C muted.
        await b.send({"type": "mix_override", "source": a.participant,
                      "position_m": [0, 2, 1.2], "gain": 0.5})
        await b.send({"type": "mix_override", "source": c.participant, "mute": True})
        before = await heard(b)
        assert band_ild_db(before) >= 4.0  # about 6.6 dB at 2 kHz; -6.6 dB on the right
        assert band_level_db(before, OTHER_HZ) < other_on - 15
        stage_before = stage_of(b)
        ids = {bot.name: (bot.participant, bot.seat) for bot in (a, b, c)}

        code = await asyncio.to_thread(first.stop)  # SIGTERM; waits at most 20 s
        assert code == 0
        for bot in (a, b, c):
            assert await wait_closed(bot) == 1001
            assert bot.server_closing is not None and bot.server_closing["retry_after_s"] > 0
        notice = json.loads(await lurker.recv())
        assert notice["type"] == "server_closing" and notice["reason"]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await lurker.recv()
        assert closed.value.rcvd.code == 1001
        for bot in (a, b, c):
            await bot.close()
        assert any("shutting down" in line for line in first.log)

    with ServerProcess("--state", state) as second:
        url = second.ws
        a2 = Bot(url, "persist", "A", tone(TONE_HZ), instrument="violin", seat=ids["A"][1])
        await a2.connect()
        assert [p["source"] for p in a2.state["stage"]] == [ids["A"][0]]  # the others: away
        b2 = Bot(url, "persist", "B", seat=ids["B"][1])
        c2 = Bot(url, "persist", "C", tone(OTHER_HZ), seat=ids["C"][1])
        await b2.connect()
        await c2.connect()
        try:
            for bot in (a2, b2, c2):
                assert (bot.participant, bot.seat) == ids[bot.name]
            await asyncio.sleep(0.3)  # the last join's room_state reaches B
            assert stage_of(b2) == stage_before
            await b2.send({"type": "head_pose", "yaw_deg": 0})  # a head pose is not kept
            after = await heard(b2)
            assert band_ild_db(after) == pytest.approx(band_ild_db(before), abs=1.0)  # left
            assert band_level_db(after) == pytest.approx(band_level_db(before), abs=2.0)
            assert band_level_db(after, OTHER_HZ) < other_on - 15  # C still muted
            assert not (a2.errors or b2.errors or c2.errors)
        finally:
            for bot in (a2, b2, c2):
                await bot.close()
        assert second.stop() == 0


def on_disk(path, room: str) -> tuple[dict, dict]:
    """What the server's file holds now, read as an operator would (read-only, beside it)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        seats = {seat: (x, y, z) for seat, x, y, z in db.execute(
            "SELECT seat, x_m, y_m, z_m FROM seats WHERE room = ?", (room,))}
        gains = {(l, s): gain for l, s, gain in db.execute(
            "SELECT listener_seat, source_seat, gain FROM mixes WHERE room = ?", (room,))}
    return seats, gains


async def test_edits_reach_the_disk_while_the_server_runs_so_a_crash_keeps_them(tmp_path):
    path = tmp_path / "rooms.sqlite3"
    with ServerProcess("--state", str(path)) as first:
        async with Bot(first.ws, "crash", "A") as a, Bot(first.ws, "crash", "B") as b:
            for k in range(20):  # a short drag at 45 edits a second
                await a.send({"type": "move_source", "source": a.participant,
                              "position_m": [k / 10, 1, 1.2]})
                await asyncio.sleep(1 / 45)
            await b.send({"type": "mix_override", "source": a.participant, "gain": 2.0})
            want = ({a.seat: (1.9, 1.0, 1.2)}, {(b.seat, a.seat): 2.0})
            async with asyncio.timeout(10):
                while True:
                    seats, gains = await asyncio.to_thread(on_disk, path, "crash")
                    if seats.get(a.seat) == want[0][a.seat] and gains == want[1]:
                        break
                    await asyncio.sleep(0.05)
            first.proc.kill()  # no goodbye, no flush
            first.proc.wait()
    with ServerProcess("--state", str(path)) as second:
        async with Bot(second.ws, "crash", "B", seat=b.seat) as b2, \
                Bot(second.ws, "crash", "A", seat=a.seat) as a2:
            await asyncio.sleep(0.3)  # A's join reaches B as room_state
            assert (a2.participant, b2.participant) == (a.participant, b.participant)
            assert stage_of(b2)[a.participant] == [1.9, 1.0, 1.2]


async def test_a_corrupt_state_file_is_moved_aside_and_the_server_works(tmp_path):
    path = tmp_path / "rooms.sqlite3"
    path.write_bytes(b"not a database at all\n" * 200)
    with ServerProcess("--state", str(path)) as server:
        assert sum("moved aside" in line for line in server.log) == 1
        async with Bot(server.ws, "fresh", "A") as a:
            await a.request({"type": "move_source", "source": a.participant,
                             "position_m": [1, 1, 1.2]}, "room_state")
            seat = a.seat
        assert server.stop() == 0
    assert len(list(tmp_path.glob("rooms.sqlite3.corrupt-*"))) == 1
    store = RoomStore(path)
    try:
        saved = store.load("fresh")
        assert [(s.seat, s.position_m) for s in saved.seats] == [(seat, (1.0, 1.0, 1.2))]
    finally:
        store.close()
