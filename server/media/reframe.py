"""A source whose packets are longer than the room's frame, played one room frame per tick.

A browser's media track sends 20 ms Opus packets whatever the room's frame; a 5 ms room ticks
four times per packet. The source's :class:`~server.media.jitter.JitterBuffer` then holds whole
packets (its :attr:`~server.media.jitter.JitterBuffer.frame` is the packet's length, set by the
packet tap), and the :class:`Reframer` pops one only on the tick that begins it: that tick's
:class:`~server.media.jitter.Playout` says how many room frames it spans, the
:class:`~server.media.uplink.UplinkDecoder` decodes the packet once (or conceals all of it, from
the next packet's FEC or by Opus PLC, when it is lost) and the next ``span - 1`` ticks play on
in it (:data:`~server.media.jitter.CONTINUED`). A source whose packets are the room's frame
passes straight through. No I/O: the runner calls :meth:`Reframer.pop` on the loop, once per
tick.
"""

from __future__ import annotations

import dataclasses
import math

from server.media.jitter import CONTINUED, JitterBuffer, Playout


class Reframer:
    """Hands the tick one room frame of ``buffer``'s source at a time."""

    def __init__(self, buffer: JitterBuffer) -> None:
        self.buffer = buffer
        self._left = 0  # ticks still to play of the packet begun
        self._heard = False  # whether that packet played (not concealed)
        #: The wait of the packet the last :meth:`pop` began (ms), as the buffer times it;
        #: ``inf`` on a tick that plays on in a packet that played (it arrived long before),
        #: None when nothing played (see :class:`~server.tick.phase.PhaseAligner`).
        self.last_wait_ms: float | None = None

    def pop(self, now: float | None = None) -> Playout:
        """What this tick plays of the source (``now`` as for the buffer's ``pop``)."""
        if self._left > 0:
            self._left -= 1
            self.last_wait_ms = math.inf if self._heard else None
            return CONTINUED
        buffer = self.buffer
        playout = buffer.pop(now)
        self.last_wait_ms = buffer.last_wait_ms
        span = buffer.frame // buffer.room_frame
        if playout.buffering or span <= 1:
            return playout
        self._left = span - 1
        self._heard = playout.frame is not None
        return dataclasses.replace(playout, span=span)
