"""What reaches a peer connection's UDP sockets before aiortc reads it: datagrams from anyone.

aioice hands every datagram that does not parse as STUN to aiortc's DTLS transport, whatever
address it came from, and two kinds of junk then do harm (aiortc 1.16, aioice 0.13):

- an *empty* datagram ends the DTLS transport: its receive loop reads the first byte
  unguarded (``IndexError``), so one zero-length packet sent to a participant's media port
  silences them both ways while their connection still says "connected";
- a STUN message whose attribute has the wrong length (a 3-byte ``PRIORITY``…) lets
  :class:`struct.error` out of aioice's parser, and the event loop logs a traceback for each
  one: a log flood at the attacker's packet rate.

:func:`guard_datagrams` stands in front of each UDP socket of a peer connection and drops
both, counting them in a :class:`DropCounts` that ``/metrics`` reports
(``spatialjam_dropped_packets_total``). What passes goes to aioice unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiortc import RTCPeerConnection

from server.media.aiortc_private import udp_protocols

log = logging.getLogger(__name__)

#: Why a packet was dropped before anything decoded it: a zero-length datagram, a STUN message
#: aioice cannot parse, an RTP payload of the Opus type (or a data-channel packet's payload)
#: that is no Opus packet (RFC 6716, section 3; :class:`server.media.uplink.PacketTap`); and on
#: the data-channel transport (:mod:`server.media.datachannel`): a message shorter than a
#: header and one byte of Opus, longer than the longest packet, of another version, a text
#: message, one past the sender's packet rate, an Opus packet of another length than the
#: room's frame.
REASONS = ("empty_datagram", "malformed_stun", "malformed_opus", "dc_short", "dc_oversized",
           "dc_version", "dc_text", "dc_flood", "dc_duration")

_GUARDED = "_spatialjam_guarded"


class DropCounts:
    """Packets dropped at the media ingress, by reason (:data:`REASONS`), since start-up.

    Counted on the event loop only (aioice's sockets and aiortc's receivers run there).
    """

    def __init__(self) -> None:
        self.counts = dict.fromkeys(REASONS, 0)

    def add(self, reason: str) -> None:
        """Count one packet dropped for ``reason``."""
        self.counts[reason] += 1


def _guarded(receive: Callable[[bytes, tuple], None], drops: DropCounts):
    def datagram_received(data: bytes, addr: tuple) -> None:
        if not data:
            drops.add("empty_datagram")
            return
        try:
            receive(data, addr)
        except Exception as exc:  # aioice's STUN parser on junk (struct.error…)
            drops.add("malformed_stun")
            log.debug("datagram from %s dropped: %s: %s", addr, type(exc).__name__, exc)

    return datagram_received


def guard_datagrams(pc: RTCPeerConnection, drops: DropCounts) -> int:
    """Drop empty and unparsable datagrams at every UDP socket ``pc`` has gathered.

    Call after each ``setLocalDescription`` (candidates are gathered there); sockets guarded
    before are left as they are. Returns how many sockets were newly guarded.
    """
    added = 0
    for protocol in udp_protocols(pc):
        if getattr(protocol, _GUARDED, False):
            continue
        protocol.datagram_received = _guarded(protocol.datagram_received, drops)
        setattr(protocol, _GUARDED, True)
        added += 1
    return added
