"""``spatialjam bench latency``: mouth-to-ear through the server, beside peer-to-peer baselines.

In one run:

- **through the server**: ``spatialjam serve`` and ``--bots`` aiortc bots, each in its own
  process; bot 0 plays a click every 500 ms, the others record their personal mixes;
- **peer to peer, stock aiortc**: two peer connections with no server, the receiver keeping
  aiortc's own 4-frame receive buffer (what an aiortc application gets by default);
- **peer to peer, own receive path**: the same with that buffer bypassed as the server does
  (the floor: Opus both ways and loopback).

Each click is found in the receiver's stream by cross-correlation with the click itself; its
delay is the time from the sender handing the frame holding it to aiortc to the receiver
getting the frame holding it back (``time.monotonic()``, one clock for all processes), plus the
offsets within the frames. The server's share is broken down from its own measurements (the
speaker's wait from arrival to the tick, the tick's render and encode, the listener's wait to
be sent). Writes JSON, a PNG plot and a markdown table under ``bench/results/``.

``--transport`` picks the bots' transport through the server: ``media`` (RTP, the default),
``datachannel`` (Opus packets on an ``audio`` data channel) or ``both``: each measured with a
fresh server in one run, the through-the-server results keyed by transport
(``{"transports": {"media": {...}, "datachannel": {...}}}``) beside one set of baselines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection

from bench.bot import TRANSPORTS, SignalTrack
from bench.clicks import (
    clicks,
    found_click_times,
    sent_click_times,
    stream_times,
)
from bench.clicks import (
    delay_summary as summary,
)
from bench.report import plot_cdf, pyplot, result_paths, run_bench, save_figure
from bench.serverproc import ROOT, ServerProcess
from hrtf.constants import FRAME_MS, frame_samples
from server.cli.args import add_frame_arg, count, finite
from server.media.uplink import bypass_receiver_buffer, receiver_of

RESULTS = ROOT / "bench" / "results"
SETTLE_S = 3.0


def through_server(bots: int, seconds: float,
                   frame_ms: float = FRAME_MS,
                   transport: str = "media") -> tuple[list[float], dict]:
    """Bots in a room of ``frame_ms`` frames, each sending Opus packets that long, on
    ``transport``."""
    short = () if frame_ms == FRAME_MS else ("--frame-ms", f"{frame_ms:g}")
    with ServerProcess(*short) as server, tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"bot{k}.npz" for k in range(bots)]
        procs = [subprocess.Popen(
            [sys.executable, "-m", "bench.botproc", server.ws, "latency", f"bot{k}",
             "clicks" if k == 0 else "silence", str(seconds), str(outs[k]),
             "--settle", str(SETTLE_S), *short, "--transport", transport], cwd=ROOT)
            for k in range(bots)]
        for proc in procs:
            if proc.wait(timeout=seconds + SETTLE_S + 120) != 0:
                raise RuntimeError(f"a bot failed (exit {proc.returncode})")
        data = [dict(np.load(out)) for out in outs]
    speaker = data[0]
    sent = sent_click_times(speaker["sent_at"], first_frame=int(SETTLE_S * 1000 / frame_ms),
                            frame=frame_samples(frame_ms))
    delays: list[float] = []
    for listener in data[1:]:
        times = stream_times(listener["received_frames"], listener["received_at"])
        mono = listener["received"].mean(axis=1)
        delays += [1e3 * (heard - t) for t, heard in found_click_times(mono, times, sent)]
    speaker_stats = json.loads(str(speaker["stats"]))
    listener_stats = [json.loads(str(d["stats"])) for d in data[1:]]
    stages = {
        "uplink_wait_p50": speaker_stats.get("uplink_wait_ms_p50"),
        "uplink_wait_p95": speaker_stats.get("uplink_wait_ms_p95"),
        # The uplink wait's parts: the wait for the first tick, and the receive buffer.
        "uplink_tick_wait_p50": speaker_stats.get("uplink_tick_wait_ms_p50"),
        "uplink_buffer_p50": max(0.0, (speaker_stats.get("uplink_wait_ms_p50") or 0.0)
                                 - (speaker_stats.get("uplink_tick_wait_ms_p50") or 0.0)),
        "tick_p50": float(np.median([s.get("tick_ms_p50", 0) for s in listener_stats])),
        "tick_p95": float(np.max([s.get("tick_ms_p95", 0) for s in listener_stats])),
        # The tick's parts (p50 each): decode and conceal the sources, render, encode.
        **{f"{part}_p50": float(np.median([s.get(f"{part}_ms_p50", 0) for s in listener_stats]))
           for part in ("decode", "render", "encode")},
        "downlink_wait_p95": float(np.max([s.get("downlink_wait_ms_p95", 0)
                                           for s in listener_stats])),
        "late_ticks": int(max(s.get("late_ticks", 0) for s in listener_stats)),
    }
    return delays, stages


async def _peer_to_peer(seconds: float, stock: bool) -> list[float]:
    config = RTCConfiguration(iceServers=[])
    sender, receiver = RTCPeerConnection(config), RTCPeerConnection(config)
    track = SignalTrack(clicks)
    sender.addTrack(track)
    frames: list[np.ndarray] = []
    times: list[float] = []

    async def record(remote) -> None:
        while True:
            try:
                frame = await remote.recv()
            except Exception:
                return
            pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
            frames.append(pcm.astype(np.float32).mean(axis=1) / 32768.0)
            times.append(time.monotonic())

    tasks = []

    @receiver.on("track")
    def on_track(remote) -> None:
        if not stock:
            bypass_receiver_buffer(receiver_of(receiver, remote))
        tasks.append(asyncio.get_running_loop().create_task(record(remote)))

    await sender.setLocalDescription(await sender.createOffer())
    await receiver.setRemoteDescription(sender.localDescription)
    await receiver.setLocalDescription(await receiver.createAnswer())
    await sender.setRemoteDescription(receiver.localDescription)
    await asyncio.sleep(SETTLE_S + seconds)
    for task in tasks:
        task.cancel()
    await sender.close()
    await receiver.close()
    sent = sent_click_times(np.array(track.sent_at), first_frame=int(SETTLE_S * 1000 / 20))
    lengths = np.array([len(f) for f in frames], np.int64)
    stamps = stream_times(lengths, np.array(times))
    audio = np.concatenate(frames) if frames else np.zeros(0, np.float32)
    return [1e3 * (heard - t) for t, heard in found_click_times(audio, stamps, sent)]


def _server_part(delays: list[float], stages: dict, own: dict) -> dict:
    """The through-the-server part of a report: its delays against the baseline ``own``."""
    server = summary(delays)
    server_share = [stages.get("uplink_wait_p50"), stages.get("tick_p50")]
    part = {"through_server_ms": server, "server_stages_ms": stages,
            "server_added_p50_ms": round(sum(v for v in server_share if v) +
                                         (stages.get("downlink_wait_p95") or 0), 2)}
    if server.get("clicks") and own.get("clicks"):
        part["server_cost_p50_ms"] = round(server["p50"] - own["p50"], 2)
    return part


def latency_benchmark(bots: int, seconds: float, frame_ms: float = FRAME_MS,
                      transport: str = "media") -> dict:
    """The report for one transport (``media`` or ``datachannel``: the through-the-server
    fields at the top level, as before transports), or for ``both``: those fields keyed by
    transport under ``transports``."""
    transports = TRANSPORTS if transport == "both" else (transport,)
    servers = {t: through_server(bots, seconds, frame_ms, t) for t in transports}
    stock = asyncio.run(_peer_to_peer(seconds, stock=True))
    own = asyncio.run(_peer_to_peer(seconds, stock=False))
    own_summary = summary(own)
    parts = {t: _server_part(delays, stages, own_summary)
             for t, (delays, stages) in servers.items()}
    report: dict = {"benchmark": "latency", "bots": bots, "seconds": seconds}
    if transport == "both":
        report["transports"] = parts
    else:
        report.update(parts[transport])
    report.update({"p2p_stock_aiortc_ms": summary(stock), "p2p_own_receive_ms": own_summary,
                   "frame_ms": frame_ms, "transport": transport})
    report["_delays"] = {**{_delay_key(report, t): delays for t, (delays, _) in servers.items()},
                         "p2p_stock": stock, "p2p_own": own}
    return report


def _delay_key(report: dict, transport: str) -> str:
    return f"server_{transport}" if "transports" in report else "server"


def _server_runs(report: dict) -> list[tuple[str, str, dict]]:
    """(name, key in the delays, through-the-server part) of each transport measured."""
    if "transports" not in report:
        return [("through the server", "server", report)]
    return [(f"through the server, {t}", f"server_{t}", part)
            for t, part in report["transports"].items()]


def write_results(report: dict, out_dir: Path) -> list[Path]:
    """JSON, PNG (delay distributions) and a markdown table; returns the paths written."""
    paths = result_paths(out_dir, "latency")
    delays = report.pop("_delays")
    paths[0].write_text(json.dumps({**report, "delays_ms": delays}, indent=2))
    runs = _server_runs(report)
    rows = [*((name, key, part["through_server_ms"]) for name, key, part in runs),
            ("peer to peer, stock aiortc", "p2p_stock", report["p2p_stock_aiortc_ms"]),
            ("peer to peer, own receive path", "p2p_own", report["p2p_own_receive_ms"])]
    lines = [f"# Latency, {report['bots']} bots, {report['seconds']} s",
             "", "| path | clicks | p50 ms | p95 ms | p99 ms |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {s.get('clicks', 0)} | {s.get('p50', '—')} | {s.get('p95', '—')} | "
              f"{s.get('p99', '—')} |" for name, _, s in rows]
    for name, _, part in runs:
        st = part["server_stages_ms"]
        lines += ["", f"| server stage ({name}) | p50 ms | p95 ms |", "|---|---|---|",
                  f"| uplink: wait for the tick | {st.get('uplink_tick_wait_p50')} | — |",
                  f"| uplink: receive buffer | {st.get('uplink_buffer_p50')} | — |",
                  f"| uplink wait (both) | {st.get('uplink_wait_p50')} | "
                  f"{st.get('uplink_wait_p95')} |",
                  f"| tick: decode and conceal | {st.get('decode_p50')} | — |",
                  f"| tick: render | {st.get('render_p50')} | — |",
                  f"| tick: encode | {st.get('encode_p50')} | — |",
                  f"| tick (all) | {st.get('tick_p50')} | {st.get('tick_p95')} |",
                  f"| downlink wait | — | {st.get('downlink_wait_p95')} |"]
    paths[1].write_text("\n".join(lines) + "\n")
    fig, ax = pyplot().subplots(figsize=(7, 3.5))
    for name, key, _ in rows:
        if delays[key]:
            plot_cdf(ax, delays[key], name)
    ax.set_xlabel("one-way delay (ms)")
    ax.set_ylabel("fraction of clicks")
    save_figure(fig, [ax], paths[2])
    return paths


def report_lines(report: dict) -> list[str]:
    stock, own = report["p2p_stock_aiortc_ms"], report["p2p_own_receive_ms"]
    lines = []
    for name, _, part in _server_runs(report):
        s = part["through_server_ms"]
        lines += [f"{name} : p50 {s.get('p50')} ms, p95 {s.get('p95')} ms, "
                  f"p99 {s.get('p99')} ms ({s.get('clicks')} clicks)",
                  f"  server stages (ms) : {part['server_stages_ms']}"]
    return [*lines, f"p2p, stock aiortc  : p50 {stock.get('p50')} ms, p95 {stock.get('p95')} ms",
            f"p2p, own receive   : p50 {own.get('p50')} ms, p95 {own.get('p95')} ms"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``spatialjam bench latency``'s options; the command runs :func:`run_latency_bench`."""
    parser.add_argument("--bots", type=count("bots", 2, 32), default=2)
    parser.add_argument("--seconds", type=finite("seconds", 2, 3600), default=10.0)
    parser.add_argument("--transport", choices=(*TRANSPORTS, "both"), default="media",
                        help="the bots' transport through the server: media (RTP, the "
                             "default), datachannel, or both, one after the other")
    parser.add_argument("--out", default="bench/results", metavar="DIR",
                        help="where the JSON, PNG and markdown go (default bench/results)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    add_frame_arg(parser, "the room's frame, and the bots' packets (ms): 20 (default, or "
                  "SPATIALJAM_FRAME_MS), 10, 5 or 2.5")
    parser.set_defaults(run=run_latency_bench)


def run_latency_bench(args: argparse.Namespace) -> int:
    run_bench(lambda: latency_benchmark(args.bots, args.seconds, args.frame_ms,
                                        args.transport),
              report_lines, args.json,
              write=lambda report: write_results(report, Path(args.out)))
    return 0
