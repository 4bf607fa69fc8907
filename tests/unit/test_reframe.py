"""A room at 5 ms frames: the receive buffer counts in its frames, 20 ms packets of a media
track are decoded once and played over four ticks (a lost one concealed whole), 5 ms packets
play one per tick, and the clock ticks every 5 ms."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from hrtf.constants import FRAME, frame_samples
from server.media.jitter import JitterBuffer, Playout
from server.media.opus import packet_samples
from server.media.reframe import Reframer
from server.media.uplink import PacketTap, UplinkDecoder
from server.tick.clock import TickSchedule
from tests.helpers.opus import MUSIC, encode, melody

SHORT = frame_samples(5.0)  # 240


def rtp(timestamp: int, data: bytes):
    return SimpleNamespace(payload_type=111, timestamp=timestamp, _data=data)


def run(packets: list[bytes], packet_samples: int, lost: set[int] = frozenset()):
    """``packets`` (each ``packet_samples`` long) through a tap into a 5 ms room's buffer, a
    reframer and a decoder, one packet arriving per ``packet_samples`` of ticks; returns the
    played audio, the decoder and the buffer."""
    buffer = JitterBuffer(frame=SHORT)
    tap = PacketTap(buffer, lambda payload_type: True)
    reframer, decoder = Reframer(buffer), UplinkDecoder(SHORT)
    out = []
    ticks_per_packet = packet_samples // SHORT
    for k, packet in enumerate(packets):
        if k not in lost:
            tap.add(rtp(k * packet_samples, packet))
        for _ in range(ticks_per_packet):
            out.append(decoder.frame(reframer.pop()))
    return np.concatenate(out), decoder, buffer


def test_the_buffer_counts_its_limits_in_5_ms_frames():
    short, long = JitterBuffer(frame=SHORT), JitterBuffer()
    assert (long.slack, long.max_target, long.calm_ticks, long.trim_ticks) == (2, 8, 250, 50)
    assert (short.slack, short.max_target, short.calm_ticks, short.trim_ticks) == (8, 32, 1000, 200)
    assert short.jump == long.jump == 64 * FRAME  # the same 1.28 s either way
    for k in range(20):
        short.push(k * SHORT, k)
    assert short.depth == short.target + short.slack and short.depth_ms == 9 * 5.0


def test_5_ms_packets_play_one_per_tick():
    signal = melody(0.5)
    packets = encode(signal, bitrate=128_000, application="lowdelay", frame_duration="5")
    out, decoder, buffer = run(packets, SHORT)
    assert buffer.frame == SHORT and decoder.stats.decoded == len(packets)
    assert len(out) == len(packets) * SHORT
    assert np.sqrt(np.mean(out[SHORT * 20:] ** 2)) > 0.1


def test_a_20_ms_packet_is_decoded_once_and_played_over_four_ticks():
    packets = encode(melody(0.6), **MUSIC)
    out, decoder, buffer = run(packets, FRAME)
    assert buffer.frame == FRAME and buffer.stats.played == len(packets)
    assert decoder.stats.decoded == len(packets)  # one decode per packet, not per tick
    # The same samples as decoding the packets whole, in order: no sample lost or repeated.
    whole = UplinkDecoder()
    reference = np.concatenate([whole.frame(Playout(p)) for p in packets])
    np.testing.assert_array_equal(out, reference)


def test_a_lost_20_ms_packet_is_concealed_over_its_four_frames():
    packets = encode(melody(0.6), **MUSIC)
    lost = 10
    out, decoder, buffer = run(packets, FRAME, lost={lost})
    assert decoder.stats.plc == 1 and decoder.stats.silenced == 0  # one concealment, 20 ms
    assert buffer.stats.concealed == 1
    concealed = out[lost * FRAME:(lost + 1) * FRAME].reshape(4, SHORT)
    assert all(np.abs(part).max() > 1e-3 for part in concealed)  # PLC sound, not silence
    assert np.sqrt(np.mean(out[(lost + 1) * FRAME:] ** 2)) > 0.05  # plays on after it


def test_a_source_that_changes_its_packet_length_starts_afresh():
    five = encode(melody(0.2), bitrate=128_000, application="lowdelay", frame_duration="5")
    buffer = JitterBuffer(frame=SHORT)
    tap = PacketTap(buffer, lambda payload_type: True)
    tap.add(rtp(0, five[0]))
    assert buffer.frame == SHORT and buffer.depth == 1
    twenty = encode(melody(0.2), **MUSIC)
    tap.add(rtp(SHORT, twenty[0]))
    assert buffer.frame == FRAME and buffer.depth == 1 and buffer.stats.restarts == 1


@pytest.mark.parametrize("frame_ms", [2.5, 5.0, 10.0])
def test_the_tap_keeps_whole_multiples_of_the_room_frame_up_to_20_ms(frame_ms):
    buffer = JitterBuffer(frame=frame_samples(frame_ms))
    tap = PacketTap(buffer, lambda payload_type: True)
    assert tap.keeps(frame_samples(frame_ms)) and tap.keeps(FRAME)
    assert not tap.keeps(2 * FRAME)  # 40 ms: aiortc decodes it, regrouped into room frames
    if frame_ms == 10.0:
        assert not tap.keeps(frame_samples(5.0))  # shorter than the room's frame


def test_the_clock_ticks_every_5_ms_and_counts_lateness_against_it():
    s = TickSchedule(start=0.0, period=0.005)
    assert s.begin_tick(0.0) == 0
    assert s.seconds_until_next(0.001) == pytest.approx(0.004)
    assert s.begin_tick(0.0051) == 1 and s.last_lateness == pytest.approx(0.0001)
    assert s.late_ticks == 0
    assert s.begin_tick(0.0135) == 2 and s.late_ticks == 1  # 3.5 ms late: over half a frame


def test_the_cli_knows_the_frames_the_engine_does():
    from hrtf.constants import FRAME_CHOICES_MS
    from server.cli.args import FRAME_MS_CHOICES

    assert FRAME_MS_CHOICES == FRAME_CHOICES_MS


def test_the_ai_hears_20_ms_blocks_gathered_from_5_ms_ticks():
    from server.ai.bridge import AnalysisBlocks

    blocks = AnalysisBlocks(SHORT)
    got = [blocks.add(k * SHORT, np.full(80, k, np.float32)) for k in range(9)]
    assert [g is None for g in got] == [True, True, True, False] * 2 + [True]
    start, block = got[3]
    assert start == 0 and block.tolist() == [0] * 80 + [1] * 80 + [2] * 80 + [3] * 80
    assert got[7][0] == FRAME
    # A skipped tick starts the block afresh, on the tick after the gap.
    assert blocks.add(20 * SHORT, np.zeros(80, np.float32)) is None
    assert [blocks.add(k * SHORT, np.zeros(80, np.float32)) for k in (21, 22, 23)][-1][0] \
        == 20 * SHORT
    whole = AnalysisBlocks()  # a 20 ms room: every tick is a block
    assert whole.add(FRAME, np.zeros(320, np.float32))[0] == FRAME


def test_a_listeners_5_ms_packets_are_stamped_5_ms_apart():
    import av

    from server.media.downlink import ListenerTrack, MusicOpusEncoder

    track, encoder = ListenerTrack(SHORT), MusicOpusEncoder()
    for _ in range(3):
        track.deliver(encoder.encode(np.zeros((SHORT, 2), np.float32)))
    assert track.queued_ms == 15.0
    pts = [track._queue.get_nowait()[0].pts for _ in range(3)]
    assert pts == [0, SHORT, 2 * SHORT]  # aiortc's RTP timestamps, on the 48 kHz clock
    assert track.max_queued == 12  # 60 ms, as three 20 ms packets
    packet = encoder.encode(np.zeros((SHORT, 2), np.float32))[0]
    assert isinstance(packet, av.Packet)
    assert packet_samples(bytes(packet)) == SHORT


async def test_a_5_ms_room_plays_a_20_ms_sender_and_a_5_ms_sender_every_tick(kemar):
    import asyncio

    from server.rooms.room import Room
    from server.tick.runner import RoomRunner

    room = Room("short", capacity=3)
    a, b = room.join("A"), room.join("B")
    runner = RoomRunner(room, kemar, frame=SHORT)
    assert room.frame_ms == 5.0 and room.describe().frame_ms == 5.0
    assert runner.renderer.frame == SHORT and runner.governor.high_ms == 3.75
    twenty = encode(melody(0.4), **MUSIC)
    five = encode(melody(0.4, seed=2), bitrate=128_000, application="lowdelay",
                  frame_duration="5")
    taps = {}
    for m in (a, b):
        buffer, _ = runner.attach(m.slot)
        taps[m.slot] = PacketTap(buffer, lambda payload_type: True)
    try:
        for k in range(60):
            if k % 4 == 0:
                taps[a.slot].add(rtp(k * SHORT, twenty[k // 4]))
            taps[b.slot].add(rtp(k * SHORT, five[k]))
            await runner._tick(asyncio.get_running_loop())
        assert runner.room_sample == 59 * SHORT
        assert runner.decoders[a.slot].stats.decoded == 15  # once per 20 ms packet
        assert runner.decoders[b.slot].stats.decoded == 60
        assert runner.buffers[a.slot].frame == FRAME and runner.buffers[b.slot].frame == SHORT
        assert runner.stats.ticks == 60
        packet, _ = runner.tracks[b.slot]._queue.get_nowait()
        assert packet_samples(bytes(packet)) == SHORT  # B's mix comes in 5 ms packets
    finally:
        await runner.stop()


def test_serve_takes_a_frame_from_its_option_or_the_environment_and_hands_it_to_workers(
        monkeypatch, capsys):
    from server.cli.main import build_parser
    from server.routing.workers import worker_command

    assert build_parser().parse_args(["serve"]).frame_ms == 20.0
    args = build_parser().parse_args(["serve", "--frame-ms", "5", "--workers", "2"])
    assert args.frame_ms == 5.0
    command = worker_command(args, 0)
    assert command[command.index("--frame-ms") + 1] == "5"
    monkeypatch.setenv("SPATIALJAM_FRAME_MS", "2.5")
    assert build_parser().parse_args(["serve"]).frame_ms == 2.5
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--frame-ms", "7"])
    assert "the frame must be one of 2.5, 5, 10, 20 ms, got '7'" in capsys.readouterr().err
