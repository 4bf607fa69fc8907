"""Does a personal mix keep flowing? Gaps in the RTP stream a listener receives.

The server sends each listener one Opus packet per 20 ms room tick (:data:`FRAME` = 960
samples of RTP timestamp per packet). At a listener, two things show that the stream flows:

- **frames missing in a row**, from RTP: consecutive packets' timestamps advance by
  :data:`FRAME`; a step of ``k · FRAME`` means ``k − 1`` frames never came (lost on the way,
  or dropped from the server's full send queue). Sequence numbers that never came are counted
  apart (``lost``). A tick that produces no packet at all (a failed or skipped tick) leaves no
  hole in the numbering: the next packet simply comes later, so it shows only in
- **the longest time without a packet**, on the receiver's wall clock (``time.monotonic``
  when aiortc hands the packet to its jitter buffer): 20 ms when all is well, about 40 ms for
  one tick that sent nothing, more when the server stalls. The gaps across the window's
  edges count too, and a stream that stops before the window ends has a gap up to its end.

**The machine's share.** On a machine shared with other work, a gap also grows while the
server's or the listener's threads wait for a CPU that others hold, which says nothing about
the server. With each arrival, :class:`ArrivalLog` also notes the machine's *CPU stall* time
so far: Linux's pressure stall information (``/proc/pressure/cpu``, ``some``: time in which
at least one runnable task waited for a CPU). A gap's stall is the stall time that passed
from the arrival before the gap's first packet to the packet that ends it: that packet was on
its way (tick, encoding, sending, receiving) for up to a tick before the gap began, so a stall
then can have delayed it too. ``max_gap_less_stall_ms`` is the longest gap less its stall:
what contention for the CPU does not explain. On an idle machine the two are equal. A gap
made by the server itself, by a tick that sent nothing or by an event loop blocked in one
thread, holds no stall unless other threads wanted the CPUs meanwhile (on 2 cores: the test's
own processes count too, so a fault that makes the server busy in several threads, or a
process it starts, is discounted as well).

What the packets hold is checked too: :meth:`ArrivalLog.band_levels_db` decodes the packets
that arrived in a window, afterwards, so that the content checked is exactly that of the packets
timed (a live decoder's output comes later, by a thread's scheduling).

:class:`ArrivalLog` stands in for an aiortc receiver's jitter buffer: it notes every packet
(number, timestamp, arrival, CPU stall so far, payload) and decodes nothing while the stream
runs. :class:`GapBot` is a :class:`bench.bot.Bot` with one in its receiver (or behind its
audio data channel: the same numbers, in the packets' header). :func:`measure`
is the arithmetic (no I/O, times are arguments).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from aiortc.jitterbuffer import JitterFrame
from scipy.signal import butter, sosfilt

from bench.bot import Bot, silence
from hrtf.constants import FRAME, SAMPLE_RATE
from server.media.aiortc_private import replace_jitter_buffer, rtp_payload
from server.media.datachannel import PacketError, parse
from server.media.opus import OpusDecoder
from server.media.uplink import receiver_of

PSI_CPU = "/proc/pressure/cpu"
#: Packets decoded before a window to settle the decoder (:meth:`ArrivalLog.band_levels_db`).
PREROLL_PACKETS = 10


@dataclass(frozen=True)
class GapReport:
    """What arrived of one RTP stream in a window of time.

    Attributes
    ----------
    packets : int
        Packets that arrived in the window (duplicates and reordered ones included).
    lost : int
        Sequence numbers skipped between consecutive packets.
    missing_run : int
        The most frames missing in a row, from RTP timestamp steps (0: none missing).
    max_gap_ms : float
        The longest wall-clock time without a packet (ms), across the window's edges too.
    worst_at : float
        When that longest gap ended (seconds, the clock the arrivals were stamped with).
    max_gap_less_stall_ms : float
        The longest gap less the machine's CPU stall time around it (ms); a gap from or to an
        edge of the window with no packet beyond it counts in full.
    stall_ms : float
        The machine's CPU stall time from the first arrival to the last (ms).
    """

    packets: int
    lost: int
    missing_run: int
    max_gap_ms: float
    worst_at: float
    max_gap_less_stall_ms: float
    stall_ms: float


def measure(seq: np.ndarray, timestamp: np.ndarray, at: np.ndarray, start: float,
            end: float, stall: np.ndarray | None = None) -> GapReport:
    """Gaps of the packets that arrived from ``start`` to ``end`` (seconds).

    Every time between two arrivals that overlaps the window counts, those across its edges
    included; where no packet came before ``start`` (or after ``end``), the time from the edge
    to the first (from the last) packet counts instead, undiscounted.

    Parameters
    ----------
    seq, timestamp, at : numpy.ndarray
        Every packet's RTP sequence number (16 bits), RTP timestamp (32 bits, 48 kHz) and
        arrival time (seconds), in arrival order.
    start, end : float
        The window, on the clock of ``at``.
    stall : numpy.ndarray, optional
        The machine's CPU stall time so far at each arrival (seconds, :class:`CpuStall`);
        without it, no gap is discounted.
    """
    n = len(at)
    stall = np.zeros(n) if stall is None else stall
    first = int(np.searchsorted(at, start, "left"))
    stop = int(np.searchsorted(at, end, "right"))
    lo, hi = max(first - 1, 0), min(stop + 1, n)
    # Between arrivals k and k + 1 a gap is discounted by the stall from arrival k − 1 on (see
    # the module docstring).
    k = np.arange(lo, hi - 1)
    gaps = at[k + 1] - at[k]
    discounts = stall[k + 1] - stall[np.maximum(k - 1, 0)]
    ends = at[k + 1]
    if first == 0:  # nothing came before the window: from its start
        gaps = np.append(gaps, (at[0] if n else end) - start)
        discounts, ends = np.append(discounts, 0.0), np.append(ends, at[0] if n else end)
    if stop == n and n:  # nothing came after the window: to its end
        gaps = np.append(gaps, end - at[-1])
        discounts, ends = np.append(discounts, 0.0), np.append(ends, end)
    worst = int(np.argmax(gaps))
    seq, timestamp = seq[first:stop], timestamp[first:stop]
    lost = missing_run = 0
    if len(seq) > 1:
        seq_step = np.diff(seq.astype(np.int64)) % (1 << 16)
        ts_step = np.diff(timestamp.astype(np.int64)) % (1 << 32)
        onward = (seq_step > 0) & (seq_step < (1 << 15))  # not a duplicate or a late packet
        lost = int(np.sum(seq_step[onward] - 1))
        frames = ts_step[onward] // FRAME
        missing_run = int(max(0, frames.max(initial=1) - 1))
    inside = stall[first:stop]
    return GapReport(packets=stop - first, lost=lost, missing_run=missing_run,
                     max_gap_ms=1e3 * float(gaps[worst]), worst_at=float(ends[worst]),
                     max_gap_less_stall_ms=1e3 * float(np.max(gaps - discounts)),
                     stall_ms=1e3 * float(inside[-1] - inside[0]) if len(inside) else 0.0)


class CpuStall:
    """The machine's CPU stall time so far (seconds): Linux's pressure stall information,
    ``some`` line of ``/proc/pressure/cpu`` (microseconds in which at least one runnable task
    waited for a CPU). Reads 0.0 where the kernel has no such file: nothing is discounted."""

    def __init__(self, path: str = PSI_CPU) -> None:
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY)
        except OSError:
            self._fd = None

    def __call__(self) -> float:
        if self._fd is None:
            return 0.0
        some = os.pread(self._fd, 256, 0).split(b"\n", 1)[0]
        return int(some.rsplit(b"total=", 1)[1]) / 1e6

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ArrivalLog:
    """Stands in for an aiortc receiver's jitter buffer: notes each packet's sequence number,
    timestamp, arrival (``clock()``, seconds), the machine's CPU stall so far (``stall()``,
    seconds) and payload; hands nothing on to be decoded."""

    capacity = 1

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 stall: Callable[[], float] | None = None) -> None:
        self.clock = clock
        self.stall = stall or CpuStall()
        self._seq: list[int] = []
        self._timestamp: list[int] = []
        self._at: list[float] = []
        self._stall: list[float] = []
        self._payload: list[bytes] = []

    def add(self, packet) -> tuple[bool, JitterFrame | None]:
        self.note(packet.sequence_number, packet.timestamp, bytes(rtp_payload(packet)))
        return False, None

    def note(self, seq: int, timestamp: int, payload: bytes) -> None:
        """One packet arrived now (an RTP packet's fields, or a data-channel packet's)."""
        self._seq.append(seq)
        self._timestamp.append(timestamp)
        self._at.append(self.clock())
        self._stall.append(self.stall())
        self._payload.append(payload)

    def remove(self, count: int) -> None:  # called by aiortc on reset; nothing is held
        return None

    def __len__(self) -> int:
        return len(self._at)

    def report(self, start: float, end: float) -> GapReport:
        """:func:`measure` over what arrived from ``start`` to ``end``."""
        return measure(np.array(self._seq, np.int64), np.array(self._timestamp, np.int64),
                       np.array(self._at, np.float64), start, end,
                       np.array(self._stall, np.float64))

    def band_levels_db(self, start: float, end: float, freq_hz: float,
                       preroll: int = PREROLL_PACKETS) -> np.ndarray:
        """The level of each packet that arrived from ``start`` to ``end``, in a band around
        ``freq_hz`` (:func:`band_levels_db`, dB re full scale).

        The packets are decoded afterwards, in arrival order, by a fresh Opus decoder (stereo
        mixed down to mono). A fresh decoder predicts each frame's band energies from the
        frame before, which it has not seen: its first frames come out up to 7 dB low, for
        about 100 ms. So the decoder and the filter first run over up to ``preroll`` packets
        that arrived before the window, whose levels are left out.
        """
        inside = [k for k, at in enumerate(self._at) if start <= at <= end]  # consecutive
        if not inside:
            return np.zeros(0)
        first = max(0, inside[0] - preroll)
        decoder = OpusDecoder()
        frames = np.stack([decoder.decode(p) for p in self._payload[first:inside[-1] + 1]])
        return band_levels_db(frames, freq_hz)[inside[0] - first:]


class GapBot(Bot):
    """A :class:`~bench.bot.Bot` whose receiver notes every packet of its mix as it arrives
    (:attr:`arrivals`) and decodes none while it runs; on either transport (the data
    channel's packets have the same sequence numbers and timestamps)."""

    def __init__(self, url: str, room: str, name: str, signal=silence,
                 transport: str = "media") -> None:
        super().__init__(url, room, name, signal, stock_receiver=True, transport=transport)
        self._stall = CpuStall()
        self.arrivals = ArrivalLog(stall=self._stall)

    def mix_message(self, message: bytes | str) -> None:
        try:
            packet = parse(message)
        except PacketError:
            self.bad_packets += 1
            return
        self.arrivals.note(packet.sequence, packet.timestamp, packet.opus)

    def prepare_peer(self, pc) -> None:
        @pc.on("track")
        def log_arrivals(track) -> None:  # runs before Bot's own handler
            replace_jitter_buffer(receiver_of(pc, track), self.arrivals)

    async def close(self) -> None:
        await super().close()
        self._stall.close()


def band_levels_db(frames: np.ndarray, freq_hz: float) -> np.ndarray:
    """Each frame's level (dB re full scale) in a band of ``freq_hz`` × 0.8–1.25.

    ``frames`` is ``(frames, FRAME)``; they are filtered as one signal (4th-order Butterworth
    band-pass), so the first frame holds the filter's onset.
    """
    sos = butter(4, [freq_hz * 0.8, freq_hz * 1.25], btype="band", fs=SAMPLE_RATE,
                 output="sos")
    y = sosfilt(sos, frames.reshape(-1).astype(np.float64))
    return 10 * np.log10(np.mean(y.reshape(len(frames), -1) ** 2, axis=1) + 1e-20)
