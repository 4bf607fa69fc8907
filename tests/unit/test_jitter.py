"""The receive buffer: start-up depth, missing frames, late frames, adaptation, bounded delay.

Frames here are arrays labelled by their first sample; the buffer holds whatever it is given
(Opus packets in the server, decoded samples for other codecs)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hrtf.constants import FRAME
from server.media.jitter import SLACK_FRAMES, JitterBuffer, Playout


def frame(k: int) -> np.ndarray:
    return np.full(FRAME, k + 1, np.float32)


def label(playout) -> int | None:
    """The played frame's number, or None when the frame due is missing (concealed)."""
    assert not playout.buffering
    return None if playout.frame is None else round(float(playout.frame[0])) - 1


def test_plays_from_the_first_frame_with_one_frame_of_buffering():
    jb = JitterBuffer()
    assert jb.pop().buffering  # nothing yet: silence
    jb.push(0, frame(0))
    assert label(jb.pop()) == 0
    for k in range(1, 50):
        jb.push(k * FRAME, frame(k))
        assert label(jb.pop()) == k
    assert jb.stats.played == 50 and jb.stats.concealed == 0 and jb.depth == 0


def test_a_lost_frame_is_concealed_and_playout_moves_on():
    jb = JitterBuffer()
    jb.push(0, frame(0))
    jb.pop()
    jb.push(2 * FRAME, frame(2))  # frame 1 lost
    missing = jb.pop()
    assert missing.frame is None
    assert label(Playout(missing.following)) == 2  # the next one is offered (for Opus FEC)
    assert label(jb.pop()) == 2
    assert jb.stats.concealed == 1 and jb.target == 1


def test_a_late_frame_is_dropped_counted_and_grows_the_target():
    jb = JitterBuffer()
    jb.push(0, frame(0))
    jb.pop()
    assert label(jb.pop()) is None  # frame 1 not there yet: concealed
    jb.push(FRAME, frame(1))  # arrives too late
    assert jb.stats.late == 1 and jb.stats.underruns == 1 and jb.target == 2
    jb.push(2 * FRAME, frame(2))
    assert jb.pop().buffering  # rebuilding a two-frame cushion
    jb.push(3 * FRAME, frame(3))
    assert label(jb.pop()) == 2 and label(jb.pop()) == 3


def test_target_shrinks_back_after_a_calm_period():
    jb = JitterBuffer(target=1, calm_ticks=10)
    jb.target = 3
    for k in range(40):
        jb.push(k * FRAME, frame(k))
        if k >= 2:
            jb.pop()
    assert jb.target == 1


def test_a_burst_never_leaves_a_permanent_lag():
    jb = JitterBuffer()
    for k in range(20):  # 20 frames arrive at once
        jb.push(k * FRAME, frame(k))
    assert jb.depth <= jb.target + SLACK_FRAMES
    assert jb.stats.dropped == 20 - (jb.target + SLACK_FRAMES)
    assert label(jb.pop()) == 20 - (jb.target + SLACK_FRAMES)


def test_reordered_frames_play_in_order_and_duplicates_are_ignored():
    jb = JitterBuffer(target=2)
    jb.push(FRAME, frame(1))
    jb.push(0, frame(0))
    jb.push(0, frame(0))
    assert [label(jb.pop()), label(jb.pop())] == [0, 1]
    assert jb.stats.duplicates == 1


def test_a_source_that_goes_quiet_buffers_afresh_when_it_returns():
    jb = JitterBuffer()
    jb.push(0, frame(0))
    jb.pop()
    for _ in range(20):
        jb.pop()
    jb.push(500 * FRAME, frame(7))  # resumes much later (new talk spurt)
    assert label(jb.pop()) == 7


def test_a_standing_queue_above_the_target_is_trimmed_within_a_window():
    jb = JitterBuffer(trim_ticks=10)
    for k in range(3):  # a start-up burst: three frames before the first tick
        jb.push(k * FRAME, frame(k))
    played = []
    for k in range(3, 40):
        jb.push(k * FRAME, frame(k))
        played.append(label(jb.pop()))
    assert jb.depth == 0  # each tick now plays the frame that just arrived
    assert played[-1] == 39 and jb.stats.dropped >= 2
    assert played == sorted(played)


def test_a_reordered_packet_through_aiortcs_timestamp_mapping_is_not_a_leap():
    """aiortc reads an older timestamp as a 32-bit wrap; the uplink undoes that."""
    from aiortc.rtcrtpreceiver import TimestampMapper

    from server.media.uplink import unwrap_timestamp

    rtp = [3_000_000_000 + k * FRAME for k in range(12)]
    rtp[5], rtp[6] = rtp[6], rtp[5]  # one pair swapped on the way
    rtp += [(3_000_000_000 + k * FRAME) % (1 << 32) for k in range(12, 4_500_000)][::200_000]
    mapper, last, out = TimestampMapper(), None, []
    for ts in rtp:
        last = unwrap_timestamp(last, mapper.map(ts))
        out.append(last)
    assert out[:12] == [k * FRAME for k in (0, 1, 2, 3, 4, 6, 5, 7, 8, 9, 10, 11)]
    assert all(b > a for a, b in itertools.pairwise(out[12:]))  # real wraps still count
    jb = JitterBuffer(target=2)
    for k, ts in enumerate(out[:12]):
        jb.push(ts, frame(ts // FRAME))
        if k >= 1:
            jb.pop()
    assert jb.stats.concealed == 0 and jb.stats.dropped == 0


def test_each_played_frame_reports_its_wait_from_arrival_to_tick():
    jb = JitterBuffer()
    jb.push(0, frame(0), arrival=10.000)
    jb.pop(now=10.012)
    assert jb.last_wait_ms == pytest.approx(12.0)
    jb.push(FRAME, frame(1), arrival=10.025)
    jb.pop(now=10.032)
    jb.pop(now=10.052)  # nothing arrived: concealed, no wait recorded
    assert jb.last_wait_ms is None
    assert len(jb.waits_ms) == 2
    assert jb.waits_ms.percentile(0) == pytest.approx(7.0)
    assert jb.waits_ms.percentile(100) == pytest.approx(12.0)
    jb.push(3 * FRAME, frame(3), arrival=10.045)  # queued a whole frame behind: 27 ms
    jb.push(4 * FRAME, frame(4), arrival=10.046)
    jb.pop(now=10.072)
    assert jb.waits_ms.percentile(100) == pytest.approx(27.0)
    # Of each wait, the part spent waiting for a tick: 7, 12 and 27 − 20 ms.
    assert jb.tick_wait_ms(100) == pytest.approx(12.0)
    assert jb.tick_wait_ms(50) == pytest.approx(7.0)


async def test_the_downlink_reports_how_long_packets_wait_to_be_sent():
    import av

    from server.media.downlink import ListenerTrack

    track = ListenerTrack()
    track.deliver([av.Packet(b"\x00")])
    packet = await track.recv()
    assert packet.pts == 0 and len(track.waits_ms) == 1
    assert 0 <= track.waits_ms.percentile(50) < 100


def test_a_stream_whose_timestamps_leap_back_is_heard_again_at_once():
    """A sender's timeline jumps (a junk packet far ahead, then the stream goes on where it
    was; or a sender that restarts its timestamps while its SSRC stays): the frames more than
    JUMP_FRAMES from the playout point start the buffer afresh instead of all being "late"
    forever (in a live room the member stayed silent: tests/integration/test_fuzz_rtp.py)."""
    jb = JitterBuffer()
    for k in range(30):  # playing, with a target of 2 after an underrun
        jb.push(k * FRAME, frame(k))
        jb.pop()
    jb.target = 2
    jb.push((1 << 30) + 30 * FRAME, frame(999))  # a stray frame six hours ahead
    for k in range(1000, 1006):  # the timeline leaps ahead for a while, then back
        jb.push(k * FRAME, frame(k))
        jb.pop()
    played = []
    for k in range(30, 60):
        jb.push(k * FRAME, frame(k))
        playout = jb.pop()
        if not playout.buffering and playout.frame is not None:
            played.append(label(playout))
    assert played[-20:] == list(range(60 - 21, 59))  # the stream plays on in order
    assert jb.stats.restarts >= 1 and 999 not in played
    stats = jb.stats  # every frame accounted for
    assert stats.played + stats.late + stats.duplicates + stats.dropped + jb.depth == 30 + 7 + 30
