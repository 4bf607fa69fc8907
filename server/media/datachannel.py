"""The data-channel audio transport: Opus packets on an unreliable ``RTCDataChannel``.

A client that owns its audio path (WebCodecs in a browser, a bot) opens, before its offer,
a data channel labelled :data:`AUDIO_LABEL`, unordered with ``maxRetransmits: 0``; its uplink
comes on it and its mix goes back on it instead of RTP (docs/PROTOCOL.md, "Data-channel audio").
Every message is one binary packet, big-endian, the same both ways:

========  ====  ===============================================================================
offset    size  field
========  ====  ===============================================================================
0         1     version, :data:`VERSION`
1         1     flags: 0 (reserved; receivers ignore unknown bits)
2         2     sequence number, u16, +1 per packet, wraps
4         4     timestamp: the frame's first sample on the sender's 48 kHz clock, u32, wraps
8         4     capture time: the sender's clock in microseconds mod 2³², u32 (informational)
12        1…    one Opus packet (RFC 6716) of the room's frame, at most :data:`MAX_OPUS` bytes
========  ====  ===============================================================================

The sans-I/O core (:func:`parse`, :func:`pack`, :class:`TokenBucket`, :class:`ChannelUplink`,
:class:`ChannelDownlink`) takes bytes and the time and returns what to do; the shell
(:class:`AudioChannel`) wires one aiortc channel to a source's jitter buffer, the drop counts
and the listener's track. An uplink packet that passes goes into the source's
:class:`~server.media.jitter.JitterBuffer` exactly as an RTP Opus packet does through
:class:`~server.media.uplink.PacketTap`: the same timestamp unwrapping, the same buffer, the
same FEC and PLC at the tick. Replayed and out-of-order packets are the buffer's to judge
(duplicates, late frames). Everything else is dropped and counted by reason
(:data:`server.media.ingress.REASONS`, ``spatialjam_dropped_packets_total``).
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from hrtf.constants import FRAME, SAMPLE_RATE
from server.media.ingress import DropCounts
from server.media.jitter import JitterBuffer
from server.media.opus import packet_samples
from server.media.uplink import unwrap_timestamp

log = logging.getLogger(__name__)

#: The label of the channel that carries a member's audio.
AUDIO_LABEL = "audio"
VERSION = 1
HEADER = struct.Struct("!BBHII")
#: The longest Opus packet of one frame (RFC 6716, section 3.2.1).
MAX_OPUS = 1275
MIN_PACKET = HEADER.size + 1
MAX_PACKET = HEADER.size + MAX_OPUS
#: A sender may send this many packets per frame of the room, on average…
FLOOD_RATE_FRAMES = 2.0
#: …and this many at once (a burst after a stall of its sender).
FLOOD_BURST = 8
#: After an uplink packet on the channel, RTP from the same member is ignored this long: the
#: data channel wins, and two timelines in one jitter buffer would restart it at every packet.
CHANNEL_WINS_S = 1.0
#: The most bytes waiting in a listener's channel before a mix packet is dropped instead of
#: queued (three packets of 128 kb/s stereo at 20 ms are about 1 kB): a slow receiver must not
#: make the server hold seconds of its mix.
MAX_BUFFERED_BYTES = 4096


class PacketError(ValueError):
    """A message that is no audio packet; ``reason`` is its drop reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AudioPacket:
    """One data-channel audio packet (the fields of the table above)."""

    sequence: int
    timestamp: int
    capture_us: int
    opus: bytes
    flags: int = 0


def pack(packet: AudioPacket) -> bytes:
    """``packet`` as one channel message; the numbers are taken modulo their field's width."""
    return HEADER.pack(VERSION, packet.flags & 0xFF, packet.sequence & 0xFFFF,
                       packet.timestamp & 0xFFFF_FFFF, packet.capture_us & 0xFFFF_FFFF) \
        + packet.opus


def parse(message: bytes | str) -> AudioPacket:
    """The packet in ``message``, checked for shape (not the Opus inside: see
    :meth:`ChannelUplink.receive`).

    Raises
    ------
    PacketError
        ``dc_text`` for a text message, ``dc_short`` under :data:`MIN_PACKET` bytes,
        ``dc_oversized`` over :data:`MAX_PACKET`, ``dc_version`` for a version other than
        :data:`VERSION`.
    """
    if isinstance(message, str):
        raise PacketError("dc_text", "a text message: audio packets are binary")
    if len(message) < MIN_PACKET:
        raise PacketError("dc_short", f"{len(message)} bytes: a packet has a {HEADER.size}-byte "
                          "header and at least one byte of Opus")
    if len(message) > MAX_PACKET:
        raise PacketError("dc_oversized", f"{len(message)} bytes: at most {MAX_PACKET}")
    version, flags, sequence, timestamp, capture_us = HEADER.unpack_from(message)
    if version != VERSION:
        raise PacketError("dc_version", f"version {version}: this server speaks {VERSION}")
    return AudioPacket(sequence, timestamp, capture_us, bytes(message[HEADER.size:]), flags)


class TokenBucket:
    """``rate_per_s`` events a second on average, ``burst`` at once (a token bucket).

    The clock is the caller's: :meth:`take` is given the time in seconds.
    """

    def __init__(self, rate_per_s: float, burst: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = burst
        self._at: float | None = None

    def take(self, now: float) -> bool:
        """Whether one more event may pass at ``now`` (it spends a token if so)."""
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@dataclass(frozen=True, slots=True)
class Accepted:
    """An uplink packet to push: ``timestamp`` unwrapped (the buffer's timeline), ``opus``."""

    timestamp: int
    opus: bytes


@dataclass(frozen=True, slots=True)
class Dropped:
    """An uplink message dropped for ``reason`` (one of ingress's :data:`REASONS`)."""

    reason: str


class ChannelUplink:
    """One member's uplink on its audio channel(s): which messages become frames.

    ``frame`` is the room's frame in samples: a packet must hold exactly that much Opus.
    Sequence numbers are not used to judge: the jitter buffer orders frames by timestamp,
    drops duplicates and late ones.
    """

    def __init__(self, frame: int = FRAME) -> None:
        self.frame = frame
        self.bucket = TokenBucket(FLOOD_RATE_FRAMES * SAMPLE_RATE / frame, FLOOD_BURST)
        #: Messages received, dropped or not (the media watchdog counts them as traffic).
        self.messages = 0
        self.accepted = 0
        self._last: int | None = None
        self._accepted_at: float | None = None

    def receive(self, message: bytes | str, now: float) -> Accepted | Dropped:
        """Judge one message that arrived at ``now`` (seconds)."""
        self.messages += 1
        if not self.bucket.take(now):
            return Dropped("dc_flood")
        try:
            packet = parse(message)
        except PacketError as exc:
            return Dropped(exc.reason)
        samples = packet_samples(packet.opus)
        if samples < 0:
            return Dropped("malformed_opus")
        if samples != self.frame:
            return Dropped("dc_duration")
        self._last = unwrap_timestamp(self._last, packet.timestamp)
        self.accepted += 1
        self._accepted_at = now
        return Accepted(self._last, packet.opus)

    def active(self, now: float) -> bool:
        """Whether a packet was accepted in the last :data:`CHANNEL_WINS_S` before ``now``."""
        return self._accepted_at is not None and now - self._accepted_at < CHANNEL_WINS_S


class ChannelDownlink:
    """A listener's mix as channel messages: sequence +1 per packet, the tick's room sample
    as timestamp."""

    def __init__(self, frame: int = FRAME) -> None:
        self.frame = frame
        self._sequence = 0

    def messages(self, packets: list[bytes], room_sample: int, capture_us: int) -> list[bytes]:
        """One message per Opus packet of a tick that started at ``room_sample``; packet ``k``
        starts ``k`` frames later."""
        out = []
        for k, opus in enumerate(packets):
            out.append(pack(AudioPacket(self._sequence, room_sample + k * self.frame,
                                        capture_us, opus)))
            self._sequence = (self._sequence + 1) & 0xFFFF
        return out


class AudioChannel:
    """The shell around one member's audio ``RTCDataChannel`` (aiortc).

    Its messages go through ``uplink`` (shared by the member's channels: one flood budget per
    member) into ``buffer`` (``None``: the member may not publish; its messages are read and
    ignored); drops are counted in ``drops``. :meth:`send_mix` sends the listener's mix.
    """

    def __init__(self, channel, uplink: ChannelUplink, buffer: JitterBuffer | None,
                 drops: DropCounts, clock: Callable[[], float] = time.monotonic) -> None:
        self.channel = channel
        self.uplink = uplink
        self.buffer = buffer
        self.drops = drops
        self.downlink = ChannelDownlink(uplink.frame)
        self._clock = clock
        channel.on("message", self.receive)

    @property
    def open(self) -> bool:
        return self.channel.readyState == "open"

    def receive(self, message: bytes | str) -> None:
        now = self._clock()
        verdict = self.uplink.receive(message, now)
        if isinstance(verdict, Dropped):
            self.drops.add(verdict.reason)
        elif self.buffer is not None:
            self.buffer.push(verdict.timestamp, verdict.opus, now)

    def send_mix(self, packets: list, room_sample: int) -> int:
        """Send one tick's Opus packets (``bytes`` or ``av.Packet``) of the listener's mix;
        returns how many were dropped instead, the channel holding :data:`MAX_BUFFERED_BYTES`
        already (or closing)."""
        capture_us = int(self._clock() * 1e6)
        dropped = 0
        for message in self.downlink.messages([bytes(p) for p in packets], room_sample,
                                              capture_us):
            if self.channel.bufferedAmount > MAX_BUFFERED_BYTES:
                dropped += 1
                continue
            try:
                self.channel.send(message)
            except Exception:  # closing under us (aiortc raises InvalidStateError)
                dropped += 1
                log.debug("mix packet not sent: the channel is %s", self.channel.readyState)
        return dropped
