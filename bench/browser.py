"""``spatialjam bench browser``: the round trip a musician in Chromium gets, on each transport.

In one run, each against a ``spatialjam serve`` of its own (``--frame-ms`` passed on):

- **low latency** (``low_latency``): the page's own audio path: AudioWorklet capture, WebCodecs
  Opus at the room's frame, an unreliable data channel, our playout buffer in an AudioWorklet;
- **WebRTC media** (``webrtc_media``): the media track (``?transport=media``), Chrome's own
  Opus sender and NetEq jitter buffer.

Each is a headless Chromium page (Debian's, through Playwright: :mod:`bench.chromium`) alone in
a room of its own, running the page's "Test my latency" (clicks out through the server and back
in the page's own mix through the self-monitor, timed on the page's audio clock;
``client_web/looptest.js``) again and again for ``--seconds``. Reported per transport: the round
trip per click (p50, p95, all clicks of all runs), the stage split each run's result gives
(median over the runs: the media round trip, the server's receive buffer, tick and send queue,
Chrome's jitter buffer or ours, the rest), how late the server's clock ticked (p50, p99 from
its ``/metrics``), the page's own low-latency stats at the end, and which transport the page
actually used (a browser without WebCodecs Opus falls back to the media track, and the report
says so). The round trip is the page's audio graph to itself: the sound card's own buffers
(``device_output_ms``) are beside it, not in it.

Writes JSON, a markdown table and a PNG (the per-click round trips of both) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.capacity import fetch_metrics
from bench.chromium import SAMPLE_RATE, launch, write_wav
from bench.report import plot_cdf, pyplot, result_paths, run_bench, save_figure
from bench.serverproc import ServerProcess
from server.cli.args import finite

#: Report key → the page's ``?transport=`` value.
TRANSPORTS = {"low_latency": "datachannel", "webrtc_media": "media"}
#: The breakdown keys of a run's result (client_web/looptest.js ``explain``), in ms.
STAGES = ("media_rtt_ms", "server_uplink_wait_ms", "server_tick_ms", "server_downlink_wait_ms",
          "server_ms", "jitter_buffer_ms", "playout_buffer_ms", "rest_ms")
STAGE_NAMES = ("media RTT", "server receive buffer", "server tick", "server send queue",
               "server", "Chrome's jitter buffer", "our playout buffer", "rest")
JOIN_TIMEOUT_MS = 30_000
#: One "Test my latency" run: ~4 s of clicks, 1.5 s of tail, analysis.
RUN_TIMEOUT_MS = 30_000


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def median_of(runs: list[dict], key: str) -> float | None:
    values = [r["breakdown"][key] for r in runs if r.get("breakdown", {}).get(key) is not None]
    return round(float(np.median(values)), 1) if values else None


def join(browser, base: str, room: str, transport: str):
    """A page joined to ``room`` asking for ``transport``, its audio connected."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{base}/?room={room}&transport={transport}")
    page.fill("#name", f"bench-{transport}")
    page.fill("#instrument", "Clicks")
    page.click("#join")
    try:
        page.wait_for_function("window.spatialjam.peerState() === 'connected'",
                               timeout=JOIN_TIMEOUT_MS)
    except Exception as exc:
        raise RuntimeError(f"the page did not connect on {transport}: {exc}; page errors: "
                           f"{errors}") from None
    return page


def measure_transport(browser, base: str, key: str, seconds: float) -> dict:
    """Run the page's loop test on transport ``key`` for ``seconds`` (at least once)."""
    page = join(browser, base, f"bench-{key.replace('_', '-')}", TRANSPORTS[key])
    try:
        used = page.evaluate("spatialjam.transport ?? 'media'")
        frame_ms = page.evaluate("spatialjam.frameMs ?? null")
        runs, failures = [], []
        deadline = time.monotonic() + seconds
        while True:
            try:
                result = page.evaluate("spatialjam.latencyTest()")
            except Exception as exc:  # the run failed in the page: counted, not fatal
                failures.append(str(exc).splitlines()[0][:200])
                result = None
            if result is not None:
                runs.append(result)
            if time.monotonic() > deadline:
                break
        # Our playout buffer and the Worker's codec times at the end (the data channel only),
        # and how late the server's clock ticked while this page was its only room.
        low_latency = page.evaluate("spatialjam.lowLatency()")
        values = fetch_metrics(base)
        lateness = {q: values.get(f"tick_lateness_ms_{q}_max") for q in ("p50", "p99")}
    finally:
        page.close()
    per_click = [ms for r in runs for ms in r.get("per_click_ms", [])]
    return {
        "transport": used,
        "frame_ms": frame_ms,
        "runs": len(runs),
        "failed_runs": failures,
        "clicks": len(per_click),
        "clicks_sent": sum(r.get("clicks_sent", 0) for r in runs),
        "round_trip_ms": {"p50": percentile(per_click, 50), "p95": percentile(per_click, 95),
                          "min": percentile(per_click, 0), "max": percentile(per_click, 100)},
        "stages_ms": {key: median_of(runs, key) for key in STAGES},
        "device_output_ms": median_of([{"breakdown": {"d": r.get("device_output_ms")}}
                                       for r in runs], "d"),
        "page_low_latency": low_latency,
        "server_tick_lateness_ms": lateness,
        "_per_click_ms": per_click,
    }


def browser_benchmark(seconds: float, frame_ms: float | None) -> dict:
    """Both transports in one run against one server (see the module's docstring)."""
    from playwright.sync_api import sync_playwright  # only when this bench runs

    server_args = ("--frame-ms", f"{frame_ms:g}") if frame_ms is not None else ()
    report: dict = {"seconds_per_transport": seconds}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        silence = write_wav(Path(tmp) / "silence.wav", np.zeros(2 * SAMPLE_RATE))
        browser = launch(playwright, silence)
        try:
            report["chromium"] = browser.version
            for key in TRANSPORTS:  # a server each: its clock's lateness is this page's
                with ServerProcess(*server_args) as server:
                    report[key] = measure_transport(browser, server.http, key, seconds)
        finally:
            browser.close()
    return report


def write_results(report: dict, out_dir: Path) -> list[Path]:
    """JSON, PNG (per-click round trips) and a markdown table; returns the paths written."""
    paths = result_paths(out_dir, "browser")
    clicks = {key: report[key].pop("_per_click_ms") for key in TRANSPORTS}
    paths[0].write_text(json.dumps({**report, "per_click_ms": clicks}, indent=2))
    lines = [f"# Browser round trip, Chromium {report['chromium']}", "",
             "| transport | used | frame ms | clicks | p50 ms | p95 ms | "
             + " | ".join(STAGE_NAMES) + " |", "|---" * (6 + len(STAGES)) + "|"]
    for key in TRANSPORTS:
        r, st = report[key], report[key]["stages_ms"]
        lines.append(f"| {key} | {r['transport']} | {r['frame_ms']} | {r['clicks']} | "
                     f"{r['round_trip_ms']['p50']} | {r['round_trip_ms']['p95']} | "
                     + " | ".join(str(st[k]) for k in STAGES) + " |")
    paths[1].write_text("\n".join(lines) + "\n")
    fig, ax = pyplot().subplots(figsize=(7, 3.5))
    for key, values in clicks.items():
        if values:
            plot_cdf(ax, values, key)
    ax.set_xlabel("round trip, page → server → page (ms)")
    ax.set_ylabel("fraction of clicks")
    save_figure(fig, [ax], paths[2])
    return paths


def report_lines(report: dict) -> list[str]:
    lines = [f"Chromium {report['chromium']}"]
    for key in TRANSPORTS:
        r = report[key]
        rt = r["round_trip_ms"]
        lines.append(f"{key:13}: round trip p50 {rt['p50']} ms, p95 {rt['p95']} ms "
                     f"({r['clicks']} clicks, {r['runs']} runs, transport {r['transport']}, "
                     f"frame {r['frame_ms']} ms); stages {r['stages_ms']}; server tick "
                     f"lateness {r['server_tick_lateness_ms']}")
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``spatialjam bench browser``'s options; the command runs :func:`run_browser_bench`."""
    parser.add_argument("--seconds", type=finite("seconds", 1, 3600), default=20.0,
                        help="how long to test each transport (default 20; one run at least)")
    parser.add_argument("--frame-ms", type=float, default=None,
                        help="the server's frame (default: the server's own)")
    parser.add_argument("--out", default="bench/results", metavar="DIR",
                        help="where the JSON, PNG and markdown go (default bench/results)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(run=run_browser_bench)


def run_browser_bench(args: argparse.Namespace) -> int:
    def written(report: dict) -> list[Path]:
        return write_results(report, Path(args.out))

    run_bench(lambda: browser_benchmark(args.seconds, args.frame_ms), report_lines, args.json,
              write=written)
    return 0
