"""Audio in and out of aiortc: the uplink reader, the listener's downlink track, Opus settings.

- **Uplink.** aiortc's audio receiver holds packets in a 4-frame jitter buffer before decoding
  (80 ms, and worse after a loss). :func:`bypass_receiver_buffer` replaces it with a
  pass-through, so each packet is decoded as soon as it arrives; the decoded frames go to the
  source's own :class:`~server.jitter.JitterBuffer`, which the room clock reads.
- **Downlink.** :class:`ListenerTrack` hands aiortc *already encoded* Opus packets: the room's
  tick encodes every listener's mix with :class:`MusicOpusEncoder` (stereo, 128 kb/s, the
  ``lowdelay`` application: no speech processing, 2.5 ms look-ahead) right after rendering,
  instead of aiortc's fixed 96 kb/s ``voip`` encoder. The track is paced by the room clock; it
  never queues more than :data:`MAX_QUEUED_PACKETS`.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError

from hrtf.constants import FRAME, SAMPLE_RATE
from server.jitter import JitterBuffer
from server.opus import OpusEncoder
from server.recent import Recent

log = logging.getLogger(__name__)

TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
DOWNLINK_BITRATE = 128_000
MAX_QUEUED_PACKETS = 3


class PassThroughBuffer:
    """Stands in for aiortc's audio jitter buffer: every packet is a frame, at once."""

    capacity = 1

    def add(self, packet) -> tuple[bool, JitterFrame | None]:
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)

    def remove(self, count: int) -> None:  # called by aiortc on reset; nothing is held
        return None


_JITTER_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"


def receiver_of(pc, track):
    """The ``RTCRtpReceiver`` of ``pc`` that receives ``track``."""
    for transceiver in pc.getTransceivers():
        if transceiver.receiver.track is track:
            return transceiver.receiver
    raise RuntimeError("no receiver of this track in the peer connection")


def replace_jitter_buffer(receiver, buffer) -> None:
    """Put ``buffer`` (aiortc's ``add``/``remove`` interface) in place of ``receiver``'s audio
    jitter buffer."""
    if not hasattr(receiver, _JITTER_BUFFER_ATTR):
        raise RuntimeError("this aiortc version has no receiver jitter buffer to replace")
    setattr(receiver, _JITTER_BUFFER_ATTR, buffer)


def bypass_receiver_buffer(receiver) -> None:
    """Make ``receiver`` (an audio ``RTCRtpReceiver``) decode packets as they arrive."""
    replace_jitter_buffer(receiver, PassThroughBuffer())


def frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """A decoded frame as mono float32 in ±1 (channels averaged)."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    planar = frame.format.is_planar
    pcm = data.reshape(channels, -1).T if planar else data.reshape(-1, channels)
    scale = 32768.0 if pcm.dtype == np.int16 else 1.0
    return (pcm.astype(np.float32).mean(axis=1) / scale).astype(np.float32)


def unwrap_timestamp(last: int | None, timestamp: int) -> int:
    """``timestamp`` placed within 2³¹ of ``last`` (RFC 3550 serial-number arithmetic).

    aiortc maps RTP timestamps to a running count, but reads any timestamp older than the one
    before as a 32-bit wrap and jumps every later one forward by 2³²: one reordered packet
    would otherwise look like a stream that leapt a day ahead.
    """
    if last is None:
        return timestamp
    return last + ((timestamp - last + (1 << 31)) % (1 << 32)) - (1 << 31)


async def read_uplink(track: MediaStreamTrack, buffer: JitterBuffer) -> None:
    """Feed ``buffer`` with ``track``'s decoded frames until the track ends, each stamped with
    its arrival on ``time.monotonic`` (uvloop's own clock counts whole milliseconds)."""
    pending = np.zeros(0, np.float32)
    pending_ts: int | None = None
    last: int | None = None
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        samples = frame_to_mono(frame)
        ts = last = unwrap_timestamp(last, int(frame.pts) if frame.pts is not None else 0)
        if len(samples) == FRAME and not len(pending):
            buffer.push(ts, samples, time.monotonic())
            continue
        # Odd-sized frames (another codec, or 10 ms Opus): regroup into 20 ms frames.
        if pending_ts is None or ts != pending_ts + len(pending):
            pending, pending_ts = np.zeros(0, np.float32), ts
        pending = np.concatenate([pending, samples])
        while len(pending) >= FRAME:
            buffer.push(pending_ts, pending[:FRAME], time.monotonic())
            pending, pending_ts = pending[FRAME:], pending_ts + FRAME


class MusicOpusEncoder:
    """Opus for music: stereo, 128 kb/s, low-delay mode, one packet per 20 ms frame.

    libopus through ctypes (:class:`server.opus.OpusEncoder`): it runs without the GIL, so a
    room's listeners encode on all cores at once.
    """

    def __init__(self, bitrate: int = DOWNLINK_BITRATE) -> None:
        self.codec = OpusEncoder(bitrate)

    def encode(self, stereo: np.ndarray) -> list[av.Packet]:
        """Encode one frame, ``stereo`` float32 ``(FRAME, 2)`` in ±1."""
        packet = av.Packet(self.codec.encode(np.clip(stereo, -1.0, 1.0)))
        packet.time_base = TIME_BASE
        return [packet]


class ListenerTrack(MediaStreamTrack):
    """One listener's personal mix, as pre-encoded Opus packets paced by the room clock."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[tuple[av.Packet, float]] = asyncio.Queue()
        self._pts = 0
        self.dropped_packets = 0
        #: Milliseconds each packet waited between its tick and aiortc taking it to send.
        self.waits_ms = Recent()

    def deliver(self, packets: list[av.Packet]) -> None:
        """Called on the event loop after each tick with this listener's packets."""
        now = time.monotonic()
        for packet in packets:
            packet.pts = self._pts
            packet.time_base = TIME_BASE
            self._pts += FRAME
            self._queue.put_nowait((packet, now))
        while self._queue.qsize() > MAX_QUEUED_PACKETS:
            self._queue.get_nowait()
            self.dropped_packets += 1

    @property
    def queued(self) -> int:
        """Packets waiting to be sent (each is 20 ms of delay)."""
        return self._queue.qsize()

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        packet, delivered = await self._queue.get()
        self.waits_ms.add(1e3 * (time.monotonic() - delivered))
        return packet
