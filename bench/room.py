"""``spatialjam bench room``: a live room with bots, its tick time and its one-way delay.

Starts ``spatialjam serve`` on loopback and ``--bots`` aiortc bots (in this process) in one
room. Bot 0 plays a click (:mod:`bench.clicks`) every 500 ms, the others silence. Reported:

- the room's render-and-encode time per 20 ms tick (p50/p95, from the server's ``stats``) and
  its late and skipped ticks;
- the server-added delay on that path by stage: bot 0's frames' wait from arrival to the tick
  (receive buffer and tick phase), the tick's render and encode, bot 1's packets' wait to be
  sent;
- the one-way delay from bot 0 to bot 1: when a frame holding a click was handed to bot 0's
  peer connection, to when the frame holding it came out of bot 1's (click found by
  envelope threshold, sample-accurate within the frame). It covers Opus encode and decode on
  both legs, the network stack on loopback, the server's receive buffer, the wait for the tick,
  rendering and the send queue; not a microphone's or a sound card's buffers.

The bots share this process (and the machine's cores) with nothing but each other; the server
runs in its own process.
"""

from __future__ import annotations

import argparse
import asyncio

import numpy as np

from bench.bot import Bot, silence
from bench.clicks import (
    clicks,
    delay_summary,
    found_click_times,
    sent_click_times,
    stream_times,
)
from bench.report import run_bench
from bench.serverproc import ServerProcess
from hrtf.constants import FRAME_MS
from server.cli.args import add_frame_arg, count, finite


def one_way_delays_ms(sender: Bot, receiver: Bot, first_frame: int = 0) -> list[float]:
    """Delays of the clicks sent from frame ``first_frame`` on, as the receiver heard them."""
    sent = sent_click_times(np.array(sender.track.sent_at), first_frame)
    lengths = np.array([len(f) for f in receiver.received], np.int64)
    times = stream_times(lengths, np.array(receiver.received_at))
    mono = receiver.recording().mean(axis=1)
    return [1e3 * (heard - t) for t, heard in found_click_times(mono, times, sent)]


async def run_room(url: str, bots: int, seconds: float) -> dict:
    members = [Bot(url, "bench", f"bot{k}", clicks if k == 0 else silence) for k in range(bots)]
    for bot in members:
        await bot.connect()
    await members[1].send({"type": "move_source", "source": members[0].participant,
                           "position_m": [3.0, 0.0, 1.2]})
    await asyncio.sleep(2.5)  # let the buffers settle (and trim a start-up surplus)
    for bot in members:
        bot.received.clear()
        bot.received_at.clear()
    first_frame = len(members[0].track.sent_at)
    await asyncio.sleep(seconds)
    stats = dict(members[1].stats or {})
    speaker = members[0].stats or {}
    stats["speaker_uplink_wait_ms_p50"] = speaker.get("uplink_wait_ms_p50")
    stats["speaker_uplink_wait_ms_p95"] = speaker.get("uplink_wait_ms_p95")
    delays = one_way_delays_ms(members[0], members[1], first_frame)
    for bot in members:
        await bot.close()
    return {"stats": stats, "delays_ms": delays}


def room_benchmark(bots: int, seconds: float, frame_ms: float = FRAME_MS) -> dict:
    """Bots in one room of a server ticking at ``frame_ms`` (the bots' media tracks send 20 ms
    packets, which the server splits into the room's frames)."""
    with ServerProcess("--frame-ms", f"{frame_ms:g}") as server:
        result = asyncio.run(run_room(server.ws, bots, seconds))
    delays = np.array(result["delays_ms"])
    stats = result["stats"]
    report = {
        "benchmark": "room",
        "bots": bots,
        "seconds": seconds,
        "frame_ms": frame_ms,
        "tick_ms_p50": stats.get("tick_ms_p50"),
        "tick_ms_p95": stats.get("tick_ms_p95"),
        "late_ticks": stats.get("late_ticks"),
        "skipped_ticks": stats.get("skipped_ticks"),
        "clicks_heard": len(delays),
        # Server-added delay on the measured path, by stage (from the server's stats):
        "server_stages_ms": {
            "uplink_wait_p50": stats.get("speaker_uplink_wait_ms_p50"),
            "uplink_wait_p95": stats.get("speaker_uplink_wait_ms_p95"),
            "tick_p50": stats.get("tick_ms_p50"),
            "tick_p95": stats.get("tick_ms_p95"),
            "downlink_wait_p95": stats.get("downlink_wait_ms_p95"),
        },
    }
    if len(delays):
        report["one_way_delay_ms"] = delay_summary(delays)
    return report


def report_lines(report: dict) -> list[str]:
    delay = report.get("one_way_delay_ms", {})
    return [f"room with {report['bots']} bots for {report['seconds']} s at "
            f"{report['frame_ms']:g} ms frames: tick "
            f"p50 {report['tick_ms_p50']} ms, p95 {report['tick_ms_p95']} ms, late "
            f"{report['late_ticks']}, skipped {report['skipped_ticks']}; one-way delay "
            f"bot→server→bot p50 {delay.get('p50')} ms, p95 {delay.get('p95')} ms "
            f"({report['clicks_heard']} clicks)"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``spatialjam bench room``'s options; the command runs :func:`run_room_bench`."""
    parser.add_argument("--bots", type=count("bots", 2, 64), default=2)
    parser.add_argument("--seconds", type=finite("seconds", 1, 3600), default=10.0)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    add_frame_arg(parser, "the room's frame (ms): 20 (default, or SPATIALJAM_FRAME_MS), 10, "
                  "5 or 2.5")
    parser.set_defaults(run=run_room_bench)


def run_room_bench(args: argparse.Namespace) -> int:
    run_bench(lambda: room_benchmark(args.bots, args.seconds, args.frame_ms), report_lines,
              args.json)
    return 0
