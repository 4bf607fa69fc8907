"""SDP for music: what an offer must hold, and Opus in real stereo at a music bitrate.

Browsers decode Opus to mono unless the description *they* apply carries ``stereo=1`` in the
Opus ``a=fmtp`` line (RFC 7587, section 6.1); ``sprop-stereo=1`` says the sender sends stereo.
The server puts both in its answer, with ``maxaveragebitrate`` for the 128 kb/s downlink; the
web client puts ``stereo=1`` in its own offer before ``setLocalDescription``.

:func:`offer_problem` checks an offer before aiortc reads it, and says in words what a person
would fix: aiortc accepts some offers it should not (no DTLS fingerprint; only codecs the
server cannot send its Opus mixes in) and refuses others with its internals' messages.
"""

from __future__ import annotations

import re
from collections import Counter

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


#: Media sections (``m=`` lines) an offer may hold: one audio section is what the server uses.
MAX_MEDIA_SECTIONS = 8
#: ICE candidates an offer may list, and a connection may trickle: a browser gathers a handful
#: per network interface; each one makes the server send connectivity checks to its address.
MAX_ICE_CANDIDATES = 64


def offer_problem(sdp: str) -> str | None:
    """What keeps the server from using ``sdp`` as an offer, in words; None if nothing does.

    Refused: neither an audio section offering Opus (the mixes are Opus: RFC 7587) nor a data
    channel section (``m=application … webrtc-datachannel``, RFC 8841: the data-channel audio
    transport, :mod:`server.media.datachannel`); a media section
    without ``a=fingerprint`` (DTLS-SRTP cannot authenticate the peer without it: RFC 8122,
    section 5) or without ``a=ice-ufrag``/``a=ice-pwd`` (RFC 8839, section 5.4), at its level
    or the session's; one ``a=mid`` for two sections (RFC 8843, section 7.2); more than
    :data:`MAX_MEDIA_SECTIONS` sections or :data:`MAX_ICE_CANDIDATES` candidates.
    """
    lines = sdp.replace("\r\n", "\n").split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith("m=")]
    if len(starts) > MAX_MEDIA_SECTIONS:
        return (f"the offer has {len(starts)} media sections (m= lines); at most "
                f"{MAX_MEDIA_SECTIONS} are taken, one audio section is used")
    candidates = sum(line.startswith("a=candidate:") for line in lines)
    if candidates > MAX_ICE_CANDIDATES:
        return (f"the offer lists {candidates} ICE candidates (a=candidate lines); at most "
                f"{MAX_ICE_CANDIDATES} are taken")
    if not _offers_opus(lines) and not _offers_datachannel(lines):
        return ("the offer has no audio section offering Opus (a=rtpmap:N opus/48000/2, RFC "
                "7587) and no data channel: the server sends and receives Opus only")
    session = lines[:starts[0]]
    sections = [lines[a:b] for a, b in zip(starts, [*starts[1:], len(lines)], strict=True)]
    for needed, why in (("a=fingerprint:", "DTLS-SRTP needs the certificate's fingerprint "
                                           "(RFC 8122)"),
                        ("a=ice-ufrag:", "ICE needs its credentials (RFC 8839)"),
                        ("a=ice-pwd:", "ICE needs its credentials (RFC 8839)")):
        if any(line.startswith(needed) for line in session):
            continue
        for k, section in enumerate(sections, 1):
            if not any(line.startswith(needed) for line in section):
                line = section[0][:24].encode("ascii", "backslashreplace").decode()
                return (f"media section {k} ({line}) has no {needed[:-1]} line, nor has the "
                        f"session: {why}")
    mids = Counter(line[len("a=mid:"):].strip() for line in lines if line.startswith("a=mid:"))
    twice = [mid for mid, count in mids.items() if count > 1]
    if twice:
        mid = twice[0][:40].encode("ascii", "backslashreplace").decode()
        return f"a=mid:{mid} names {mids[twice[0]]} media sections; each needs its own (RFC 8843)"
    return None


#: What Python itself says when a parser meets input it did not expect: no words for a person.
_PYTHON_SPEAKING = re.compile(r"unpack|invalid literal|not in list|index out of range|NoneType|"
                              r"has no attribute|object is not|argument|^'.*'$")


def offer_failure(exc: Exception) -> str:
    """Why aiortc could not apply an offer, for a person: aiortc's own message where it wrote
    one, else a line it needs is missing or malformed (with the exception, for a bug report)."""
    detail = str(exc).encode("ascii", "backslashreplace").decode()  # it may quote the offer
    if isinstance(exc, ValueError) and detail and not _PYTHON_SPEAKING.search(detail):
        return f"the offer cannot be used: {detail}"[:300]
    return (f"the offer cannot be used: a line it needs is missing or malformed "
            f"({type(exc).__name__}{': ' if detail else ''}{detail})")[:300]


def _offers_opus(lines: list[str]) -> bool:
    """Whether an audio section lists an Opus payload type among its formats."""
    formats: list[str] | None = None
    for line in lines:
        if line.startswith("m="):
            fields = line[2:].split()
            formats = fields[3:] if fields[:1] == ["audio"] else None
        elif formats is not None and line.startswith("a=rtpmap:"):
            pt, _, codec = line[len("a=rtpmap:"):].partition(" ")
            if pt in formats and codec.lower().startswith("opus/48000"):
                return True
    return False


def _offers_datachannel(lines: list[str]) -> bool:
    """Whether a section is an SCTP data channel section (RFC 8841, section 4)."""
    return any(line.startswith("m=application ") and "webrtc-datachannel" in line
               for line in lines)
