"""``spatialjam bench soak``: churn a real server for minutes and look for what it leaks.

A ``spatialjam serve`` runs in its own process (:class:`~bench.serverproc.ServerProcess`);
``--rooms`` rooms of ``--bots`` light bots each (:class:`bench.lightbot.LightBot`: real aiortc
peers sending pre-encoded music and counting their personal mixes) churn against it in
cycles of a few seconds until ``--minutes`` have passed (:data:`MIN_CYCLES` at least). The
churn is :class:`bench.churn.Soak`'s (the constants of the cycle named below are in
:mod:`bench.churn`); this module judges what it recorded. In each cycle:

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
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import uvloop

from bench.churn import EMPTY_ROOM_GRACE_S, SETTLE_S, Soak, SoakError
from bench.procstat import resources
from bench.report import pyplot, result_paths, run_bench, save_figure
from bench.serverproc import ServerProcess
from server.cli.args import count, finite
from server.errors import CliError
from server.web.admission import MAX_CONNECTIONS_PER_IP

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
        soak = Soak(server, rooms, bots, duration_s, seed, Path(scratch), progress,
                    MIN_CYCLES)
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``spatialjam bench soak``'s options; the command runs :func:`run_soak_bench`."""
    parser.add_argument("--minutes", type=finite("minutes", 0.1, 1440), default=5.0,
                        help="how long the churn goes on (default 5)")
    parser.add_argument("--bots", type=count("bots", 3, 14), default=4, metavar="N",
                        help="members each room returns to after every cycle (default 4)")
    parser.add_argument("--rooms", type=count("rooms", 1, 8), default=2, metavar="R",
                        help="rooms churning side by side (default 2)")
    parser.add_argument("--seed", type=count("seed", 0, 2**31 - 1), default=1)
    parser.add_argument("--out", default="bench/results", metavar="DIR",
                        help="where the JSON, PNG and markdown go (default bench/results)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(run=run_soak_bench)


def run_soak_bench(args: argparse.Namespace) -> int:
    report = run_bench(lambda: soak_benchmark(args.minutes, args.bots, args.rooms, args.seed),
                       lambda report: [*summary_lines(report), "", *table(report)], args.json,
                       write=lambda report: write_results(report, Path(args.out)),
                       errors=(RuntimeError, OSError))
    if report["failure"]:
        raise CliError(f"soak failed: {report['failure']}")
    if report["leaks"]:
        raise CliError("soak found a leak: " + "; ".join(report["leaks"]))
    return 0
