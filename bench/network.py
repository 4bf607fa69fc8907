"""``spatialjam bench network``: mouth-to-ear delay, concealment and recovery on a bad network.

For each profile (loss, jitter, reordering; :data:`PROFILES`) a fresh pair of bots joins a
room on one ``spatialjam serve``; each bot runs in its own process with its own
:class:`~bench.impair.Relay` between it and the server (only media is impaired; STUN and DTLS
pass untouched). The speaker plays a click every 500 ms (:mod:`bench.clicks`); the listener
records its personal mix. By default the profile's impairment applies to both legs of the path,
the speaker's uplink and the listener's downlink (``--legs up`` or ``down`` for one of them), so
"1 % loss" loses about 2 % end to end.

Each run has three phases on one ``time.monotonic`` clock shared by all processes:

1. a clean **lead-in** (after both bots hear audio), whose clicks give the run's own clean delay;
2. the **impaired** period (``--seconds``);
3. a clean **tail** (``--tail``): the delay must come back near the lead-in's, never a
   permanent lag after a loss (``lag_end_ms``: the median delay of the tail's last three
   clicks minus the lead-in's; ``lag_after_ms``: the whole tail's, after its first second).

Reported per profile and phase: the click delay p50/p95/p99 (bot to server to bot, found by
cross-correlation), clicks heard of clicks sent; the server's receive buffer for the speaker
from its ``stats`` (frames concealed, target and depth, wait from arrival to tick); the relays'
counts (dropped, reordered); and what the listener got (frames missing, the longest gap between
frames). JSON, a markdown table and a PNG go under ``--out``.

``--transport`` picks the bots' transport: ``media`` (RTP, the default), ``datachannel`` (the
``audio`` data channel; the relays then impair SCTP too, :mod:`bench.impair`) or ``both``: every
profile on each, in one run, the profiles keyed by transport (``{"transports": {"media":
[...], "datachannel": [...]}}``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bot import TRANSPORTS, Bot, silence
from bench.clicks import clicks, delay_summary, found_click_times, sent_click_times, stream_times
from bench.impair import CLEAN, PROFILES, Impairment, LegCounts, Relay
from bench.report import pyplot, result_paths, run_bench, save_figure
from bench.serverproc import ROOT, ServerProcess
from hrtf.constants import FRAME, SAMPLE_RATE
from server.cli.args import count, finite

LEAD_S = 3.0
#: Clicks sent this long before a phase ends belong to no phase (their packets straddle it).
EDGE_S = 0.5
#: The tail's first second is left out of its delay: packets in flight, buffers draining.
TAIL_SKIP_S = 1.0
READY_TIMEOUT_S = 60.0
#: The tail's last clicks, whose median delay against the lead-in's is the lag left at its end.
END_CLICKS = 3

# --- the bot process: python -m bench.network URL ROOM NAME ROLE OUT --uplink J --downlink J


async def _bot(args: argparse.Namespace) -> None:
    """Join through a relay, say ``ready`` once audio flows, read ``T1 T2 T3`` on stdin, impair
    from T1 to T2, stop at T3, and save what was sent, heard and counted to ``args.out``."""
    loop = asyncio.get_running_loop()
    impaired = {"uplink": Impairment.from_dict(json.loads(args.uplink)),
                "downlink": Impairment.from_dict(json.loads(args.downlink))}
    async with Relay(seed=args.seed, data_channel=args.transport == "datachannel") as relay:
        bot = Bot(args.url, args.room, args.name, clicks if args.role == "clicks" else silence,
                  offer_filter=relay.rewrite_offer, answer_filter=relay.rewrite_answer,
                  transport=args.transport)
        try:
            await bot.connect()
            async with asyncio.timeout(READY_TIMEOUT_S):
                while len(bot.received) < 25:
                    await asyncio.sleep(0.05)
            print("ready", flush=True)
            t1, t2, t3 = map(float, (await loop.run_in_executor(None, sys.stdin.readline)).split())
            stats_log: list[tuple[float, dict]] = []
            poll = loop.create_task(_log_stats(bot, stats_log))
            counts = {}
            for mark, at, spec in (("t1", t1, impaired), ("t2", t2, {}), ("t3", t3, None)):
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                counts[mark] = {k: vars(v) for k, v in relay.counts().items()}
                if spec is not None:
                    relay.set_impairment(spec.get("uplink", CLEAN), spec.get("downlink", CLEAN))
            poll.cancel()
            np.savez(args.out, sent_at=np.array(bot.track.sent_at), frame=bot.track.frame,
                     received=bot.recording().mean(axis=1).astype(np.float32),
                     received_frames=np.array([len(f) for f in bot.received], np.int64),
                     received_at=np.array(bot.received_at),
                     stats=json.dumps(stats_log), counts=json.dumps(counts))
        finally:
            await bot.close()


async def _log_stats(bot: Bot, log: list[tuple[float, dict]]) -> None:
    last = None
    while True:
        if bot.stats is not None and bot.stats is not last:
            last = bot.stats
            log.append((time.monotonic(), last))
        await asyncio.sleep(0.05)


def _bot_main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.network")
    for name in ("url", "room", "name"):
        parser.add_argument(name)
    parser.add_argument("role", choices=("clicks", "silence"))
    parser.add_argument("out")
    parser.add_argument("--uplink", default="{}", help="Impairment fields as JSON")
    parser.add_argument("--downlink", default="{}", help="Impairment fields as JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--transport", choices=TRANSPORTS, default="media")
    asyncio.run(_bot(parser.parse_args()))


# --- the benchmark


def _spawn(url: str, room: str, name: str, role: str, out: Path, uplink: Impairment,
           downlink: Impairment, seed: int, transport: str = "media") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.network", url, room, name, role, str(out),
         "--uplink", json.dumps(uplink.to_dict()), "--downlink", json.dumps(downlink.to_dict()),
         "--seed", str(seed), "--transport", transport],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _wait_ready(procs: list[subprocess.Popen], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                raise RuntimeError("a bot did not connect through its relay "
                                   f"(exit {proc.poll()}) within {timeout_s:g} s")
            if (select.select([proc.stdout], [], [], min(left, 0.5))[0]
                    and proc.stdout.readline().strip() == "ready"):
                break


def run_profile(url: str, name: str, seconds: float, tail_s: float, legs: str,
                seed: int, transport: str = "media") -> dict:
    """One profile: two bot processes through relays, lead-in, impaired period, clean tail."""
    label, spec = PROFILES[name]
    up = spec if legs in ("both", "up") else CLEAN
    down = spec if legs in ("both", "down") else CLEAN
    room = f"net-{name}-{transport}"
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / "speaker.npz", Path(tmp) / "listener.npz"]
        procs = [_spawn(url, room, "speaker", "clicks", outs[0], up, CLEAN, seed, transport),
                 _spawn(url, room, "listener", "silence", outs[1], CLEAN, down, seed + 1,
                        transport)]
        try:
            _wait_ready(procs, READY_TIMEOUT_S)
            t1 = time.monotonic() + LEAD_S
            t2, t3 = t1 + seconds, t1 + seconds + tail_s
            for proc in procs:
                proc.stdin.write(f"{t1} {t2} {t3}\n")
                proc.stdin.flush()
            for proc in procs:
                if proc.wait(timeout=t3 - time.monotonic() + 60) != 0:
                    raise RuntimeError(f"a bot failed (exit {proc.returncode})")
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        speaker, listener = (dict(np.load(out)) for out in outs)
    return {"name": name, "label": label, "uplink": up.to_dict(), "downlink": down.to_dict(),
            **analyse(speaker, listener, t1, t2, t3)}


def analyse(speaker: dict, listener: dict, t1: float, t2: float, t3: float) -> dict:
    """Delays, server and relay counts and listener gaps of one run, per phase."""
    sent = sent_click_times(speaker["sent_at"], frame=int(speaker["frame"]))  # sent frames
    times = stream_times(listener["received_frames"], listener["received_at"])
    heard = dict(found_click_times(listener["received"], times, [t for t in sent if t < t3]))
    phases = {"before": (t1 - LEAD_S + EDGE_S, t1 - EDGE_S), "impaired": (t1, t2 - EDGE_S),
              "tail": (t2 + TAIL_SKIP_S, t3 - EDGE_S)}
    report: dict = {"delay_ms": {}, "clicks": {}, "curve": []}
    for phase, (lo, hi) in phases.items():
        sent_here = [t for t in sent if lo <= t < hi]
        delays = [1e3 * (heard[t] - t) for t in sent_here if t in heard]
        report["delay_ms"][phase] = delay_summary(delays)
        report["clicks"][phase] = {"sent": len(sent_here), "heard": len(delays)}
    report["curve"] = [(round(t - t1, 3), round(1e3 * (h - t), 2)) for t, h in heard.items()
                       if t >= t1 - LEAD_S]
    before, tail = report["delay_ms"]["before"], report["delay_ms"]["tail"]
    lo, hi = phases["tail"]
    tail_end = [1e3 * (heard[t] - t) for t in sent if lo <= t < hi and t in heard][-END_CLICKS:]
    if before.get("clicks") and tail_end:
        report["lag_after_ms"] = round(tail["p50"] - before["p50"], 2)
        report["lag_end_ms"] = round(float(np.median(tail_end)) - before["p50"], 2)
    report["server"] = _server(json.loads(str(speaker["stats"])), t1, t2, t3)
    up, down = json.loads(str(speaker["counts"])), json.loads(str(listener["counts"]))
    report["relay"] = {
        "speaker_uplink": vars(LegCounts(**up["t2"]["uplink"]).minus(
            LegCounts(**up["t1"]["uplink"]))),
        "listener_downlink": vars(LegCounts(**down["t2"]["downlink"]).minus(
            LegCounts(**down["t1"]["downlink"])))}
    frames = listener["received_frames"]  # samples per frame: the room's frame
    frame_s = float(np.median(frames)) / SAMPLE_RATE if len(frames) else FRAME / SAMPLE_RATE
    report["listener"] = _gaps(listener["received_at"], t1, t2, frame_s)
    return report


def _server(log: list, t1: float, t2: float, t3: float) -> dict:
    """The server's buffer for the speaker, from its once-a-second ``stats``."""
    def at(t: float) -> dict:  # the last stats received by t
        older = [s for when, s in log if when <= t]
        return older[-1] if older else (log[0][1] if log else {})

    during = [s for when, s in log if t1 <= when <= t2 + 1.0] or [at(t2)]
    end_impaired, end = at(t2 + 1.0), at(t3)
    return {
        "concealed_impaired": end_impaired.get("concealed", 0) - at(t1).get("concealed", 0),
        "concealed_tail": end.get("concealed", 0) - end_impaired.get("concealed", 0),
        # Of the concealed frames, those Opus rebuilt from the next packet's FEC, and those
        # its packet-loss concealment continued (the rest faded to silence).
        "fec_impaired": end_impaired.get("concealed_fec", 0) - at(t1).get("concealed_fec", 0),
        "plc_impaired": end_impaired.get("concealed_plc", 0) - at(t1).get("concealed_plc", 0),
        "target_ms_max": max(s.get("uplink_target_ms", 0) for s in during),
        "buffer_ms_max": max(s.get("uplink_buffer_ms", 0) for s in during),
        "wait_ms_p50": end_impaired.get("uplink_wait_ms_p50"),
        "wait_ms_p95": end_impaired.get("uplink_wait_ms_p95"),
        "target_ms_end": end.get("uplink_target_ms"),
        "buffer_ms_end": end.get("uplink_buffer_ms"),
        "late_ticks": end.get("late_ticks"),
    }


def _gaps(received_at: np.ndarray, t1: float, t2: float, frame_s: float) -> dict:
    """Frames the listener missed in the impaired period, and its longest wait for one."""
    arrivals = received_at[(received_at >= t1) & (received_at < t2)]
    expected = round((t2 - t1) / frame_s)
    gaps = np.diff(arrivals) if len(arrivals) > 1 else np.zeros(1)
    return {"frames_expected": expected, "frames_received": len(arrivals),
            "frames_missing": max(0, expected - len(arrivals)),
            "longest_gap_ms": round(1e3 * float(gaps.max()), 1),
            "gaps_over_50ms": int((gaps > 0.05).sum())}


def network_benchmark(profiles: list[str], seconds: float, tail_s: float, legs: str = "both",
                      seed: int = 1, transport: str = "media",
                      frame_ms: float | None = None) -> dict:
    """Every profile on one transport (``profiles``: a list), or on ``both`` (``transports``:
    each transport's list); the server's rooms tick at ``frame_ms`` when given."""
    transports = TRANSPORTS if transport == "both" else (transport,)
    runs: dict[str, list[dict]] = {t: [] for t in transports}
    server_args = ("--frame-ms", f"{frame_ms:g}") if frame_ms is not None else ()
    with ServerProcess(*server_args) as server:
        for t in transports:
            for k, name in enumerate(profiles):
                runs[t].append(run_profile(server.ws, name, seconds, tail_s, legs, seed + 10 * k,
                                           t))
    report = {"benchmark": "network", "seconds": seconds, "tail_s": tail_s, "lead_s": LEAD_S,
              "legs": legs, "seed": seed, "transport": transport,
              "frame_ms": frame_ms if frame_ms is not None else FRAME * 1e3 / SAMPLE_RATE}
    if transport == "both":
        report["transports"] = runs
    else:
        report["profiles"] = runs[transport]
    return report


def _profile_runs(report: dict) -> list[tuple[str, dict]]:
    """(label, run) of every profile run, the transport in the label when there are two."""
    if "transports" not in report:
        return [(run["label"], run) for run in report["profiles"]]
    return [(f"{run['label']} ({t})", run) for t, runs in report["transports"].items()
            for run in runs]


def table(report: dict) -> list[str]:
    """The markdown table (one row per profile)."""
    lines = [f"# Network, {report['seconds']:g} s impaired + {report['tail_s']:g} s clean tail, "
             f"legs: {report['legs']}", "",
             "| profile | clicks heard | p50 ms | p95 ms | p99 ms | before p50 | tail p50 | "
             "lag at end ms | concealed (PLC/FEC) | target max/end ms | buffer max ms | "
             "wait p50/p95 ms | "
             "up dropped/reordered | down dropped/reordered | listener missing | longest gap ms |",
             "|---" * 16 + "|"]
    for label, run in _profile_runs(report):
        d, c, s = run["delay_ms"], run["clicks"]["impaired"], run["server"]
        up, down, ls = run["relay"]["speaker_uplink"], run["relay"]["listener_downlink"], \
            run["listener"]
        lines.append(
            f"| {label} | {c['heard']}/{c['sent']} | {d['impaired'].get('p50', '—')} | "
            f"{d['impaired'].get('p95', '—')} | {d['impaired'].get('p99', '—')} | "
            f"{d['before'].get('p50', '—')} | {d['tail'].get('p50', '—')} | "
            f"{run.get('lag_end_ms', '—')} | {s['concealed_impaired']} "
            f"({s['plc_impaired']}/{s['fec_impaired']}) | "
            f"{s['target_ms_max']:g}/{s['target_ms_end']:g} | {s['buffer_ms_max']:g} | "
            f"{s['wait_ms_p50']}/{s['wait_ms_p95']} | {up['dropped']}/{up['reordered']} | "
            f"{down['dropped']}/{down['reordered']} | {ls['frames_missing']} | "
            f"{ls['longest_gap_ms']} |")
    return lines


def write_results(report: dict, out_dir: Path) -> list[Path]:
    """JSON, markdown and PNG (delay of each click over the run); returns the paths."""
    paths = result_paths(out_dir, "network")
    paths[0].write_text(json.dumps(report, indent=2))
    paths[1].write_text("\n".join(table(report)) + "\n")
    fig, ax = pyplot().subplots(figsize=(8, 4))
    ax.axvspan(0, report["seconds"], color="0.9", label="impaired")
    for label, run in _profile_runs(report):
        if run["curve"]:
            t, d = zip(*run["curve"], strict=True)
            ax.plot(t, d, marker=".", label=label)
    ax.set_xlabel("click sent (s from the start of the impaired period)")
    ax.set_ylabel("mouth-to-ear delay (ms)")
    save_figure(fig, [ax], paths[2], legend_size=8)
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``spatialjam bench network``'s options; the command runs :func:`run_network_bench`."""
    parser.add_argument("--seconds", type=finite("seconds", 2, 3600), default=10.0,
                        help="length of the impaired period (default 10)")
    parser.add_argument("--tail", type=finite("tail", 3, 600), default=8.0, metavar="SECONDS",
                        help="clean seconds after it, to see the delay come back (default 8)")
    parser.add_argument("--profiles", nargs="+", choices=list(PROFILES), default=list(PROFILES),
                        metavar="PROFILE", help=f"any of {', '.join(PROFILES)} (default: all)")
    parser.add_argument("--legs", choices=("both", "up", "down"), default="both",
                        help="impair the speaker's uplink, the listener's downlink, or both")
    parser.add_argument("--seed", type=count("seed", 0, 2**31 - 1), default=1)
    parser.add_argument("--transport", choices=(*TRANSPORTS, "both"), default="media",
                        help="the bots' transport: media (RTP, the default), datachannel, or "
                             "both, every profile on each")
    parser.add_argument("--frame-ms", type=float, default=None, metavar="MS",
                        help="the rooms' frame (ms): 20 (default), 10, 5 or 2.5; media bots "
                             "send 20 ms packets, data-channel bots the room's frame")
    parser.add_argument("--out", default="bench/results", metavar="DIR",
                        help="where the JSON, PNG and markdown go (default bench/results)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(run=run_network_bench)


def run_network_bench(args: argparse.Namespace) -> int:
    run_bench(lambda: network_benchmark(args.profiles, args.seconds, args.tail, args.legs,
                                        args.seed, args.transport, args.frame_ms),
              table, args.json, write=lambda report: write_results(report, Path(args.out)))
    return 0


if __name__ == "__main__":
    _bot_main()
