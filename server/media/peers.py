"""Each member's WebRTC peer connection: offers, answers, trickled ICE, and a watch on its media.

The signaling handlers of :class:`Peers` apply ``offer``, ``answer`` and ``ice`` (docs/PROTOCOL.md)
to the member's aiortc ``RTCPeerConnection``: an offer is checked before aiortc reads it
(:mod:`server.media.sdp`), the answer carries Opus in real stereo, the peer's UDP sockets are
guarded (:mod:`server.media.ingress`), its incoming audio goes through the packet tap into the
source's jitter buffer (:mod:`server.media.uplink`) and its outgoing track is the listener's
mix (:mod:`server.media.downlink`). A member that opens an ``audio`` data channel uses the
data-channel transport (:mod:`server.media.datachannel`): its packets go into the same jitter
buffer, its mix goes back on the channel, and its RTP (if it sends any) is ignored while the
channel carries its uplink; an offer with a data channel and no audio section gets no track.
The operator's ICE options (:class:`IceConfig`) give the peer its STUN and TURN servers,
bind its UDP sockets inside ``--udp-ports`` (:mod:`server.media.ports`) and add
``--public-ip`` to the answer's candidates (:func:`advertise_public`). A peer that fails, or
from which nothing arrives for :data:`MEDIA_SILENCE_S`, has its member evicted (the seat stays
for a rejoin).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from server.media.aiortc_private import bind_host_sockets, sctp_transport_stats
from server.media.datachannel import AUDIO_LABEL, AudioChannel, ChannelUplink
from server.media.ice import SERVER_IDENTITY, IceConfig, advertise_public
from server.media.ingress import DropCounts, guard_datagrams
from server.media.ports import PortsExhausted, UdpPortRange
from server.media.sdp import MAX_ICE_CANDIDATES, offer_failure, offer_problem, with_music_opus
from server.media.uplink import read_uplink, receiver_of, tap_receiver
from signaling.errors import ErrorCode
from signaling.messages import Answer, Ice, Offer
from signaling.server_messages import ErrorMessage, IceServer
from signaling.session import CLOSE_SERVER_ERROR

if TYPE_CHECKING:
    from server.rooms.live import Participant
    from signaling.access import Access

log = logging.getLogger(__name__)

#: An established media connection from which nothing at all (RTP, RTCP, DTLS) has arrived
#: for this long has lost its network: a frozen process or a dead link sends no TCP reset, and
#: ICE consent expiry (about 30 s) and the WebSocket keepalive (20 s + 20 s) notice late. A
#: live peer is never this quiet: its microphone track sends a packet every 20 ms, a muted one
#: included (browsers send silent frames), and as a receiver of its mix it sends RTCP reports
#: at least every 7.5 s without any track (browsers' 5 s audio interval, randomised up to
#: 1.5 times; aiortc's every 0.5 to 1.5 s). The member leaves; its seat stays for a rejoin.
MEDIA_SILENCE_S = 10.0
#: How often the media watchdog looks (seconds): a silent peer leaves MEDIA_SILENCE_S to
#: MEDIA_SILENCE_S + MEDIA_CHECK_S after its last packet.
MEDIA_CHECK_S = 1.0


async def packets_received(pc: RTCPeerConnection) -> int:
    """Datagrams received so far on ``pc``'s transports: DTLS (data channels' SCTP included),
    RTP and RTCP (ICE's own STUN checks are not counted)."""
    report = {**await pc.getStats(), **sctp_transport_stats(pc)}
    return sum(stats.packetsReceived for stats in report.values() if stats.type == "transport")


class Peers:
    """The ``offer``, ``answer`` and ``ice`` handlers, and the peers they make.

    Parameters
    ----------
    drops : DropCounts
        Where datagrams and payloads dropped before decoding are counted.
    evict : callable
        ``evict(p, code, reason)``: take ``p`` out of its room and close its signaling (the
        room's owner does it: a failed or silent peer ends its member's stay).
    ice : IceConfig
        The operator's ICE options (``serve --public-ip``, ``--udp-ports``, ``--ice-server``,
        ``--turn-secret-file``); the default gathers host candidates on any port.
    """

    def __init__(self, drops: DropCounts,
                 evict: Callable[[Participant, int, str], Awaitable[None]],
                 ice: IceConfig | None = None) -> None:
        self.drops = drops
        self._evict = evict
        self.ice_config = ice or IceConfig()
        self.ports = UdpPortRange(*self.ice_config.udp_ports) if self.ice_config.udp_ports else None

    def ice_servers(self, access: Access, member_id: str) -> tuple[IceServer, ...]:
        """What a member's ``joined`` carries: the STUN and TURN servers, with TURN
        credentials minted for its identity (its member id in open rooms), valid until its
        access token's end."""
        return self.ice_config.ice_servers(access.identity or member_id, access.expires_at,
                                    time.time())

    async def answer(self, p: Participant, message: Answer) -> None:
        if p.pc is not None:
            await p.pc.setRemoteDescription(RTCSessionDescription(message.sdp, "answer"))

    async def offer(self, p: Participant, offer: Offer) -> None:
        live = p.live
        if live is None or p.member_id is None:
            return
        problem = offer_problem(offer.sdp)
        if problem is not None:
            p.session.refuse(offer, ErrorCode.BAD_SDP, problem, asyncio.get_running_loop().time())
            return
        slot = live.room.member(p.member_id).slot
        fresh_pc = p.pc is None
        if fresh_pc:
            p.pc = self._peer(p, slot)
            p.candidates = 0
        pc = p.pc
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
            if self.ports is not None:
                bind_host_sockets(pc, self.ports.bind)
            track = live.runner.tracks[slot]
            transceivers = pc.getTransceivers()
            if any(t.kind == "audio" for t in transceivers) \
                    and all(t.sender.track is not track for t in transceivers):
                pc.addTrack(track)  # not without an audio section: a data channel only
            await pc.setLocalDescription(await pc.createAnswer())
            guard_datagrams(pc, self.drops)
        except Exception as exc:  # aiortc raises many kinds on SDP it cannot use
            if fresh_pc:  # a renegotiation that fails keeps the connection that works
                p.pc = None
                await pc.close()
            if isinstance(exc, PortsExhausted):
                log.warning("offer of %s refused: %s", p.member_id, exc)  # no strike: not
                p.session.send(ErrorMessage(ErrorCode.MEDIA_PORTS_EXHAUSTED, str(exc),  # theirs
                                            offer.msg_id))
            else:
                p.session.refuse(offer, ErrorCode.BAD_SDP, offer_failure(exc),
                                 asyncio.get_running_loop().time())
            return
        sdp = advertise_public(with_music_opus(pc.localDescription.sdp), self.ice_config.public_ips)
        p.session.send(Answer(sdp=sdp, msg_id=offer.msg_id))

    def _peer(self, p: Participant, slot: int) -> RTCPeerConnection:
        servers = self.ice_config.ice_servers(SERVER_IDENTITY, None, time.time())
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[
            RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
            for s in servers]))
        buffer = p.live.runner.buffers[slot]
        listener = p.live.runner.tracks[slot]
        uplink = ChannelUplink()  # one per member: its channels share one flood budget

        @pc.on("track")
        def on_track(track) -> None:
            if track.kind != "audio" or not p.access.allows("publish"):
                return  # a listener without the publish grant is not heard
            tap_receiver(receiver_of(pc, track), buffer, self.drops, defer=uplink.active)
            # Opus packets go to the buffer from the tap; frames of anything else come here.
            p.tasks.append(asyncio.get_running_loop().create_task(read_uplink(track, buffer)))

        @pc.on("datachannel")
        def on_datachannel(channel) -> None:
            if channel.label != AUDIO_LABEL:
                return  # not ours: left unread
            audio = AudioChannel(channel, uplink,
                                 buffer if p.access.allows("publish") else None, self.drops)
            listener.channel = audio  # the latest channel carries the mix

            @channel.on("close")
            def on_close() -> None:
                if listener.channel is audio:
                    listener.channel = None

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState == "failed" and p.pc is pc:
                log.info("peer of %s failed: it leaves and its connection closes", p.member_id)
                await self._evict(p, CLOSE_SERVER_ERROR, "media connection failed")

        p.tasks.append(asyncio.get_running_loop().create_task(self._watch_media(p, pc)))
        return pc

    async def _watch_media(self, p: Participant, pc: RTCPeerConnection) -> None:
        """While ``pc`` is ``p``'s and connected, check every :data:`MEDIA_CHECK_S` that
        something arrived on it; after :data:`MEDIA_SILENCE_S` of nothing, ``p`` leaves its
        room (the seat stays) and its signaling closes (:data:`CLOSE_SERVER_ERROR`)."""
        loop = asyncio.get_running_loop()
        heard, heard_at = -1, loop.time()
        while p.pc is pc:
            await asyncio.sleep(MEDIA_CHECK_S)
            now = loop.time()
            if pc.connectionState != "connected":  # not established (yet): nothing to expect
                heard_at = now
                continue
            received = await packets_received(pc)
            if received != heard:
                heard, heard_at = received, now
            elif now - heard_at >= MEDIA_SILENCE_S and p.pc is pc:
                log.warning("nothing from %s's media connection for %.0f s: its network is "
                            "gone; it leaves (its seat stays)", p.member_id, now - heard_at)
                p.tasks.remove(asyncio.current_task())  # leaving cancels the others
                await self._evict(p, CLOSE_SERVER_ERROR,
                                  f"no media from you for {MEDIA_SILENCE_S:.0f} s")
                return

    async def ice(self, p: Participant, ice: Ice) -> None:
        if p.pc is None or ice.candidate is None:
            return
        p.candidates += 1
        if p.candidates > MAX_ICE_CANDIDATES:
            p.session.refuse(ice, ErrorCode.OUT_OF_RANGE,
                             f"a peer connection takes at most {MAX_ICE_CANDIDATES} trickled "
                             "ICE candidates: this one was dropped",
                             asyncio.get_running_loop().time())
            return
        try:
            candidate = candidate_from_sdp(ice.candidate.split(":", 1)[1])
        except (ValueError, IndexError, AssertionError) as exc:  # aiortc asserts 8 fields
            p.session.refuse(ice, ErrorCode.BAD_VALUE, "'candidate' cannot be parsed (RFC 8839, "
                             f"section 5.1): {str(exc) or 'too few fields'}"[:300],
                             asyncio.get_running_loop().time())
            return
        candidate.sdpMid = ice.sdp_mid
        candidate.sdpMLineIndex = ice.sdp_mline_index
        await p.pc.addIceCandidate(candidate)
