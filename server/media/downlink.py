"""A listener's downlink: their mix as Opus packets, paced by the room clock, to aiortc.

:class:`ListenerTrack` hands aiortc *already encoded* Opus packets: the room's tick encodes
every listener's mix with :class:`MusicOpusEncoder` (stereo, 128 kb/s, the ``lowdelay``
application: no speech processing, 2.5 ms look-ahead) right after rendering, instead of aiortc's
fixed 96 kb/s ``voip`` encoder. The track is paced by the room clock; it never queues more than
:data:`MAX_QUEUED_PACKETS`. A listener on the data-channel transport gets the same packets on
its audio channel instead, sent as they are delivered
(:class:`~server.media.datachannel.AudioChannel`).
"""

from __future__ import annotations

import asyncio
import fractions
import time
from typing import TYPE_CHECKING

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from hrtf.constants import FRAME, SAMPLE_RATE
from server.media.opus import OpusEncoder
from server.telemetry.recent import Recent

if TYPE_CHECKING:
    from server.media.datachannel import AudioChannel

TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
DOWNLINK_BITRATE = 128_000
MAX_QUEUED_PACKETS = 3


class MusicOpusEncoder:
    """Opus for music: stereo, 128 kb/s, low-delay mode, one packet per 20 ms frame.

    libopus through ctypes (:class:`server.media.opus.OpusEncoder`): it runs without the GIL, so a
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
    """One listener's personal mix, as pre-encoded Opus packets paced by the room clock.

    While :attr:`channel` is set and open, the packets go there instead (the data channel
    wins over RTP for the downlink) and nothing is queued for RTP.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[tuple[av.Packet, float]] = asyncio.Queue()
        self._pts = 0
        self.dropped_packets = 0
        #: Milliseconds each packet waited between its tick and aiortc taking it to send.
        self.waits_ms = Recent()
        #: The listener's audio data channel, once it has opened one.
        self.channel: AudioChannel | None = None

    def deliver(self, packets: list[av.Packet], room_sample: int | None = None) -> None:
        """Called on the event loop after each tick with this listener's packets; the tick
        started at ``room_sample`` (the data channel's timestamp; by default the track's own
        count of samples)."""
        if self.channel is not None and self.channel.open:
            self.dropped_packets += self.channel.send_mix(
                packets, self._pts if room_sample is None else room_sample)
            self._pts += FRAME * len(packets)
            return
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
