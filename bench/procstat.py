"""What ``/proc`` says about processes and the machine (Linux, proc(5)): CPU seconds, resident
memory, open file descriptors and threads. ``bench capacity`` and ``bench soak`` read the server
(and the bots) with it, the tests their own process."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 2**20


def cpu_seconds(stat_text: str, clk_tck: int = CLK_TCK) -> float:
    """User + system CPU seconds from a ``/proc/PID/stat`` (or ``/proc/PID/task/TID/stat``).

    Fields are counted after the last ``)``, since the command name may hold spaces and
    parentheses: utime and stime, fields 14 and 15 in proc(5), are the 12th and 13th after it.
    """
    fields = stat_text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / clk_tck


def rss_bytes(status_text: str) -> int:
    """Resident set size from a ``/proc/PID/status`` (its ``VmRSS`` line, in kB)."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError("no VmRSS line in the status text (has the process exited?)")


def machine_jiffies(stat_text: str) -> tuple[int, int]:
    """``(busy, total)`` jiffies of all CPUs from ``/proc/stat``: idle and iowait are not busy.

    The first line holds user nice system idle iowait irq softirq steal (guest time is already
    inside user).
    """
    fields = [int(v) for v in stat_text.splitlines()[0].split()[1:9]]
    total = sum(fields)
    return total - fields[3] - fields[4], total


@dataclass(frozen=True)
class Snapshot:
    """CPU seconds and memory at one moment (``at``, ``time.monotonic()``)."""

    at: float
    server_cpu_s: float
    loop_cpu_s: float
    server_rss: int
    bots_cpu_s: float
    machine_busy: int
    machine_total: int
    #: Each server process's event loop thread (``serve --workers``: the front, then each
    #: worker); ``loop_cpu_s`` is their sum.
    loops_cpu_s: tuple[float, ...] = ()


def snapshot(server_pids: int | list[int], bot_pids: list[int],
             proc: Path = Path("/proc")) -> Snapshot:
    def read(*parts) -> str:
        return proc.joinpath(*map(str, parts)).read_text()

    pids = [server_pids] if isinstance(server_pids, int) else server_pids
    bots = 0.0
    for pid in bot_pids:
        with contextlib.suppress(OSError):  # a bot process that exited counts nothing
            bots += cpu_seconds(read(pid, "stat"))
    busy, total = machine_jiffies(read("stat"))
    loops = tuple(cpu_seconds(read(pid, "task", pid, "stat")) for pid in pids)
    return Snapshot(at=time.monotonic(),
                    server_cpu_s=sum(cpu_seconds(read(pid, "stat")) for pid in pids),
                    loop_cpu_s=sum(loops), loops_cpu_s=loops,
                    server_rss=sum(rss_bytes(read(pid, "status")) for pid in pids),
                    bots_cpu_s=bots, machine_busy=busy, machine_total=total)


def usage(before: Snapshot, after: Snapshot) -> dict:
    """CPU between two snapshots, in % of one core (100: one core busy), except
    ``machine_busy_pct`` (% of all cores); RSS at the end, in MiB. With several server
    processes, ``loop_cpu_pct`` is the busiest event loop thread's and ``loops_cpu_pct`` lists
    each one's."""
    wall = after.at - before.at
    if wall <= 0:
        raise ValueError("the snapshots are not in time order")
    server = after.server_cpu_s - before.server_cpu_s
    loop = after.loop_cpu_s - before.loop_cpu_s
    loops = [a - b for a, b in zip(after.loops_cpu_s, before.loops_cpu_s, strict=True)]
    jiffies = after.machine_total - before.machine_total
    return {
        "server_cpu_pct": round(100 * server / wall, 1),
        "loop_cpu_pct": round(100 * (max(loops) if len(loops) > 1 else loop) / wall, 1),
        **({"loops_cpu_pct": [round(100 * x / wall, 1) for x in loops]}
           if len(loops) > 1 else {}),
        "off_loop_cpu_pct": round(100 * (server - loop) / wall, 1),
        "rss_mb": round(after.server_rss / 2**20, 1),
        "bots_cpu_pct": round(100 * (after.bots_cpu_s - before.bots_cpu_s) / wall, 1),
        "machine_busy_pct": round(100 * (after.machine_busy - before.machine_busy) / jiffies, 1)
        if jiffies > 0 else 0.0,
    }


def status_kib(status_text: str, key: str) -> int:
    """A ``kB`` field (``VmHWM``, ``VmRSS``) of a ``/proc/PID/status``, in KiB."""
    for line in status_text.splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise ValueError(f"no {key} line in the status text (has the process exited?)")


def resources(pid: int, proc: Path = Path("/proc")) -> dict:
    """``rss_mib``, ``peak_rss_mib`` (``VmHWM``), ``fds`` and ``threads`` of process ``pid``."""
    base = proc / str(pid)
    status = (base / "status").read_text()
    return {"rss_mib": round(rss_bytes(status) / MIB, 2),
            "peak_rss_mib": round(status_kib(status, "VmHWM") / 1024, 2),
            "fds": len(os.listdir(base / "fd")), "threads": len(os.listdir(base / "task"))}
