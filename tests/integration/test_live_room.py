"""Integration: real aiortc peers on loopback against a real ``spatialjam serve`` (uvloop).

Three bots join one room. A plays a 2 kHz tone; B and C play silence and record the personal
mix they receive over WebRTC (Opus, stereo). Levels are measured in a band around the tone.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.bot import Bot, tone
from bench.gaps import CpuStall
from bench.serverproc import ServerProcess
from tests.helpers.audio import band_ild_db, band_level_db
from tests.helpers.live import REPORTS_WITHIN_S, heard, steady_listen, wait_for

ROOT = Path(__file__).resolve().parents[2]
#: KEMAR's level difference at 90° is about 6 dB at 1 kHz and about 10 dB at 2 kHz.
TONE_HZ = 2000.0
SETTLE_S = 0.8
LISTEN_S = 0.6


@pytest.fixture(scope="module")
def server():
    with ServerProcess() as srv:
        yield srv.ws, srv.port


async def test_three_bots_hear_each_other_where_the_stage_and_their_mixes_say(server):
    url, _ = server
    async with Bot(url, "it", "A", tone(TONE_HZ)) as a, Bot(url, "it", "B") as b, \
            Bot(url, "it", "C") as c:
        await b.send({"type": "move_source", "source": b.participant, "position_m": [0, 0, 1.2]})
        await b.send({"type": "head_pose", "yaw_deg": 0})
        await c.send({"type": "move_source", "source": c.participant, "position_m": [3, 0, 1.2]})
        await c.send({"type": "head_pose", "yaw_deg": 180})

        await a.send({"type": "move_source", "source": a.participant, "position_m": [0, 2, 1.2]})
        left = await heard(b)
        assert band_level_db(left) > -40, "B does not hear A's tone"
        assert band_ild_db(left) >= 6.0

        await a.send({"type": "move_source", "source": a.participant, "position_m": [0, -2, 1.2]})
        right, c_stage = await heard(b), await c.listen(LISTEN_S)
        assert band_ild_db(right) <= -6.0

        # B alone moves A back to the left; C keeps hearing A where the stage says.
        await b.send({"type": "mix_override", "source": a.participant, "position_m": [0, 2, 1.2]})
        b_override = await heard(b)
        c_after = await c.listen(LISTEN_S)
        assert band_ild_db(b_override) >= 6.0
        assert band_ild_db(c_after) == pytest.approx(band_ild_db(c_stage), abs=1.5)

        assert b.state["revision"] >= 4 and len(b.state["members"]) == 3
        assert not a.errors and not b.errors and not c.errors


async def test_own_voice_is_left_out_unless_self_monitoring(server):
    url, _ = server
    async with Bot(url, "solo", "A", tone(TONE_HZ)) as a:
        alone = await heard(a)
        assert len(alone) > 0
        assert band_level_db(alone) < -60
        await a.send({"type": "mix_override", "source": a.participant, "gain": 1.0})
        assert band_level_db(await heard(a)) > -40
        await a.send({"type": "mix_reset", "source": a.participant})
        assert band_level_db(await heard(a)) < -60


async def test_garbage_from_one_client_does_not_stop_the_room(server):
    url, _ = server
    import websockets

    async with Bot(url, "noisy", "A", tone(TONE_HZ)) as a, Bot(url, "noisy", "B") as b:
        await b.send({"type": "move_source", "source": a.participant, "position_m": [0, 3, 1.2]})
        async with websockets.connect(url) as rogue:
            await rogue.send('{"type": "join", "room": "noisy", "name": "R"}')
            garbage = ["{nope", "[]" * 40,
                       '{"type":"move_source","source":"x","position_m":[1e9,0,0]}']
            for k in range(300):
                await rogue.send(garbage[k % 3])
            with pytest.raises(websockets.ConnectionClosed):
                async with asyncio.timeout(5):
                    while True:
                        await rogue.recv()
        assert band_level_db(await heard(b)) > -40


#: CPU stall (``/proc/pressure/cpu``) during a timed step beyond which late ticks are the
#: machine's, not the code's: five 20 ms ticks.
STARVED_STALL_MS = 100.0


async def test_a_room_keeps_playing_through_a_flood_of_stage_edits(server):
    """A client at the edge of its rate limit, every edit broadcast to all: B still hears A."""
    url, _ = server
    import json

    import websockets

    async with Bot(url, "flood", "A", tone(TONE_HZ)) as a, Bot(url, "flood", "B") as b:
        await b.send({"type": "move_source", "source": a.participant, "position_m": [0, 3, 1.2]})
        await asyncio.sleep(SETTLE_S)
        late_before = (b.stats or {}).get("late_ticks", 0)
        stall = CpuStall()  # other work on the machine can hold the tick back as well
        stalled_before = stall()
        async with websockets.connect(url) as rogue:
            await rogue.send(json.dumps({"type": "join", "room": "flood", "name": "R"}))
            me = json.loads(await rogue.recv())["participant"]

            async def flood() -> None:
                for k in range(100):  # 45 edits a second for about two seconds
                    await rogue.send(json.dumps({"type": "move_source", "source": me,
                                                 "position_m": [k % 5, 1, 1.2]}))
                    await asyncio.sleep(1 / 45)

            flooding = asyncio.get_running_loop().create_task(flood())
            during = await b.listen(2.0)
            await flooding
            assert rogue.close_code is None  # within its rate: not refused
        assert band_level_db(during[2400:]) > -40
        assert band_ild_db(during) > 3.0
        seen = b.stats_seen  # the second report from now covers the whole flood
        await wait_for(lambda: b.stats_seen >= seen + 2, REPORTS_WITHIN_S)
        stalled_ms = 1e3 * (stall() - stalled_before)
        stall.close()
        late = (b.stats or {}).get("late_ticks", 0) - late_before
        # A tick held back by the flood's handling (the GIL, the event loop) is waiting, not
        # CPU stall; on a machine whose runnable tasks waited for a CPU for longer than five
        # ticks meanwhile (other work, or these very processes on 2 cores), late ticks are no
        # verdict on the code.
        if late > 5 and stalled_ms > STARVED_STALL_MS:
            pytest.skip(f"{late} late ticks in the flood, but the machine's tasks waited "
                        f"{stalled_ms:.0f} ms for a CPU meanwhile: not a verdict on the code")
        assert late <= 5, (late, stalled_ms)
        assert b.state["revision"] > 100

def test_bench_room_measures_ticks_and_the_delay_of_clicks():
    done = subprocess.run([sys.executable, "-m", "server.cli", "bench", "room", "--bots", "2",
                           "--seconds", "3", "--frame-ms", "5", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip(), done.stderr[-2000:]
    import json

    report = json.loads(done.stdout)
    assert report["bots"] == 2 and report["tick_ms_p50"] > 0
    assert report["frame_ms"] == 5.0  # a 5 ms room: the bots' 20 ms packets split in four
    assert report["clicks_heard"] >= 2, report  # of 6 sent
    assert 0 < report["one_way_delay_ms"]["p50"] < 500


@pytest.mark.parametrize("sdp", [
    "v=0\r\nhello\r\n",
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\n"
    "a=rtpmap:96 speex/8000\r\n",
    "v=0\r\n" + "a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n" * 600,
])
async def test_an_unusable_offer_is_refused_and_the_room_plays_on(server, sdp):
    url, _ = server
    import json

    import websockets

    async with Bot(url, "sdp", "A", tone(TONE_HZ)) as a, Bot(url, "sdp", "B") as b:
        await b.send({"type": "move_source", "source": a.participant, "position_m": [0, 3, 1.2]})
        async with websockets.connect(url) as rogue:
            await rogue.send(json.dumps({"type": "join", "room": "sdp", "name": "R"}))
            await rogue.recv()
            await rogue.send(json.dumps({"type": "offer", "id": 9, "sdp": sdp}))
            async with asyncio.timeout(10):
                while True:
                    reply = json.loads(await rogue.recv())
                    if reply["type"] in ("error", "answer"):
                        break
            assert reply["type"] == "error" and reply["id"] == 9
            assert reply["code"] in ("bad_sdp", "too_large")
        assert band_level_db(await heard(b)) > -40


async def test_an_oversized_message_closes_only_that_connection(server):
    url, _ = server
    import json

    import websockets

    async with Bot(url, "big", "A", tone(TONE_HZ)) as a, Bot(url, "big", "B") as b:
        await b.send({"type": "move_source", "source": a.participant, "position_m": [0, 3, 1.2]})
        async with websockets.connect(url, max_size=None) as rogue:
            await rogue.send(json.dumps({"type": "join", "room": "big", "name": "R"}))
            await rogue.recv()
            await rogue.send(json.dumps({"type": "offer", "sdp": "v=0\r\n" + "x" * 200_000}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    while True:
                        await rogue.recv()
            assert closed.value.rcvd.code == 1009  # message too big
        assert band_level_db(await heard(b)) > -40
        assert len(b.state["members"]) == 2


async def test_a_rejoin_with_the_seat_takes_it_over_from_a_stale_connection(server):
    url, _ = server
    import json

    import websockets

    async with Bot(url, "seat", "A") as a:
        await a.send({"type": "move_source", "source": a.participant, "position_m": [1, 1, 1.2]})
        async with websockets.connect(url) as again:
            await again.send(json.dumps({"type": "join", "room": "seat", "name": "A",
                                         "seat": a.seat}))
            async with asyncio.timeout(10):
                while (joined := json.loads(await again.recv()))["type"] != "joined":
                    pass
            assert joined["participant"] == a.participant and joined["seat"] == a.seat
            stage = {p["source"]: p["position_m"] for p in joined["state"]["stage"]}
            assert stage == {a.participant: [1.0, 1.0, 1.2]}
            async with asyncio.timeout(10):
                await a._ws.wait_closed()
            assert a._ws.close_code == 4000


def test_bench_latency_writes_results_and_shows_stock_aiortcs_buffer(tmp_path):
    import json

    done = subprocess.run([sys.executable, "-m", "server.cli", "bench", "latency", "--bots", "2",
                           "--seconds", "3", "--out", str(tmp_path), "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    # 6 clicks sent each way (one every 500 ms); one may fall before a bot's first frame is
    # counted (3 of 4 were heard once in a fresh-clone run of the 2 s version).
    assert report["through_server_ms"]["clicks"] >= 4
    assert report["p2p_own_receive_ms"]["clicks"] >= 4
    # aiortc's own receive buffer holds 4 frames: it shows as ~80 ms between the baselines.
    gap = report["p2p_stock_aiortc_ms"]["p50"] - report["p2p_own_receive_ms"]["p50"]
    assert 50 <= gap <= 150
    assert report["server_stages_ms"]["tick_p50"] > 0
    kinds = sorted(p.suffix for p in tmp_path.iterdir())
    assert kinds == [".json", ".md", ".png"]
    assert (next(tmp_path.glob("*.png")).read_bytes()[:4]) == b"\x89PNG"


async def test_a_member_who_mutes_themselves_is_silent_to_everyone_and_shown_muted(server):
    """``mute_self``: B stops hearing A at once (a fade of one frame), sees A muted in
    ``room_state`` and in ``levels`` (-120 dBFS); after unmuting, A is heard again."""
    url, _ = server
    async with Bot(url, "muting", "A", tone(TONE_HZ)) as a, Bot(url, "muting", "B") as b:
        assert band_level_db(await heard(b)) > -40
        assert await wait_for(lambda: b.levels.get(a.participant, -120) > -30, 5)
        await a.send({"type": "mute_self", "muted": True})

        def shown_muted() -> bool:
            members = {m["id"]: m for m in (b.state or {}).get("members", [])}
            return members.get(a.participant, {}).get("muted") is True

        assert await wait_for(shown_muted, 5)
        assert band_level_db(await heard(b)) < -60
        assert await wait_for(lambda: b.levels.get(a.participant) == -120.0, 5)
        await a.send({"type": "mute_self", "muted": False})
        assert band_level_db(await heard(b)) > -40
        assert not shown_muted()
        assert not a.errors and not b.errors


async def test_chat_reaches_everyone_as_sent_is_kept_for_joiners_and_paced(server):
    url, _ = server
    async with Bot(url, "chatty", "A") as a, Bot(url, "chatty", "B") as b:
        text = "from the top, bar 17 <script>alert(1)</script>"
        await a.send({"type": "chat", "text": f"  {text}  "})
        assert await wait_for(lambda: len(b.chat) == 1 and len(a.chat) == 1, 5)
        line = b.chat[0]
        assert (line["member"], line["name"], line["text"]) == (a.participant, "A", text)
        # The sixth line in a row is refused in words, and nobody else gets it.
        for k in range(5):
            await a.send({"type": "chat", "text": f"line {k}", "id": f"c{k}"})
        assert await wait_for(lambda: any(e["code"] == "rate_limited" for e in a.errors), 5)
        refused = next(e for e in a.errors if e["code"] == "rate_limited")
        assert refused["id"] == "c4" and "paced" in refused["message"]
        await a.send({"type": "chat", "text": "x" * 501, "id": "long"})
        assert await wait_for(lambda: any(e.get("id") == "long" for e in a.errors), 5)
        assert await wait_for(lambda: len(b.chat) == 5, 5)
        assert [line["text"] for line in b.chat[1:]] == [f"line {k}" for k in range(4)]
        async with Bot(url, "chatty", "C") as c:  # a joiner gets what was said
            assert await wait_for(lambda: len(c.chat) == 5, 5)
            assert c.chat == b.chat


async def test_on_an_open_server_a_lock_keeps_every_newcomer_out_and_a_removal_stays(server):
    """Everyone may administer an open room, so an admin is no one in particular: a locked
    room admits only its seat holders. A removed player's seat is refused while the room is
    open; as a newcomer they may come back only while it is unlocked."""
    url, _ = server
    async with Bot(url, "locking", "Host", tone(TONE_HZ)) as host, Bot(url, "locking", "B") as b:
        seat = b.seat
        await b.close()
        await host.send({"type": "lock_room", "locked": True})
        assert await wait_for(lambda: host.state["locked"] is True, 5)
        stranger = Bot(url, "locking", "Stranger")
        with pytest.raises(RuntimeError, match="room_locked"):
            await stranger.connect()
        await stranger.close()
        async with Bot(url, "locking", "B", seat=seat) as back:  # a seat holder comes back
            assert back.participant == b.participant
            await host.send({"type": "kick", "member": back.participant})
            await asyncio.wait_for(back._ws.wait_closed(), 5)
        kicked = Bot(url, "locking", "B", seat=seat)
        with pytest.raises(RuntimeError, match="kicked"):
            await kicked.connect()
        await kicked.close()
        newcomer = Bot(url, "locking", "B")
        with pytest.raises(RuntimeError, match="room_locked"):
            await newcomer.connect()
        await newcomer.close()
        await host.send({"type": "lock_room", "locked": False})
        assert await wait_for(lambda: host.state["locked"] is False, 5)
        async with Bot(url, "locking", "B") as unlocked:
            assert unlocked.participant != b.participant
        assert not host.errors


def click_onsets(y: np.ndarray, threshold: float = 0.02) -> np.ndarray:
    """The first sample of each click in ``y`` (mono), clicks at least 100 ms apart."""
    loud = np.flatnonzero(np.abs(y) > threshold)
    if not len(loud):
        return loud
    return np.concatenate([loud[:1], loud[1:][np.diff(loud) > 4_800]])


def grid_error_ms(onsets: np.ndarray, beat: float) -> np.ndarray:
    """How far each onset (samples) is from the grid of ``beat`` samples through the first."""
    k = np.round((onsets - onsets[0]) / beat)
    return 1e3 * np.abs(onsets - onsets[0] - np.round(k * beat)) / 48_000


def on_the_grid(y: np.ndarray, beat: float) -> bool:
    """Four clicks or more in ``y``, each on the beat grid to the millisecond."""
    onsets = click_onsets(y.astype(np.float64))
    return len(onsets) >= 4 and grid_error_ms(onsets, beat).max() <= 1.0


async def test_the_room_metronome_clicks_on_its_beat_grid_as_each_player_chooses(server):
    """An admin's metronome at 150 bpm: B hears its clicks centred, on the beat grid to the
    millisecond (the mix is sample-continuous, whatever the network's jitter), the same in
    both ears; C, who asked to hear it from the stage, hears it from where it stands (ILD);
    D turned it off and hears nothing. Off again, it is gone from the stage."""
    url, _ = server
    async with Bot(url, "metro", "B") as b, Bot(url, "metro", "C") as c, \
            Bot(url, "metro", "D") as d:
        await c.send({"type": "hear_metronome", "mode": "stage"})
        await d.send({"type": "hear_metronome", "mode": "off"})
        await c.send({"type": "move_source", "source": c.participant, "position_m": [0, 0, 1.2]})
        await c.send({"type": "head_pose", "yaw_deg": 0})
        await b.send({"type": "set_metronome", "on": True, "bpm": 150, "beats_per_bar": 4})
        assert await wait_for(lambda: (b.state.get("metronome") or {}).get("on") is True, 5)
        state = b.state["metronome"]
        assert (state["bpm"], state["beats_per_bar"], state["accent"]) == (150.0, 4, True)
        assert any(p["source"] == "metronome" for p in b.state["stage"])
        await b.send({"type": "move_source", "source": "metronome", "position_m": [0, 2, 1.2]})

        heard_c, heard_d = await asyncio.gather(heard(c), heard(d))
        beat = 60 * 48_000 / 150
        heard_b = (await steady_listen(b, 2.0, lambda y: on_the_grid(y[:, 0], beat))
                   ).astype(np.float64)
        onsets = click_onsets(heard_b[:, 0])
        assert len(onsets) >= 4, onsets
        off_grid_ms = grid_error_ms(onsets, beat)
        print(f"\nmetronome: {len(onsets)} clicks, off the grid by at most "
              f"{off_grid_ms.max():.3f} ms")
        assert off_grid_ms.max() <= 1.0, off_grid_ms
        assert np.allclose(heard_b[:, 0], heard_b[:, 1], atol=0.02)  # centred: both ears alike
        assert np.abs(heard_c).max() > 0.02  # C hears it, from its left:
        assert band_ild_db(heard_c, 1500.0) > 3.0, band_ild_db(heard_c, 1500.0)
        assert np.abs(heard_d).max() < 0.005

        await b.send({"type": "set_metronome", "on": False})
        assert await wait_for(lambda: b.state["metronome"]["on"] is False, 5)
        assert not any(p["source"] == "metronome" for p in b.state["stage"])
        assert np.abs(await heard(b)).max() < 0.005
        assert not b.errors and not c.errors and not d.errors
