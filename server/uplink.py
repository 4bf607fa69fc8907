"""A source's uplink: its packets into the receive buffer, and the tick's decoding.

aiortc decodes every audio packet as it arrives, in its own thread, after a 4-frame buffer;
a lost packet is then just a gap. spatialjam takes Opus packets before aiortc decodes them
(:class:`PacketTap` in place of aiortc's receive buffer), buffers them still encoded in the
source's :class:`~server.jitter.JitterBuffer`, and decodes each at the tick that plays it,
on the room's tick thread (:class:`UplinkDecoder`), so that a missing one is concealed by Opus:

- from the next packet's in-band FEC when it is here already and carries one (senders add it
  in the SILK and hybrid modes — voice-like and low-bitrate streams — when the receiver
  reports loss; music at high bitrates is CELT-only and has none);
- else by Opus packet-loss concealment, which continues the sound and fades it out;
- after :data:`PLC_FRAMES` lost in a row, silence.

Anything that is not a 20 ms Opus packet (another codec, other frame sizes) goes on through
aiortc's decoder as before (:func:`server.media.read_uplink`) and arrives here as samples; a
missing one of those is the last frame at half level, then silence. A payload of the Opus type
that libopus cannot even frame (RFC 6716, section 3) is dropped at the tap and counted
(``malformed_opus``): its frame is concealed like a lost one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from aiortc.jitterbuffer import JitterFrame

from hrtf.constants import FRAME
from server.ingress import DropCounts
from server.jitter import JitterBuffer, Playout
from server.media import replace_jitter_buffer, unwrap_timestamp
from server.opus import OpusDecoder, OpusError, has_fec, packet_samples

log = logging.getLogger(__name__)

#: Consecutive lost frames concealed by Opus before silence (Opus fades out by then).
PLC_FRAMES = 5


class PacketTap:
    """Stands in for an aiortc audio receiver's jitter buffer: 20 ms Opus packets go to
    ``buffer`` as they arrive (stamped with ``time.monotonic``); Opus payloads libopus cannot
    frame are dropped (counted in :attr:`malformed` and in ``drops``); everything else goes on
    to aiortc's decoder, one packet per frame, without waiting."""

    capacity = 1

    def __init__(self, buffer: JitterBuffer, is_opus: Callable[[int], bool],
                 drops: DropCounts | None = None) -> None:
        self.buffer = buffer
        #: Whether a payload type is Opus (asked per packet: aiortc learns its codecs only
        #: once the connection runs, after the track is announced).
        self.is_opus = is_opus
        self.drops = drops
        self._last: int | None = None
        self.packets = 0
        self.passed_on = 0
        self.malformed = 0

    def add(self, packet) -> tuple[bool, JitterFrame | None]:
        data = packet._data
        if self.is_opus(packet.payload_type):
            samples = packet_samples(data)
            if samples == FRAME:
                self._last = unwrap_timestamp(self._last, packet.timestamp)
                self.buffer.push(self._last, bytes(data), time.monotonic())
                self.packets += 1
                return False, None
            if samples < 0 and data:  # aiortc's decoder would fail on it, and log each one
                self.malformed += 1
                if self.drops is not None:
                    self.drops.add("malformed_opus")
                return False, None
        self.passed_on += 1
        return False, JitterFrame(data=data, timestamp=packet.timestamp)

    def remove(self, count: int) -> None:  # called by aiortc on reset; nothing is held
        return None


def tap_receiver(receiver, buffer: JitterBuffer, drops: DropCounts | None = None) -> PacketTap:
    """Put a :class:`PacketTap` feeding ``buffer`` in place of ``receiver``'s jitter buffer;
    malformed Opus payloads are counted in ``drops``."""
    codecs_attr = "_RTCRtpReceiver__codecs"
    if not hasattr(receiver, codecs_attr):
        raise RuntimeError("this aiortc version keeps no codecs on its receivers")

    def is_opus(payload_type: int) -> bool:
        codec = getattr(receiver, codecs_attr).get(payload_type)
        return codec is not None and codec.mimeType.lower() == "audio/opus"

    tap = PacketTap(buffer, is_opus, drops)
    replace_jitter_buffer(receiver, tap)
    return tap


@dataclass
class DecoderStats:
    decoded: int = 0
    #: Lost frames rebuilt from the next packet's in-band FEC.
    fec: int = 0
    #: Lost frames concealed by Opus packet-loss concealment.
    plc: int = 0
    #: Lost frames of other codecs (half-level repeat, then silence) or past PLC_FRAMES.
    silenced: int = 0
    #: Packets Opus could not decode (concealed instead).
    corrupt: int = 0


class UplinkDecoder:
    """Turns one source's :class:`~server.jitter.Playout` into 20 ms of samples, concealing
    what is missing. Used by one thread (the room's) at a time."""

    def __init__(self) -> None:
        self.stats = DecoderStats()
        self._opus: OpusDecoder | None = None
        self._last = np.zeros(FRAME, np.float32)
        self._lost_run = 0

    def frame(self, playout: Playout) -> np.ndarray:
        if playout.buffering:
            self._lost_run = 0
            return np.zeros(FRAME, np.float32)
        frame = playout.frame
        if isinstance(frame, bytes):
            samples = self._decode(frame)
        elif frame is not None:
            samples = np.asarray(frame, np.float32)
        else:
            samples = None
        if samples is None:
            samples = self._conceal(playout.following)
        else:
            self._lost_run = 0
            self.stats.decoded += 1
        self._last = samples
        return samples

    def _decoder(self) -> OpusDecoder:
        if self._opus is None:
            self._opus = OpusDecoder()
        return self._opus

    def _decode(self, packet: bytes) -> np.ndarray | None:
        try:
            samples = self._decoder().decode(packet)
        except OpusError:
            self.stats.corrupt += 1
            return None
        if len(samples) != FRAME:  # a 20 ms packet, as the tap checked: cannot happen
            self.stats.corrupt += 1
            return None
        return samples

    def _conceal(self, following) -> np.ndarray:
        self._lost_run += 1
        if self._opus is not None and self._lost_run <= PLC_FRAMES:
            try:
                if isinstance(following, bytes) and has_fec(following):
                    samples = self._opus.recover(following)
                    self.stats.fec += 1
                else:
                    samples = self._opus.conceal()
                    self.stats.plc += 1
                if len(samples) == FRAME:
                    return samples
            except OpusError:
                self.stats.corrupt += 1
        self.stats.silenced += 1
        if self._opus is None and self._lost_run == 1:
            return self._last * 0.5
        return np.zeros(FRAME, np.float32)
