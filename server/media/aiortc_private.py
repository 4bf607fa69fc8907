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
"""

from __future__ import annotations

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


def udp_protocols(pc) -> list:
    """The asyncio datagram protocols of every UDP socket ``pc`` has gathered so far (their
    ``datagram_received`` is what a guard wraps)."""
    return [protocol for connection in ice_connections(pc) for protocol in connection._protocols]
