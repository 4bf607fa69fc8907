"""``spatialjam bench browser``: one page on the low-latency transport in a 5 ms room, through
the bench's own code (its join, its reading of the page's handle and the server's /metrics), and
the report it writes. The whole two-transport run is the benchmark's, not the suite's."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.browser import STAGES, TRANSPORTS, measure_transport, report_lines, write_results
from bench.chromium import SAMPLE_RATE, launch, write_wav
from bench.serverproc import ServerProcess


def test_one_loop_test_on_the_data_channel_at_5_ms_frames_is_measured_and_written(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    silence = write_wav(tmp_path / "silence.wav", np.zeros(2 * SAMPLE_RATE))
    with ServerProcess("--frame-ms", "5") as server, sync_api.sync_playwright() as p:
        browser = launch(p, silence)
        try:
            low = measure_transport(browser, server.http, "low_latency", 0.0)  # one run
        finally:
            browser.close()
    assert (low["transport"], low["frame_ms"], low["failed_runs"]) == ("datachannel", 5, [])
    assert low["clicks"] >= 3, low
    rt = low["round_trip_ms"]
    assert 0 < rt["min"] <= rt["p50"] <= rt["p95"] <= rt["max"] < 1000
    stages = low["stages_ms"]
    assert set(stages) == set(STAGES)
    assert stages["jitter_buffer_ms"] is None  # Chrome's NetEq is not on this path
    assert stages["playout_buffer_ms"] is not None and stages["playout_buffer_ms"] > 0
    assert stages["server_ms"] > 0
    assert low["page_low_latency"]["playout"]["frame_ms"] == 5
    assert set(low["server_tick_lateness_ms"]) == {"p50", "p99"}
    assert low["server_tick_lateness_ms"]["p99"] is not None

    # The other transport's entry as a run that found no clicks: still reported and written.
    media = {**low, "transport": "media", "clicks": 0, "_per_click_ms": [],
             "round_trip_ms": {"p50": None, "p95": None, "min": None, "max": None}}
    report = {"seconds_per_transport": 0.0, "chromium": browser.version,
              "low_latency": low, "webrtc_media": media}
    lines = report_lines(report)
    assert "low_latency" in lines[1] and f"p95 {rt['p95']} ms" in lines[1]
    paths = write_results(report, tmp_path / "out")
    assert [p.suffix for p in paths] == [".json", ".md", ".png"]
    written = json.loads(paths[0].read_text())
    assert set(written) >= {*TRANSPORTS, "per_click_ms", "chromium"}
    assert len(written["per_click_ms"]["low_latency"]) == low["clicks"]
    assert "our playout buffer" in paths[1].read_text()
