"""The CPU one audio packet costs on each transport, in aiortc (pure Python SCTP beside SRTP):
``python -m bench.transport_cost [--packets N] [--rate PER_S] [--json]``.

Two aiortc peers in this process (on uvloop, as the server runs), connected on loopback, pass
``--packets`` Opus packets of music (about 200 bytes, as a 64 kb/s mono uplink sends) from one
to the other at ``--rate`` packets a second:

- **media**: an RTP track of pre-encoded packets (``RTCRtpSender`` packs them: RTP, SRTP), a
  stand-in for the receiver's jitter buffer reading each payload's length in samples from
  libopus, as the server's packet tap does (SRTP, RTP, the tap's check);
- **datachannel**: the data-channel packet (:mod:`server.media.datachannel`) on an unordered
  channel without retransmissions (SCTP in DTLS both ways: the data, and the acknowledgements
  that come back), parsed and checked by :class:`~server.media.datachannel.ChannelUplink` at
  the receiver.

The process's CPU time (``time.process_time``: every thread) over the sending, less the same
pacing with nothing sent, divided by the packets that arrived, is the cost of one packet's
trip: its sending and its receiving together, which is what the server spends per member per
frame (one uplink packet in, one mix packet out). Also reported: the share of packets that
arrived and their one-way delay (p50/p95, one clock).
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import time

import av
import numpy as np
import uvloop
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from bench.lightbot import encode_loop, music
from hrtf.constants import FRAME, SAMPLE_RATE
from server.media.aiortc_private import replace_jitter_buffer, rtp_payload
from server.media.datachannel import (
    AUDIO_LABEL,
    Accepted,
    AudioPacket,
    ChannelUplink,
    pack,
    parse,
)
from server.media.opus import packet_samples
from server.media.uplink import receiver_of

TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
SETTLE_S = 1.0


class _Paced(MediaStreamTrack):
    """Pre-encoded packets at ``rate`` a second, each stamped when handed over."""

    kind = "audio"

    def __init__(self, payloads: list[bytes], rate: float, sent_at: dict[int, float]) -> None:
        super().__init__()
        self.payloads, self.rate, self.sent_at = payloads, rate, sent_at
        self.k = 0
        self.start: float | None = None
        self.limit = 0

    async def recv(self) -> av.Packet:
        while self.k >= self.limit:  # before the measurement: idle
            if self.readyState != "live":
                raise MediaStreamError
            await asyncio.sleep(0.01)
        if self.start is None:
            self.start = time.monotonic()
        await asyncio.sleep(max(0.0, self.start + self.k / self.rate - time.monotonic()))
        packet = av.Packet(self.payloads[self.k % len(self.payloads)])
        packet.pts, packet.time_base = self.k * FRAME, TIME_BASE
        self.sent_at[self.k * FRAME] = time.monotonic()
        self.k += 1
        return packet


class _Arrivals:
    """In place of the receiver's jitter buffer: when each packet arrived, by timestamp."""

    capacity = 1

    def __init__(self) -> None:
        self.at: dict[int, float] = {}
        self._origin: int | None = None  # the sender's random RTP timestamp offset

    def add(self, packet):
        packet_samples(rtp_payload(packet))  # what the server's tap checks
        if self._origin is None:
            self._origin = packet.timestamp
        self.at[(packet.timestamp - self._origin) % (1 << 32)] = time.monotonic()
        return False, None

    def remove(self, count: int) -> None:
        return None


async def _connect(a: RTCPeerConnection, b: RTCPeerConnection) -> None:
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)


async def _pace(count: int, rate: float, send) -> None:
    start = time.monotonic()
    for k in range(count):
        await asyncio.sleep(max(0.0, start + k / rate - time.monotonic()))
        send(k)


async def measure(transport: str, payloads: list[bytes], count: int, rate: float) -> dict:
    a, b = RTCPeerConnection(), RTCPeerConnection()
    sent_at: dict[int, float] = {}
    arrived: dict[int, float] = {}
    if transport == "media":
        track = _Paced(payloads, rate, sent_at)
        a.addTrack(track)
        sink = _Arrivals()

        @b.on("track")
        def on_track(remote) -> None:
            replace_jitter_buffer(receiver_of(b, remote), sink)

        await _connect(a, b)
        await asyncio.sleep(SETTLE_S)
        idle = await _idle_cpu(count, rate)
        cpu0 = time.process_time()
        track.limit = count
        while track.k < count:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        cpu = time.process_time() - cpu0
        arrived = sink.at
    else:
        channel = a.createDataChannel(AUDIO_LABEL, ordered=False, maxRetransmits=0)
        uplink = ChannelUplink()
        uplink.bucket.rate_per_s = uplink.bucket.burst = 1e9  # judged, never throttled here

        @b.on("datachannel")
        def on_channel(remote) -> None:
            @remote.on("message")
            def on_message(message) -> None:
                now = time.monotonic()
                verdict = uplink.receive(message, now)
                if isinstance(verdict, Accepted):
                    arrived[parse(message).timestamp] = now

        await _connect(a, b)
        while channel.readyState != "open":
            await asyncio.sleep(0.01)
        await asyncio.sleep(SETTLE_S)
        idle = await _idle_cpu(count, rate)

        def send(k: int) -> None:
            sent_at[k * FRAME] = time.monotonic()
            channel.send(pack(AudioPacket(k, k * FRAME, 0, payloads[k % len(payloads)])))

        cpu0 = time.process_time()
        await _pace(count, rate, send)
        await asyncio.sleep(0.2)
        cpu = time.process_time() - cpu0
    await a.close()
    await b.close()
    delays = [1e3 * (arrived[ts] - sent_at[ts]) for ts in arrived if ts in sent_at]
    got = len(delays)
    return {"packets": count, "arrived": got,
            "cpu_us_per_packet": round(1e6 * max(0.0, cpu - idle) / max(got, 1), 1),
            "cpu_s": round(cpu, 3), "idle_cpu_s": round(idle, 3),
            "delay_ms_p50": round(float(np.percentile(delays, 50)), 2) if got else None,
            "delay_ms_p95": round(float(np.percentile(delays, 95)), 2) if got else None}


async def _idle_cpu(count: int, rate: float) -> float:
    """The CPU of the same pacing (and the connections idling) with nothing sent."""
    cpu0 = time.process_time()
    await _pace(count, rate, lambda k: None)
    await asyncio.sleep(0.2)
    return time.process_time() - cpu0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.transport_cost")
    parser.add_argument("--packets", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0, help="packets a second")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    payloads = [p for p in encode_loop(music(2.0)) if p]
    report = {"packets": args.packets, "rate_per_s": args.rate,
              "opus_bytes_mean": round(float(np.mean([len(p) for p in payloads])), 1)}
    for transport in ("media", "datachannel"):
        report[transport] = uvloop.run(measure(transport, payloads, args.packets, args.rate))
    print(json.dumps(report, indent=2) if args.json else
          "\n".join(f"{t}: {report[t]}" for t in ("media", "datachannel")))


if __name__ == "__main__":
    main()
