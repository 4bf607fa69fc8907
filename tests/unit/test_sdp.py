"""Opus music parameters in SDP."""

from __future__ import annotations

from server.media.sdp import with_music_opus

OFFER = (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\n"
    "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
)


def fmtp(sdp: str, pt: str) -> dict:
    line = next(x for x in sdp.split("\r\n") if x.startswith(f"a=fmtp:{pt} "))
    return dict(p.split("=") for p in line.split(" ", 1)[1].split(";"))


def test_existing_opus_fmtp_gains_stereo_and_bitrate():
    out = with_music_opus(OFFER)
    params = fmtp(out, "111")
    assert params["stereo"] == "1" and params["sprop-stereo"] == "1"
    assert params["maxaveragebitrate"] == "128000" and params["minptime"] == "10"
    assert "a=fmtp:0 " not in out  # other codecs untouched
    assert out.endswith("\r\n") and out.count("a=fmtp:111") == 1


def test_missing_fmtp_line_is_added_after_the_rtpmap():
    sdp = OFFER.replace("a=fmtp:111 minptime=10;useinbandfec=1\r\n", "")
    out = with_music_opus(sdp)
    lines = out.split("\r\n")
    assert lines[lines.index("a=rtpmap:111 opus/48000/2") + 1].startswith("a=fmtp:111 ")
    assert fmtp(out, "111")["stereo"] == "1"


def test_sdp_without_opus_is_unchanged():
    sdp = "v=0\r\nm=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    assert with_music_opus(sdp) == sdp
