"""Extreme uplink audio through a real server: silence, a full-scale clipped square wave, DC at
full scale, a full-scale 20 kHz tone and white noise at 0 dBFS from one member, while another
plays a quiet tone and a third listens.

The listener's mix stays finite and within full scale, is limited rather than clipped (the
renderer's safety limiter, ``dsp/limiter.py``), and the quiet tone stays audible beside each.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bench.bot import Bot, silence, tone
from bench.serverproc import ServerProcess
from hrtf.constants import SAMPLE_RATE
from tests.helpers.hostile import TRIED, metrics_delta, report_tried, tone_db

TONE_HZ = 700.0
SETTLE_S = 1.0
LISTEN_S = 1.0
#: The quiet tone may lose this much to the limiter's gain reduction beside a full-scale
#: source (a mix peaking at twice full scale is turned down by about 6 dB).
MAX_DUCKING_DB = 15.0
#: Samples at the int16 ceiling a limited mix may hold after Opus (whose decoding can
#: overshoot a 0.98 peak a little): a clipped mix holds far more.
MAX_CLIPPED_SHARE = 0.002


def square(start: int, n: int) -> np.ndarray:
    t = (start + np.arange(n)) / SAMPLE_RATE
    return np.sign(np.sin(2 * np.pi * 220.0 * t) + 1e-9).astype(np.float32)


def dc(start: int, n: int) -> np.ndarray:
    return np.ones(n, np.float32)


def hiss(start: int, n: int) -> np.ndarray:
    return np.random.default_rng(start).uniform(-1.0, 1.0, n).astype(np.float32)


EXTREMES = {"silence": silence, "full-scale square": square, "full-scale DC": dc,
            "full-scale 20 kHz": tone(20_000.0, level=1.0), "white noise at 0 dBFS": hiss}


@pytest.fixture(scope="module", autouse=True)
def tried_report():
    yield
    print("\n" + report_tried("audio"))


@pytest.fixture(scope="module")
def server():
    with ServerProcess() as srv:
        yield srv


async def test_extreme_uplinks_leave_the_mix_finite_limited_and_the_quiet_tone_audible(server):
    playing = {"signal": silence}
    heard: dict[str, dict] = {}
    async with Bot(server.ws, "loud", "X", lambda start, n: playing["signal"](start, n)) as x, \
            Bot(server.ws, "loud", "A", tone(TONE_HZ, level=0.1)) as a, \
            Bot(server.ws, "loud", "B") as b:
        for bot, position in ((x, [1.0, 0.5, 1.2]), (a, [1.0, -0.5, 1.2]), (b, [0, 0, 1.2])):
            await bot.send({"type": "move_source", "source": bot.participant,
                            "position_m": position})
        await b.flowing()
        before = metrics_delta(server.http, {})
        for name, signal in EXTREMES.items():
            playing["signal"] = signal
            await asyncio.sleep(SETTLE_S)
            mix = await b.listen(LISTEN_S)
            heard[name] = {"finite": bool(np.isfinite(mix).all()),
                           "peak": float(np.abs(mix).max()),
                           "clipped": float(np.mean(np.abs(mix) >= 32767 / 32768)),
                           "frames": len(mix) / 960, "tone_db": tone_db(mix, TONE_HZ)}
            TRIED[f"audio.uplink ({name})"] += round(LISTEN_S * 50 + SETTLE_S * 50)
        grew = metrics_delta(server.http, before)
        errors = x.errors + a.errors + b.errors
    for name, seen in heard.items():
        print(f"\n{name}: {seen}")
    quiet = heard["silence"]["tone_db"]
    assert quiet > -45, heard["silence"]
    for name, seen in heard.items():
        assert seen["finite"] and seen["peak"] <= 1.0, (name, seen)
        assert seen["frames"] >= 0.8 * LISTEN_S * 50, (name, seen)
        assert seen["clipped"] <= MAX_CLIPPED_SHARE, (name, seen)
        assert seen["tone_db"] >= quiet - MAX_DUCKING_DB, (name, seen)
    assert grew["ticks_total"] >= 0.8 * len(EXTREMES) * (SETTLE_S + LISTEN_S) * 50
    assert not errors
