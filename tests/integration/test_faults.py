"""Faults a live room survives (issue 7, "faults survived"): real servers, real aiortc bots.

A jam is a live performance: it plays on while one player's network dies, a client misbehaves,
the AI accompanist crashes or one room's engine fails. Each test makes one of those happen for
real and checks that the *other* players' mixes keep flowing meanwhile, at a healthy
listener (:class:`bench.gaps.GapBot`), packet by packet:

- **RTP**: the server sends one Opus packet per listener per 20 ms tick; consecutive packets'
  timestamps advance by 960, and no more than one frame may be missing in a row;
- **wall clock**: no longer than :data:`MAX_GAP_MS` (one tick plus a scheduling slack) between
  two packets' arrivals, less the time in which the machine's CPUs were wanted by more than
  they could run (``/proc/pressure/cpu``: other engineers' test runs share these 2 cores;
  that time is no fault of the server's, and on an idle machine it is none);
- **content**: every frame holds the other player's tone at the level it had before the fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import websockets
from websockets.asyncio.server import serve

from bench.bot import Bot, tone
from bench.clicks import clicks
from bench.gaps import GapBot, measure
from bench.impair import Impairment, Relay
from bench.serverproc import ServerProcess
from hrtf.constants import FRAME, FRAME_MS
from server.media.peers import MEDIA_CHECK_S, MEDIA_SILENCE_S
from server.rooms.hub import Hub
from server.tick.runner import MAX_FAILED_TICKS, TickFailures
from server.web.app import ServerState, warm_up
from signaling.session import CLOSE_SERVER_ERROR
from tests.helpers.audio import rms_db
from tests.helpers.live import metrics_off_loop, sidecar_pids, wait_for

ROOT = Path(__file__).resolve().parents[2]
TONE_HZ = 1000.0
#: The clicks of a bot in its own process (bench.clicks) are 2 kHz bursts.
CLICK_HZ = 2000.0
#: What the tick and two event loops (the server's send path, the listener's receive path) add
#: to the 20 ms between packets on this 2-core machine, beyond waiting for a CPU (discounted:
#: bench/gaps.py). Measured: on an idle machine 99.9 % of gaps are under 26 ms and the longest
#: under 27 ms (1,000 packets); in three runs of these tests beside other engineers' test runs
#: (raw gaps up to 204 ms), the longest gap less its CPU stall was 10 to 25 ms in every window.
#: 30 ms holds that; a tick that sends nothing makes a 40 ms gap (allowed: one tick) and two
#: in a row 60 ms (caught).
SCHEDULING_SLACK_MS = 30.0
MAX_GAP_MS = FRAME_MS + SCHEDULING_SLACK_MS
#: A steady tone through Opus at 128 kb/s keeps its level within ±0.1 dB from frame to frame
#: (measured); a missing frame, a silent one or another source's sound would move it further.
LEVEL_TOLERANCE_DB = 3.0
#: A frame concealed from the source's uplink (Opus PLC: fades) and the buffer's refill after
#: it (silence until its target is queued again, up to 2 frames) change the tone for up to
#: this many frames of a listener's mix (measured: 1 to 3).
FRAMES_PER_CONCEALED = 4
SETTLE_S = 1.0


@pytest.fixture(scope="module")
def server():
    with ServerProcess() as srv:
        yield srv


def place_left(source: str) -> dict:
    """A ``move_source`` putting ``source`` 2 m to the left of a listener at the origin."""
    return {"type": "move_source", "source": source, "position_m": [0, 2, 1.2]}


async def tone_level(bot: GapBot, seconds: float = 1.0, freq_hz: float = TONE_HZ) -> float:
    """The median per-frame level of the tone in what ``bot`` hears over the next ``seconds``,
    once its mix flows."""
    assert await wait_for(lambda: len(bot.arrivals) > 25, 20.0), f"{bot.name} hears nothing"
    start = time.monotonic()
    await asyncio.sleep(seconds)
    levels = bot.arrivals.band_levels_db(start, time.monotonic(), freq_hz)
    assert len(levels) >= 10, f"{bot.name} heard {len(levels)} packets in {seconds} s"
    return float(np.median(levels))


class Watch:
    """``listener``'s mix of ``source``'s tone, watched from now on (see the module docstring
    for what "flows" means).

    ``source`` plays from this test's process, whose event loop and CPUs are busy: now and
    then one of its packets reaches the server too late, and the server conceals that frame
    and then refills the source's buffer (:mod:`server.media.jitter`). Each such frame, which the
    server counts (``concealed`` in the source's ``stats``), may cost the listener's mix up to
    :data:`FRAMES_PER_CONCEALED` frames off the tone's level; no other frame may be off it.
    """

    def __init__(self, listener: GapBot, source: Bot, level_db: float,
                 freq_hz: float = TONE_HZ) -> None:
        self.listener, self.source = listener, source
        self.level_db, self.freq_hz = level_db, freq_hz
        self.start = time.monotonic()
        self.concealed = source.stats["concealed"]

    async def check(self) -> dict:
        """Assert that the mix flowed from the start until now; the numbers, for the report."""
        end = time.monotonic()
        concealed = (await next_stats(self.source))["concealed"] - self.concealed
        report = self.listener.arrivals.report(self.start, end)
        where = (f"{self.listener.name} hearing {self.source.name} from {self.start:.3f} to "
                 f"{end:.3f} s: {report}")
        assert report.missing_run <= 1, f"frames missing in a row: {where}"
        # One tick plus the slack (SCHEDULING_SLACK_MS says why), beyond CPU contention.
        assert report.max_gap_less_stall_ms < MAX_GAP_MS, f"a gap longer than one tick: {where}"
        levels = self.listener.arrivals.band_levels_db(self.start, end, self.freq_hz)
        off = np.abs(levels - self.level_db) > LEVEL_TOLERANCE_DB
        assert off.sum() <= FRAMES_PER_CONCEALED * concealed, (
            f"{off.sum()} frames off the tone's level by more than {LEVEL_TOLERANCE_DB} dB "
            f"(worst {np.max(np.abs(levels - self.level_db)):.1f} dB), {concealed} of the "
            f"source's concealed: {where}")
        return {"seconds": round(end - self.start, 2), "max_gap_ms": round(report.max_gap_ms, 1),
                "max_gap_less_stall_ms": round(report.max_gap_less_stall_ms, 1),
                "cpu_stall_ms": round(report.stall_ms), "missing_run": report.missing_run,
                "frames_off_level": int(off.sum()), "source_concealed": concealed}


async def next_stats(bot: Bot) -> dict:
    """The server's next ``stats`` for ``bot`` (one comes every second)."""
    last = bot.stats
    assert await wait_for(lambda: bot.stats is not last, 5.0), "no stats from the server"
    return bot.stats


def members(bot: Bot) -> set[str]:
    return {m["id"] for m in (bot.state or {}).get("members", [])}


# the arithmetic --------------------------------------------------------------------------------

def test_a_steady_stream_has_no_gap():
    n = 50
    seq = (65_530 + np.arange(n)) % (1 << 16)  # sequence numbers and timestamps wrap
    ts = ((1 << 32) - 2 * FRAME + FRAME * np.arange(n)) % (1 << 32)
    at = 0.02 * np.arange(n)
    report = measure(seq, ts, at, 0.0, at[-1])
    assert (report.packets, report.lost, report.missing_run) == (n, 0, 0)
    assert report.max_gap_ms == pytest.approx(20.0)


def test_a_missing_frame_and_a_silent_tick_are_told_apart():
    seq = np.array([1, 2, 3, 4, 5])
    ts = FRAME * np.array([0, 1, 3, 4, 5])  # the frame after 1 never came, in sequence
    at = np.array([0.00, 0.02, 0.04, 0.10, 0.12])  # a tick sent nothing before the 4th
    report = measure(seq, ts, at, 0.0, 0.12)
    assert report.missing_run == 1 and report.lost == 0
    assert report.max_gap_ms == pytest.approx(60.0) and report.worst_at == pytest.approx(0.10)


def test_a_gap_across_the_start_of_the_window_counts():
    at = np.array([0.00, 0.02, 0.10, 0.12])
    report = measure(np.arange(4), FRAME * np.arange(4), at, 0.05, 0.12)
    assert report.packets == 2 and report.max_gap_ms == pytest.approx(80.0)


def test_a_stream_that_stops_has_a_gap_up_to_the_end_of_the_window():
    at = 0.02 * np.arange(10)
    report = measure(np.arange(10), FRAME * np.arange(10), at, 0.0, 1.0)
    assert report.max_gap_ms == pytest.approx(820.0)


def test_a_gap_is_discounted_by_the_cpu_stall_around_it_and_the_edges_are_not():
    at = np.array([0.00, 0.02, 0.12, 0.14])
    # CPUs were short for 10 ms before the 100 ms gap and for 60 ms in it.
    stall = np.array([1.0, 1.01, 1.07, 1.07])
    report = measure(np.arange(4), FRAME * np.arange(4), at, 0.0, 0.3, stall)
    assert report.max_gap_ms == pytest.approx(160.0)  # the end: the stream stopped
    assert report.max_gap_less_stall_ms == pytest.approx(160.0)
    inner = measure(np.arange(4), FRAME * np.arange(4), at, 0.0, 0.14, stall)
    assert measure(np.arange(0), np.arange(0), np.zeros(0), 0.0, 0.1).max_gap_ms == 100.0
    assert inner.max_gap_ms == pytest.approx(100.0)
    assert inner.max_gap_less_stall_ms == pytest.approx(30.0)
    assert inner.stall_ms == pytest.approx(70.0)


def test_tick_failures_count_runs_and_give_up_at_the_limit():
    failures = TickFailures(limit=3)
    assert not failures.failed() and not failures.failed()
    assert failures.played() == 2 and failures.played() == 0
    assert [failures.failed() for _ in range(3)] == [False, False, True]
    assert failures.total == 5


# 1. a peer whose network vanishes -------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("how", ["frozen process", "blackholed media"])
async def test_a_peer_whose_network_vanishes_is_removed_in_bounded_time_and_the_others_play_on(
        server, tmp_path, how):
    """F plays clicks until its network vanishes without a word: its process is frozen
    (SIGSTOP: no packet, no TCP reset, nothing), or a relay drops every RTP and RTCP packet
    both ways while ICE's consent checks and the WebSocket still pass (aiortc alone would
    never notice)."""
    room = how.split()[0]
    async with Bot(server.ws, room, "A", tone(TONE_HZ)) as a, GapBot(server.ws, room, "B") as b, \
            contextlib.AsyncExitStack() as stack:
        await b.send(place_left(a.participant))
        if how == "frozen process":
            frozen = subprocess.Popen(
                [sys.executable, "-m", "bench.botproc", server.ws, room, "F", "clicks", "300",
                 str(tmp_path / "f.npz"), "--settle", "0"], cwd=ROOT)
            stack.callback(frozen.wait, timeout=10)
            stack.callback(frozen.kill)  # a stopped process is killed all the same
            f_bot = None
        else:
            relay = await stack.enter_async_context(Relay())
            f_bot = await stack.enter_async_context(Bot(
                server.ws, room, "F", clicks, offer_filter=relay.rewrite_offer,
                answer_filter=relay.rewrite_answer))
        assert await wait_for(lambda: len(members(b)) == 3, 30.0), b.state
        (f,) = members(b) - {a.participant, b.participant}

        def hears_f() -> bool:  # F's media flows: its clicks are in B's mix
            now = time.monotonic()
            return b.arrivals.band_levels_db(now - 1.0, now, CLICK_HZ).max(initial=-200) > -45

        # While B listens for F's clicks, A's tone is muted in B's mix; then F's clicks.
        await b.send({"type": "mix_override", "source": a.participant, "mute": True})
        assert await wait_for(hears_f, 30.0), "B never heard F's clicks"
        await b.send({"type": "mix_override", "source": f, "mute": True})
        await b.send({"type": "mix_override", "source": a.participant, "mute": False})
        await asyncio.sleep(0.2)
        level = await tone_level(b)

        watch = Watch(b, a, level)
        if f_bot is None:
            os.kill(frozen.pid, signal.SIGSTOP)
        else:
            relay.set_impairment(uplink=Impairment(loss=1.0), downlink=Impairment(loss=1.0))
        assert await wait_for(lambda: f not in members(b), MEDIA_SILENCE_S + 10.0), \
            "F was never removed"
        removed_s = time.monotonic() - watch.start
        await asyncio.sleep(1.0)  # and after: the room plays on without F
        flow = await watch.check()
        # The watchdog's bound: MEDIA_SILENCE_S to MEDIA_SILENCE_S + MEDIA_CHECK_S after F's
        # last packet, plus one more check's time for the loops' scheduling.
        assert removed_s <= MEDIA_SILENCE_S + 2 * MEDIA_CHECK_S, removed_s
        assert members(b) == {a.participant, b.participant}
        assert any("media connection for" in line and f in line for line in server.log)
        if f_bot is not None:  # its signaling still works: it is told why
            async with asyncio.timeout(5):
                await f_bot._ws.wait_closed()
            assert f_bot._ws.close_code == CLOSE_SERVER_ERROR
            assert f_bot._ws.close_reason.startswith("no media from you for"), \
                f_bot._ws.close_reason
        assert not a.errors and not b.errors
        print(f"{how}: F removed after {removed_s:.2f} s; B's mix meanwhile: {flow}")


# 2. a client that stops reading -----------------------------------------------------------------

async def drag(url: str, room: str, name: str) -> None:
    """A member without media that drags its own source about at the rate limit's edge (45
    moves a second), reading all it is sent, until cancelled."""
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "join", "room": room, "name": name}))
        me = json.loads(await ws.recv())["participant"]

        async def read() -> None:
            async for _ in ws:
                pass

        reader = asyncio.get_running_loop().create_task(read())
        try:
            for k in itertools.count():
                await ws.send(json.dumps({"type": "move_source", "source": me,
                                          "position_m": [1 + 0.01 * (k % 7), -3, 1.2]}))
                await asyncio.sleep(1 / 45)
        finally:
            reader.cancel()


async def test_a_client_that_stops_reading_is_dropped_and_the_room_plays_on(server):
    """R joins and never reads again, while two members drag their sources about: every
    drag is a ``room_state`` to all, R's included. A and B stay put."""
    async with Bot(server.ws, "deaf", "A", tone(TONE_HZ)) as a, \
            GapBot(server.ws, "deaf", "B") as b:
        await b.send(place_left(a.participant))
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # its window closes soon
        sock.connect(("127.0.0.1", server.port))
        # max_queue=1: the client library stops reading from its socket after one message.
        rogue = await websockets.connect(server.ws, sock=sock, max_queue=1)
        await rogue.send(json.dumps({"type": "join", "room": "deaf", "name": "R"}))
        assert await wait_for(lambda: len(members(b)) == 3, 10.0), b.state
        (r,) = members(b) - {a.participant, b.participant}
        level = await tone_level(b)

        watch = Watch(b, a, level)
        dragging = [asyncio.get_running_loop().create_task(drag(server.ws, "deaf", name))
                    for name in ("D1", "D2")]
        try:
            assert await wait_for(lambda: len(members(b)) == 4 and r not in members(b), 60.0), \
                "R was never dropped"
        finally:
            for task in dragging:
                task.cancel()
        dropped_s = time.monotonic() - watch.start
        await asyncio.sleep(0.5)
        flow = await watch.check()
        with pytest.raises(websockets.ConnectionClosed):  # what it had is there, then the end
            async with asyncio.timeout(10):
                while True:
                    await rogue.recv()
        assert not a.errors and not b.errors
        print(f"non-reading client dropped after {dropped_s:.2f} s of broadcasts "
              f"(revision {b.state['revision']}); B's mix meanwhile: {flow}")


# 3. the AI sidecar hung, then killed ---------------------------------------------------------

@pytest.mark.slow
async def test_the_humans_mixes_flow_while_the_ai_sidecar_hangs_and_dies(server):
    """tests/integration/test_ai_room.py counts the frames that arrive while the sidecar is
    killed; here it hangs (SIGSTOP) and then dies (SIGKILL), and B's mix is checked packet by
    packet.

    A new sidecar takes a whole core for about 1.2 s as it warms up (models, kernels): on 2
    cores the server then waits for a CPU now and then, and that wait is discounted like any
    other (bench/gaps.py); the raw longest gap is in the numbers printed."""
    async with Bot(server.ws, "aifault", "A", tone(TONE_HZ)) as a, \
            GapBot(server.ws, "aifault", "B") as b:
        await b.send(place_left(a.participant))
        await b.send({"type": "ai_add", "instrument": "organ", "bpm": 100})
        assert await wait_for(lambda: any(m.startswith("ai-") for m in members(b)), 10.0)
        (ai,) = [m for m in members(b) if m.startswith("ai-")]
        # B hears A alone (the organ would sound in the tone's band); A hears the AI.
        await b.send({"type": "mix_override", "source": ai, "mute": True})

        # Polled in a thread (metrics_off_loop): the bots live on this event loop.
        async def events() -> float:
            return (await metrics_off_loop(server)).get("ai_events_total", 0)

        async def restarts() -> float:
            return (await metrics_off_loop(server))["ai_sidecar_restarts_total"]

        async def events_over(n: float) -> bool:
            return await events() > n

        async def restarts_over(n: float) -> bool:
            return await restarts() > n

        assert await wait_for(lambda: events_over(8), 120.0), "the AI never played"
        level = await tone_level(b)
        flows = {}
        for fault in (signal.SIGSTOP, signal.SIGKILL):
            (pid,) = sidecar_pids(server.proc.pid)
            before_events, before_restarts = await events(), await restarts()
            watch = Watch(b, a, level)
            os.kill(pid, fault)
            assert await wait_for(lambda n=before_restarts: restarts_over(n), 20.0), fault
            assert await wait_for(lambda n=before_events: events_over(n + 8), 60.0), \
                f"the AI did not come back after {fault.name}"
            flows[fault.name] = await watch.check()
            assert rms_db(await a.listen(1.0)) > -45, f"A does not hear the AI after {fault.name}"
        assert not a.errors and not b.errors
        print(f"AI sidecar hung, then killed; B's mix meanwhile: {flows}")


# 4. one room's tick fails ------------------------------------------------------------------------

@pytest.fixture
async def hub_server():
    """A real :class:`~server.rooms.hub.Hub` serving signaling on loopback, in this process: its
    rooms' runners can be reached, to make one room's renderer fail."""
    hrirs, warmup_ms = warm_up("kemar", "cpu")
    hub = Hub(hrirs)
    async with serve(hub.handle, "127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        yield hub, ServerState(hrirs, "cpu", warmup_ms, hub), f"ws://127.0.0.1:{port}/ws"
        await hub.close()


def prometheus(state: ServerState) -> dict[str, float]:
    return {line.split()[0].removeprefix("spatialjam_"): float(line.split()[1])
            for line in state.metrics().splitlines() if line and not line.startswith("#")}


async def test_a_failing_tick_is_skipped_and_a_room_that_keeps_failing_is_closed(
        hub_server, monkeypatch):
    """Rooms "good" and "bad" tick on one process. The bad room's renderer is made to raise
    (a monkeypatch on its real runner: no input a participant can send makes the renderer
    fail, and it must not), first for a few ticks, then for good."""
    hub, state, url = hub_server
    async with Bot(url, "good", "A", tone(TONE_HZ)) as a, GapBot(url, "good", "B") as b, \
            Bot(url, "bad", "C", tone(TONE_HZ)) as c, GapBot(url, "bad", "D") as d:
        await b.send(place_left(a.participant))
        await d.send(place_left(c.participant))
        await asyncio.sleep(SETTLE_S)
        level_b, level_d = await tone_level(b), await tone_level(d)
        bad = hub.rooms["bad"].runner
        render = bad.renderer.render
        blip = 10  # a blip: fewer than MAX_FAILED_TICKS in a row
        failing = {"left": blip}

        def flaky_render(scene, audio):
            if failing["left"] > 0:
                failing["left"] -= 1
                raise RuntimeError("injected fault in the renderer")
            return render(scene, audio)

        monkeypatch.setattr(bad.renderer, "render", flaky_render)
        good = Watch(b, a, level_b)
        assert await wait_for(lambda: failing["left"] == 0, 5.0)
        await asyncio.sleep(1.0)
        blip_end = time.monotonic()
        m = prometheus(state)
        assert m["tick_errors_total"] == blip and m["rooms_failed_total"] == 0, m
        # The bad room skipped those ticks (D heard nothing for about their time) and plays on.
        skipped = d.arrivals.report(good.start, blip_end)
        assert skipped.max_gap_ms > 0.5 * blip * FRAME_MS, skipped
        recovered = Watch(d, c, level_d)
        await asyncio.sleep(1.0)
        await recovered.check()

        failing["left"] = 10**9  # for good now
        assert await wait_for(lambda: "bad" not in hub.rooms, 10.0), "the room was not closed"
        assert await wait_for(lambda: c.errors and d.errors, 5.0)
        for bot in (c, d):
            assert bot.errors[-1]["code"] == "internal_error", bot.errors
            assert "join again" in bot.errors[-1]["message"]
            async with asyncio.timeout(5):
                await bot._ws.wait_closed()
            assert bot._ws.close_code == CLOSE_SERVER_ERROR
        await asyncio.sleep(0.5)
        flow = await good.check()  # the good room, all along
        m = prometheus(state)
        assert m["tick_errors_total"] == blip + MAX_FAILED_TICKS and m["rooms_failed_total"] == 1
        assert hub.rooms["good"].runner.failures.total == 0

        # A new join opens the room afresh, and it plays.
        async with Bot(url, "bad", "C2", tone(TONE_HZ)) as c2, GapBot(url, "bad", "D2") as d2:
            await d2.send(place_left(c2.participant))
            await asyncio.sleep(SETTLE_S)
            assert abs(await tone_level(d2) - level_d) < LEVEL_TOLERANCE_DB
        assert not a.errors and not b.errors
        print(f"room 'bad' skipped {blip} ticks, then closed after {MAX_FAILED_TICKS} failed "
              f"in a row; room 'good' meanwhile: {flow}")
