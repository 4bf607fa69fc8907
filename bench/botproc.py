"""One bot in its own process: ``python -m bench.botproc URL ROOM NAME ROLE SECONDS OUT``
(``--transport media|datachannel``).

Joins, plays ``clicks`` or ``silence`` for ``SECONDS`` (after ``--settle``), and writes what
it sent and heard with their ``time.monotonic()`` stamps (comparable across processes on one
machine) to ``OUT`` (an ``.npz``), with the server's last ``stats`` for it.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import numpy as np

from bench.bot import TRANSPORTS, Bot, silence
from bench.clicks import clicks


async def run(args: argparse.Namespace) -> None:
    signal = clicks if args.role == "clicks" else silence
    async with Bot(args.url, args.room, args.name, signal, transport=args.transport) as bot:
        await asyncio.sleep(args.settle + args.seconds)
        received = bot.recording()
        frames = np.array([len(f) for f in bot.received], np.int64)
        np.savez(
            args.out,
            sent_at=np.array(bot.track.sent_at),
            received=received.astype(np.float32),
            received_frames=frames,
            received_at=np.array(bot.received_at),
            stats=json.dumps(bot.stats or {}),
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("room")
    parser.add_argument("name")
    parser.add_argument("role", choices=("clicks", "silence"))
    parser.add_argument("seconds", type=float)
    parser.add_argument("out")
    parser.add_argument("--settle", type=float, default=2.5)
    parser.add_argument("--transport", choices=TRANSPORTS, default="media")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
