"""``spatialjam serve --workers N``: a front and worker processes, each room on one worker.

The placement table and the metrics' merge are driven without I/O; then a real
``spatialjam serve --workers 2`` with real aiortc bots (``bench.bot``) connected through the
front's port: rooms are spread over both workers and counted together; a listener in a room on
worker 2 hears the same interaural level differences and levels as on a single-process server;
the worker's close codes reach the client (a kick, 4003; shutdown, 1001); a connection leaves a
room on one worker and joins one on the other; a killed worker is started again and health
says so meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.error
import urllib.request
from urllib.parse import urlencode

import numpy as np
import pytest
import websockets

from bench.bot import Bot, tone
from bench.serverproc import ServerProcess
from server.cli.main import main
from server.routing.placement import MIN_ROOM_LOAD, RoomPlacement
from server.telemetry import aggregate, metrics
from server.web.access import read_secret_file, write_new_secret
from tests.helpers.audio import SAME_DB, TONES_HZ, band_ilds_db, band_levels_db, tones
from tests.helpers.live import handshake_refusal, mint_for

SETTLE_S = 1.0
LISTEN_S = 1.5
#: Levels of the same scene through two servers: Opus and the moment the listening starts
#: differ a little (dB, every band and ear).
SAME_LEVEL_DB = 1.5
live = pytest.mark.asyncio(loop_scope="module")


# the placement, without I/O ------------------------------------------------------------------

def test_a_new_room_goes_to_the_worker_with_the_least_measured_load():
    table = RoomPlacement(2)
    table.report(0, 0.6, {"big": 0.6}, now=0.0)
    table.report(1, 0.1, {"a": 0.05, "b": 0.05}, now=0.0)
    assert table.route("new", now=0.1) == 1  # more rooms, less load
    assert table.route("big", now=0.1) == 0  # an open room stays where it is
    assert table.route("new", now=0.2) == 1


def test_equal_loads_go_to_fewer_rooms_and_a_burst_is_spread():
    table = RoomPlacement(3)
    for w in range(3):
        table.report(w, 0.0, {}, now=0.0)
    placed = [table.route(f"r{k}", now=1.0) for k in range(6)]  # no report in between
    assert sorted(placed) == [0, 0, 1, 1, 2, 2]
    assert table.effective_load(0) == pytest.approx(2 * MIN_ROOM_LOAD)


def test_a_placed_room_counts_as_the_mean_measured_room_until_reported():
    table = RoomPlacement(2)
    table.report(0, 0.4, {"x": 0.2, "y": 0.2}, now=0.0)
    table.report(1, 0.2, {"z": 0.2}, now=0.0)
    assert table.route("n1", now=0.0) == 1  # 0.2 against 0.4
    assert table.effective_load(1) == pytest.approx(0.4)  # n1 counts as a 0.2 room
    assert table.route("n2", now=0.0) == 0  # 0.4 and 2 rooms each: the lower index
    table.report(1, 0.25, {"z": 0.2, "n1": 0.05}, now=0.5)  # measured now: a cheap room
    assert table.effective_load(1) == pytest.approx(0.25)


def test_a_closed_room_is_forgotten_after_its_hold_and_a_dead_workers_at_once():
    table = RoomPlacement(2, hold_s=5.0)
    table.report(0, 0.0, {}, now=0.0)
    table.report(1, 0.0, {}, now=0.0)
    assert table.route("r", now=0.0) == 0
    table.report(0, 0.0, {}, now=1.0)  # answered before the join arrived: kept
    assert table.owner["r"] == 0
    table.report(0, 0.0, {"r": 0.01}, now=2.0)
    table.report(0, 0.0, {}, now=9.0)  # closed on its worker
    assert "r" not in table.owner
    table.report(1, 0.0, {"s": 0.01}, now=9.0)
    assert table.down(1) == ["s"] and "s" not in table.owner
    assert table.route("s", now=9.5) == 0  # only worker 1 takes rooms now
    table.workers[0].up = False
    assert table.route("t", now=9.5) is None


def test_a_join_that_never_opened_its_room_lets_go_of_it():
    table = RoomPlacement(2, hold_s=5.0)
    table.report(0, 0.0, {}, now=0.0)
    table.report(1, 0.0, {}, now=0.0)
    table.route("refused", now=0.0)
    table.report(1, 0.0, {}, now=6.0)  # any report after the hold
    assert "refused" not in table.owner and table.room_count(0) == 0


# the metrics' merge, without I/O ------------------------------------------------------------

WORKER_TEXT = """# HELP spatialjam_rooms Rooms open on this process.
# TYPE spatialjam_rooms gauge
spatialjam_rooms {rooms}
# HELP spatialjam_ticks_total Room clock ticks rendered.
# TYPE spatialjam_ticks_total counter
spatialjam_ticks_total {ticks}
# HELP spatialjam_tick_ms_p95_max Worst room's 95th percentile tick time (ms).
# TYPE spatialjam_tick_ms_p95_max gauge
spatialjam_tick_ms_p95_max {p95}
# HELP spatialjam_ai_event_lead_ms_p50_min How far ahead (ms).
# TYPE spatialjam_ai_event_lead_ms_p50_min gauge
spatialjam_ai_event_lead_ms_p50_min {lead}
# HELP spatialjam_dropped_packets_total Dropped, by reason.
# TYPE spatialjam_dropped_packets_total counter
spatialjam_dropped_packets_total{{reason="malformed_opus"}} {drops}
# HELP spatialjam_up Whether the server is serving.
# TYPE spatialjam_up gauge
spatialjam_up 1
"""


def test_worker_metrics_are_summed_series_by_series_and_worst_cases_kept():
    one = metrics.read(WORKER_TEXT.format(rooms=2, ticks=100, p95=3.5, lead=0.0, drops=1))
    two = metrics.read(WORKER_TEXT.format(rooms=1, ticks=50, p95=7.25, lead=40.0, drops=2))
    merged = aggregate.merge([one, two], retired={metrics.TICKS: 1000})
    assert metrics.flatten(merged) == {"rooms": 3, "ticks_total": 1150, "tick_ms_p95_max": 7.25,
                                       "ai_event_lead_ms_p50_min": 40.0,
                                       'dropped_packets_total{reason="malformed_opus"}': 3}
    text = metrics.exposition(merged)
    assert "# TYPE spatialjam_ticks_total counter\nspatialjam_ticks_total 1150" in text
    assert 'spatialjam_dropped_packets_total{reason="malformed_opus"} 3' in text
    assert "spatialjam_up" not in text  # the front says that itself
    assert metrics.flatten(metrics.counters(one)) == {
        "ticks_total": 100.0, 'dropped_packets_total{reason="malformed_opus"}': 1.0}


def test_the_capacity_bench_counts_the_front_and_its_workers_as_the_server():
    from bench.procstat import Snapshot, snapshot, usage

    def snap(at, loops):
        return Snapshot(at=at, server_cpu_s=sum(loops) + 1.0 * at, loop_cpu_s=sum(loops),
                        server_rss=3 << 20, bots_cpu_s=0.0, machine_busy=0, machine_total=0,
                        loops_cpu_s=loops)

    got = usage(snap(0.0, (0.0, 0.0, 0.0)), snap(10.0, (1.0, 6.0, 2.0)))
    assert got["loop_cpu_pct"] == 60.0  # the busiest process's loop, of its one core
    assert got["loops_cpu_pct"] == [10.0, 60.0, 20.0]
    assert got["server_cpu_pct"] == 190.0 and got["off_loop_cpu_pct"] == 100.0
    me = os.getpid()
    assert snapshot([me, me], []).server_rss == 2 * snapshot(me, []).server_rss


@pytest.mark.parametrize(("value", "words"), [
    ("0", "workers must lie in 1..64, got 0"),
    ("65", "workers must lie in 1..64, got 65"),
    ("two", "workers must be a whole number, got 'two'"),
])
def test_serve_refuses_a_bad_worker_count_in_words(capsys, value, words):
    with pytest.raises(SystemExit) as done:
        main(["serve", "--workers", value])
    assert done.value.code == 2
    assert words in capsys.readouterr().err


def test_the_relay_reads_what_routing_needs_and_no_more():
    from server.routing.relay import peek

    assert peek('{"type":"join","room":"band","name":"A"}', joined=False) == ("join", "band")
    assert peek('{"type":"join","room":"no spaces!"}', joined=False) == ("join", None)
    assert peek('{"type":"head_pose","yaw_deg":3}', joined=True) == (None, None)  # not read
    assert peek('{"type":"leave"}', joined=True) == ("leave", None)
    assert peek('{"type":"\\u006ceave"}', joined=True) == ("leave", None)  # escaped: read
    assert peek("not json", joined=False) == (None, None)


# a live front with two workers -------------------------------------------------------------

def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read())


def health(srv: ServerProcess) -> dict:
    return get_json(f"{srv.http}/healthz")


def rooms_by_worker(srv: ServerProcess) -> dict[int, set[str]]:
    """Which rooms each worker holds, from the workers' own /healthz (worker number → rooms)."""
    return {w["worker"]: set(get_json(f"http://127.0.0.1:{w['port']}/healthz")["room_loads"])
            for w in health(srv)["workers"] if w["up"]}


async def until(check, timeout_s: float = 10.0, every_s: float = 0.1):
    """``check()`` once it is truthy (polled in a thread), or AssertionError."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not so within {timeout_s} s: {check.__name__}")
        await asyncio.sleep(every_s)


def metric(srv: ServerProcess, name: str) -> float:
    with urllib.request.urlopen(f"{srv.http}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return float(next(line.split()[1] for line in text.splitlines()
                      if line.startswith(f"spatialjam_{name} ")))


@pytest.fixture(scope="module")
def front():
    """Rooms close as soon as they are empty: what one test opened does not weigh on the
    placement in the next."""
    with ServerProcess("--workers", "2", "--empty-room-grace", "0") as srv:
        yield srv


async def no_rooms(srv: ServerProcess) -> None:
    """Until the front's last polls found no room open (those of earlier tests closed)."""
    await until(lambda: health(srv)["rooms"] == 0)


@live
async def test_rooms_are_spread_over_both_workers_and_counted_together(front):
    await no_rooms(front)
    before = health(front)
    assert before["status"] == "ok" and [w["worker"] for w in before["workers"]] == [1, 2]
    assert len({w["pid"] for w in before["workers"]} | {front.proc.pid}) == 3
    bots = [Bot(front.ws, f"spread{k}", f"p{k}") for k in range(4)]
    try:
        for bot in bots:
            await bot.connect()
        held = await until(lambda: (r := rooms_by_worker(front))
                           and set().union(*r.values()) == {f"spread{k}" for k in range(4)} and r)
        assert held[1] and held[2], held  # both hold rooms (2 and 2 unless the loads differ)
        await until(lambda: health(front)["rooms"] == 4)
        assert metric(front, "participants") == 4 and metric(front, "rooms") == 4
        assert metric(front, "connections") == 4
        for bot in bots:  # each hears its own room's mix, straight from its worker
            assert len(await bot.listen(0.3)) > 0
    finally:
        for bot in bots:
            await bot.close()


@live
async def test_a_room_on_worker_two_is_recorded_and_downloaded_through_the_front(front):
    """What ``make serve`` runs (a front and workers): record in a room that is not on the
    first worker, then list and download its files through the front's port."""
    import io

    import soundfile

    await no_rooms(front)
    first = Bot(front.ws, "rec-ballast", "B")
    await first.connect()
    player = None
    try:
        await until(lambda: rooms_by_worker(front)[1] == {"rec-ballast"})
        player = Bot(front.ws, "rec-two", "P", tone(440.0))
        await player.connect()
        await until(lambda: rooms_by_worker(front)[2] == {"rec-two"})
        await asyncio.sleep(0.5)
        started = await player.request({"type": "start_recording"}, "recording")
        assert started["active"]
        await asyncio.sleep(2.0)
        stopped = await player.request({"type": "stop_recording"}, "recording")
        assert stopped["recording"]["status"] == "finished"
        track = next(f for f in stopped["recording"]["files"] if f["name"].endswith(".flac"))
        with urllib.request.urlopen(front.http + track["url"], timeout=10) as reply:
            assert reply.headers["Content-Type"] == "audio/flac"
            assert track["name"] in reply.headers["Content-Disposition"]
            audio, rate = soundfile.read(io.BytesIO(reply.read()), dtype="float32")
        assert rate == 48_000 and 1.5 < len(audio) / rate < 3.5
        spectrum = np.abs(np.fft.rfft(audio))
        assert abs(np.argmax(spectrum) * rate / len(audio) - 440.0) < 5  # P's own tone
    finally:
        for bot in (first, player):
            if bot is not None:
                await bot.close()


@live
async def test_pages_come_from_a_worker_through_the_front(front):
    from server.web.app import CLIENT_DIR

    with urllib.request.urlopen(f"{front.http}/static/app.js", timeout=5) as reply:
        assert reply.read() == (CLIENT_DIR / "app.js").read_bytes()
        assert reply.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert get_json(f"{front.http}/access")["tokens_required"] is False
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{front.http}/ai/nowhere.mid", timeout=5)
    assert missing.value.code == 404 and b"no AI notes" in missing.value.read()
    with pytest.raises(urllib.error.HTTPError) as cross_site:
        urllib.request.urlopen(urllib.request.Request(
            f"{front.http}/ws", headers={"Origin": "https://evil.example", "Upgrade": "websocket",
                                         "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                                         "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}),
            timeout=5)
    assert cross_site.value.code == 403


@live
async def test_a_connection_leaves_a_room_on_one_worker_and_joins_one_on_the_other(front):
    await no_rooms(front)
    async with Bot(front.ws, "here", "H") as here, Bot(front.ws, "there", "T") as there:
        held = await until(lambda: (r := rooms_by_worker(front))
                           and {"here", "there"} <= set().union(*r.values()) and r)
        home = {room: w for w, rooms in held.items() for room in rooms}
        assert home["here"] != home["there"], held  # the second room went to the other worker
        async with websockets.connect(front.ws) as ws:
            await ws.send(json.dumps({"type": "ping", "t_ms": 1}))  # before any join: anywhere
            assert json.loads(await ws.recv())["type"] == "pong"
            await ws.send(b"\x00\x01")  # binary frames pass too (no upload is open: refused)
            assert json.loads(await ws.recv())["code"] == "not_text"
            for room in ("here", "there"):
                await ws.send(json.dumps({"type": "join", "room": room, "name": "Roamer",
                                          "id": room}))
                joined = json.loads(await ws.recv())
                while joined["type"] != "joined":
                    joined = json.loads(await ws.recv())
                # The room's member is there: the join reached the worker that holds it.
                names = {m["name"] for m in joined["state"]["members"]}
                assert names == {"Roamer", "H" if room == "here" else "T"}, joined
                await ws.send(json.dumps({"type": "leave"}))
            # A second join sent before the first is answered waits for that answer, and
            # goes where the first went: the worker says it is one too many.
            await ws.send(json.dumps({"type": "join", "room": "there", "name": "Roamer"}))
            await ws.send(json.dumps({"type": "join", "room": "here", "name": "Roamer"}))
            kinds = []
            while not kinds or kinds[-1] != "error":
                reply = json.loads(await ws.recv())
                kinds.append(reply["type"])
            assert "joined" in kinds and reply["code"] == "already_joined", (kinds, reply)
        assert await until(lambda: rooms_by_worker(front)[home["there"]] >= {"there"})
        assert here.errors == [] and there.errors == []


@live
async def test_a_kick_on_a_worker_closes_the_client_with_4003(front):
    async with Bot(front.ws, "kicks", "Host") as host:
        rogue = Bot(front.ws, "kicks", "Rogue")
        await rogue.connect()
        await host.send({"type": "kick", "member": rogue.participant, "reason": "wrong room"})
        await asyncio.wait_for(rogue._ws.wait_closed(), 5)
        assert rogue._ws.close_code == 4003
        assert rogue._ws.close_reason == "removed by the room's admin"
        assert rogue.errors[-1]["code"] == "kicked" and "wrong room" in rogue.errors[-1]["message"]
        await rogue.close()


@live
async def test_a_killed_worker_is_started_again_and_health_says_so_meanwhile(front):
    async with Bot(front.ws, "doomed", "D", tone(440.0)) as bot:
        held = await until(lambda: (r := rooms_by_worker(front))
                           and any("doomed" in rooms for rooms in r.values()) and r)
        number = next(w for w, rooms in held.items() if "doomed" in rooms)
        old = next(w for w in health(front)["workers"] if w["worker"] == number)
        ticks = await until(lambda: metric(front, "ticks_total"))
        os.kill(old["pid"], signal.SIGKILL)
        await asyncio.wait_for(bot._ws.wait_closed(), 5)  # its signaling went with it
        assert bot._ws.close_code == 1006
        down = await until(lambda: (h := health(front))["status"] == "degraded" and h)
        assert not down["workers"][number - 1]["up"]
        back = await until(lambda: (h := health(front))["status"] == "ok" and h, 60)
        again = back["workers"][number - 1]
        assert again["up"] and again["restarts"] == 1 and again["pid"] != old["pid"]
        assert metric(front, f'worker_restarts_total{{worker="{number}"}}') == 1
        assert metric(front, "ticks_total") >= ticks  # the dead worker's ticks still count
    async with Bot(front.ws, "doomed", "D again") as bot:  # the room opens again
        assert len(await bot.listen(0.3)) > 0
    assert any(f"worker {number} (pid {old['pid']}) exited" in line for line in front.log)


async def listen_to_the_stage(url: str, room: str, secret: bytes,
                              check=None) -> tuple[np.ndarray, Bot, Bot]:
    """S plays the tones at (0, 2), 90° to the left of A at (0, 0) facing +x; what A hears."""
    s = Bot(url, room, "S", tones, token=mint_for(secret, room, "s"))
    a = Bot(url, room, "A", token=mint_for(secret, room, "a"))
    for bot in (s, a):
        await bot.connect()
    for bot, xyz in ((s, [0, 2, 1.2]), (a, [0, 0, 1.2])):
        await bot.send({"type": "move_source", "source": bot.participant, "position_m": xyz})
        await bot.send({"type": "head_pose", "yaw_deg": 0})
    if check is not None:
        await check()
    await asyncio.sleep(SETTLE_S)
    return await a.listen(LISTEN_S), s, a


async def test_a_room_on_worker_two_sounds_as_on_one_process_and_shutdown_reaches_it(tmp_path):
    """With access tokens: the front checks them, and passes them on to the workers."""
    secret_file = write_new_secret(tmp_path / "secret")
    secret = read_secret_file(secret_file)
    with ServerProcess("--workers", "1", "--secret-file", str(secret_file)) as single:
        heard_single, s, a = await listen_to_the_stage(single.ws, "stage", secret)
        for bot in (s, a):
            await bot.close()

    with ServerProcess("--workers", "2", "--secret-file", str(secret_file)) as srv:
        assert (await asyncio.to_thread(handshake_refusal, srv.ws))[0] == 401  # no token
        ballast = [Bot(srv.ws, "ballast", name, signal, token=mint_for(secret, "ballast", name))
                   for name, signal in (("b1", tone(300.0)), ("b2", tones))]
        for bot in ballast:
            await bot.connect()
        await until(lambda: rooms_by_worker(srv)[1] == {"ballast"})  # the first, on worker 1

        async def on_worker_two():
            assert await until(lambda: rooms_by_worker(srv)[2] == {"stage"})

        heard_two, s, a = await listen_to_the_stage(srv.ws, "stage", secret, on_worker_two)
        ild_single, ild_two = band_ilds_db(heard_single), band_ilds_db(heard_two)
        print(f"\nILD (dB) at {TONES_HZ} Hz: one process {ild_single.round(1)}, "
              f"worker 2 via the front {ild_two.round(1)}")
        assert ild_single.min() > 2.0  # S is on A's left
        np.testing.assert_allclose(ild_two, ild_single, atol=SAME_DB)
        np.testing.assert_allclose(band_levels_db(heard_two), band_levels_db(heard_single),
                                   atol=SAME_LEVEL_DB)

        lurker = await websockets.connect(  # connected, never joined
            f"{srv.ws}?{urlencode({'token': mint_for(secret, 'stage', 'lurker')})}")
        code = await asyncio.to_thread(srv.stop)  # SIGTERM to the front
        assert code == 0
        for bot in (s, a, *ballast):
            await asyncio.wait_for(bot._ws.wait_closed(), 10)
            assert bot._ws.close_code == 1001
            assert bot.server_closing is not None and bot.server_closing["retry_after_s"] > 0
        assert json.loads(await lurker.recv())["type"] == "server_closing"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await lurker.recv()
        assert closed.value.rcvd.code == 1001
        for bot in (s, a, *ballast):
            await bot.close()
