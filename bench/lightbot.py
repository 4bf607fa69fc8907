"""Light bots for ``spatialjam bench capacity``: many real participants per process, cheap
enough to share two cores with the server they load.

Each :class:`LightBot` is a :class:`bench.bot.Bot` (the same signaling, the same aiortc peer
connection, the same offer with music Opus settings) with two things made cheap:

- **Uplink: real audio, encoded once.** A few seconds of a music-like signal (plucked chords
  with harmonics, :func:`music`) are Opus-encoded once per process (:func:`encode_loop`); each
  bot's :class:`PacketTrack` replays those packets in real time from its own offset, and aiortc
  sends pre-encoded packets as they are (``RTCRtpSender`` packs an ``av.Packet`` instead of
  encoding a frame). Measured on the 2-core bench machine, 10 bots in one process in a room
  of 10, each bot costs about 3 % of a core with :class:`~bench.bot.SignalTrack` (a NumPy
  frame, an ``AudioFrame`` and an Opus encode in aiortc's thread pool every 20 ms) and about
  1 % with :class:`PacketTrack`, receiving included.
- **Downlink: counted, seldom decoded.** The receiver's jitter buffer is replaced by an
  :class:`ArrivalCounter` that sees every RTP packet of the personal mix as it arrives and
  feeds a :class:`StreamWindow` (sequence gaps, RTP-timestamp gaps, empty payloads, the longest
  silence between arrivals). Only one packet in :data:`DECODE_EVERY` goes on to aiortc's
  decoder, and the decoded frame is checked (960 samples, stereo, audible once others play).

On the data-channel transport (``--transport datachannel``) the same packets go out with the
header of :mod:`server.media.datachannel` on an ``audio`` channel, and the mix's packets are
counted from their header and decoded one in :data:`DECODE_EVERY` the same way.

Run as ``python -m bench.lightbot WS_URL [--transport media|datachannel]``: a host for many
bots, driven by one JSON command per line on stdin and answering one JSON line per command on
stdout:

- ``{"cmd": "add", "bots": [[ROOM, NAME], ...]}``: join those bots, at once; answers when each
  has received its first packet (``{"ok": true, "bots": n}``, ``n`` the bots of this
  process) or with ``{"ok": false, "error": ...}``;
- ``{"cmd": "mark"}``: start a measurement window on every bot;
- ``{"cmd": "report"}``: each bot's window so far (:meth:`LightBot.report`) and the server's
  last ``stats`` for it;
- ``{"cmd": "quit"}``: leave and exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import sys
import time
from dataclasses import asdict, dataclass

import av
import numpy as np
import uvloop
from aiortc import MediaStreamTrack
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError

from bench.bot import TRANSPORTS, Bot
from hrtf.constants import FRAME, SAMPLE_RATE
from server.media.aiortc_private import replace_jitter_buffer, rtp_payload
from server.media.datachannel import AudioPacket, PacketError, pack, parse
from server.media.opus import OpusError
from server.media.uplink import receiver_of

TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
#: Seconds of pre-encoded uplink audio each process loops.
LOOP_S = 4.0
UPLINK_BITRATE = 64_000
#: One downlink packet in this many is decoded and checked.
DECODE_EVERY = 50
#: How long a bot may take to join and hear its first packet.
JOIN_TIMEOUT_S = 30.0


def music(seconds: float, seed: int = 0) -> np.ndarray:
    """A music-like mono signal: plucked notes of a I–vi–IV–V progression with harmonics.

    Four notes a second, each a sum of five harmonics decaying over about 0.3 s, with a soft
    noise floor, so the codec and the renderer see broadband, time-varying material.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    out = 0.01 * rng.standard_normal(n)
    roots = (261.63, 220.00, 174.61, 196.00)  # C, A, F, G (Hz)
    note = SAMPLE_RATE // 4
    t = np.arange(note) / SAMPLE_RATE
    envelope = np.exp(-t / 0.3)
    for k, start in enumerate(range(0, n - note + 1, note)):
        root = roots[(k // 4) % len(roots)]
        f0 = root * (1.0, 1.25, 1.5, 2.0)[rng.integers(4)]
        tone = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h
                   for h in range(1, 6))
        out[start:start + note] += 0.25 * envelope * tone
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def encode_loop(signal: np.ndarray, bitrate: int = UPLINK_BITRATE) -> list[bytes]:
    """Opus payloads (mono, 20 ms each) of ``signal``, whose length is whole frames."""
    codec = av.CodecContext.create("libopus", "w")
    codec.bit_rate = bitrate
    codec.format = "s16"
    codec.layout = "mono"
    codec.sample_rate = SAMPLE_RATE
    codec.time_base = TIME_BASE
    codec.options = {"application": "audio", "frame_duration": "20"}
    pcm = np.round(signal * 32767).astype(np.int16)
    payloads = []
    for k in range(len(pcm) // FRAME):
        frame = av.AudioFrame.from_ndarray(pcm[None, k * FRAME:(k + 1) * FRAME], format="s16",
                                           layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = k * FRAME
        frame.time_base = TIME_BASE
        payloads += [bytes(p) for p in codec.encode(frame)]
    payloads += [bytes(p) for p in codec.encode(None)]
    return payloads


class PacketTrack(MediaStreamTrack):
    """Replays pre-encoded Opus payloads in real time, from ``offset`` on, looping."""

    kind = "audio"

    def __init__(self, payloads: list[bytes], offset: int = 0) -> None:
        super().__init__()
        self.payloads = payloads
        self._offset = offset
        self._start: float | None = None
        self.sent = 0

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self.sent * FRAME / SAMPLE_RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        packet = av.Packet(self.payloads[(self._offset + self.sent) % len(self.payloads)])
        packet.pts = self.sent * FRAME
        packet.time_base = TIME_BASE
        self.sent += 1
        return packet


@dataclass
class StreamWindow:
    """What arrived of one RTP stream since the window began (no I/O; times are arguments).

    ``lost`` counts sequence numbers that never came (the network or a sender that dropped
    them before numbering); ``missing_frames`` counts RTP-timestamp jumps of more than one
    frame between consecutive sequence numbers: frames the server dropped from a full send
    queue. ``max_gap_s`` is the longest time between two arrivals.
    """

    packets: int = 0
    lost: int = 0
    missing_frames: int = 0
    reordered: int = 0
    empty: int = 0
    max_gap_s: float = 0.0
    first_at: float | None = None
    last_at: float | None = None
    _seq: int | None = None
    _ts: int | None = None

    def add(self, seq: int, timestamp: int, size: int, at: float) -> None:
        self.packets += 1
        if size == 0:
            self.empty += 1
        if self.last_at is not None:
            self.max_gap_s = max(self.max_gap_s, at - self.last_at)
        if self.first_at is None:
            self.first_at = at
        self.last_at = at
        if self._seq is None:
            self._seq, self._ts = seq, timestamp
            return
        step = (seq - self._seq) & 0xFFFF
        if step == 0 or step >= 0x8000:  # a duplicate or a late packet: not a gap
            self.reordered += 1
            return
        self.lost += step - 1
        frames = ((timestamp - self._ts) & 0xFFFFFFFF) // FRAME
        if step == 1 and frames > 1:
            self.missing_frames += frames - 1
        self._seq, self._ts = seq, timestamp

    def restart(self) -> None:
        """Begin a new window; the stream's position is kept so no gap is missed or invented."""
        seq, ts = self._seq, self._ts
        self.__init__()
        self._seq, self._ts = seq, ts

    def summary(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}


class ArrivalCounter:
    """Stands in for an aiortc receiver's jitter buffer: counts each packet as it arrives and
    passes one in ``decode_every`` on to the decoder."""

    capacity = 1

    def __init__(self, decode_every: int = DECODE_EVERY, clock=time.monotonic) -> None:
        self.window = StreamWindow()
        self.total = 0
        self.decode_every = decode_every
        self.clock = clock

    def add(self, packet) -> tuple[bool, JitterFrame | None]:
        data = rtp_payload(packet)
        if self.note(packet.sequence_number, packet.timestamp, len(data)):
            return False, JitterFrame(data=data, timestamp=packet.timestamp)
        return False, None

    def note(self, seq: int, timestamp: int, size: int) -> bool:
        """Count one packet that arrived now; whether it is one to decode."""
        self.window.add(seq, timestamp, size, self.clock())
        self.total += 1
        return (self.total - 1) % self.decode_every == 0

    def remove(self, count: int) -> None:
        return None


class LightBot(Bot):
    """A :class:`~bench.bot.Bot` that sends pre-encoded music and counts what it hears."""

    def __init__(self, url: str, room: str, name: str, payloads: list[bytes],
                 offset: int = 0, transport: str = "media") -> None:
        super().__init__(url, room, name, instrument="bot", stock_receiver=True,
                         transport=transport)
        self.track = PacketTrack(payloads, offset)
        self.arrivals = ArrivalCounter()
        self.decoded = 0
        self.decoded_ok = 0
        self.audible = 0

    def prepare_peer(self, pc) -> None:
        @pc.on("track")
        def count_instead_of_buffering(track) -> None:  # runs before Bot's own handler
            replace_jitter_buffer(receiver_of(pc, track), self.arrivals)

    async def _record(self, track) -> None:
        """Check the few frames that are decoded: one 20 ms stereo frame, audible or not."""
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self._check(frame.to_ndarray(), frame.samples, len(frame.layout.channels))

    def _check(self, pcm: np.ndarray, samples: int, channels: int) -> None:
        self.decoded += 1
        if samples == FRAME and channels == 2:
            self.decoded_ok += 1
        if np.abs(pcm).max() > 0:
            self.audible += 1

    async def _send_channel(self, channel) -> None:
        """The pre-encoded packets, paced by :class:`PacketTrack`, on the data channel."""
        sequence = 0
        while channel.readyState == "open":
            try:
                packet = await self.track.recv()
            except MediaStreamError:
                return
            if channel.readyState != "open":  # closed while the packet was due
                return
            channel.send(pack(AudioPacket(sequence, int(packet.pts),
                                          int(time.monotonic() * 1e6), bytes(packet))))
            sequence += 1

    def mix_message(self, message: bytes | str) -> None:
        """A mix packet on the data channel: counted, and one in :data:`DECODE_EVERY`
        decoded and checked."""
        try:
            packet = parse(message)
        except PacketError:
            self.bad_packets += 1
            return
        if self.arrivals.note(packet.sequence, packet.timestamp, len(packet.opus)):
            try:
                pcm = self._decoder.decode(packet.opus)
            except OpusError:
                self.decoded += 1
                return
            self._check(pcm, len(pcm), pcm.shape[1])

    def mark(self) -> None:
        self.arrivals.window.restart()
        self.decoded = self.decoded_ok = self.audible = 0

    def report(self) -> dict:
        return {"name": self.name, "room": self.room, "participant": self.participant,
                **self.arrivals.window.summary(), "decoded": self.decoded,
                "decoded_ok": self.decoded_ok, "audible": self.audible,
                "sent": self.track.sent, "errors": len(self.errors),
                "stats": dict(self.stats or {})}


class BotHost:
    """The bots of one process and the commands that drive them."""

    def __init__(self, url: str, transport: str = "media") -> None:
        self.url = url
        self.transport = transport
        self.payloads = encode_loop(music(LOOP_S))
        self.bots: list[LightBot] = []

    async def add(self, bots: list[tuple[str, str]]) -> dict:
        fresh = [LightBot(self.url, room, name, self.payloads,
                          offset=(17 * (len(self.bots) + k)) % len(self.payloads),
                          transport=self.transport)
                 for k, (room, name) in enumerate(bots)]
        self.bots += fresh
        try:
            async with asyncio.timeout(JOIN_TIMEOUT_S):
                await asyncio.gather(*(bot.connect() for bot in fresh))
                while any(bot.arrivals.total == 0 for bot in fresh):
                    await asyncio.sleep(0.05)
        except Exception as exc:  # whatever went wrong, the driver gets its one-line answer
            silent = [b.name for b in fresh if b.arrivals.total == 0]
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}; no audio yet for "
                    f"{', '.join(silent) or 'none'}"}
        return {"ok": True, "bots": len(self.bots)}

    def mark(self) -> dict:
        for bot in self.bots:
            bot.mark()
        return {"ok": True}

    def report(self) -> dict:
        return {"ok": True, "bots": [bot.report() for bot in self.bots]}

    async def close(self) -> None:
        for bot in self.bots:
            with contextlib.suppress(Exception):
                await bot.close()


async def serve_commands(url: str, transport: str = "media") -> None:
    host = BotHost(url, transport)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ok": True, "ready": True}), flush=True)
    try:
        while line := await reader.readline():
            command = json.loads(line)
            kind = command.get("cmd")
            if kind == "add":
                reply = await host.add(command["bots"])
            elif kind == "mark":
                reply = host.mark()
            elif kind == "report":
                reply = host.report()
            elif kind == "quit":
                break
            else:
                reply = {"ok": False, "error": f"unknown command {kind!r}"}
            print(json.dumps(reply), flush=True)
    finally:
        await host.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the server's signaling URL (ws://HOST:PORT/ws)")
    parser.add_argument("--transport", choices=TRANSPORTS, default="media")
    args = parser.parse_args()
    uvloop.run(serve_commands(args.url, args.transport))


if __name__ == "__main__":
    main()
