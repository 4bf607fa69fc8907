"""The churn of ``spatialjam bench soak`` (:mod:`bench.soak` tells the whole story): light bots
join a real server's rooms, edit the stage and their mixes, leave, drop, stall, come back to
their seats, empty a room until the server closes it and reopen it, and have their process
killed, cycle after cycle; after each cycle a checkpoint reads the server's resources and
counts. :class:`Soak` drives them and records what it sees; :mod:`bench.soak` judges it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench.capacity import fetch_metrics
from bench.lightbot import LOOP_S, LightBot, encode_loop, music
from bench.procstat import resources
from bench.serverproc import ROOT, ServerProcess

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


class SoakError(RuntimeError):
    """The soak could not go on (a bot could not join, the server died)."""


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
    """Drives the bots of one soak against one server and records what it sees: cycles until
    ``duration_s`` have passed, ``min_cycles`` at least."""

    def __init__(self, server: ServerProcess, rooms: int, bots: int, duration_s: float,
                 seed: int, log_dir: Path, progress, min_cycles: int) -> None:
        self.server = server
        self.pid = server.proc.pid
        self.rooms = [f"soak{r}" for r in range(rooms)]
        self.bots = bots
        self.duration_s = duration_s
        self.min_cycles = min_cycles
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
            while ((time.monotonic() - self.t0 < self.duration_s or k < self.min_cycles)
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
