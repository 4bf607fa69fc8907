"""SDP edits for music: Opus in real stereo at a music bitrate.

Browsers decode Opus to mono unless the description *they* apply carries ``stereo=1`` in the
Opus ``a=fmtp`` line (RFC 7587, section 6.1); ``sprop-stereo=1`` says the sender sends stereo.
The server puts both in its answer, with ``maxaveragebitrate`` for the 128 kb/s downlink; the
web client puts ``stereo=1`` in its own offer before ``setLocalDescription``.
"""

from __future__ import annotations

import re

MUSIC_OPUS_PARAMS = {
    "stereo": "1",
    "sprop-stereo": "1",
    "maxaveragebitrate": "128000",
    "useinbandfec": "1",
    "minptime": "10",
}

_RTPMAP_RE = re.compile(r"^a=rtpmap:(\d+) opus/48000(?:/2)?\s*$", re.IGNORECASE | re.MULTILINE)


def opus_payload_types(sdp: str) -> list[str]:
    return _RTPMAP_RE.findall(sdp)


def with_music_opus(sdp: str, params: dict[str, str] | None = None) -> str:
    """``sdp`` with every Opus ``a=fmtp`` line carrying ``params`` (added or overridden)."""
    params = MUSIC_OPUS_PARAMS if params is None else params
    newline = "\r\n" if "\r\n" in sdp else "\n"
    lines = sdp.split(newline)
    for pt in opus_payload_types(sdp):
        prefix = f"a=fmtp:{pt} "
        found = False
        for i, line in enumerate(lines):
            if line.startswith(prefix):
                found = True
                existing = dict(p.split("=", 1) for p in line[len(prefix):].split(";") if "=" in p)
                existing.update(params)
                lines[i] = prefix + ";".join(f"{k}={v}" for k, v in existing.items())
        if not found:
            at = next(i for i, line in enumerate(lines) if line.startswith(f"a=rtpmap:{pt} "))
            lines.insert(at + 1, prefix + ";".join(f"{k}={v}" for k, v in params.items()))
    return newline.join(lines)
