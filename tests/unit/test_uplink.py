"""A source's uplink: Opus packets tapped from aiortc, decoded at the tick, lost ones concealed
by Opus itself (FEC from the next packet, else PLC), other codecs' frames played as samples."""

from __future__ import annotations

from types import SimpleNamespace

import av
import numpy as np
import pytest

from hrtf.constants import FRAME, SAMPLE_RATE
from server.media.jitter import BUFFERING, JitterBuffer, Playout
from server.media.opus import has_fec, packet_samples
from server.media.uplink import PLC_FRAMES, PacketTap, UplinkDecoder
from tests.helpers.opus import MUSIC, VOICE_FEC, encode, melody


def play(packets: list[bytes], lost: set[int], with_following: bool = True):
    """Each packet's frame through an UplinkDecoder, the ``lost`` ones missing."""
    decoder = UplinkDecoder()
    out = []
    for k, packet in enumerate(packets):
        if k in lost:
            following = packets[k + 1] if with_following and k + 1 < len(packets) else None
            out.append(decoder.frame(Playout(None, following)))
        else:
            out.append(decoder.frame(Playout(packet)))
    return out, decoder.stats


def error_db(frames, clean, which) -> float:
    """Error energy of the ``which`` frames against the clean decode, relative to it (dB)."""
    error = sum(np.sum((frames[k] - clean[k]) ** 2) for k in which)
    return 10 * np.log10(error / sum(np.sum(clean[k] ** 2) for k in which))


def test_packets_decode_as_libopus_decodes_them():
    packets = encode(melody(1.0), **MUSIC)
    assert all(packet_samples(p) == FRAME for p in packets)
    ours, stats = play(packets, set())
    reference = av.CodecContext.create("libopus", "r")
    reference.format, reference.layout, reference.sample_rate = "flt", "mono", SAMPLE_RATE
    theirs = [f.to_ndarray().reshape(-1) for p in packets for f in reference.decode(av.Packet(p))]
    if theirs[0].dtype == np.int16:
        theirs = [t / 32768.0 for t in theirs]
    np.testing.assert_allclose(np.concatenate(ours), np.concatenate(theirs), atol=1e-4)
    assert stats.decoded == len(packets) and stats.plc == stats.fec == 0
    assert np.abs(np.concatenate(ours)).max() > 0.2  # sound, not silence


def held(seconds: float = 3.0) -> np.ndarray:
    """A held note with its harmonics (a sustained note is where a gap is heard most)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * sum(np.sin(2 * np.pi * 220 * h * t) / h for h in (1, 2, 3, 4))).astype(
        np.float32)


@pytest.mark.parametrize(("signal", "at_most_db", "margin_db"),
                         [(held, -20.0, 10.0), (melody, -2.0, 1.0)], ids=["held", "plucked"])
def test_a_lost_music_packet_is_concealed_by_opus_plc(signal, at_most_db, margin_db):
    packets = encode(signal(), **MUSIC)
    clean, _ = play(packets, set())
    lost = set(range(20, len(packets) - 1, 9))
    concealed, stats = play(packets, lost)
    assert not any(has_fec(p) for p in packets)  # CELT at 128 kb/s carries none
    assert stats.plc == len(lost) and stats.fec == 0 and stats.decoded == len(packets) - len(lost)
    plc = error_db(concealed, clean, lost)
    # What concealment was before: the last frame at half level. (Measured: held note PLC
    # −29.7 dB, repeat +2.5 dB; plucked notes −3.0 / −0.8 dB. Opus PLC extends the pitch it
    # finds, so chords of unrelated pitches are concealed less well than single voices.)
    repeat = error_db([clean[k - 1] * 0.5 if k in lost else clean[k]
                       for k in range(len(clean))], clean, lost)
    print(f"{signal.__name__}: PLC {plc:.1f} dB, half-level repeat {repeat:.1f} dB")
    assert plc < at_most_db
    assert plc < repeat - margin_db


def test_a_lost_packet_is_rebuilt_from_the_next_packets_fec():
    packets = encode(melody(), **VOICE_FEC)
    clean, _ = play(packets, set())
    lost = {k for k in range(20, len(packets) - 1, 7) if has_fec(packets[k + 1])}
    assert len(lost) >= 8
    recovered, stats = play(packets, lost)
    assert stats.fec == len(lost) and stats.plc == 0
    guessed, plc_stats = play(packets, lost, with_following=False)
    assert plc_stats.plc == len(lost) and plc_stats.fec == 0
    fec, plc = error_db(recovered, clean, lost), error_db(guessed, clean, lost)
    print(f"FEC {fec:.1f} dB, PLC alone {plc:.1f} dB")
    assert fec < -15.0
    assert fec < plc - 10.0


def test_a_long_loss_fades_to_silence_and_the_stream_comes_back():
    packets = encode(melody(1.0), **MUSIC)
    lost = set(range(10, 10 + PLC_FRAMES + 5))
    out, stats = play(packets, lost, with_following=False)
    assert stats.plc == PLC_FRAMES and stats.silenced == 5
    assert all(not out[k].any() for k in range(10 + PLC_FRAMES, 10 + PLC_FRAMES + 5))
    after = 10 + PLC_FRAMES + 5
    assert np.abs(out[after + 2]).max() > 0.05  # decoding resumes


def test_a_corrupt_packet_is_concealed_and_counted():
    packets = encode(melody(0.5), **MUSIC)
    bad = bytes([(16 << 3) | 3, 0])  # code 3 with a frame count of 0: invalid (RFC 6716 3.2.5)
    decoder = UplinkDecoder()
    for packet in packets[:10]:
        decoder.frame(Playout(packet))
    out = decoder.frame(Playout(bad))
    assert decoder.stats.corrupt == 1 and decoder.stats.plc == 1
    assert out.shape == (FRAME,) and np.isfinite(out).all()
    assert decoder.frame(Playout(packets[11])).shape == (FRAME,)


def test_frames_of_other_codecs_play_as_samples_and_conceal_simply():
    decoder = UplinkDecoder()
    assert not decoder.frame(BUFFERING).any()
    first = np.full(FRAME, 0.4, np.float32)
    np.testing.assert_array_equal(decoder.frame(Playout(first)), first)
    np.testing.assert_allclose(decoder.frame(Playout(None)), first * 0.5)
    assert not decoder.frame(Playout(None)).any()
    assert decoder.stats.silenced == 2 and decoder.stats.plc == 0


def rtp(payload_type: int, timestamp: int, data: bytes):
    return SimpleNamespace(payload_type=payload_type, timestamp=timestamp, _data=data)


def test_the_tap_buffers_20_ms_opus_packets_and_passes_on_the_rest():
    packets = encode(melody(0.5), **MUSIC)
    buffer = JitterBuffer()
    tap = PacketTap(buffer, lambda payload_type: payload_type == 111)
    start = (1 << 32) - 2 * FRAME  # the RTP clock wraps two packets in
    for k, packet in enumerate(packets[:5]):
        assert tap.add(rtp(111, (start + k * FRAME) % (1 << 32), packet)) == (False, None)
    assert buffer.depth == 3  # the target is 1 frame: a burst is cut to target + slack
    played = buffer.pop()
    assert isinstance(played.frame, bytes) and isinstance(played.following, bytes)
    _, frame = tap.add(rtp(0, 1234, b"\xd5" * 160))  # PCMU: decoded by aiortc as before
    assert frame.data == b"\xd5" * 160 and frame.timestamp == 1234
    ten_ms = encode(melody(0.5), bitrate=64_000, application="lowdelay", frame_duration="10")
    _, frame = tap.add(rtp(111, 99, ten_ms[0]))  # 10 ms Opus: aiortc decodes it too
    assert frame is not None
    assert tap.packets == 5 and tap.passed_on == 2
    assert tap.add(rtp(111, 7, b""))[1] is not None  # an empty payload is not Opus's to judge
