"""``spatialjam bench capacity``: how many participants the server holds in real time.

Two phases, each against a fresh ``spatialjam serve --workers W`` in its own processes
(:class:`~bench.serverproc.ServerProcess`; ``--workers``, 1 unless told: one process, as
before workers existed):

1. **one room** (``--room-capacity`` = ``--max-bots``): ``--step`` bots join, the room is held
   for ``--hold`` seconds and measured, and so on until a step fails or ``--max-bots`` is
   reached;
2. **many rooms** of ``--rooms-of`` participants (``--room-capacity`` = ``--rooms-of``): whole
   rooms are added, at least ``--step`` participants a step, on the same terms.

The bots are :class:`bench.lightbot.LightBot`\\ s, ``--bots-per-process`` to a process: real
aiortc peers that join over signaling, send music (pre-encoded Opus, replayed in real time)
and receive their personal mixes, counted packet by packet and decoded one packet in fifty
(:mod:`bench.lightbot` says why and what that costs; :class:`bench.fleet.BotFleet` drives the
processes).

**A step** adds its bots and waits until each has heard its first packet, lets the rooms
settle for :data:`SETTLE_S` and then until the overload governor has lifted any cap that the
joins set off (at most :data:`CALM_TIMEOUT_S`: joining peers cost the event loop a burst of
DTLS and ICE work, and the governor gives back a quarter of a cap per second without a tick
over 15 ms),
then measures a window of ``--hold`` seconds:

- *the server process's* CPU (user + system, ``/proc/PID/stat``) and RSS (``/proc/PID/status``),
  split into its event loop thread (the main thread: asyncio, websockets, aiortc's ICE, DTLS,
  SRTP, RTP and RTCP in Python, the uplink receive path) and all its other threads (the rooms'
  tick threads: render and Opus encode, numba's and the FFT's worker threads, aiortc's decoder
  threads); the bots' processes and the whole machine (``/proc/stat``) are measured beside it,
  because on a 2-core machine they share the cores. With workers, "the server" is the front
  and its workers together (CPU and RSS summed), and the event loop is the busiest of their
  event loop threads: each process has its own, of one core;
- the server's own counters from ``/metrics`` over the window: late, skipped and overrunning
  ticks, overload degradations and culled pairs, concealed uplink frames;
- each room's render-and-encode time per tick (p50, p95) and its cap on sources per mix, from
  the ``stats`` each bot receives once a second (the server keeps the last 500 ticks: a window
  of 10 s that, with ``--hold`` under 8 s, also covers the end of the previous step);
- what the bots received: packets lost (sequence gaps), frames missing (RTP timestamp jumps:
  the server dropped them from a full send queue), the longest gap between arrivals.

A step **holds in real time** (:func:`verdict`) when in its window no tick was late, skipped
or over 20 ms, tick p95 stayed under the 20 ms frame, the overload governor capped nothing
(full HRTF rendering of every source in every mix), no downlink packet or frame was lost and
every bot received at least half its frames. Uplink frames the server concealed are reported
beside it: on loopback they come from the bots' own scheduling as much as from the server.
A step that fails is settled and measured once more (:data:`RETRIES`) before the phase stops,
since one stall of another process on a shared 2-core machine is not the server's capacity;
both tries are reported.

**Per participant** (:func:`per_participant`): the least-squares slope of the server's CPU
(ms of CPU per second; 10 ms/s is 1 % of a core) and RSS against participants over the
phase's steps, for the process and for its event loop thread and other threads apart.
**The limiting cost** (:func:`limiting_cost`) is named at the first step that failed, from
which budget ran out: the event loop thread (one core at most, whatever the machine has), the
tick (render and encode against the 20 ms frame), or the machine's cores.

Output: one progress line per step on stderr; the report on stdout (``--json`` for JSON); JSON,
a markdown table and a PNG (tick p95 and CPU against participants) under ``--out``.

``--transport`` picks the bots' transport: ``media`` (RTP, the default), ``datachannel`` (the
``audio`` data channel: aiortc's SCTP in Python on the server's event loop) or ``both``: both
phases on each, the reports keyed by transport (``{"transports": {"media": {...},
"datachannel": {...}}}``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from bench.bot import TRANSPORTS
from bench.fleet import BotFleet
from bench.procstat import snapshot, usage
from bench.report import pyplot, result_paths, run_bench, save_figure
from bench.serverproc import ServerProcess
from hrtf.constants import FRAME_MS
from server.cli.args import MAX_WORKERS, count, finite
from server.errors import CliError
from server.telemetry import metrics
from server.web.admission import MAX_CONNECTIONS_PER_IP

SETTLE_S = 2.0
#: After :data:`SETTLE_S`, wait at most this long for the overload governor to lift a cap that
#: the joins set off.
CALM_TIMEOUT_S = 15.0
#: A failed step is measured once more before the phase stops (the machine is shared).
RETRIES = 1
TICKS_PER_S = 1000 / FRAME_MS
#: An event loop thread this busy (% of one core) has no headroom left: it cannot use a
#: second core, however many the machine has.
LOOP_SATURATED_PCT = 85.0
#: A machine this busy (% of all its cores) has no headroom left.
MACHINE_SATURATED_PCT = 95.0
#: The overload governor's threshold (``server.tick.overload``): ticks above it degrade mixes.
TICK_HIGH_MS = 0.75 * FRAME_MS
COUNTERS = {  # step field: /metrics counter (server.telemetry.metrics declares them)
    "ticks": metrics.TICKS.name,
    "late_ticks": metrics.LATE_TICKS.name,
    "skipped_ticks": metrics.SKIPPED_TICKS.name,
    "tick_overruns": metrics.TICK_OVERRUNS.name,
    "overload_degradations": metrics.OVERLOAD_DEGRADATIONS.name,
    "culled_pairs": metrics.CULLED_PAIRS.name,
    "concealed_frames": metrics.CONCEALED_FRAMES.name,
}


# what the server and the bots say ------------------------------------------------------------

def parse_metrics(text: str) -> dict[str, float]:
    """``/metrics`` (Prometheus text) as ``{series without the spatialjam_ prefix: value}``
    (:func:`server.telemetry.metrics.flatten`: ``ticks_total``,
    ``dropped_packets_total{reason="malformed_opus"}``)."""
    values = metrics.flatten(metrics.read(text))
    missing = [m for m in (*COUNTERS.values(), metrics.PARTICIPANTS.name, metrics.ROOMS.name)
               if m not in values]
    if missing:
        raise RuntimeError(f"the server's /metrics has no {', '.join(missing)}")
    return values


def fetch_metrics(http: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{http}/metrics", timeout=10) as reply:
        return parse_metrics(reply.read().decode())


def room_ticks(reports: list[dict]) -> dict:
    """Tick times and caps from the bots' last ``stats``: the median room's p50, the worst
    room's p95, and the tick threads' busy cores (Σ rooms' p50 / 20 ms)."""
    rooms: dict[str, list[dict]] = {}
    for report in reports:
        if report["stats"]:
            rooms.setdefault(report["room"], []).append(report["stats"])
    if not rooms:
        raise RuntimeError("no bot has received the server's stats")
    p50 = [max(s["tick_ms_p50"] for s in stats) for stats in rooms.values()]
    every = [s for stats in rooms.values() for s in stats]
    return {
        "tick_ms_p50": round(float(np.median(p50)), 2),
        "tick_ms_p95": round(max(s["tick_ms_p95"] for s in every), 2),
        "tick_busy_cores": round(sum(p50) / FRAME_MS, 3),
        "sources_cap": max(s["sources_cap"] for s in every),
        "uplink_wait_ms_p95": round(max(s["uplink_wait_ms_p95"] for s in every), 2),
        "downlink_wait_ms_p95": round(max(s["downlink_wait_ms_p95"] for s in every), 2),
    }


def streams(reports: list[dict], hold_s: float) -> dict:
    """What the bots received in the window, summed over bots."""
    expected = hold_s * TICKS_PER_S
    return {
        "lost_packets": sum(r["lost"] for r in reports),
        "missing_frames": sum(r["missing_frames"] for r in reports),
        "empty_payloads": sum(r["empty"] for r in reports),
        "short_bots": sum(r["packets"] < expected / 2 for r in reports),
        "delivered": round(sum(r["packets"] for r in reports) / (expected * len(reports)), 3),
        "max_gap_ms": round(1e3 * max(r["max_gap_s"] for r in reports), 1),
        "decoded": sum(r["decoded"] for r in reports),
        "decoded_ok": sum(r["decoded_ok"] for r in reports),
        "audible": sum(r["audible"] for r in reports),
    }


def verdict(step: dict, frame_ms: float = FRAME_MS) -> list[str]:
    """Why ``step`` did not hold in real time; empty when it held."""
    reasons = []
    if step.get("join_errors"):
        reasons.append(f"bots could not join ({step['join_errors']})")
    for key, text in (("late_ticks", "late ticks"), ("skipped_ticks", "skipped ticks"),
                      ("tick_overruns", f"ticks over {frame_ms:g} ms")):
        if step[key]:
            reasons.append(f"{step[key]} {text}")
    if step["tick_ms_p95"] >= frame_ms:
        reasons.append(f"tick p95 {step['tick_ms_p95']} ms ≥ {frame_ms:g} ms")
    if step["sources_cap"] or step["overload_degradations"] or step["culled_pairs"]:
        reasons.append(f"overload cap engaged (cap {step['sources_cap'] or 'lifted'}, "
                       f"{step['overload_degradations']} degradations, {step['culled_pairs']} "
                       "pairs culled)")
    if step["lost_packets"] or step["missing_frames"]:
        reasons.append(f"{step['lost_packets'] + step['missing_frames']} downlink frames lost")
    if step["short_bots"]:
        reasons.append(f"{step['short_bots']} bots received under half their frames")
    return reasons


def limiting_cost(step: dict) -> str:
    """What ran out at ``step`` (the first that failed), in words.

    In this order: the event loop thread near its one core; the tick (ticks over the
    governor's 15 ms or the 20 ms frame, or a cap it could not lift); the machine's cores.
    Otherwise no budget ran out and the failure was a transient stall.
    """
    loop, tick = step["loop_cpu_pct"], step["tick_ms_p95"]
    per_tick_cpu_ms = step["off_loop_cpu_pct"] * 10 / TICKS_PER_S / max(step["rooms"], 1)
    if loop >= LOOP_SATURATED_PCT:
        return (f"the event loop thread: {loop:.0f} % of its one core (per-packet aiortc work: "
                "SRTP, RTP/RTCP, ICE, the uplink receive path, signaling); the other threads "
                f"used {step['off_loop_cpu_pct']:.0f} %")
    if (tick >= TICK_HIGH_MS or step["tick_overruns"] or step["overload_degradations"]
            or step["culled_pairs"]):
        waiting = (f"; its threads used {per_tick_cpu_ms:.1f} ms of CPU per tick, so it also "
                   "waited for the GIL or a core" if per_tick_cpu_ms < 0.5 * step["tick_ms_p50"]
                   else "")
        return (f"the tick's render and encode: p50 {step['tick_ms_p50']} / p95 {tick} ms of "
                f"the {FRAME_MS} ms frame, {step['overload_degradations']} ticks over "
                f"{TICK_HIGH_MS:g} ms{waiting}")
    if step["machine_busy_pct"] >= MACHINE_SATURATED_PCT:
        return (f"the machine's cores: {step['machine_busy_pct']:.0f} % busy (server "
                f"{step['server_cpu_pct']:.0f} %, bots {step['bots_cpu_pct']:.0f} % of a core)")
    return (f"no budget ran out (event loop {loop:.0f} % of a core, tick p95 {tick} ms, machine "
            f"{step['machine_busy_pct']:.0f} % busy): a transient stall — "
            + "; ".join(step["reasons"]))


def _fit(x: list[float], y: list[float]) -> tuple[float, float]:
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def _reaches(fit: tuple[float, float], level: float) -> int | None:
    slope, intercept = fit
    return max(0, int((level - intercept) / slope)) if slope > 0 else None


def per_participant(steps: list[dict], cpus: int = os.cpu_count() or 1) -> dict:
    """What each participant adds: least-squares lines over ``steps`` of the server's CPU (ms/s,
    and % of a core) and RSS (MiB) against participants; empty with fewer than two counts.

    Also where those lines reach a budget: the event loop thread one full core
    (``loop_full_at``), the server all ``cpus`` cores (``cores_full_at``; on a machine of its
    own, without the bots).
    """
    n = [s["participants"] for s in steps]
    if len(set(n)) < 2:
        return {}
    cpu = _fit(n, [s["server_cpu_pct"] for s in steps])
    loop = _fit(n, [s["loop_cpu_pct"] for s in steps])
    return {
        "cpu_ms_per_s": round(10 * cpu[0], 2),
        "cpu_pct_core": round(cpu[0], 2),
        "loop_ms_per_s": round(10 * loop[0], 2),
        "off_loop_ms_per_s": round(10 * _fit(n, [s["off_loop_cpu_pct"] for s in steps])[0], 2),
        "rss_mb": round(_fit(n, [s["rss_mb"] for s in steps])[0], 2),
        "loop_full_at": _reaches(loop, 100.0),
        "cores_full_at": _reaches(cpu, 100.0 * cpus),
    }


# the plan ---------------------------------------------------------------------------------

def one_room_plan(max_bots: int, step: int) -> list[list[tuple[str, str]]]:
    """``(room, bot name)`` to add at each step: ``step`` more each time, up to ``max_bots``."""
    counts = list(range(step, max_bots + 1, step))
    if not counts or counts[-1] != max_bots:
        counts.append(max_bots)
    plan, have = [], 0
    for total in counts:
        plan.append([("one-room", f"bot{k}") for k in range(have, total)])
        have = total
    return plan


def many_rooms_plan(max_bots: int, rooms_of: int, step: int) -> list[list[tuple[str, str]]]:
    """Whole rooms of ``rooms_of``, at least ``step`` participants a step, up to ``max_bots``."""
    per_step = math.ceil(step / rooms_of)
    rooms = max_bots // rooms_of
    return [[(f"room{r}", f"room{r}-bot{k}") for r in range(first, min(first + per_step, rooms))
             for k in range(rooms_of)] for first in range(0, rooms, per_step)]


# one phase --------------------------------------------------------------------------------

def settle(fleet: BotFleet) -> float:
    """Wait :data:`SETTLE_S`, then until no room's mixes are capped (at most
    :data:`CALM_TIMEOUT_S` more); returns the seconds waited."""
    t0 = time.monotonic()
    time.sleep(SETTLE_S)
    while time.monotonic() - t0 < SETTLE_S + CALM_TIMEOUT_S:
        if not any(r["stats"].get("sources_cap") for r in fleet.report()):
            break
        time.sleep(1.0)
    return round(time.monotonic() - t0, 1)


def server_pids(server: ServerProcess) -> list[int]:
    """The server's processes: the one, or the front and its workers (from its /healthz)."""
    with urllib.request.urlopen(f"{server.http}/healthz", timeout=10) as reply:
        workers = json.loads(reply.read()).get("workers", [])
    return [server.proc.pid, *(w["pid"] for w in workers if w["pid"] is not None)]


def measure_step(phase: str, server: ServerProcess, fleet: BotFleet, join_errors: list[str],
                 hold_s: float) -> dict:
    """Settle, then measure one window of ``hold_s`` seconds; returns the step's record."""
    settled_s = settle(fleet)
    fleet.mark()
    pids, serving = fleet.pids, server_pids(server)
    m0, before = fetch_metrics(server.http), snapshot(serving, pids)
    time.sleep(hold_s)
    after, m1 = snapshot(serving, pids), fetch_metrics(server.http)
    reports = fleet.report()
    step = {"phase": phase, "participants": int(m1[metrics.PARTICIPANTS.name]),
            "rooms": int(m1[metrics.ROOMS.name]),
            "bots": len(reports), "settle_s": settled_s, "hold_s": round(after.at - before.at, 2),
            "join_errors": len(join_errors)}
    step.update({key: int(m1[name] - m0[name]) for key, name in COUNTERS.items()})
    step.update(room_ticks(reports))
    step.update(usage(before, after))
    step.update(streams(reports, hold_s))
    step["reasons"] = verdict(step)
    step["held"] = not step["reasons"]
    if join_errors:
        step["join_error_text"] = join_errors[0][:300]
    return step


def run_phase(phase: str, plan: list[list[tuple[str, str]]], room_capacity: int,
              hold_s: float, per_process: int, progress, workers: int = 1,
              transport: str = "media") -> dict:
    steps: list[dict] = []
    bots = sum(len(added) for added in plan)  # every bot holds a connection from loopback
    with ServerProcess("--room-capacity", str(room_capacity), "--max-connections-per-ip",
                       str(max(bots + 8, MAX_CONNECTIONS_PER_IP)),
                       "--workers", str(workers)) as server, \
            tempfile.TemporaryDirectory() as logs:
        server_log = server.log
        fleet = BotFleet(server.ws, per_process, Path(logs), transport)
        try:
            for bots in plan:
                errors = fleet.add(bots)
                if server.proc.poll() is not None:
                    raise RuntimeError("the server exited: " + " / ".join(list(server_log)[-5:]))
                step = measure_step(phase, server, fleet, errors, hold_s)
                progress(step)
                for _ in range(RETRIES):
                    if step["held"] or errors:
                        break
                    earlier = step["reasons"]
                    step = measure_step(phase, server, fleet, errors, hold_s)
                    step["earlier_tries"] = [earlier]
                    progress(step)
                step["tries"] = 1 + len(step.get("earlier_tries", []))
                steps.append(step)
                if not step["held"]:
                    break
        finally:
            fleet.close()
    held = [s for s in steps if s["held"]]
    failed = next((s for s in steps if not s["held"]), None)
    return {
        "room_capacity": room_capacity,
        "held_participants": held[-1]["participants"] if held else 0,
        "held_rooms": held[-1]["rooms"] if held else 0,
        "failed_at": failed["participants"] if failed else None,
        "failed_because": failed["reasons"] if failed else [],
        "limit": limiting_cost(failed) if failed else None,
        "per_participant": per_participant(steps) if steps else {},
        "steps": steps,
    }


def progress_line(step: dict) -> str:
    verdict_text = "held" if step["held"] else "NOT held: " + "; ".join(step["reasons"])
    if "earlier_tries" in step:
        verdict_text += " (second try)"
    return (f"[{step['phase']}] {step['participants']:3d} participants in {step['rooms']} "
            f"room(s): tick p50 {step['tick_ms_p50']:.1f} / p95 {step['tick_ms_p95']:.1f} ms, "
            f"server CPU {step['server_cpu_pct']:.0f} % (loop {step['loop_cpu_pct']:.0f} %), "
            f"RSS {step['rss_mb']:.0f} MiB, bots {step['bots_cpu_pct']:.0f} %, machine "
            f"{step['machine_busy_pct']:.0f} % — {verdict_text}")


def capacity_benchmark(max_bots: int, step: int, hold_s: float, rooms_of: int,
                       per_process: int = 10, progress=None, workers: int = 1,
                       transport: str = "media") -> dict:
    progress = progress or (lambda s: print(progress_line(s), file=sys.stderr, flush=True))
    if rooms_of > max_bots:
        raise ValueError(f"--rooms-of {rooms_of} is more than --max-bots {max_bots}")
    if transport == "both":
        return {"benchmark": "capacity", "transport": "both", "transports": {
            t: capacity_benchmark(max_bots, step, hold_s, rooms_of, per_process, progress,
                                  workers, t) for t in TRANSPORTS}}
    one = run_phase("one room", one_room_plan(max_bots, step), max(max_bots, 2), hold_s,
                    per_process, progress, workers, transport)
    many = run_phase("many rooms", many_rooms_plan(max_bots, rooms_of, step), rooms_of,
                     hold_s, per_process, progress, workers, transport)
    return {
        "transport": transport,
        "benchmark": "capacity",
        "settings": {"max_bots": max_bots, "step": step, "hold_s": hold_s, "rooms_of": rooms_of,
                     "bots_per_process": per_process, "settle_s": SETTLE_S,
                     "workers": workers},
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "one_room": one,
        "many_rooms": many,
    }


# output -----------------------------------------------------------------------------------

def _by_transport(report: dict) -> list[tuple[str, dict]]:
    """(a label's prefix, the one-transport report) of each transport the report holds."""
    if "transports" not in report:
        return [("", report)]
    return [(f"{t}, ", part) for t, part in report["transports"].items()]


def summary_lines(report: dict) -> list[str]:
    return [line for prefix, part in _by_transport(report)
            for line in _summary_lines(part, prefix)]


def _summary_lines(report: dict, prefix: str = "") -> list[str]:
    lines = []
    for key, label in (("one_room", f"{prefix}one room"), ("many_rooms", f"{prefix}many rooms")):
        phase = report[key]
        rooms = f" in {phase['held_rooms']} rooms" if key == "many_rooms" else ""
        end = (f"failed at {phase['failed_at']}: {'; '.join(phase['failed_because'])}"
               if phase["failed_at"] is not None else "reached --max-bots")
        lines.append(f"{label}: held {phase['held_participants']} participants{rooms} in real "
                     f"time ({end})")
        pp = phase["per_participant"]
        if pp:
            lines.append(f"  per participant: server CPU {pp['cpu_ms_per_s']} ms/s "
                         f"({pp['cpu_pct_core']} % of a core; event loop "
                         f"{pp['loop_ms_per_s']}, other threads {pp['off_loop_ms_per_s']} "
                         f"ms/s), RSS {pp['rss_mb']} MiB; on these lines the event loop "
                         f"fills its core at {pp['loop_full_at']} and the server all cores at "
                         f"{pp['cores_full_at']} participants")
        else:
            lines.append("  per participant: needs two steps with different counts")
        if phase["limit"]:
            lines.append(f"  limit: {phase['limit']}")
    return lines


TABLE_COLUMNS = (
    ("phase", "phase"), ("participants", "n"), ("rooms", "rooms"),
    ("tick_ms_p50", "tick p50 ms"), ("tick_ms_p95", "tick p95 ms"), ("late_ticks", "late"),
    ("skipped_ticks", "skipped"), ("tick_overruns", ">20 ms"), ("culled_pairs", "culled"),
    ("concealed_frames", "concealed"), ("lost_packets", "lost"),
    ("server_cpu_pct", "server CPU %"), ("loop_cpu_pct", "loop %"),
    ("off_loop_cpu_pct", "other threads %"), ("rss_mb", "RSS MiB"), ("bots_cpu_pct", "bots %"),
    ("machine_busy_pct", "machine %"), ("tries", "tries"), ("held", "held"),
)


def table(report: dict) -> list[str]:
    rows = ["| " + " | ".join(title for _, title in TABLE_COLUMNS) + " |",
            "|" + "---|" * len(TABLE_COLUMNS)]
    for prefix, part in _by_transport(report):
        for key in ("one_room", "many_rooms"):
            for step in part[key]["steps"]:
                cells = ["yes" if step[k] is True else "no" if step[k] is False else str(step[k])
                         for k, _ in TABLE_COLUMNS]
                cells[0] = prefix + cells[0]
                rows.append("| " + " | ".join(cells) + " |")
    return rows


def write_results(report: dict, out_dir: Path) -> list[Path]:
    """JSON, markdown and PNG; returns the paths written."""
    paths = result_paths(out_dir, "capacity")
    paths[0].write_text(json.dumps(report, indent=2))
    parts = _by_transport(report)
    s = parts[0][1]["settings"]
    paths[1].write_text("\n".join(
        [f"# Capacity: up to {s['max_bots']} bots, steps of {s['step']}, {s['hold_s']} s held, "
         f"rooms of {s['rooms_of']}, serve --workers {s['workers']}", "",
         *summary_lines(report), "", *table(report)]) + "\n")
    fig, (ticks, cpu) = pyplot().subplots(1, 2, figsize=(10, 3.8))
    lines = [(part[key]["steps"], f"{prefix}{label}", marker, f"C{2 * k + j}")
             for k, (prefix, part) in enumerate(parts)
             for j, (key, label, marker) in enumerate((("one_room", "one room", "o"),
                                                       ("many_rooms", "many rooms", "s")))]
    for steps, label, marker, color in lines:
        n = [st["participants"] for st in steps]
        ticks.plot(n, [st["tick_ms_p95"] for st in steps], marker=marker, color=color,
                   label=label)
        cpu.plot(n, [st["server_cpu_pct"] for st in steps], marker=marker, color=color,
                 label=f"{label}: server")
        cpu.plot(n, [st["loop_cpu_pct"] for st in steps], marker=marker, color=color,
                 linestyle="--", label=f"{label}: event loop")
    ticks.axhline(FRAME_MS, color="grey", linewidth=1)
    ticks.set_ylabel("tick p95 (ms)")
    cpu.set_ylabel("CPU (% of one core)")
    for ax in (ticks, cpu):
        ax.set_xlabel("participants")
    save_figure(fig, [ticks, cpu], paths[2], legend_size=8)
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``spatialjam bench capacity``'s options; the command runs :func:`run_capacity_bench`."""
    parser.add_argument("--max-bots", type=count("max bots", 2, 256), default=60, metavar="N",
                        help="stop each phase here (default 60)")
    parser.add_argument("--step", type=count("step", 1, 256), default=5, metavar="S",
                        help="participants added per step (default 5)")
    parser.add_argument("--hold", type=finite("hold", 1, 600), default=5.0,
                        metavar="SECONDS", help="measured window per step (default 5)")
    parser.add_argument("--rooms-of", type=count("rooms of", 1, 256), default=4, metavar="K",
                        help="participants per room in the many-rooms phase (default 4)")
    parser.add_argument("--bots-per-process", type=count("bots per process", 1, 64),
                        default=10, metavar="B", help="bots sharing one process (default 10)")
    parser.add_argument("--workers", type=count("workers", 1, MAX_WORKERS), default=1,
                        metavar="W", help="the server's processes, as serve --workers "
                        "(default 1: one process)")
    parser.add_argument("--transport", choices=(*TRANSPORTS, "both"), default="media",
                        help="the bots' transport: media (RTP, the default), datachannel, or "
                             "both, each phase on each")
    parser.add_argument("--out", default="bench/results", metavar="DIR",
                        help="where the JSON, PNG and markdown go (default bench/results)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(run=run_capacity_bench)


def run_capacity_bench(args: argparse.Namespace) -> int:
    if args.rooms_of > args.max_bots:
        raise CliError(f"--rooms-of {args.rooms_of} is more than --max-bots {args.max_bots}")
    run_bench(lambda: capacity_benchmark(args.max_bots, args.step, args.hold, args.rooms_of,
                                         args.bots_per_process, workers=args.workers,
                                         transport=args.transport),
              lambda report: [*summary_lines(report), "", *table(report)], args.json,
              write=lambda report: write_results(report, Path(args.out)),
              errors=(RuntimeError, OSError))
    return 0
