"""Shared by the hostile-input tests (``tests/integration/test_fuzz_*.py``,
``tests/integration/test_hostile_audio.py``): a room of two bots that must keep hearing each
other while something attacks the server, what they hear, and what the server's ``/metrics``
says.

Bot A plays a 700 Hz tone and bot B a 1100 Hz one; each hears the other's (its own voice is
left out of its mix). A tone's level is read from a Hann-windowed spectrum, so the other
sounds in a mix (noise, other tones) hardly move it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from bench.bot import Bot, tone
from bench.capacity import fetch_metrics
from hrtf.constants import FRAME_MS, SAMPLE_RATE

TONE_A_HZ = 700.0
TONE_B_HZ = 1100.0
#: Time for a fresh room's receive buffers to settle before a baseline is taken.
SETTLE_S = 1.5
FRAMES_PER_S = 1000 / FRAME_MS
#: A listener must receive at least this share of the frames a window should hold.
MIN_FRAME_SHARE = 0.8
#: A tone heard during an attack may be this much quieter than before it (a few concealed
#: frames cost a fraction of a dB; a mix that stops or stutters for a quarter of the time or
#: more loses far more).
MAX_LEVEL_DROP_DB = 6.0
#: Ticks a room may skip while under attack, of those it plays. A skipped tick is a loop held
#: up for 60 ms or more (server/tick/clock.py); this machine is shared, so a few happen anyway, but
#: an attack that stalls the loop skips far more (empty rooms that all tick: about 17%).
MAX_SKIPPED_SHARE = 0.03

_HOST_CANDIDATE_RE = re.compile(r"^a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host", re.MULTILINE)


def tone_db(stereo: np.ndarray, freq_hz: float) -> float:
    """Mean-square level (dB re 1) of the sine at ``freq_hz`` in ``stereo`` ``(n, 2)``.

    The power in the Hann window's main lobe around the tone's bin, scaled so that a sine of
    amplitude ``a`` reads ``10 log10(a**2 / 2)``; the two ears' powers are averaged.
    """
    if len(stereo) < SAMPLE_RATE // 10:
        return -np.inf
    x = stereo.astype(np.float64)
    window = np.hanning(len(x))
    spectrum = np.fft.rfft(x * window[:, None], axis=0)
    k = round(freq_hz * len(x) / SAMPLE_RATE)
    lobe = np.abs(spectrum[max(k - 3, 0):k + 4]) ** 2
    power = 2 * lobe.sum(axis=0) / (len(x) * np.sum(window**2))
    return float(10 * np.log10(power.mean() + 1e-20))


def media_ports(sdp: str) -> list[tuple[str, int]]:
    """The host candidates ``(address, port)`` of RTP component 1 in an SDP description."""
    return sorted({(host, int(port)) for host, port in _HOST_CANDIDATE_RE.findall(sdp)})


@dataclass
class Window:
    """What each bot heard over ``seconds``: frames received and the other's tone level."""

    seconds: float
    frames: dict[str, int]
    level_db: dict[str, float]

    def still_hearing(self, before: Window, excused_s: float = 0.0) -> list[str]:
        """What went wrong compared with ``before`` (nothing: an empty list).

        ``excused_s``: time of the window in which no frames are expected, such as the
        machine's CPU stall over it (:func:`ticks_the_machine_took`).
        """
        wrong = []
        for who, level in self.level_db.items():
            expected = MIN_FRAME_SHARE * max(0.0, self.seconds - excused_s) * FRAMES_PER_S
            if self.frames[who] < expected:
                wrong.append(f"{who} received {self.frames[who]} frames in {self.seconds:.1f} s "
                             f"(fewer than {expected:.0f})")
            if level < before.level_db[who] - MAX_LEVEL_DROP_DB:
                wrong.append(f"{who} hears the other's tone at {level:.1f} dB, down from "
                             f"{before.level_db[who]:.1f} dB")
        return wrong


class HearingPair:
    """Bots A and B in ``room``, each playing its tone and hearing the other's (on
    ``transport``: :data:`bench.bot.TRANSPORTS`).

    ``async with HearingPair(url, room) as pair:`` — joined, connected, both mixes flowing, and
    settled.
    """

    def __init__(self, url: str, room: str, transport: str = "media") -> None:
        self.a = Bot(url, room, "A", tone(TONE_A_HZ), transport=transport)
        self.b = Bot(url, room, "B", tone(TONE_B_HZ), transport=transport)

    async def __aenter__(self) -> HearingPair:
        await self.a.connect()
        await self.b.connect()
        await asyncio.gather(self.a.flowing(), self.b.flowing())
        await asyncio.sleep(SETTLE_S)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.a.close()
        await self.b.close()

    def mark(self) -> tuple[int, int, float]:
        """Where the recordings stand now (for :meth:`since`)."""
        return len(self.a.received), len(self.b.received), time.monotonic()

    async def at_least(self, mark: tuple[int, int, float], seconds: float) -> Window:
        """What each bot heard from ``mark`` until ``seconds`` after it (or until now, if
        later): an attack over in under a second is judged over a window long enough that
        one stall of this shared machine (a few hundred milliseconds) does not decide it,
        while a room that stopped playing still fails."""
        left = mark[2] + seconds - time.monotonic()
        if left > 0:
            await asyncio.sleep(left)
        return self.since(mark)

    def since(self, mark: tuple[int, int, float]) -> Window:
        """What each bot heard from ``mark`` until now."""
        a_from, b_from, t0 = mark
        heard = {"A": self.a.received[a_from:], "B": self.b.received[b_from:]}
        other = {"A": TONE_B_HZ, "B": TONE_A_HZ}
        level = {who: tone_db(np.concatenate(frames) if frames else np.zeros((0, 2)), other[who])
                 for who, frames in heard.items()}
        return Window(time.monotonic() - t0, {who: len(f) for who, f in heard.items()}, level)

    async def listen(self, seconds: float) -> Window:
        """What each bot hears over the next ``seconds``."""
        mark = self.mark()
        await asyncio.sleep(seconds)
        return self.since(mark)


def ticks_the_machine_took(stall_s: float) -> float:
    """Room ticks that ``stall_s`` seconds of the machine's CPU stall can account for.

    ``stall_s`` is :class:`bench.gaps.CpuStall`'s time over a window: time in which some
    runnable task (of this machine's other work, or of the test's own processes) waited for a
    CPU. A room's clock skips ticks when it falls behind (server/tick/clock.py); a thread of the
    server that waits for a CPU holds the clock back at most as long as it waits, and all such
    waiting is stall time, so sharing the machine costs a clock at most this many ticks. Ticks
    skipped beyond it are the server's own doing: its loop busy with work of its own, which no
    CPU stall explains.

    An upper bound, not an estimate: it counts any task's wait, also the waits of the test's
    bots while the server's loop holds one of the 2 CPUs, so a server that keeps its loop busy
    for long is partly excused too, and on a machine whose CPUs are short nearly all the time
    it accounts for nearly every tick: a check net of it then tells little about the clock.
    Measured with a server made to busy-wait 100 ms on every tenth new room of
    ``test_rooms_opened_by_join_and_leave…`` (about 200 ticks skipped): caught in the runs
    with 1.2 to 2.6 s of stall in the window, excused in those with 4.9 s or more (the bots'
    waits while the loop spun, and other test runs). Checks of the loop's CPU time, which
    sharing the machine does not change, are the ones to rely on there.
    """
    return stall_s * FRAMES_PER_S


def metrics_delta(http: str, before: dict[str, float]) -> dict[str, float]:
    """How much each of the server's ``/metrics`` numbers grew since ``before``."""
    now = fetch_metrics(http)
    return {name: value - before.get(name, 0.0) for name, value in now.items()}


#: Bad inputs each fuzz tried, by entry point: printed at the end of each test module
#: (``pytest -s``) for the record.
TRIED: Counter[str] = Counter()


def report_tried(prefix: str) -> str:
    """One line per entry point whose name starts with ``prefix``: how many inputs it took."""
    return "\n".join(f"fuzz {name}: {count} inputs" for name, count in sorted(TRIED.items())
                     if name.startswith(prefix))
