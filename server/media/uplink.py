"""A source's uplink: its packets into the receive buffer, and the tick's decoding.

aiortc decodes every audio packet as it arrives, in its own thread, after a 4-frame buffer;
a lost packet is then just a gap. spatialjam takes Opus packets before aiortc decodes them
(:class:`PacketTap` in place of aiortc's receive buffer), buffers them still encoded in the
source's :class:`~server.media.jitter.JitterBuffer`, and decodes each at the tick that plays it,
on the room's tick thread (:class:`UplinkDecoder`), so that a missing one is concealed by Opus:

- from the next packet's in-band FEC when it is here already and carries one (senders add it
  in the SILK and hybrid modes — voice-like and low-bitrate streams — when the receiver
  reports loss; music at high bitrates is CELT-only and has none);
- else by Opus packet-loss concealment, which continues the sound and fades it out;
- after :data:`PLC_FRAMES` lost in a row, silence.

Anything that is not a 20 ms Opus packet (another codec, other frame sizes) goes on through
aiortc's decoder as before (:func:`read_uplink`, after a pass-through in place of aiortc's
buffer) and arrives here as samples; a
missing one of those is the last frame at half level, then silence. A payload of the Opus type
that libopus cannot even frame (RFC 6716, section 3) is dropped at the tap and counted
(``malformed_opus``): its frame is concealed like a lost one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError

from hrtf.constants import FRAME
from server.media.aiortc_private import (
    check_receiver_codecs,
    receiver_codec,
    replace_jitter_buffer,
    rtp_payload,
)
from server.media.ingress import DropCounts
from server.media.jitter import JitterBuffer, Playout
from server.media.opus import OpusDecoder, OpusError, has_fec, packet_samples

log = logging.getLogger(__name__)

#: Consecutive lost frames concealed by Opus before silence (Opus fades out by then).
PLC_FRAMES = 5


class PassThroughBuffer:
    """Stands in for aiortc's audio jitter buffer: every packet is a frame, at once."""

    capacity = 1

    def add(self, packet) -> tuple[bool, JitterFrame | None]:
        return False, JitterFrame(data=rtp_payload(packet), timestamp=packet.timestamp)

    def remove(self, count: int) -> None:  # called by aiortc on reset; nothing is held
        return None


def receiver_of(pc, track):
    """The ``RTCRtpReceiver`` of ``pc`` that receives ``track``."""
    for transceiver in pc.getTransceivers():
        if transceiver.receiver.track is track:
            return transceiver.receiver
    raise RuntimeError("no receiver of this track in the peer connection")


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



class PacketTap:
    """Stands in for an aiortc audio receiver's jitter buffer: 20 ms Opus packets go to
    ``buffer`` as they arrive (stamped with ``time.monotonic``); Opus payloads libopus cannot
    frame are dropped (counted in :attr:`malformed` and in ``drops``); everything else goes on
    to aiortc's decoder, one packet per frame, without waiting."""

    capacity = 1

    def __init__(self, buffer: JitterBuffer, is_opus: Callable[[int], bool],
                 drops: DropCounts | None = None,
                 defer: Callable[[float], bool] | None = None) -> None:
        self.buffer = buffer
        #: Whether, at a time on ``time.monotonic``, the member's uplink comes from elsewhere
        #: (its audio data channel): its RTP Opus packets are then ignored (:attr:`deferred`).
        self.defer = defer
        self.deferred = 0
        #: Whether a payload type is Opus (asked per packet: aiortc learns its codecs only
        #: once the connection runs, after the track is announced).
        self.is_opus = is_opus
        self.drops = drops
        self._last: int | None = None
        self.packets = 0
        self.passed_on = 0
        self.malformed = 0

    def add(self, packet) -> tuple[bool, JitterFrame | None]:
        data = rtp_payload(packet)
        if self.is_opus(packet.payload_type):
            samples = packet_samples(data)
            if samples == FRAME:
                now = time.monotonic()
                if self.defer is not None and self.defer(now):
                    self.deferred += 1
                    return False, None
                self._last = unwrap_timestamp(self._last, packet.timestamp)
                self.buffer.push(self._last, bytes(data), now)
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


def tap_receiver(receiver, buffer: JitterBuffer, drops: DropCounts | None = None,
                 defer: Callable[[float], bool] | None = None) -> PacketTap:
    """Put a :class:`PacketTap` feeding ``buffer`` in place of ``receiver``'s jitter buffer;
    malformed Opus payloads are counted in ``drops``; Opus packets are ignored while
    ``defer(now)`` says so (:class:`PacketTap`)."""
    check_receiver_codecs(receiver)

    def is_opus(payload_type: int) -> bool:
        codec = receiver_codec(receiver, payload_type)
        return codec is not None and codec.mimeType.lower() == "audio/opus"

    tap = PacketTap(buffer, is_opus, drops, defer)
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
    """Turns one source's :class:`~server.media.jitter.Playout` into 20 ms of samples, concealing
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
