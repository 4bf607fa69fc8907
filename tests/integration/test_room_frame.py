"""A room's frame set by its admin over signaling (``set_frame``, issue 17), live: a real server
(20 ms frames by default, tokens, recordings, a state file), real aiortc bots.

A (admin) sends its tone in its room's frame on the data channel; B sends another tone on a
browser-like media track (20 ms packets). Only an admin may change the frame, and not while
the room is recorded. After ``set_frame`` 5 ms both are told ``frame_changed``, make new peer
connections and hear each other again: A's mix comes in 5 ms packets; the metronome keeps its
beats. The room keeps its
frame: a server restarted on the same state file opens the room at 5 ms again, although its
own default is 20.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from bench.bot import Bot, tone
from bench.serverproc import ServerProcess
from hrtf.constants import frame_samples
from server.web.access import read_secret_file, write_new_secret
from tests.helpers.audio import band_level_db
from tests.helpers.live import mint_for, wait_for

A_HZ, B_HZ = 1000.0, 440.0
HEARD_DB = -45.0


async def hears(bot: Bot, freq_hz: float, timeout: float = 30.0) -> bool:
    """Whether ``bot``'s mix holds the tone at ``freq_hz`` within ``timeout`` (judged half a
    second at a time: a busy machine may starve one listen)."""
    async def loud() -> bool:
        return band_level_db(await bot.listen(0.5), freq_hz) > HEARD_DB

    return await wait_for(loud, timeout)


async def test_an_admin_sets_the_rooms_frame_and_everyone_plays_on_at_it(tmp_path):
    secret_file = write_new_secret(tmp_path / "secret")
    secret = read_secret_file(secret_file)
    state = str(tmp_path / "rooms.sqlite3")
    args = ("--secret-file", str(secret_file), "--state", state,
            "--recordings", str(tmp_path / "recordings"))
    with ServerProcess(*args) as srv:
        a = Bot(srv.ws, "band", "A", tone(A_HZ), transport="datachannel",
                token=mint_for(secret, "band", "ada", "admin"))
        b = Bot(srv.ws, "band", "B", tone(B_HZ, level=0.2),
                token=mint_for(secret, "band", "bo"))
        try:
            for bot in (a, b):
                await bot.connect()
            assert a.frame_ms == 20.0 and a.state["frame_ms"] == 20.0
            assert await hears(a, B_HZ) and await hears(b, A_HZ), "A and B do not hear each other"

            with pytest.raises(RuntimeError, match="forbidden: 'set_frame' needs the 'admin'"):
                await b.request({"type": "set_frame", "frame_ms": 5}, "frame_changed")
            with pytest.raises(RuntimeError, match=re.escape(
                    "bad_value: 'frame_ms' in 'set_frame' must be one of 2.5, 5, 10, 20")):
                await a.request({"type": "set_frame", "frame_ms": 7}, "frame_changed")
            await a.request({"type": "start_recording"}, "recording")
            with pytest.raises(RuntimeError, match="being recorded at 20 ms frames: stop the "
                                                   "recording"):
                await a.request({"type": "set_frame", "frame_ms": 5}, "frame_changed")
            await a.request({"type": "stop_recording"}, "recording")
            assert a.media_restarts == b.media_restarts == 0

            await a.send({"type": "set_metronome", "on": True, "bpm": 120})
            assert await wait_for(lambda: (b.state.get("metronome") or {}).get("on"), 5.0)
            beat_zero = b.state["metronome"]["beat_zero_s"]
            changed = await a.request({"type": "set_frame", "frame_ms": 5}, "frame_changed")
            assert changed == {"type": "frame_changed", "frame_ms": 5.0, "by": a.participant}
            assert await wait_for(lambda: a.media_restarts == b.media_restarts == 1
                                  and a.frame_ms == b.frame_ms == 5.0, 10.0)
            assert await wait_for(lambda: b.state["frame_ms"] == 5.0, 5.0), b.state
            # The metronome plays on, on the same beats (the room's time went on).
            assert b.state["metronome"]["on"] and b.state["metronome"]["beat_zero_s"] == beat_zero
            # Both are heard again on their new connections, A's mix in 5 ms packets.
            assert await hears(b, A_HZ), "B does not hear A at 5 ms frames"
            assert await hears(a, B_HZ), "A does not hear B at 5 ms frames"
            assert len(a.received[-1]) == frame_samples(5.0)
            assert a.track.frame == frame_samples(5.0)  # A's uplink: 5 ms packets too
            assert not [e for e in a.errors + b.errors
                        if e["code"] not in ("forbidden", "bad_value")], a.errors + b.errors
            # The same frame again: nothing restarts.
            await a.send({"type": "set_frame", "frame_ms": 5})
            await asyncio.sleep(0.5)
            assert a.media_restarts == b.media_restarts == 1
            seat = a.seat
        finally:
            for bot in (a, b):
                await bot.close()
        await asyncio.sleep(0.5)  # the store writes the room's last state (every 0.2 s)

    with ServerProcess(*args) as srv:  # the room opens at its own frame, not the server's
        again = Bot(srv.ws, "band", "A", tone(A_HZ), transport="datachannel", seat=seat,
                    token=mint_for(secret, "band", "ada", "admin"))
        other = Bot(srv.ws, "elsewhere", "C", token=mint_for(secret, "elsewhere", "cy"))
        try:
            await again.connect()
            await other.connect()
            assert again.frame_ms == 5.0 and again.state["frame_ms"] == 5.0
            assert other.frame_ms == 20.0
            await again.flowing()
            assert len(again.received[-1]) == frame_samples(5.0)
        finally:
            await again.close()
            await other.close()
