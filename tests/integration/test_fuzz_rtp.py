"""Hostile media: junk datagrams at the server's UDP ports from anyone, and junk RTP and RTCP
through a member's own authenticated DTLS-SRTP session, while a room plays on.

Junk is dropped; where spatialjam's code sees it, it is counted in ``/metrics``
(``spatialjam_dropped_packets_total`` and ``spatialjam_uplink_dropped_frames_total``, by
reason); an Opus payload that cannot be decoded is concealed; the two members beside it keep
hearing each other, and the member whose stream was mangled is heard again once it is clean.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from types import SimpleNamespace

import numpy as np
import pylibsrtp
import pytest
from aiortc import RTCPeerConnection
from aiortc.rtp import RtpPacket
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.bot import Bot
from bench.capacity import fetch_metrics
from bench.serverproc import ServerProcess
from hrtf.constants import FRAME, SAMPLE_RATE
from server.media.aiortc_private import udp_protocols
from server.media.ingress import DropCounts, guard_datagrams
from server.media.jitter import JitterBuffer
from server.media.opus import OpusEncoder
from server.media.sdp import opus_payload_types
from server.media.uplink import PacketTap, UplinkDecoder
from tests.helpers.hostile import (
    MAX_SKIPPED_SHARE,
    TRIED,
    HearingPair,
    media_ports,
    metrics_delta,
    report_tried,
    tone_db,
)

#: Datagrams sent between pauses, and the pause (s): about 2,000 datagrams a second.
PACE_BATCH = 100
PACE_S = 0.05
STUN_COOKIE = 0x2112A442
#: STUN attribute types aioice unpacks with a fixed length (PRIORITY, ICE-CONTROLLING/LED,
#: FINGERPRINT, XOR-MAPPED-ADDRESS, ERROR-CODE…), and any other.
STUN_ATTRIBUTES = [0x0024, 0x8029, 0x802A, 0x8028, 0x0020, 0x0009, 0x0006, 0x0008, 0x0001]


@pytest.fixture(scope="module", autouse=True)
def tried_report():
    yield
    print("\n" + report_tried("rtp") + "\n" + report_tried("udp"))


@pytest.fixture(scope="module")
def server():
    with ServerProcess() as srv:
        yield srv


def drops(metrics: dict[str, float], metric: str, reason: str) -> float:
    return metrics.get(f'{metric}{{reason="{reason}"}}', 0.0)


def opus_frame_toc(config: int, code: int) -> int:
    """An Opus TOC byte (RFC 6716, section 3.1): configuration, mono, frame count code."""
    return (config << 3) | code


# -- the uplink's own code, alone: tap, receive buffer, decoder ------------------------------------

MUSIC = [OpusEncoder(64_000, channels=1).encode(
    (0.3 * np.sin(2 * np.pi * 440 * (np.arange(FRAME) + k * FRAME) / SAMPLE_RATE)).astype(
        np.float32)[:, None]) for k in range(8)]
PAYLOADS = st.one_of(
    st.sampled_from(MUSIC),  # real 20 ms packets
    st.binary(max_size=400),  # anything
    st.binary(min_size=1, max_size=300).map(lambda b: bytes([opus_frame_toc(30, 1)]) + b),
    st.sampled_from([b"", bytes([opus_frame_toc(31, 3), 0]), bytes([opus_frame_toc(31, 0)])]),
)
TIMESTAMP_STEPS = st.sampled_from([FRAME] * 6 + [0, -FRAME, 2 * FRAME, 1, 1 << 31, (1 << 32) - 1,
                                                 1 << 30, -(1 << 30)])


@settings(max_examples=1500, deadline=1000)
@given(st.lists(st.tuples(PAYLOADS, TIMESTAMP_STEPS, st.integers(0, 3)), max_size=80),
       st.integers(0, (1 << 32) - 1))
def test_any_packet_sequence_through_tap_buffer_and_decoder_plays_finite_frames(packets, first):
    """Packets of any payload, timestamps jumping anywhere, ticks between them at any pace:
    every tick gets 20 ms of finite samples, and every packet is accounted for (buffered,
    played, dropped as late, duplicate or overflow, passed on, or refused as malformed)."""
    buffer, decoder, drops = JitterBuffer(), UplinkDecoder(), DropCounts()
    tap = PacketTap(buffer, lambda payload_type: payload_type == 111, drops)
    timestamp = first
    for payload, step, ticks in packets:
        TRIED["rtp.uplink chain (packets, in process)"] += 1
        timestamp = (timestamp + step) % (1 << 32)
        tap.add(SimpleNamespace(payload_type=111, timestamp=timestamp, _data=payload))
        for _ in range(ticks):
            samples = decoder.frame(buffer.pop())
            assert samples.shape == (FRAME,) and np.isfinite(samples).all()
    assert tap.packets + tap.passed_on + tap.malformed == len(packets)
    assert tap.malformed == drops.counts["malformed_opus"]
    stats = buffer.stats
    assert stats.played + stats.late + stats.duplicates + stats.dropped + buffer.depth \
        == tap.packets


# -- junk from anyone at the UDP ports ------------------------------------------------------------

def stun_junk(rng: random.Random) -> bytes:
    """A STUN header (right cookie, right length) over attributes of random lengths."""
    attributes = b""
    for _ in range(rng.randrange(1, 5)):
        kind = rng.choice([*STUN_ATTRIBUTES, rng.randrange(1 << 16)])
        value = rng.randbytes(rng.randrange(0, 24))
        attributes += struct.pack("!HH", kind, len(value)) + value + bytes(-len(value) % 4)
    kind = rng.choice([0x0001, 0x0101, 0x0111, 0x0011, rng.randrange(0x4000)])
    return struct.pack("!HHI12s", kind, len(attributes), STUN_COOKIE,
                       rng.randbytes(12)) + attributes


def junk_datagram(rng: random.Random, kind: str) -> bytes:
    if kind == "empty":
        return b""
    if kind == "random":
        return rng.randbytes(rng.randrange(1, 1500))
    if kind == "1500 bytes":
        return rng.randbytes(1500)
    if kind == "truncated RTP header":
        return bytes([0x80 | rng.randrange(16)]) + rng.randbytes(rng.randrange(0, 11))
    if kind == "RTP, not SRTP":
        packet = RtpPacket(payload_type=rng.randrange(128), sequence_number=rng.randrange(1 << 16),
                           timestamp=rng.randrange(1 << 32), ssrc=rng.randrange(1 << 32),
                           payload=rng.randbytes(rng.randrange(0, 1200)))
        return packet.serialize()
    if kind == "RTP of another version":
        return bytes([rng.choice([0x00, 0x40, 0xC0, 0xFF])]) + rng.randbytes(rng.randrange(11, 300))
    if kind == "RTCP compound junk":
        return b"".join(bytes([0x80 | rng.randrange(32), rng.randrange(192, 208)])
                        + struct.pack("!H", rng.randrange(1 << 16)) + rng.randbytes(
                            rng.randrange(0, 60)) for _ in range(rng.randrange(1, 6)))
    if kind == "STUN junk":
        return stun_junk(rng)
    if kind == "DTLS junk":
        return bytes([rng.randrange(20, 24), 0xFE, rng.choice([0xFD, 0xFF])]) + rng.randbytes(
            rng.randrange(8, 300))
    raise ValueError(kind)


UDP_KINDS = ["empty", "random", "1500 bytes", "truncated RTP header", "RTP, not SRTP",
             "RTP of another version", "RTCP compound junk", "STUN junk", "DTLS junk"]


def server_ports(pair: HearingPair) -> list[tuple[str, int]]:
    return sorted({*media_ports(pair.a.pc.remoteDescription.sdp),
                   *media_ports(pair.b.pc.remoteDescription.sdp)})


async def blast(targets: list[tuple[str, int]], datagrams: list[bytes]) -> int:
    """Send every datagram to every target, paced; returns how many were sent."""
    sockets = {family: socket.socket(family, socket.SOCK_DGRAM)
               for family in (socket.AF_INET, socket.AF_INET6)}
    sent = 0
    try:
        for k, data in enumerate(datagrams):
            for host, port in targets:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                try:
                    sockets[family].sendto(data, (host, port))
                    sent += 1
                except OSError:  # a full socket buffer, or no route to an address family
                    pass
            if k % (PACE_BATCH // max(1, len(targets))) == 0:
                await asyncio.sleep(PACE_S)
    finally:
        for sock in sockets.values():
            sock.close()
    return sent


async def test_the_guard_drops_and_counts_empty_and_unparsable_datagrams_once_per_socket():
    """In process: every socket a peer connection gathered is guarded once; an empty datagram
    and a STUN message with a 3-byte PRIORITY never reach aioice's parser or aiortc."""
    pc = RTCPeerConnection()
    pc.addTransceiver("audio")
    await pc.setLocalDescription(await pc.createOffer())
    drops = DropCounts()
    try:
        assert guard_datagrams(pc, drops) >= 1
        assert guard_datagrams(pc, drops) == 0
        protocol = udp_protocols(pc)[0]
        protocol.datagram_received(b"", ("192.0.2.9", 9))
        bad_priority = struct.pack("!HH", 0x0024, 3) + b"abc\x00"
        protocol.datagram_received(struct.pack("!HHI12s", 0x0001, len(bad_priority), STUN_COOKIE,
                                               bytes(12)) + bad_priority, ("192.0.2.9", 9))
    finally:
        await pc.close()
    TRIED["udp.datagrams (guard, in process)"] += 2
    assert {k: n for k, n in drops.counts.items() if n} == {"empty_datagram": 1,
                                                            "malformed_stun": 1}


async def test_junk_datagrams_at_the_media_ports_are_dropped_counted_and_harmless(server):
    """Thousands of datagrams of every kind (empty, random, 1500 bytes, truncated and plain RTP,
    other versions, RTCP, STUN and DTLS look-alikes) from a stranger's socket to every media
    port: the members keep hearing each other, and what reached spatialjam's guard is counted
    (not logged as a traceback each)."""
    rng = random.Random(21)
    kinds = [UDP_KINDS[k % len(UDP_KINDS)] for k in range(2700)]
    datagrams = [junk_datagram(rng, kind) for kind in kinds]
    async with HearingPair(server.ws, "udp") as pair:
        targets = server_ports(pair)
        assert targets, "no host candidates in the server's answers"
        before_metrics = fetch_metrics(server.http)
        log_before = len(server.log)
        before = await pair.listen(1.0)
        mark = pair.mark()
        sent = await blast(targets, datagrams)
        await asyncio.sleep(1.0)
        during = pair.since(mark)
        grew = metrics_delta(server.http, before_metrics)
        connected = pair.a.pc.connectionState, pair.b.pc.connectionState
    empties = kinds.count("empty") * len(targets)
    tracebacks = [line for line in list(server.log)[log_before:] if "Traceback" in line]
    TRIED["udp.datagrams (from a stranger)"] += sent
    print(f"\nudp: {sent} datagrams to {targets}; dropped "
          f"{ {k: v for k, v in grew.items() if k.startswith('dropped_packets_total')} }; "
          f"{grew['ticks_total']:.0f} ticks, {grew['skipped_ticks_total']:.0f} skipped; "
          f"{len(tracebacks)} tracebacks in the log")
    assert sent >= 0.9 * len(datagrams) * len(targets)
    assert connected == ("connected", "connected")
    assert not during.still_hearing(before), during.still_hearing(before)
    # Each empty datagram would have ended a member's DTLS transport (aiortc 1.16).
    assert drops(grew, "dropped_packets_total", "empty_datagram") >= 0.9 * empties
    assert drops(grew, "dropped_packets_total", "malformed_stun") > 0
    assert not tracebacks, tracebacks[:3]
    assert grew["skipped_ticks_total"] <= MAX_SKIPPED_SHARE * grew["ticks_total"], grew


async def test_one_empty_datagram_no_longer_silences_a_member(server):
    """The regression itself: one zero-length datagram to each of a member's ports."""
    async with HearingPair(server.ws, "empty") as pair:
        before = await pair.listen(0.5)
        await blast(server_ports(pair), [b""])
        TRIED["udp.datagrams (one empty)"] += 1
        after = await pair.listen(2.0)
    assert not after.still_hearing(before), after.still_hearing(before)


# -- junk through a member's own DTLS-SRTP session ------------------------------------------------

class Injector:
    """Sends hand-made RTP and RTCP through a bot's own SRTP session, as its only stream."""

    def __init__(self, bot: Bot, rng: random.Random) -> None:
        sender = bot.pc.getSenders()[0]
        self.transport = sender.transport
        self.opus = int(opus_payload_types(bot.pc.remoteDescription.sdp)[0])
        self.rng = rng
        self.ssrc = rng.randrange(1 << 32)
        self.seq = rng.randrange(1 << 16)
        self.ts = rng.randrange(1 << 32)
        self.sent: dict[str, int] = {}
        self.encoder = OpusEncoder(64_000, channels=1)

    async def take_over(self, bot: Bot) -> None:
        """Wait for the DTLS-SRTP session and the bot's own sender to start (the bot's offer
        is answered before either), then stop that sender: its packets, on their own SSRC,
        would share the receive buffer."""
        sender = bot.pc.getSenders()[0]
        async with asyncio.timeout(10):
            while self.transport.state != "connected" or not sender._RTCRtpSender__started:
                await asyncio.sleep(0.02)
        await sender.stop()

    async def rtp(self, kind: str, payload: bytes, *, payload_type: int | None = None,
                  ssrc: int | None = None, seq_step: int = 1, ts_step: int = FRAME) -> None:
        self.seq = (self.seq + seq_step) % (1 << 16)
        self.ts = (self.ts + ts_step) % (1 << 32)
        packet = RtpPacket(payload_type=self.opus if payload_type is None else payload_type,
                           sequence_number=self.seq, timestamp=self.ts,
                           ssrc=self.ssrc if ssrc is None else ssrc, payload=payload)
        await self.raw(kind, packet.serialize())

    async def raw(self, kind: str, data: bytes) -> None:
        try:
            await self.transport._send_rtp(data)
        except pylibsrtp.Error:  # libsrtp will not protect what it cannot parse as RTP, nor
            return  # a sequence number its replay window has passed
        self.sent[kind] = self.sent.get(kind, 0) + 1

    async def clean(self, seconds: float, freq_hz: float = 500.0) -> None:
        """A clean Opus stream of a tone, in real time (one packet every 20 ms)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        t = np.arange(FRAME) / SAMPLE_RATE
        for k in range(round(seconds * SAMPLE_RATE / FRAME)):
            pcm = 0.3 * np.sin(2 * np.pi * freq_hz * (t + k * FRAME / SAMPLE_RATE))
            await self.rtp("clean", self.encoder.encode(pcm.astype(np.float32)[:, None]))
            await asyncio.sleep(max(0.0, start + (k + 1) * FRAME / SAMPLE_RATE - loop.time()))


async def mangle(inject: Injector, packets: int) -> None:
    """``packets`` of every kind of junk, through ``inject``, about one per millisecond."""
    rng = inject.rng
    for k in range(packets):
        kind = k % 12
        if kind == 0:
            await inject.rtp("random payload", rng.randbytes(rng.randrange(1, 400)))
        elif kind == 1:  # a frame count of 0 (code 3): no Opus packet at all
            await inject.rtp("malformed Opus", bytes([opus_frame_toc(31, 3), 0]))
        elif kind == 2:  # two 10 ms CELT frames of equal size in an odd number of bytes
            await inject.rtp("undecodable 20 ms Opus", bytes([opus_frame_toc(30, 1)])
                             + rng.randbytes(2 * rng.randrange(1, 100) + 1))
        elif kind == 3:  # 2.5 ms and 60 ms frames: aiortc's decoder's to judge
            await inject.rtp("other Opus frame sizes", bytes([rng.choice(
                [opus_frame_toc(16, 0), opus_frame_toc(3, 0), opus_frame_toc(11, 2)])])
                             + rng.randbytes(rng.randrange(1, 200)))
        elif kind == 4:
            await inject.rtp("unknown payload type", rng.randbytes(100),
                             payload_type=rng.choice([0, 13, 99, 127]))
        elif kind == 5:
            await inject.rtp("giant timestamp jump", rng.randbytes(120),
                             ts_step=rng.choice([1 << 31, (1 << 31) - 1, 1 << 30, -(1 << 30)]))
        elif kind == 6:  # within SRTP's reach: a jump of 2**15 or more desynchronises its
            # rollover counter for good (RFC 3711, section 3.3.1), a stream lost by design
            await inject.rtp("sequence jump", rng.randbytes(120),
                             seq_step=rng.choice([16_000, 3_000, 3, 0]))
        elif kind == 7:
            for step in (0, 0, -1):  # the same packet again (SRTP's replay check drops it)
                await inject.rtp("duplicate or reordered", bytes([opus_frame_toc(31, 0)])
                                 + bytes(50), seq_step=step, ts_step=step * FRAME)
        elif kind == 8:
            await inject.rtp("empty payload", b"")
        elif kind == 9:
            await inject.rtp("another SSRC", rng.randbytes(80), ssrc=rng.randrange(1 << 32))
        elif kind == 10:
            await inject.raw("RTCP junk", bytes([0x80 | rng.randrange(32), rng.randrange(192, 208)])
                             + struct.pack("!H", rng.randrange(1 << 16))
                             + struct.pack("!I", inject.ssrc) + rng.randbytes(rng.randrange(0, 80)))
        else:
            packet = RtpPacket(payload_type=inject.opus, sequence_number=inject.seq,
                               timestamp=inject.ts, ssrc=inject.ssrc, payload=rng.randbytes(60))
            packet.csrc = [rng.randrange(1 << 32) for _ in range(15)]
            packet.extensions.abs_send_time = rng.randrange(1 << 24)
            await inject.raw("15 CSRCs", packet.serialize())
        if k % 8 == 0:
            await asyncio.sleep(0.008)


async def test_junk_rtp_through_a_members_own_session_is_dropped_or_concealed(server):
    """A member's uplink is a hand-made stream: clean, then thousands of packets of junk
    (nonsense and malformed Opus, undecodable frames, unknown payload types, giant timestamp
    and sequence jumps, duplicates, empty payloads, other SSRCs, RTCP junk), then clean
    again. The room ticks on, the others keep hearing each other, the junk is counted or
    concealed, and once the stream is clean the member is heard again."""
    rng = random.Random(34)
    async with HearingPair(server.ws, "srtp") as pair, Bot(server.ws, "srtp", "R") as rogue:
        inject = Injector(rogue, rng)
        await inject.take_over(rogue)  # from now on its uplink is the injector's alone
        for bot in (pair.a, pair.b):  # the mangled stream is not part of the level check
            await bot.send({"type": "mix_override", "source": rogue.participant, "mute": True})
        await inject.clean(1.0)
        before_metrics = fetch_metrics(server.http)
        log_before = len(server.log)
        before = await pair.listen(1.0)
        mark, rogue_from = pair.mark(), len(rogue.received)
        await mangle(inject, 3600)
        during = pair.since(mark)
        rogue_heard = len(rogue.received) - rogue_from
        grew = metrics_delta(server.http, before_metrics)
        await pair.a.send({"type": "mix_override", "source": rogue.participant, "mute": False})
        cleaning = asyncio.get_running_loop().create_task(inject.clean(3.5))
        await asyncio.sleep(2.5)  # the mangled receive buffer settles on the clean stream
        clean = await pair.a.listen(1.0)
        await cleaning
    problems = [line for line in list(server.log)[log_before:]
                if "Traceback" in line or " ERROR " in line or " WARNING " in line]
    sent = sum(n for kind, n in inject.sent.items() if kind != "clean")
    TRIED["rtp.through SRTP (junk packets)"] += sent
    print(f"\nsrtp: {inject.sent}; dropped "
          f"{ {k: v for k, v in grew.items() if 'dropped' in k} }; "
          f"{grew['ticks_total']:.0f} ticks, {grew['skipped_ticks_total']:.0f} skipped, "
          f"{grew['plc_frames_total']:.0f} PLC frames; R heard again at "
          f"{tone_db(clean, 500.0):.1f} dB")
    assert sent >= 3000
    assert not during.still_hearing(before), during.still_hearing(before)
    assert rogue_heard >= 0.8 * during.seconds * 50  # its own mix flows on
    assert drops(grew, "dropped_packets_total", "malformed_opus") >= 0.8 * inject.sent[
        "malformed Opus"]
    assert drops(grew, "uplink_dropped_frames_total", "undecodable") > 0
    assert grew["plc_frames_total"] > 0
    assert grew["ticks_total"] >= 0.8 * during.seconds * 50
    assert grew["skipped_ticks_total"] <= MAX_SKIPPED_SHARE * grew["ticks_total"], grew
    assert tone_db(clean, 500.0) > -50, "the mangled member is not heard again"
    assert not problems, problems[:5]
