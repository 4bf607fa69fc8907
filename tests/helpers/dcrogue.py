"""A hostile member on the data-channel transport, in its own process (its flood must not load
the test's event loop, where the bots it is judged against live):
``python -m tests.helpers.dcrogue WS_URL ROOM FLOOD_S``.

It joins as a data-channel bot, says ``ready`` once its mix flows, waits for a line on stdin,
then sends through its own authenticated ``audio`` channel: every kind of bad message
(:data:`JUNK`, paced under the server's rate limit so that each is judged for what it is),
replays of one packet, then a flood of well-formed packets for ``FLOOD_S`` seconds (about
2,000 a second, as fast as its SCTP association takes them); then it listens one more second.
It prints one JSON line: what it sent of each kind and how many frames of its own mix it
received after the attack.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from bench.bot import Bot
from server.media.datachannel import HEADER, AudioPacket, pack
from tests.helpers.dcpackets import opus_frames

OPUS = opus_frames(1)[0]
HALF_FRAME_OPUS = opus_frames(1, half=True)[0]
#: Bad messages, each of them sent this many times.
JUNK_EACH = 5
JUNK = {
    "dc_text": "not audio",
    "dc_short": HEADER.pack(1, 0, 0, 0, 0),
    "dc_oversized": HEADER.pack(1, 0, 0, 0, 0) + bytes(1400),
    "dc_version": HEADER.pack(7, 0, 0, 0, 0) + OPUS,
    "malformed_opus": HEADER.pack(1, 0, 0, 0, 0) + b"\x03",
    "dc_duration": HEADER.pack(1, 0, 0, 0, 0) + HALF_FRAME_OPUS,
}
#: Between two bad messages (s): the server lets 100 a second through (20 ms frames), and the
#: rogue's own signal takes 50 of those.
JUNK_PACE_S = 0.04
FLOOD_BATCH = 10
FLOOD_PACE_S = 0.005


async def attack(url: str, room: str, flood_s: float) -> dict:
    loop = asyncio.get_running_loop()
    async with Bot(url, room, "rogue", transport="datachannel") as bot:
        await bot.flowing()
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        sent = dict.fromkeys(JUNK, 0)
        for _ in range(JUNK_EACH):
            for kind, message in JUNK.items():
                bot.channel.send(message)
                sent[kind] += 1
                await asyncio.sleep(JUNK_PACE_S)
        replay = pack(AudioPacket(1, 12_345 * 960, 0, OPUS))
        for _ in range(5):
            bot.channel.send(replay)
        sent["replays"] = 5
        sent["flood"] = 0
        end = time.monotonic() + flood_s
        sequence = 0
        while time.monotonic() < end:
            for _ in range(FLOOD_BATCH):
                sequence += 1
                bot.channel.send(pack(AudioPacket(sequence, sequence * 960, 0, OPUS)))
            sent["flood"] += FLOOD_BATCH
            await asyncio.sleep(FLOOD_PACE_S)
        after = len(bot.received)
        await asyncio.sleep(1.0)
        return {"sent": sent, "heard_after": len(bot.received) - after,
                "state": bot.pc.connectionState}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(attack(sys.argv[1], sys.argv[2], float(sys.argv[3])))),
          flush=True)
