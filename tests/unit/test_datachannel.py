"""The data-channel audio packet (docs/PROTOCOL.md, "Data-channel audio"): its format, the
checks each uplink message passes (shape, version, Opus, the sender's rate) and where the
packets that pass go (the source's jitter buffer, as RTP Opus packets do), the mix's packets
back, all without a network."""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
from aiortc import RTCPeerConnection

from bench.impair import Impairment, Leg
from bench.latency import report_lines, write_results
from hrtf.constants import FRAME, SAMPLE_RATE
from server.media.datachannel import (
    AUDIO_LABEL,
    FLOOD_BURST,
    HEADER,
    MAX_BUFFERED_BYTES,
    MAX_PACKET,
    Accepted,
    AudioChannel,
    AudioPacket,
    ChannelDownlink,
    ChannelUplink,
    Dropped,
    PacketError,
    TokenBucket,
    pack,
    parse,
)
from server.media.ingress import REASONS, DropCounts
from server.media.jitter import JitterBuffer
from server.media.opus import OpusDecoder
from server.media.sdp import offer_problem
from server.media.uplink import PacketTap
from tests.helpers.dcpackets import opus_frames

FRAME_S = FRAME / SAMPLE_RATE


OPUS = opus_frames(1)[0]


def message(sequence: int = 0, timestamp: int = 0, opus: bytes = OPUS, version: int = 1,
            flags: int = 0) -> bytes:
    return HEADER.pack(version, flags, sequence, timestamp, 1234) + opus


class FakeChannel:
    """What :class:`AudioChannel` uses of an aiortc ``RTCDataChannel``."""

    def __init__(self) -> None:
        self.readyState = "open"
        self.bufferedAmount = 0
        self.sent: list[bytes] = []
        self.handlers: dict = {}

    def on(self, event: str, handler=None):
        self.handlers[event] = handler

    def send(self, data: bytes) -> None:
        self.sent.append(data)


def test_a_packet_survives_pack_and_parse_with_its_numbers_wrapped():
    packet = parse(pack(AudioPacket(70_000, 2**32 + 5, 2**33 + 7, OPUS)))
    assert (packet.sequence, packet.timestamp, packet.capture_us) == (70_000 - 65_536, 5, 7)
    assert packet.opus == OPUS
    assert len(pack(AudioPacket(0, 0, 0, OPUS))) == 12 + len(OPUS)


def test_unknown_flag_bits_are_ignored():
    assert parse(message(flags=0xFF)).opus == OPUS


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "dc_short"),
    (b"\x01", "dc_short"),
    (HEADER.pack(1, 0, 0, 0, 0), "dc_short"),  # a header and no Opus
    (HEADER.pack(1, 0, 0, 0, 0) + bytes(1276), "dc_oversized"),
    (bytes(10_000), "dc_oversized"),
    (message(version=0), "dc_version"),
    (message(version=2), "dc_version"),
    ("hello", "dc_text"),
    ("", "dc_text"),
])
def test_a_message_that_is_no_packet_is_refused_with_its_reason(data, reason):
    with pytest.raises(PacketError) as caught:
        parse(data)
    assert caught.value.reason == reason
    assert reason in REASONS


def test_the_longest_packet_passes():
    assert len(parse(HEADER.pack(1, 0, 0, 0, 0) + bytes(MAX_PACKET - 12)).opus) == 1275


def test_malformed_opus_and_another_frame_length_are_dropped():
    uplink = ChannelUplink()
    assert uplink.receive(message(opus=b"\x03"), 0.0) == Dropped("malformed_opus")
    assert uplink.receive(message(opus=opus_frames(1, half=True)[0]), 0.1) \
        == Dropped("dc_duration")
    assert uplink.receive(message(opus=OPUS), 0.2) == Accepted(0, OPUS)


def test_a_token_bucket_allows_its_burst_then_its_rate():
    bucket = TokenBucket(rate_per_s=100.0, burst=8)
    assert [bucket.take(0.0) for _ in range(10)] == [True] * 8 + [False] * 2
    assert bucket.take(0.005) is False  # half a token back
    assert bucket.take(0.010) is True
    assert sum(bucket.take(1.0 + k / 1000) for k in range(1000)) <= 8 + 100 + 1


def test_a_flood_past_twice_the_frame_rate_is_dropped_and_a_steady_sender_is_not():
    uplink = ChannelUplink()
    steady = [uplink.receive(message(k, k * FRAME), k * FRAME_S) for k in range(500)]
    assert all(isinstance(v, Accepted) for v in steady)
    flood = [uplink.receive(message(k, k * FRAME), 100.0 + k * 1e-4) for k in range(1000)]
    passed = sum(isinstance(v, Accepted) for v in flood)
    assert FLOOD_BURST <= passed <= FLOOD_BURST + 25  # 0.1 s at 100 packets a second
    assert {v.reason for v in flood if isinstance(v, Dropped)} == {"dc_flood"}
    assert uplink.messages == 1500


def test_timestamps_are_unwrapped_across_two_to_the_32():
    uplink = ChannelUplink()
    start = 2**32 - FRAME
    got = [uplink.receive(message(k, (start + k * FRAME) % 2**32), k * FRAME_S)
           for k in range(3)]
    assert [v.timestamp for v in got] == [start, start + FRAME, start + 2 * FRAME]


def channel_into_buffer() -> tuple[AudioChannel, JitterBuffer, DropCounts, list[float]]:
    clock = [0.0]
    buffer, drops = JitterBuffer(target=2), DropCounts()
    audio = AudioChannel(FakeChannel(), ChannelUplink(), buffer, drops, clock=lambda: clock[0])
    return audio, buffer, drops, clock


def test_packets_go_to_the_jitter_buffer_which_orders_them_and_drops_replays():
    audio, buffer, drops, clock = channel_into_buffer()
    packets = opus_frames(4)
    for k in (1, 0, 0, 2, 1, 3):  # out of order, and replayed
        clock[0] += FRAME_S / 2
        audio.receive(message(k, 48_000 + k * FRAME, packets[k]))
    assert buffer.stats.duplicates == 2
    played = [buffer.pop(clock[0]).frame for _ in range(4)]
    assert played == packets
    audio.receive(message(0, 48_000, packets[0]))  # a replay after it played: late
    assert buffer.stats.late == 1
    assert sum(drops.counts.values()) == 0


def test_what_the_buffer_plays_decodes_to_the_sent_audio():
    audio, buffer, _, clock = channel_into_buffer()
    for k, packet in enumerate(opus_frames(3)):
        clock[0] += FRAME_S
        audio.receive(message(k, k * FRAME, packet))
    decoder = OpusDecoder()
    decoded = np.concatenate([decoder.decode(buffer.pop(clock[0]).frame) for _ in range(3)])
    assert decoded.shape == (3 * FRAME,)
    assert np.sqrt(np.mean(decoded[FRAME:] ** 2)) > 0.1  # the tone, not silence


def test_every_bad_message_is_counted_by_reason_and_none_reaches_the_buffer():
    audio, buffer, drops, clock = channel_into_buffer()
    junk = [b"", b"\x01\x00", message(version=9), "text", bytes(2000), message(opus=b"\x03")]
    for data in junk:
        clock[0] += FRAME_S
        audio.receive(data)
    assert buffer.depth == 0
    assert {k: v for k, v in drops.counts.items() if v} == {
        "dc_short": 2, "dc_version": 1, "dc_text": 1, "dc_oversized": 1, "malformed_opus": 1}


def test_a_member_without_the_publish_grant_is_not_heard():
    drops = DropCounts()
    audio = AudioChannel(FakeChannel(), ChannelUplink(), None, drops, clock=lambda: 0.0)
    audio.receive(message())
    assert audio.uplink.accepted == 1 and sum(drops.counts.values()) == 0


def test_uplink_is_active_for_a_second_after_its_last_packet():
    uplink = ChannelUplink()
    assert not uplink.active(0.0)
    uplink.receive(message(), 10.0)
    assert uplink.active(10.5) and not uplink.active(11.5)
    uplink.receive("junk", 11.6)
    assert not uplink.active(11.7)


def test_the_mix_goes_out_with_a_sequence_and_the_tick_sample():
    downlink = ChannelDownlink()
    downlink._sequence = 65_535
    first = downlink.messages([b"\xfc\x01", b"\xfc\x02"], 2**32 + 10, 5)
    second = downlink.messages([b"\xfc\x03"], 2 * FRAME, 6)
    parsed = [parse(m) for m in first + second]
    assert [p.sequence for p in parsed] == [65_535, 0, 1]
    assert [p.timestamp for p in parsed] == [10, 10 + FRAME, 2 * FRAME]
    assert [p.opus for p in parsed] == [b"\xfc\x01", b"\xfc\x02", b"\xfc\x03"]


def test_a_slow_listener_has_mix_packets_dropped_rather_than_queued():
    audio, *_ = channel_into_buffer()
    assert audio.send_mix([OPUS], 0) == 0
    audio.channel.bufferedAmount = MAX_BUFFERED_BYTES + 1
    assert audio.send_mix([OPUS], FRAME) == 1
    assert len(audio.channel.sent) == 1
    audio.channel.bufferedAmount = 0
    audio.channel.readyState = "closed"
    assert not audio.open


def offer_sdp(data_channel: bool, video: bool) -> str:
    """An aiortc offer with a data channel, a video transceiver, both or neither."""

    async def make() -> str:
        pc = RTCPeerConnection()
        if data_channel:
            pc.createDataChannel(AUDIO_LABEL, ordered=False, maxRetransmits=0)
        if video:
            pc.addTransceiver("video")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    return asyncio.run(make())


def test_an_offer_with_only_an_audio_data_channel_is_usable_and_one_with_neither_is_not():
    assert offer_problem(offer_sdp(data_channel=True, video=False)) is None
    problem = offer_problem(offer_sdp(data_channel=False, video=True))
    assert problem is not None and "no data channel" in problem


def test_a_relay_for_a_data_channel_client_impairs_sctp_and_still_passes_the_handshake():
    lossy = Leg(Impairment(loss=1.0), data_channel=True)
    assert lossy.admit(bytes([23]) + bytes(40), 0.0) == []  # DTLS application data: SCTP
    assert lossy.admit(bytes([22]) + bytes(40), 0.0) == [0.0]  # DTLS handshake
    assert Leg(Impairment(loss=1.0)).admit(bytes([23]) + bytes(40), 0.0) == [0.0]


def test_rtp_from_a_member_whose_channel_carries_its_uplink_is_ignored_for_a_second():
    buffer, now, silent = JitterBuffer(target=4), ChannelUplink(), ChannelUplink()
    now.receive(message(), time.monotonic())
    silent.receive(message(), time.monotonic() - 2.0)  # its channel fell silent 2 s ago
    tap = PacketTap(buffer, is_opus=lambda pt: pt == 111, defer=now.active)
    rtp = SimpleNamespace(payload_type=111, timestamp=5 * FRAME, _data=OPUS)
    tap.add(rtp)
    assert (tap.deferred, buffer.depth) == (1, 0)
    tap.defer = silent.active
    tap.add(rtp)
    assert (tap.deferred, buffer.depth) == (1, 1)


def test_a_latency_report_of_both_transports_keys_each_and_writes_a_row_for_each(tmp_path):
    part = {"through_server_ms": {"clicks": 3, "p50": 20.0, "p95": 25.0, "p99": 26.0},
            "server_stages_ms": {"tick_p50": 2.0}, "server_added_p50_ms": 12.0}
    report = {"benchmark": "latency", "bots": 3, "seconds": 10.0, "transport": "both",
              "transports": {"media": part, "datachannel": part},
              "p2p_stock_aiortc_ms": {"clicks": 0}, "p2p_own_receive_ms": {"clicks": 0},
              "frame_ms": 20,
              "_delays": {"server_media": [20.0, 25.0], "server_datachannel": [19.0, 21.0],
                          "p2p_stock": [], "p2p_own": []}}
    lines = report_lines(report)
    assert any(line.startswith("through the server, media") for line in lines)
    assert any(line.startswith("through the server, datachannel") for line in lines)
    json_path, md_path, _ = write_results(report, tmp_path)
    assert "| through the server, datachannel | 3 | 20.0 | 25.0 |" in md_path.read_text()
    assert set(json.loads(json_path.read_text())["delays_ms"]) == {
        "server_media", "server_datachannel", "p2p_stock", "p2p_own"}
