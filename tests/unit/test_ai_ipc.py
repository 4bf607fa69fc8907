"""The server ↔ AI sidecar channel: framing, and the bridge's bookkeeping (no process here)."""

from __future__ import annotations

import numpy as np
import pytest

from ai_accompany.ipc import (
    ANALYSIS_RATE,
    MAX_FRAME,
    ChannelError,
    FrameReader,
    audio_of,
    encode,
    encode_audio,
)
from dsp.downmix import AnalysisDownmix
from hrtf.constants import FRAME
from server.ai.bridge import AiVoice


def test_frames_survive_any_split_of_the_byte_stream():
    audio = np.linspace(-1, 1, 320, dtype=np.float32)
    stream = (encode({"type": "ping", "t": 1.5}) + encode_audio("band", 960 * 7, audio)
              + encode({"type": "events", "room": "band", "events": [[1, 2, 60, 0.5, "bass"]]}))
    for cut in (1, 3, 7, 100, len(stream)):
        reader, got = FrameReader(), []
        for k in range(0, len(stream), cut):
            got += reader.feed(stream[k:k + cut])
        assert [h["type"] for h, _ in got] == ["ping", "audio", "events"]
        assert got[1][0] == {"type": "audio", "room": "band", "sample": 960 * 7}
        np.testing.assert_array_equal(audio_of(got[1][1]), audio)
        assert got[2][0]["events"] == [[1, 2, 60, 0.5, "bass"]]


@pytest.mark.parametrize("frame", [
    (MAX_FRAME + 1).to_bytes(4, "big") + b"\x00\x02{}",  # longer than allowed
    (6).to_bytes(4, "big") + (9).to_bytes(2, "big") + b"{}" + b"\x00\x00",  # header past the end
    (4).to_bytes(4, "big") + (2).to_bytes(2, "big") + b"[]",  # not an object
    (7).to_bytes(4, "big") + (5).to_bytes(2, "big") + b"{\"a\":",  # not JSON
    (10).to_bytes(4, "big") + (8).to_bytes(2, "big") + b'{"t": 1}',  # no type
])
def test_a_broken_frame_is_a_channel_error(frame):
    with pytest.raises(ChannelError):
        FrameReader().feed(frame)


def test_audio_must_be_whole_samples():
    with pytest.raises(ChannelError):
        audio_of(b"\x00\x00\x00")


def test_the_downmix_keeps_what_analysis_needs_and_drops_what_would_alias():
    downmix = AnalysisDownmix(ANALYSIS_RATE)
    t = np.arange(FRAME * 50) / 48_000
    for freq, kept in ((440.0, True), (1_000.0, True), (12_000.0, False)):
        tone = np.sin(2 * np.pi * freq * t).astype(np.float32)
        out = np.concatenate([downmix.process(tone[k:k + FRAME])
                              for k in range(0, len(tone), FRAME)])
        assert len(out) == len(tone) // 3
        level = np.sqrt(np.mean(out[len(out) // 2:] ** 2)) * np.sqrt(2)
        assert (level > 0.9) if kept else (level < 0.05), (freq, level)


def test_an_ai_voice_counts_how_far_ahead_events_come_and_plays_them():
    voice = AiVoice("organ")
    now = 48_000
    voice.deliver([[now + 4 * FRAME, 9600, 60, 0.8, "lead"],  # 80 ms ahead of the next tick
                   [now - FRAME, 960, 62, 0.8, "lead"],  # its tick is past: late
                   [now, -5, 64, 0.8, "lead"],  # not a note
                   "garbage"], now)
    assert voice.events == 2 and voice.late == 1 and voice.invalid == 2
    assert voice.lead_ms.percentile(100) == pytest.approx(60.0)
    frames = [voice.render(now + k * FRAME) for k in range(8)]
    assert not np.any(frames[0]) and not np.any(frames[3])  # nothing before the note
    assert np.max(np.abs(frames[4])) > 0.01  # the organ note
