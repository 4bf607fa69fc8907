"""The channel between the server and the AI sidecar: length-prefixed frames (no I/O here).

A frame is ``u32 length | u16 header length | header (JSON, UTF-8) | body (bytes)``, all
big-endian, ``length`` counting what follows it. The header is a JSON object with a ``type``;
the body carries audio as little-endian float32 when there is any. Both directions use the
same framing over the sidecar's stdin and stdout.

Server → sidecar:

- ``{"type": "audio", "room": R, "sample": N}`` + float32 body: the room's analysis audio (a
  mono downmix of the humans at :data:`ANALYSIS_RATE`), whose first sample is at room sample
  ``N`` (the room clock counts 48 kHz samples);
- ``{"type": "config", "room": R, "ai": {...}}``: add or change the room's AI musician
  (role, instrument, temperature, bpm, volume);
- ``{"type": "remove", "room": R}``;
- ``{"type": "ping", "t": T}``.

Sidecar → server:

- ``{"type": "events", "room": R, "events": [[start, duration, pitch, velocity, voice], …]}``:
  notes on the room clock;
- ``{"type": "status", "room": R, ...}``: what it hears (tempo, key, chord) and decides;
- ``{"type": "pong", "t": T}``.

:class:`FrameReader` takes bytes as they come and gives whole messages; a frame longer than
:data:`MAX_FRAME` or a header that is not a JSON object is a :class:`ChannelError` (the peer is
broken: the server restarts the sidecar).
"""

from __future__ import annotations

import json
import struct

import numpy as np

#: The analysis audio's sample rate (the room's 48 kHz decimated by 3).
ANALYSIS_RATE = 16_000
MAX_FRAME = 1 << 20
_PREFIX = struct.Struct(">IH")


class ChannelError(ValueError):
    """A frame that cannot be read: the other side is broken."""


def encode(header: dict, body: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    if len(head) > 0xFFFF or 2 + len(head) + len(body) > MAX_FRAME:
        raise ChannelError(f"a {header.get('type')!r} frame is too large")
    return _PREFIX.pack(2 + len(head) + len(body), len(head)) + head + body


def encode_audio(room: str, sample: int, audio: np.ndarray) -> bytes:
    return encode({"type": "audio", "room": room, "sample": int(sample)},
                  np.ascontiguousarray(audio, "<f4").tobytes())


def audio_of(body: bytes) -> np.ndarray:
    if len(body) % 4:
        raise ChannelError("audio that is not whole float32 samples")
    return np.frombuffer(body, "<f4")


class FrameReader:
    """Bytes in, ``(header, body)`` messages out."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[dict, bytes]]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= 4:
            length = int.from_bytes(self._buffer[:4], "big")
            if length < 2 or length > MAX_FRAME:
                raise ChannelError(f"a frame of {length} bytes")
            if len(self._buffer) < 4 + length:
                break
            frame = bytes(self._buffer[4:4 + length])
            del self._buffer[:4 + length]
            head_len = int.from_bytes(frame[:2], "big")
            if head_len > len(frame) - 2:
                raise ChannelError("a header longer than its frame")
            try:
                header = json.loads(frame[2:2 + head_len])
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ChannelError(f"a header that is not JSON: {exc}") from None
            if not isinstance(header, dict) or not isinstance(header.get("type"), str):
                raise ChannelError("a header without a type")
            messages.append((header, frame[2 + head_len:]))
        return messages
