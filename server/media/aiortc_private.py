"""Every place spatialjam reaches into aiortc's (and aioice's) private state, in one module.

aiortc has no public hook for three things a jam server needs, so this module touches private
names, each checked with ``hasattr`` so that an aiortc upgrade that moves one fails loudly at
the first peer (``RuntimeError`` naming what is missing) rather than silently playing late.
Written against aiortc 1.14–1.16 and aioice 0.10–0.13. What each touches, and why:

- ``RTCRtpReceiver.__jitter_buffer`` (name-mangled ``_RTCRtpReceiver__jitter_buffer``):
  aiortc's audio receiver holds packets in a 4-frame jitter buffer before decoding (80 ms,
  more after a loss). :func:`replace_jitter_buffer` puts our own object with its
  ``add``/``remove`` interface in its place: the packet tap (:mod:`server.media.uplink`) or a
  pass-through.
- ``RTCRtpReceiver.__codecs`` (``_RTCRtpReceiver__codecs``): which payload type is Opus on this
  receiver, so the tap keeps Opus packets encoded (:func:`receiver_codec`).
- ``RtpPacket._data``: the packet's payload as aiortc holds it (:func:`rtp_payload`); the
  public ``payload`` is the same bytes after depacketisation, which audio does not need.
- ``RTCIceGatherer._connection`` and ``aioice.Connection._protocols``: the UDP sockets of a
  peer, so that empty and unparsable datagrams are dropped before aioice and aiortc's DTLS
  transport see them (:func:`udp_protocols`; :mod:`server.media.ingress` says why).
- ``RTCPeerConnection.__iceTransports`` (``_RTCPeerConnection__iceTransports``) and
  ``aioice.Connection.get_component_candidates``, ``aioice.ice.StunProtocol``,
  ``StunProtocol.local_candidate``, ``aioice.ice.server_reflexive_candidate``: aioice binds
  its host sockets to port 0 (any port) with no option to choose; ``serve --udp-ports`` needs
  them inside one range (:mod:`server.media.ports`). :func:`bind_host_sockets` has every ICE
  connection of a peer gather its host candidates on sockets bound by us, and leaves the rest
  of gathering (the TURN relay) to aioice with no host address to bind.
- ``RTCDtlsTransport._get_stats``: what arrived on the DTLS transport under a peer's SCTP
  association (:func:`sctp_transport_stats`); aiortc's ``getStats`` reports transports only
  through RTP senders and receivers, so a peer with data channels only reports none, and the
  media watchdog would take its live connection for a dead one.
- ``aioice.Connection._nominated`` (component → ``CandidatePair``) and the pair's
  ``local_candidate`` / ``remote_candidate``: which way the media goes once ICE has chosen
  (:func:`selected_candidates`); aiortc has no ``getStats`` entry for the selected pair. Read by
  the deployment tests (direct, through NAT, or relayed), never on the media path.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable

import aioice.ice
import aioice.turn
from aioice.candidate import Candidate, candidate_foundation, candidate_priority

_JITTER_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"
_CODECS_ATTR = "_RTCRtpReceiver__codecs"


def rtp_payload(packet) -> bytes:
    """The payload of an aiortc ``RtpPacket`` as received (before depacketisation)."""
    return packet._data


def replace_jitter_buffer(receiver, buffer) -> None:
    """Put ``buffer`` (aiortc's ``add``/``remove`` interface) in place of ``receiver``'s audio
    jitter buffer.

    Raises
    ------
    RuntimeError
        If this aiortc version keeps no jitter buffer there.
    """
    if not hasattr(receiver, _JITTER_BUFFER_ATTR):
        raise RuntimeError("this aiortc version has no receiver jitter buffer to replace")
    setattr(receiver, _JITTER_BUFFER_ATTR, buffer)


def receiver_codec(receiver, payload_type: int):
    """The ``RTCRtpCodecParameters`` that ``receiver`` decodes ``payload_type`` with, or None.

    Raises
    ------
    RuntimeError
        If this aiortc version keeps no codecs on its receivers.
    """
    if not hasattr(receiver, _CODECS_ATTR):
        raise RuntimeError("this aiortc version keeps no codecs on its receivers")
    return getattr(receiver, _CODECS_ATTR).get(payload_type)


def check_receiver_codecs(receiver) -> None:
    """Raise ``RuntimeError`` now, not at the first packet, if :func:`receiver_codec` cannot
    work on this aiortc version."""
    if not hasattr(receiver, _CODECS_ATTR):
        raise RuntimeError("this aiortc version keeps no codecs on its receivers")


def ice_connections(pc) -> list:
    """The aioice connections under ``pc``'s transports (one when bundled), as gathered so far.

    Raises
    ------
    RuntimeError
        If this aiortc version keeps its ICE connection elsewhere.
    """
    transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    connections = []
    for dtls in transports:
        gatherer = dtls.transport.iceGatherer
        connection = getattr(gatherer, "_connection", None)
        if connection is None or not hasattr(connection, "_protocols"):
            raise RuntimeError("this aiortc version keeps no aioice connection on its "
                               "ICE gatherer: datagrams cannot be guarded")
        if connection not in connections:
            connections.append(connection)
    return connections


def selected_candidates(pc) -> tuple[Candidate, Candidate] | None:
    """The local and remote candidates of the pair ICE nominated for ``pc``'s media (RTP,
    component 1); None before one is nominated.

    Raises
    ------
    RuntimeError
        If this aioice version keeps its nominated pairs elsewhere.
    """
    connections = ice_connections(pc)
    if not connections:
        return None
    nominated = getattr(connections[0], "_nominated", None)
    if nominated is None:
        raise RuntimeError("this aioice version keeps no nominated pairs on its connection")
    pair = nominated.get(1)
    return None if pair is None else (pair.local_candidate, pair.remote_candidate)


def udp_protocols(pc) -> list:
    """The asyncio datagram protocols of every UDP socket ``pc`` has gathered so far (their
    ``datagram_received`` is what a guard wraps)."""
    return [protocol for connection in ice_connections(pc) for protocol in connection._protocols]


_ICE_TRANSPORTS_ATTR = "_RTCPeerConnection__iceTransports"
#: Set on an aioice connection whose host sockets :func:`bind_host_sockets` binds.
_BOUND_MARK = "_spatialjam_binds_hosts"


def bind_host_sockets(pc, bind: Callable[[list[str]], list[socket.socket]]) -> None:
    """Have each ICE connection of ``pc`` that has not gathered yet take its host sockets
    from ``bind(addresses)`` (UDP sockets, one per address it can bind, all ready) instead of
    binding port 0 itself. Call after ``setRemoteDescription`` (aiortc makes the transports
    there) and before ``setLocalDescription`` (which gathers). What ``bind`` raises comes out
    of ``setLocalDescription``.

    Raises
    ------
    RuntimeError
        If this aiortc or aioice version gathers elsewhere.
    """
    transports = getattr(pc, _ICE_TRANSPORTS_ATTR, None)
    if transports is None or not hasattr(aioice.turn, "UDP_SOCKET_BUFFER_SIZE") \
            or not all(hasattr(aioice.ice, name) for name in (
                "StunProtocol", "server_reflexive_candidate")):
        raise RuntimeError("this aiortc/aioice version keeps its ICE transports or gathering "
                           "elsewhere: --udp-ports cannot bind there")
    for transport in transports:
        connection = getattr(transport.iceGatherer, "_connection", None)
        if connection is None or not hasattr(connection, "get_component_candidates") \
                or not hasattr(connection, "_protocols"):
            raise RuntimeError("this aioice version gathers its candidates elsewhere: "
                               "--udp-ports cannot bind there")
        if getattr(connection, _BOUND_MARK, False):
            continue
        setattr(connection, _BOUND_MARK, True)
        connection.get_component_candidates = _gatherer(
            connection, connection.get_component_candidates, bind)


def _gatherer(connection, aioice_gather, bind):
    """``connection.get_component_candidates`` with host sockets from ``bind``: host
    candidates on them, server-reflexive ones through its STUN server (IPv4, as aioice does),
    and aioice's own gathering, with no address to bind, for the relayed candidate."""
    async def gather(component: int, addresses: list[str], timeout: int = 5) -> list:
        loop = asyncio.get_running_loop()
        hosts = []
        for sock in bind(addresses):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                            aioice.turn.UDP_SOCKET_BUFFER_SIZE)
            _, protocol = await loop.create_datagram_endpoint(
                lambda: aioice.ice.StunProtocol(connection), sock=sock)
            host, port = sock.getsockname()[:2]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host), component=component,
                transport="udp", priority=candidate_priority(component, "host"), host=host,
                port=port, type="host")
            hosts.append(protocol)
        connection._protocols += hosts
        reflexive = [asyncio.ensure_future(aioice.ice.server_reflexive_candidate(
            protocol, connection.stun_server)) for protocol in hosts
            if connection.stun_server
            and ipaddress.ip_address(protocol.local_candidate.host).version == 4]
        candidates = [protocol.local_candidate for protocol in hosts]
        candidates += await aioice_gather(component=component, addresses=[], timeout=timeout)
        if reflexive:
            done, pending = await asyncio.wait(reflexive, timeout=timeout)
            for task in pending:
                task.cancel()
            candidates += [task.result()[0] for task in done if task.exception() is None]
        return candidates

    return gather


def sctp_transport_stats(pc) -> dict:
    """The ``transport`` stats (by id) of the DTLS transport that carries ``pc``'s data
    channels; empty when it has none.

    Raises
    ------
    RuntimeError
        If this aiortc version's DTLS transport keeps no ``_get_stats``.
    """
    sctp = pc.sctp
    if sctp is None:
        return {}
    get_stats = getattr(sctp.transport, "_get_stats", None)
    if get_stats is None:
        raise RuntimeError("this aiortc's RTCDtlsTransport has no _get_stats: the media "
                           "watchdog cannot see data-channel traffic (server.media.aiortc_private)")
    return dict(get_stats())
