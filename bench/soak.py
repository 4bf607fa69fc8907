"""``spatialjam bench soak``: churn a real server for minutes and look for what it leaks.

A ``spatialjam serve`` runs in its own process (:class:`~bench.serverproc.ServerProcess`);
``--rooms`` rooms of ``--bots`` light bots each (:class:`bench.lightbot.LightBot`: real aiortc
peers sending pre-encoded music and counting their personal mixes) churn against it in
cycles of a few seconds until ``--minutes`` have passed (:data:`MIN_CYCLES` at least). In
each cycle:

- every member edits the stage and its own mix (``move_source``, ``turn_source``,
  ``head_pose`` as angles and as quaternions, ``mix_override`` of others and of itself,
  ``mix_reset``);
- once every :data:`KILL_EVERY` cycles, a bot process (``python -m bench.lightbot``) joins one
  bot to each room and is killed with SIGKILL while they play;
- in each room, one member leaves cleanly (``leave``), one drops (its socket is aborted, no
  ``leave``, its peer connection closed only after the server noticed), one stalls (stops
  reading and sending, its socket left open) and a new connection with the stalled one's seat
  takes it over, so the server closes the stalled connection while it does not answer; the
  stalled client's socket goes at the end of the cycle, except once every
  :data:`LONG_STALL_EVERY` cycles in one room, where it is held :data:`STALL_HOLD_S`, past
  the server's own 1 s drain and 10 s closing handshake; the dropped one comes back with its
  seat, and a fresh bot takes the leaver's place;
- once every :data:`EMPTY_EVERY` cycles one room (in turn) empties instead: half its members
  leave, half drop, the server closes it once its grace ran out (the soak's server is started
  with ``--empty-room-grace`` :data:`EMPTY_ROOM_GRACE_S` instead of 30 s, so that a close
  fits in a cycle; the timer and the close are the same code), and the members come back to
  it, reopened from the server's saved state (``--state``, a file of the soak's own): half
  with their old seats, half fresh; the other rooms churn alongside.

**Checkpoints.** A cycle ends with every room back to ``--bots`` members, each hearing its
mix, and every stalled client gone; after :data:`SETTLE_S` the server's resources are read:
resident memory (``VmRSS``), open file descriptors and threads from ``/proc/PID`` and its
asyncio tasks from ``/metrics`` (``spatialjam_asyncio_tasks``), with its participants and
rooms (which must be the soak's: a participant the server still holds for a bot that is gone
is a leak too) and its tick counters (late, skipped, over 20 ms). The same population at every
checkpoint means growth is a leak, not load. ``/proc`` is also sampled every
:data:`SAMPLE_EVERY_S` for the plot and the peak.

**The verdict** (:func:`judge`), after a warm-up (:func:`warmup_s`: a third of the run, at
least :data:`WARMUP_MIN_CYCLES` cycles, at most :data:`WARMUP_MAX_S`), compares the median of
the last :data:`ENDS` checkpoints with the median of the first :data:`ENDS` after the warm-up.
Measured on the 2-core machine with the defaults (2 rooms of 4): the server's memory climbs
by about 20 MiB in the first 100 s (malloc arenas of the threads that come and go, aiortc's
decoders among them, and caches filling), then stays within 1 MiB; at every checkpoint it
holds 43 or 44 file descriptors, 23 threads and 108 asyncio tasks. A leak is found when
(:class:`Limits`):

- file descriptors grew by more than ``fds``, threads by more than ``threads`` or asyncio
  tasks by more than ``tasks``: a little above that noise, and below what one connection
  left behind holds (about 3 descriptors: its WebSocket and its ICE sockets, a thread while
  its media run and about a dozen tasks), so every connection kept past a few shows;
- resident memory grew faster than ``rss_mib_per_min``: the least-squares slope over the
  checkpoints after the warm-up and after :data:`RSS_WARMUP_S` (past that first climb),
  judged when they span at least ``rss_min_span_min`` (over less, allocator noise of a MiB
  reads as a large slope), so in runs of 4 minutes or more; shorter ones report it. The
  defaults make about 60 joins a minute and a member costs the server about 0.5 MiB
  (``bench capacity``), so 2 MiB/min is the memory of one join in fifteen kept;
- the server holds participants or rooms the bots have left, or a room did not close.

The server dying (or not stopping on SIGTERM at the end) fails the soak as well. Tick
overruns, late and skipped ticks are reported, not judged: joins (DTLS handshakes on the event
loop) on a shared 2-core machine cause some, and ``bench capacity`` is where real time is
measured.

Output: the report on stdout (a table, or ``--json``); JSON, markdown and a PNG (RSS, file
descriptors, threads and tasks over time) under ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import uvloop

from bench.capacity import fetch_metrics
from bench.lightbot import LOOP_S, LightBot, encode_loop, music
from bench.procstat import resources
from bench.report import print_report, pyplot, result_paths, save_figure
from bench.serverproc import ROOT, ServerProcess
from server.web.admission import MAX_CONNECTIONS_PER_IP

#: The soak's server closes an empty room after this many seconds (``serve`` default: 30).
EMPTY_ROOM_GRACE_S = 2.0
#: Every this many cycles one room empties and closes (the rooms take turns).
EMPTY_EVERY = 3
#: Every this many cycles a bot process is killed (starting one costs a second of CPU).
KILL_EVERY = 2
#: Every this many cycles one room's stalled client is held for :data:`STALL_HOLD_S`, until
#: the server's own 1 s drain and 10 s closing handshake have ended its connection.
LONG_STALL_EVERY = 4
STALL_HOLD_S = 12.0
#: From the last join of a cycle to its checkpoint: closed peers finish closing.
SETTLE_S = 2.0
#: A checkpoint waits this long at most for the server to count the soak's population.
POPULATION_WAIT_S = 5.0
#: A bot has this long to join and hear its first packet.
JOIN_TIMEOUT_S = 30.0
#: Seconds between ``/proc`` samples.
SAMPLE_EVERY_S = 1.0
WARMUP_FRACTION = 1 / 3
WARMUP_MIN_CYCLES = 2
#: However short the run, this many cycles: the warm-up's and one to judge.
MIN_CYCLES = WARMUP_MIN_CYCLES + 1
WARMUP_MAX_S = 120.0
#: Memory is judged from this many seconds on, however long the warm-up of the counts.
RSS_WARMUP_S = 120.0
#: Checkpoints at each end of the judged window whose median is compared.
ENDS = 3


@dataclass(frozen=True)
class Limits:
    """What counts as a leak (see the module's docstring for why these numbers)."""

    fds: int = 4
    threads: int = 2
    tasks: int = 8
    rss_mib_per_min: float = 2.0
    rss_min_span_min: float = 1.5


LIMITS = Limits()


class SoakError(RuntimeError):
    """The soak could not go on (a bot could not join, the server died)."""


# the verdict ---------------------------------------------------------------------------------

def warmup_s(duration_s: float) -> float:
    """Seconds of the run left out of the verdict (at least :data:`WARMUP_MIN_CYCLES` cycles
    are left out as well, however short)."""
    return min(WARMUP_MAX_S, WARMUP_FRACTION * duration_s)


def slope_per_min(t_s: list[float], values: list[float]) -> float:
    """Least-squares slope of ``values`` against ``t_s`` (seconds), per minute."""
    return float(np.polyfit(np.asarray(t_s) / 60.0, values, 1)[0])


def judge(checkpoints: list[dict], warmup: float, limits: Limits = LIMITS,
          rss_warmup: float = RSS_WARMUP_S) -> dict:
    """Growth of each resource over the checkpoints after the warm-up, and the leaks found.

    Parameters
    ----------
    checkpoints : list of dict
        In time order, each with ``cycle``, ``t_s``, ``rss_mib``, ``fds``, ``threads``,
        ``tasks``, ``participants``, ``expected_participants``, ``rooms``, ``expected_rooms``.
    warmup : float
        Seconds after the start left out of the growth; checkpoints of the first
        :data:`WARMUP_MIN_CYCLES` cycles are left out too. Every checkpoint must hold the
        soak's participants and rooms, warm-up or not.
    limits : Limits
    rss_warmup : float
        The memory's slope is fitted to the judged checkpoints from this many seconds on.

    Returns
    -------
    dict
        ``judged`` (checkpoints used), ``baseline`` and ``end`` (medians of the first and
        last :data:`ENDS` of them), ``growth`` (end − baseline), ``rss_slope_mib_per_min``
        (None with fewer than two checkpoints for it), ``rss_judged`` (whether those span long
        enough for the slope to count) and ``leaks``: one sentence per leak found, empty when
        none.
    """
    post = [c for c in checkpoints if c["t_s"] >= warmup and c["cycle"] >= WARMUP_MIN_CYCLES]
    keys = ("rss_mib", "fds", "threads", "tasks")
    verdict = {"judged": len(post), "baseline": {}, "end": {}, "growth": {},
               "rss_slope_mib_per_min": None, "rss_judged": False, "leaks": []}
    leaks = verdict["leaks"]
    for c in checkpoints:
        if c["participants"] != c["expected_participants"] or c["rooms"] != c["expected_rooms"]:
            leaks.append(f"after cycle {c['cycle']} the server held {c['participants']} "
                         f"participants in {c['rooms']} rooms; the soak had "
                         f"{c['expected_participants']} in {c['expected_rooms']}")
            break
    if len(post) < 2:
        return verdict
    k = max(1, min(ENDS, len(post) // 3))
    for key in keys:
        first = float(np.median([c[key] for c in post[:k]]))
        last = float(np.median([c[key] for c in post[-k:]]))
        verdict["baseline"][key], verdict["end"][key] = first, last
        verdict["growth"][key] = round(last - first, 2)
    for key, slack, name in (("fds", limits.fds, "open file descriptors"),
                             ("threads", limits.threads, "threads"),
                             ("tasks", limits.tasks, "asyncio tasks")):
        if verdict["growth"][key] > slack:
            leaks.append(f"{name} grew from {verdict['baseline'][key]:g} to "
                         f"{verdict['end'][key]:g} over the same population (more than "
                         f"{slack} allowed)")
    rss = [c for c in post if c["t_s"] >= rss_warmup]
    if len(rss) < 2:
        return verdict
    times = [c["t_s"] for c in rss]
    slope = slope_per_min(times, [c["rss_mib"] for c in rss])
    verdict["rss_slope_mib_per_min"] = round(slope, 3)
    verdict["rss_judged"] = (times[-1] - times[0]) / 60.0 >= limits.rss_min_span_min
    if verdict["rss_judged"] and slope > limits.rss_mib_per_min:
        leaks.append(f"resident memory grew {slope:.2f} MiB/min from {times[0]:.0f} s on "
                     f"({rss[0]['rss_mib']:.0f} → {rss[-1]['rss_mib']:.0f} MiB; more than "
                     f"{limits.rss_mib_per_min:g} MiB/min allowed)")
    return verdict


# the bots ------------------------------------------------------------------------------------

class SoakBot(LightBot):
    """A light bot that may come back to a seat it held before, and go in more ways."""

    def __init__(self, url: str, room: str, name: str, payloads: list[bytes], offset: int = 0,
                 seat: str | None = None) -> None:
        super().__init__(url, room, name, payloads, offset)
        self.seat = seat  # what the join asks for (:class:`~bench.bot.Bot`), None: a new one

    def abort(self) -> None:
        """The socket goes away at once (a crash, a network gone): no ``leave``, no close."""
        self._ws.transport.abort()

    def stall(self) -> None:
        """Stop reading and sending, socket left open (a client frozen or out of reach)."""
        self._ws.transport.pause_reading()
        self.track.stop()


class Soak:
    """Drives the bots of one soak against one server and records what it sees."""

    def __init__(self, server: ServerProcess, rooms: int, bots: int, duration_s: float,
                 seed: int, log_dir: Path, progress) -> None:
        self.server = server
        self.pid = server.proc.pid
        self.rooms = [f"soak{r}" for r in range(rooms)]
        self.bots = bots
        self.duration_s = duration_s
        self.rng = random.Random(seed)
        self.payloads = encode_loop(music(LOOP_S, seed))
        self.log_dir = log_dir
        self.progress = progress
        self.members: dict[str, list[SoakBot]] = {room: [] for room in self.rooms}
        #: Stalled clients and when to let each go (``time.monotonic()``).
        self.stalled: list[tuple[float, SoakBot]] = []
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.checkpoints: list[dict] = []
        self.samples: list[dict] = []
        self.died: str | None = None
        self._names = 0
        self.t0 = time.monotonic()

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 2)

    # one bot ---------------------------------------------------------------------------------

    async def join(self, room: str, seat: str | None = None, old: str | None = None,
                   kind: str = "seat_rejoins") -> SoakBot:
        """A bot joins ``room`` and hears its first packet. With ``seat``, it comes back as
        participant ``old``: counted under ``kind``, and under ``kind`` + ``_kept`` when the
        server gave it ``old`` again."""
        self._names += 1
        bot = SoakBot(self.server.ws, room, f"{room}-bot{self._names}", self.payloads,
                      offset=(17 * self._names) % len(self.payloads), seat=seat)
        try:
            async with asyncio.timeout(JOIN_TIMEOUT_S):
                await bot.connect()
                while bot.arrivals.total == 0:
                    await asyncio.sleep(0.05)
        except Exception as exc:  # whatever it was, the soak cannot keep its population
            await self.retire(bot, abort=True)
            raise SoakError(f"bot {bot.name} could not join room {room} at {self.now()} s: "
                            f"{type(exc).__name__}: {exc}") from None
        self.counts["joins"] += 1
        if seat is None:
            self.counts["fresh_joins"] += 1
        else:
            self.counts[kind] += 1
            self.counts[f"{kind}_kept"] += bot.participant == old
        return bot

    async def retire(self, bot: SoakBot, abort: bool = False) -> None:
        """Close ``bot`` here (after ``abort`` of its socket, if it is still open)."""
        for error in bot.errors:
            self.errors[error.get("code", "?")] += 1
        with contextlib.suppress(Exception):
            if abort and bot._ws is not None:
                bot.abort()
            await bot.close()

    async def leave(self, bot: SoakBot) -> None:
        await bot.send({"type": "leave"})
        await self.retire(bot)
        self.counts["clean_leaves"] += 1

    async def drop(self, bot: SoakBot) -> None:
        bot.abort()
        await asyncio.sleep(0.5)  # the server notices the socket first, as after a crash
        await self.retire(bot)
        self.counts["socket_drops"] += 1

    # what members do -----------------------------------------------------------------------

    def edits(self, bot: SoakBot, others: list[SoakBot]) -> list[dict]:
        """One round of stage and personal-mix edits by ``bot``."""
        rng = self.rng
        other = rng.choice(others)  # may be ``bot`` itself: self-monitoring on
        yaw, pitch = rng.uniform(-180, 180), rng.uniform(-30, 30)
        half = np.radians(yaw) / 2
        pose = ({"type": "head_pose", "yaw_deg": yaw, "pitch_deg": pitch}
                if rng.random() < 0.5 else
                {"type": "head_pose", "quaternion": [float(np.cos(half)), 0.0, 0.0,
                                                     float(np.sin(half))]})
        messages = [
            {"type": "move_source", "source": bot.participant,
             "position_m": [rng.uniform(-3, 3), rng.uniform(-3, 3), 1.2]},
            {"type": "turn_source", "source": bot.participant, "yaw_deg": yaw},
            pose,
            {"type": "mix_override", "source": other.participant, "gain": rng.uniform(0, 2),
             "position_m": [rng.uniform(-3, 3), rng.uniform(-3, 3), 1.2]},
        ]
        if rng.random() < 0.3:
            messages.append({"type": "mix_override", "source": other.participant, "mute": True})
        if rng.random() < 0.5:
            messages.append({"type": "mix_reset", "source": other.participant}
                            if rng.random() < 0.5 else {"type": "mix_reset", "all": True})
        return messages

    async def play(self, room: str, rounds: int) -> None:
        """``rounds`` rounds of edits by every member of ``room``, 0.2 s apart."""
        members = self.members[room]
        for _ in range(rounds):
            for bot in members:
                for message in self.edits(bot, members):
                    await bot.send(message)
                    self.counts["stage_edits"] += 1
            await asyncio.sleep(0.2)

    # one cycle --------------------------------------------------------------------------------

    async def churn(self, room: str, hold_s: float = 0.0) -> None:
        """A leaver, a dropper and a staller go; the dropper and the staller come back with
        their seats (the staller's taking over its open connection, which is let go after
        ``hold_s`` or at the end of the cycle), a fresh bot joins."""
        members = self.members[room]
        leaver, dropper, staller = self.rng.sample(members, 3)
        for bot in (leaver, dropper, staller):
            members.remove(bot)
        staller.stall()
        self.stalled.append((time.monotonic() + hold_s, staller))
        self.counts["stalls"] += 1
        self.counts["long_stalls"] += hold_s > 0
        await asyncio.gather(self.leave(leaver), self.drop(dropper))
        back = await asyncio.gather(
            self.join(room, dropper.seat, dropper.participant),
            self.join(room, staller.seat, staller.participant, kind="takeovers"))
        members += [*back, await self.join(room)]
        await self.play(room, 2)

    async def empty(self, room: str) -> None:
        """Everyone goes (half leave, half drop); once the server closed the room, they open
        it again: half with their old seats, half fresh."""
        members, self.members[room] = self.members[room], []
        half = len(members) // 2
        await asyncio.gather(*(self.leave(b) for b in members[:half]),
                             *(self.drop(b) for b in members[half:]))
        deadline = time.monotonic() + EMPTY_ROOM_GRACE_S + 20.0
        while (await self.metrics())["rooms"] >= len(self.rooms):
            if time.monotonic() > deadline:
                self.counts["rooms_not_closed"] += 1
                break
            await asyncio.sleep(0.25)
        else:
            self.counts["rooms_closed"] += 1
        self.members[room] = list(await asyncio.gather(
            *(self.join(room, b.seat, b.participant, kind="rejoins_after_close")
              for b in members[:half]),
            *(self.join(room) for _ in range(len(members) - half))))
        await self.play(room, 2)

    async def kill_process(self) -> None:
        """A bot process joins one bot to each room; SIGKILL while they play."""
        log = open(self.log_dir / "victim.log", "w")  # noqa: SIM115 (the child's)
        proc = subprocess.Popen([sys.executable, "-m", "bench.lightbot", self.server.ws],
                                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=log, text=True)
        log.close()
        try:
            await asyncio.to_thread(proc.stdout.readline)  # ready
            self._names += 1
            proc.stdin.write(json.dumps({"cmd": "add", "bots": [
                [room, f"{room}-proc{self._names}"] for room in self.rooms]}) + "\n")
            proc.stdin.flush()
            reply = json.loads(await asyncio.to_thread(proc.stdout.readline) or "{}")
            if not reply.get("ok"):
                tail = (self.log_dir / "victim.log").read_text()[-500:]
                raise SoakError(f"a bot process could not join: {reply.get('error') or tail}")
            self.counts["joins"] += len(self.rooms)
            self.counts["fresh_joins"] += len(self.rooms)
            await asyncio.sleep(1.0)
        finally:
            proc.kill()
            await asyncio.to_thread(proc.wait)
            proc.stdin.close()
            proc.stdout.close()
        self.counts["processes_killed"] += 1
        self.counts["bots_killed"] += len(self.rooms)

    async def cycle(self, k: int) -> None:
        """Cycle ``k``: edits (and a bot process killed, every :data:`KILL_EVERY`), then each
        room churns or, in turn every :data:`EMPTY_EVERY`, empties; it ends when the stalled
        clients are gone."""
        emptying = (self.rooms[(k // EMPTY_EVERY) % len(self.rooms)]
                    if k % EMPTY_EVERY == EMPTY_EVERY - 1 else None)
        long_stall = (self.rooms[(k // LONG_STALL_EVERY) % len(self.rooms)]
                      if k % LONG_STALL_EVERY == 1 else None)
        first = [self.play(room, 3) for room in self.rooms if room != emptying]
        if k % KILL_EVERY == 0:
            first.append(self.kill_process())
        await asyncio.gather(*first)
        await asyncio.gather(*(
            self.empty(room) if room == emptying
            else self.churn(room, STALL_HOLD_S if room == long_stall else 0.0)
            for room in self.rooms))
        for release_at, bot in sorted(self.stalled, key=lambda s: s[0]):
            await asyncio.sleep(release_at - time.monotonic())
            await self.retire(bot, abort=True)
        self.stalled.clear()
        self.counts["cycles"] += 1

    # measuring ----------------------------------------------------------------------------------

    async def metrics(self) -> dict[str, float]:
        return await asyncio.to_thread(fetch_metrics, self.server.http)

    def alive(self) -> bool:
        code = self.server.proc.poll()
        if code is not None and self.died is None:
            last = [line for line in self.server.log if line.strip()][-3:]
            self.died = (f"the server died (exit status {code}) {self.now():.0f} s into the "
                         f"soak: {' / '.join(last) or 'no output'}")
        return code is None

    async def sample_forever(self) -> None:
        while self.alive():
            with contextlib.suppress(OSError, ValueError):  # it may exit while being read
                self.samples.append({"t_s": self.now(), **resources(self.pid)})
            await asyncio.sleep(SAMPLE_EVERY_S)

    async def checkpoint(self, cycle: int) -> dict:
        await asyncio.sleep(SETTLE_S)
        expected = len(self.rooms) * self.bots
        deadline = time.monotonic() + POPULATION_WAIT_S
        while True:  # a dropped member may take the server a moment to let go of
            m = await self.metrics()
            if ((m["participants"] == expected and m["rooms"] == len(self.rooms))
                    or time.monotonic() > deadline):
                break
            await asyncio.sleep(0.25)
        point = {"cycle": cycle, "t_s": self.now(), **resources(self.pid),
                 "tasks": int(m["asyncio_tasks"]), "participants": int(m["participants"]),
                 "expected_participants": expected, "rooms": int(m["rooms"]),
                 "expected_rooms": len(self.rooms), "ticks": int(m["ticks_total"]),
                 "late_ticks": int(m["late_ticks_total"]),
                 "skipped_ticks": int(m["skipped_ticks_total"]),
                 "tick_overruns": int(m["tick_overruns_total"])}
        self.checkpoints.append(point)
        self.progress(point)
        return point

    async def run(self) -> None:
        sampler = asyncio.get_running_loop().create_task(self.sample_forever())
        try:
            for room in self.rooms:
                self.members[room] = list(await asyncio.gather(
                    *(self.join(room) for _ in range(self.bots))))
            await self.checkpoint(0)
            k = 0
            while ((time.monotonic() - self.t0 < self.duration_s or k < MIN_CYCLES)
                   and self.alive()):
                await self.cycle(k)
                k += 1
                if self.alive():
                    await self.checkpoint(k)
        except (SoakError, OSError) as exc:
            if self.alive():
                raise
            raise SoakError(self.died) from exc
        finally:
            sampler.cancel()
            for bots in self.members.values():
                for bot in bots:
                    await self.retire(bot)
            for _, bot in self.stalled:
                await self.retire(bot, abort=True)


# the whole run --------------------------------------------------------------------------------

def soak_benchmark(minutes: float, bots: int, rooms: int, seed: int, progress=None,
                   limits: Limits = LIMITS) -> dict:
    """Run the soak; returns the report (see :func:`judge` for its verdict)."""
    progress = progress or (lambda p: print(progress_line(p), file=sys.stderr, flush=True))
    duration_s = 60.0 * minutes
    # All bots connect from loopback: members, a stalled client and a killed process's bot
    # per room at most at once, and the checkpoints' /metrics requests.
    per_ip = max(rooms * (bots + 3) + 8, MAX_CONNECTIONS_PER_IP)
    with tempfile.TemporaryDirectory() as scratch, ServerProcess(
            "--room-capacity", str(bots + 2), "--empty-room-grace", str(EMPTY_ROOM_GRACE_S),
            "--max-connections-per-ip", str(per_ip),
            "--state", str(Path(scratch) / "rooms.sqlite3")) as server:
        soak = Soak(server, rooms, bots, duration_s, seed, Path(scratch), progress)
        failure = None
        try:
            uvloop.run(soak.run())
        except SoakError as exc:
            failure = str(exc)
        soak.alive()
        died = soak.died
        final = resources(server.proc.pid) if died is None else {}
        try:
            stop_status = server.stop() if died is None else None
        except subprocess.TimeoutExpired:
            server.proc.kill()
            stop_status = "did not stop on SIGTERM within 20 s"
    checkpoints = soak.checkpoints
    verdict = judge(checkpoints, warmup_s(duration_s), limits)
    if soak.counts["rooms_not_closed"]:
        verdict["leaks"].append(f"{soak.counts['rooms_not_closed']} emptied rooms were not "
                                f"closed within {EMPTY_ROOM_GRACE_S + 20:g} s")
    first, last = (checkpoints[0], checkpoints[-1]) if checkpoints else ({}, {})
    report = {
        "benchmark": "soak",
        "settings": {"minutes": minutes, "bots": bots, "rooms": rooms, "seed": seed,
                     "empty_room_grace_s": EMPTY_ROOM_GRACE_S, "warmup_s": warmup_s(duration_s),
                     "rss_warmup_s": RSS_WARMUP_S,
                     "settle_s": SETTLE_S, "limits": asdict(limits)},
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "seconds": soak.now(),
        "churn": {key: soak.counts[key] for key in (
            "cycles", "joins", "fresh_joins", "seat_rejoins", "seat_rejoins_kept", "takeovers",
            "takeovers_kept", "rejoins_after_close", "rejoins_after_close_kept", "clean_leaves",
            "socket_drops",
            "stalls", "long_stalls", "processes_killed", "bots_killed", "rooms_closed",
            "rooms_not_closed",
            "stage_edits")},
        "server_errors": dict(soak.errors),
        "memory": {
            "rss_start_mib": first.get("rss_mib"), "rss_end_mib": last.get("rss_mib"),
            "rss_baseline_mib": verdict["baseline"].get("rss_mib"),
            "rss_growth_after_warmup_mib": verdict["growth"].get("rss_mib"),
            "rss_slope_mib_per_min": verdict["rss_slope_mib_per_min"],
            "rss_slope_judged": verdict["rss_judged"],
            # VmHWM lags VmRSS a little (the kernel syncs threads' counts now and then)
            "rss_peak_mib": max((p[k] for p in (*soak.samples, *checkpoints, final) for k in
                                 ("rss_mib", "peak_rss_mib") if k in p), default=None),
        },
        "ticks": {key: last.get(key) for key in
                  ("ticks", "late_ticks", "skipped_ticks", "tick_overruns")},
        "resources": {key: {"start": first.get(key), "baseline": verdict["baseline"].get(key),
                            "end": last.get(key), "max": max((c[key] for c in checkpoints),
                                                             default=None),
                            "growth_after_warmup": verdict["growth"].get(key)}
                      for key in ("fds", "threads", "tasks")},
        "judged_checkpoints": verdict["judged"],
        "leaks": verdict["leaks"],
        "failure": died or failure,
        "server_stop": stop_status,
        "checkpoints": checkpoints,
        "samples": soak.samples,
    }
    if died is None and stop_status not in (0, None):
        report["failure"] = report["failure"] or f"the server's exit on SIGTERM: {stop_status}"
    report["verdict"] = ("failed" if report["failure"] else "leak" if report["leaks"]
                         else "no leak found")
    return report


# output ----------------------------------------------------------------------------------------

def progress_line(point: dict) -> str:
    return (f"[soak] cycle {point['cycle']:3d} at {point['t_s']:6.0f} s: RSS "
            f"{point['rss_mib']:.1f} MiB, {point['fds']} fds, {point['threads']} threads, "
            f"{point['tasks']} tasks, {point['participants']} participants in "
            f"{point['rooms']} rooms; late {point['late_ticks']}, skipped "
            f"{point['skipped_ticks']}, over 20 ms {point['tick_overruns']}")


def summary_lines(report: dict) -> list[str]:
    s, c, m, t = report["settings"], report["churn"], report["memory"], report["ticks"]
    lines = [
        f"soak: {report['seconds'] / 60:.1f} min, {c['cycles']} cycles, {s['rooms']} rooms of "
        f"{s['bots']} bots (seed {s['seed']}, warm-up {s['warmup_s']:g} s)",
        f"churn: {c['joins']} joins ({c['fresh_joins']} fresh; back to their seat: "
        f"{c['seat_rejoins']} after a drop, {c['takeovers']} taking a stalled connection "
        f"over, {c['rejoins_after_close']} after their room closed; of these "
        f"{c['seat_rejoins_kept']}, {c['takeovers_kept']} and {c['rejoins_after_close_kept']} "
        f"got their seat), "
        f"{c['clean_leaves']} left, {c['socket_drops']} dropped, {c['stalls']} stalled "
        f"({c['long_stalls']} past the server's closing timeout), "
        f"{c['processes_killed']} bot processes killed ({c['bots_killed']} bots), "
        f"{c['rooms_closed']} rooms closed and reopened, {c['stage_edits']} stage/mix edits",
        f"memory: RSS {m['rss_start_mib']} → {m['rss_end_mib']} MiB, peak "
        f"{m['rss_peak_mib']} MiB; slope from {RSS_WARMUP_S:g} s on: "
        + ("run too short to tell" if m["rss_slope_mib_per_min"] is None else
           f"{m['rss_slope_mib_per_min']} MiB/min"
           + ("" if m["rss_slope_judged"] else " (too short a span to judge)")),
        f"ticks: {t['ticks']}, late {t['late_ticks']}, skipped {t['skipped_ticks']}, over "
        f"20 ms {t['tick_overruns']} (reported, not judged)",
    ]
    if report["server_errors"]:
        lines.append(f"server errors to the bots: {report['server_errors']}")
    lines.append("verdict: " + report["verdict"] + "".join(
        f"\n  - {text}" for text in ([report["failure"]] if report["failure"] else [])
        + report["leaks"]))
    return lines


def table(report: dict) -> list[str]:
    limits = report["settings"]["limits"]
    rows = ["| resource | start | baseline | end | max | growth after warm-up | allowed |",
            "|---|---|---|---|---|---|---|"]
    m = report["memory"]
    rows.append(f"| RSS MiB | {m['rss_start_mib']} | {m['rss_baseline_mib']} | "
                f"{m['rss_end_mib']} | {m['rss_peak_mib']} (peak) | "
                f"{m['rss_growth_after_warmup_mib']} | {limits['rss_mib_per_min']} MiB/min |")
    for key, title in (("fds", "open fds"), ("threads", "threads"), ("tasks", "asyncio tasks")):
        r = report["resources"][key]
        rows.append(f"| {title} | {r['start']} | {r['baseline']} | {r['end']} | {r['max']} | "
                    f"{r['growth_after_warmup']} | {limits[key]} |")
    return rows


def write_results(report: dict, out_dir: Path) -> list[Path]:
    """JSON, markdown and PNG; returns the paths written."""
    paths = result_paths(out_dir, "soak")
    paths[0].write_text(json.dumps(report, indent=2))
    paths[1].write_text("\n".join(["# Soak", "", *summary_lines(report), "", *table(report)])
                        + "\n")
    fig, axes = pyplot().subplots(2, 2, figsize=(10, 6), sharex=True)
    samples, points = report["samples"], report["checkpoints"]
    warmup = report["settings"]["warmup_s"]
    for ax, key, label in ((axes[0, 0], "rss_mib", "RSS (MiB)"), (axes[0, 1], "fds", "open fds"),
                           (axes[1, 0], "threads", "threads"),
                           (axes[1, 1], "tasks", "asyncio tasks")):
        if key in ("rss_mib", "fds", "threads") and samples:
            ax.plot([s["t_s"] for s in samples], [s[key] for s in samples], color="C0",
                    linewidth=0.8, label="every second")
        ax.plot([p["t_s"] for p in points], [p[key] for p in points], "o", color="C1",
                markersize=3, label="checkpoints")
        ax.axvline(warmup, color="grey", linewidth=1, linestyle="--", label="end of warm-up")
        ax.set_ylabel(label)
    for ax in axes[1]:
        ax.set_xlabel("seconds")
    save_figure(fig, list(axes.flat), paths[2], legend_size=7)
    return paths


def run_soak_bench(args: argparse.Namespace) -> int:
    from server.errors import CliError

    try:
        report = soak_benchmark(args.minutes, args.bots, args.rooms, args.seed)
    except (RuntimeError, OSError) as exc:
        raise CliError(str(exc)) from None
    paths = write_results(report, Path(args.out))
    print_report(report, args.json, paths, summary_lines, table)
    if report["failure"]:
        raise CliError(f"soak failed: {report['failure']}")
    if report["leaks"]:
        raise CliError("soak found a leak: " + "; ".join(report["leaks"]))
    return 0
