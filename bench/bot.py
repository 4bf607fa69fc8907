"""A scripted participant: a real aiortc peer that joins a room over signaling, plays a
signal into its uplink and records the personal mix it receives.

Two transports: ``media`` (an RTP audio track, as a browser's fallback) and ``datachannel``
(an ``audio`` data channel, unordered and without retransmissions, carrying Opus packets
with the header of :mod:`server.media.datachannel`, as the browser's low-latency path does):
the bot encodes its signal with libopus frame by frame and decodes the mix packets it gets
as they arrive, so what it records reads the same either way.

Used by the integration tests and the scenario benchmarks (latency, capacity).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from collections.abc import Callable
from urllib.parse import urlencode

import av
import numpy as np
import websockets
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from hrtf.constants import FRAME, SAMPLE_RATE, frame_samples
from server.media.datachannel import AUDIO_LABEL, AudioPacket, PacketError, pack, parse
from server.media.opus import OpusDecoder, OpusEncoder, OpusError
from server.media.sdp import with_music_opus
from server.media.uplink import bypass_receiver_buffer, frame_to_mono, receiver_of

TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
TRANSPORTS = ("media", "datachannel")
#: The data-channel bot's uplink bitrate (mono Opus, restricted low delay).
CHANNEL_UPLINK_BITRATE = 64_000


#: The bitrate of a bot's own short Opus packets (``SignalTrack(frame=...)``).
SHORT_PACKET_BITRATE = 96_000


class SignalTrack(MediaStreamTrack):
    """Mono audio from a callable ``signal(start_sample, n) -> float32[n]``, paced in real time.

    By default in 20 ms frames that aiortc encodes (as a browser's media track sends them);
    with ``frame`` (samples of a shorter room frame: 2.5, 5 or 10 ms) in Opus packets that long,
    encoded here (libopus, low delay) and sent as they are."""

    kind = "audio"

    def __init__(self, signal, frame: int = FRAME) -> None:
        super().__init__()
        self.signal = signal
        self.frame = frame
        self._encoder = OpusEncoder(SHORT_PACKET_BITRATE, channels=1) if frame != FRAME else None
        self._start: float | None = None
        self._sent = 0
        #: time.monotonic() when each frame was handed to the peer connection.
        self.sent_at: list[float] = []

    async def recv(self) -> av.AudioFrame | av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._sent / SAMPLE_RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        samples = np.clip(self.signal(self._sent, self.frame), -1, 1)
        if self._encoder is not None:
            packet = av.Packet(self._encoder.encode(samples.reshape(-1, 1)))
            packet.pts, packet.time_base = self._sent, TIME_BASE
            self._sent += self.frame
            self.sent_at.append(time.monotonic())
            return packet
        pcm = np.round(samples * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._sent
        frame.time_base = TIME_BASE
        self._sent += FRAME
        self.sent_at.append(time.monotonic())
        return frame


def tone(freq_hz: float, level: float = 0.3):
    def signal(start: int, n: int) -> np.ndarray:
        t = (start + np.arange(n)) / SAMPLE_RATE
        return (level * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)

    return signal


def silence(start: int, n: int) -> np.ndarray:
    return np.zeros(n, np.float32)


def looped(audio: np.ndarray):
    """A signal that plays ``audio`` (mono float32 at 48 kHz) over and over."""
    audio = np.asarray(audio, np.float32)

    def signal(start: int, n: int) -> np.ndarray:
        return audio[(start + np.arange(n)) % len(audio)]

    return signal


class Bot:
    """One participant. ``async with Bot(url, room, name, signal) as bot: ...``"""

    def __init__(self, url: str, room: str, name: str, signal=silence,
                 instrument: str = "bot", stock_receiver: bool = False,
                 offer_filter: Callable[[str], str] | None = None,
                 answer_filter: Callable[[str], str] | None = None,
                 token: str | None = None, seat: str | None = None,
                 frame_ms: float | None = None, transport: str = "media") -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport {transport!r}: one of {', '.join(TRANSPORTS)}")
        self.url, self.room, self.name, self.instrument = url, room, name, instrument
        #: ``media`` (RTP track) or ``datachannel`` (the ``audio`` data channel).
        self.transport = transport
        #: The ``audio`` data channel (the datachannel transport), once made.
        self.channel = None
        #: Mix packets received on the channel that were no packet or no Opus.
        self.bad_packets = 0
        self._decoder: OpusDecoder | None = None
        #: A room access token (``spatialjam token``), sent in the handshake's URL.
        self.token = token
        #: The grants ``joined`` listed.
        self.grants: list[str] = []
        #: Keep aiortc's 4-frame receive buffer (True), or decode packets as they arrive.
        self.stock_receiver = stock_receiver
        #: Edits of the offer before it is sent and of the answer before it is applied, for
        #: example :meth:`bench.impair.Relay.rewrite_offer` / ``rewrite_answer``.
        self.offer_filter = offer_filter
        self.answer_filter = answer_filter
        #: The uplink's packets: 20 ms through aiortc's encoder (None, as a browser's media
        #: track), or Opus packets of ``frame_ms`` (2.5, 5 or 10) encoded by the bot.
        self.track = SignalTrack(signal, frame_samples(frame_ms) if frame_ms else FRAME)
        self._frame_chosen = frame_ms is not None
        #: The room's frame (ms), as ``joined`` said.
        self.frame_ms = 20.0
        #: The peer connection, made once ``joined`` has said which STUN and TURN servers to
        #: use (aiortc reads them only when a connection is made).
        self.pc: RTCPeerConnection | None = None
        #: The ``ice_servers`` of ``joined`` (RTCIceServer dictionaries).
        self.ice_servers: list[dict] = []
        self.participant: str | None = None
        #: The seat token: given, to come back to an earlier seat; then the one ``joined`` gave.
        self.seat = seat
        self.state: dict | None = None
        #: The ``server_closing`` notice, once the server said it is going away.
        self.server_closing: dict | None = None
        self.stats: dict | None = None
        self.stats_seen = 0  # ``stats`` messages so far
        self.errors: list[dict] = []
        #: Lines of chat, as they came (``chat_history``'s first, then each ``chat``).
        self.chat: list[dict] = []
        #: The last ``levels``: each source's level (dBFS), by id.
        self.levels: dict[str, float] = {}
        #: The last ``ai_hears``: what the room's AI musician hears, or None.
        self.ai_hears: dict | None = None
        #: Times the room's frame changed and the bot made a new peer connection for it.
        self.media_restarts = 0
        self.received: list[np.ndarray] = []  # stereo frames (n, 2) float32
        self.received_at: list[float] = []  # time.monotonic() when each frame arrived
        #: Each frame's place in the sender's stream (samples at 48 kHz, wrapping at 2**32):
        #: the RTP timestamp, or the data channel packet's room sample.
        self.received_pts: list[int] = []
        self._ws = None
        self._tasks: list[asyncio.Task] = []
        self._replies: dict[str, asyncio.Future] = {}

    async def __aenter__(self) -> Bot:
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        url = self.url if self.token is None else f"{self.url}?{urlencode({'token': self.token})}"
        self._ws = await websockets.connect(url)
        self._tasks.append(loop.create_task(self._read()))
        join = {"type": "join", "room": self.room, "name": self.name,
                "instrument": self.instrument}
        if self.seat is not None:
            join["seat"] = self.seat
        joined = await self.request(join, "joined")
        self.participant, self.seat = joined["participant"], joined["seat"]
        self.state = joined["state"]
        self.grants = joined.get("grants", [])
        self.ice_servers = joined.get("ice_servers", [])
        await self.start_media(joined.get("frame_ms", 20.0))

    async def start_media(self, frame_ms: float) -> None:
        """A peer connection to the room at its frame (``frame_ms``), offered and answered:
        after ``joined``, and again after ``frame_changed``."""
        loop = asyncio.get_running_loop()
        self.frame_ms = frame_ms
        if self.transport == "datachannel" and isinstance(self.track, SignalTrack) \
                and self.track.frame != frame_samples(self.frame_ms) \
                and not self._frame_chosen:  # the channel carries the room's frame (a light
            # bot's pre-encoded 20 ms packets are a whole number of any room's frames)
            self.track = SignalTrack(self.track.signal, frame_samples(self.frame_ms))
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[
            RTCIceServer(urls=s["urls"], username=s.get("username"),
                         credential=s.get("credential")) for s in self.ice_servers]))
        self.prepare_peer(self.pc)

        @self.pc.on("track")
        def on_track(track) -> None:
            if not self.stock_receiver:
                bypass_receiver_buffer(receiver_of(self.pc, track))
            self._tasks.append(loop.create_task(self._record(track)))

        if self.transport == "datachannel":
            self._open_channel(loop)
        else:
            self.pc.addTrack(self.track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = with_music_opus(self.pc.localDescription.sdp)
        if self.offer_filter is not None:
            offer = self.offer_filter(offer)
        answer = (await self.request({"type": "offer", "sdp": offer}, "answer"))["sdp"]
        if self.answer_filter is not None:
            answer = self.answer_filter(answer)
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def restart_media(self, frame_ms: float) -> None:
        """The room's frame changed (``frame_changed``): the server closed this bot's peer
        connection; a new one at ``frame_ms`` replaces it."""
        old, self.pc = self.pc, None
        if old is not None:
            await old.close()
        self.media_restarts += 1
        if isinstance(self.track, SignalTrack):  # paced afresh: no burst to catch up the gap
            self.track = SignalTrack(self.track.signal, self.track.frame)
        await self.start_media(frame_ms)

    def _open_channel(self, loop: asyncio.AbstractEventLoop) -> None:
        """The ``audio`` data channel: the signal goes out on it once it opens, the mix
        comes in on it (an offer with no audio section)."""
        channel = self.channel = self.pc.createDataChannel(AUDIO_LABEL, ordered=False,
                                                           maxRetransmits=0)
        self._decoder = OpusDecoder(channels=2)
        channel.on("message", self.mix_message)

        @channel.on("open")
        def on_open() -> None:
            self._tasks.append(loop.create_task(self._send_channel(channel)))

    def mix_message(self, message: bytes | str) -> None:
        """A message of the mix on the data channel: decoded (as it arrives) and recorded."""
        try:
            packet = parse(message)
            stereo = self._decoder.decode(packet.opus)
        except (PacketError, OpusError):
            self.bad_packets += 1
            return
        self.received.append(stereo)
        self.received_at.append(time.monotonic())
        self.received_pts.append(packet.timestamp)

    async def _send_channel(self, channel) -> None:
        """The signal, frame by frame in real time (paced by :class:`SignalTrack`), as Opus
        packets on ``channel``."""
        encoder = OpusEncoder(CHANNEL_UPLINK_BITRATE, channels=1)
        sequence = 0
        while channel.readyState == "open":
            try:
                frame = await self.track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, av.Packet):  # a short frame, encoded by the track
                opus = bytes(frame)
            else:
                opus = encoder.encode(frame.to_ndarray().reshape(-1, 1).astype(np.float32)
                                      / 32768.0)
            if channel.readyState != "open":  # closed while the frame was due
                return
            channel.send(pack(AudioPacket(sequence, int(frame.pts),
                                          int(time.monotonic() * 1e6), opus)))
            sequence += 1

    def prepare_peer(self, pc: RTCPeerConnection) -> None:
        """Called with the peer connection as soon as :meth:`connect` makes it, before the
        bot's own handlers are added: a subclass adds its own here."""

    async def request(self, message: dict, reply_type: str, timeout: float = 10.0) -> dict:
        future = asyncio.get_running_loop().create_future()
        self._replies[reply_type] = future
        await self.send(message)
        async with asyncio.timeout(timeout):
            return await future

    async def send(self, message: dict) -> None:
        await self._ws.send(json.dumps(message))

    async def send_bytes(self, data: bytes) -> None:
        """One binary frame: a chunk of an HRTF upload (``hrtf_upload``)."""
        await self._ws.send(data)

    async def _read(self) -> None:
        try:
            await self._read_messages()
        finally:  # the connection is over: nothing waited for will come
            for future in self._replies.values():
                if not future.done():
                    future.set_exception(ConnectionError(
                        f"the server closed the connection ({self._ws.close_code} "
                        f"{self._ws.close_reason or ''})".rstrip()))

    async def _read_messages(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for text in self._ws:
                message = json.loads(text)
                kind = message["type"]
                if kind == "room_state":
                    self.state = message
                elif kind == "stats":
                    self.stats = message
                    self.stats_seen += 1
                elif kind == "error":
                    self.errors.append(message)
                elif kind == "chat_history":
                    self.chat[:0] = message["lines"]
                elif kind == "chat":
                    self.chat.append(message)
                elif kind == "levels":
                    self.levels = message["levels"]
                elif kind == "ai_hears":
                    self.ai_hears = message
                elif kind == "server_closing":
                    self.server_closing = message
                elif kind == "frame_changed":
                    self._tasks.append(asyncio.get_running_loop().create_task(
                        self.restart_media(message["frame_ms"])))
                future = self._replies.pop(kind, None)
                if future is not None and not future.done():
                    future.set_result(message)
                if kind == "error":
                    for f in self._replies.values():
                        if not f.done():
                            f.set_exception(
                                RuntimeError(f"{message['code']}: {message['message']}"))

    async def _record(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            data = frame.to_ndarray()
            stereo = data.reshape(-1, len(frame.layout.channels)).astype(np.float32) / 32768.0
            if stereo.shape[1] == 1:
                stereo = np.repeat(stereo, 2, axis=1)
            self.received.append(stereo[:, :2])
            self.received_at.append(time.monotonic())
            self.received_pts.append(int(frame.pts or 0))

    def breaks(self, start: int, stop: int) -> int:
        """Places among received frames ``start:stop`` where a frame does not follow on from
        the one before in the sender's stream (one lost, late, repeated or reordered): the
        audio there is not continuous in time."""
        pts = np.array(self.received_pts[start:stop], dtype=np.int64)
        lengths = np.array([len(f) for f in self.received[start:stop - 1]], dtype=np.int64)
        return int(np.count_nonzero((pts[1:] - pts[:-1]) % 2**32 != lengths))

    def recording(self) -> np.ndarray:
        return np.concatenate(self.received) if self.received else np.zeros((0, 2), np.float32)

    async def flowing(self, frames: int = 5, timeout: float = 30.0) -> None:
        """Wait until the mix arrives: ``frames`` more frames than had come when called.

        A readiness signal to wait on before recording, rather than a fixed delay: a peer
        connection takes a while to carry media after ``connect``, and a server's first mixes
        may come late (a kernel compiled on a fresh install, a machine busy with other work).

        Raises
        ------
        TimeoutError
            No more than that came within ``timeout`` seconds.
        """
        start = len(self.received)
        try:
            async with asyncio.timeout(timeout):
                while len(self.received) < start + frames:
                    await asyncio.sleep(0.01)
        except TimeoutError:
            raise TimeoutError(f"{self.name} received {len(self.received) - start} frames of "
                               f"its mix in {timeout:g} s (waited for {frames})") from None

    async def listen(self, seconds: float) -> np.ndarray:
        """What arrives in the next ``seconds``."""
        start = len(self.received)
        await asyncio.sleep(seconds)
        got = self.received[start:]
        return np.concatenate(got) if got else np.zeros((0, 2), np.float32)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.pc is not None:
            await self.pc.close()
        if self._ws is not None:
            await self._ws.close()


__all__ = ["TRANSPORTS", "Bot", "SignalTrack", "frame_to_mono", "silence", "tone"]
