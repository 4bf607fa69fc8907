"""``/metrics`` declared once (:mod:`server.telemetry.metrics`): a process's exposition, read
back, is what the hand-written one said before (same names, labels, kinds, help and values);
every metric a server declares is in it, as declared; names and help texts are written nowhere
else."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

import server.web.app as app
from server.rooms.hub import Hub
from server.telemetry import metrics as m
from server.tick.counts import ClockCounts
from server.web.app import ServerState

ROOT = Path(__file__).resolve().parents[2]


def test_read_gives_back_what_the_exposition_wrote():
    values: m.Values = {metric: {"a": 1.0, "b": 2.5} if metric.label else 3.0
                        for metric in m.METRICS}
    values[m.HRTF_UPLOADS] = {}  # no series yet: its HELP and TYPE only
    text = m.exposition(values)
    assert "# TYPE spatialjam_hrtf_uploads_total counter\n# HELP" in text
    assert m.read(text) == values
    assert m.read(text + "spatialjam_unknown 1\nother_ticks_total 2\n") == values


def test_a_help_text_is_changed_in_its_declaration_only(monkeypatch):
    changed = dataclasses.replace(m.TICKS, help="Ticks, said \\ otherwise.")
    monkeypatch.setattr(m, "METRICS", tuple(changed if x is m.TICKS else x for x in m.METRICS))
    monkeypatch.setitem(m.BY_NAME, m.TICKS.name, changed)
    text = m.exposition({changed: 5})
    assert text.startswith("# HELP spatialjam_ticks_total Ticks, said \\\\ otherwise.\n")
    assert [f.documentation for f in text_string_to_metric_families(text)] == [changed.help]
    assert m.read(text) == {changed: 5.0}


def test_a_counter_not_named_total_or_a_front_series_not_its_own_is_refused():
    with pytest.raises(ValueError, match="_total"):
        m.Metric("ticks", "counter", "Ticks.")
    with pytest.raises(ValueError, match=r"Merge\.OWN"):
        m.Metric("workers", "gauge", "Workers.", front_only=True)
    assert len({metric.name for metric in m.METRICS}) == len(m.METRICS)


#: What ``ServerState.metrics`` wrote by hand (commit 15fbfcb) for the hub of :func:`known`.
BEFORE = """\
# HELP spatialjam_up Whether the server is serving.
# TYPE spatialjam_up gauge
spatialjam_up 1
# HELP spatialjam_uptime_seconds Seconds since start-up.
# TYPE spatialjam_uptime_seconds gauge
spatialjam_uptime_seconds 12.25
# HELP spatialjam_engine_warmup_seconds Time to load the HRTF set and compile the kernels.
# TYPE spatialjam_engine_warmup_seconds gauge
spatialjam_engine_warmup_seconds 1.235
# HELP spatialjam_asyncio_tasks Asyncio tasks on the server's loop that are not done.
# TYPE spatialjam_asyncio_tasks gauge
spatialjam_asyncio_tasks 9
# HELP spatialjam_open_fds File descriptors open (files and sockets).
# TYPE spatialjam_open_fds gauge
spatialjam_open_fds 31
# HELP spatialjam_threads OS threads of the process.
# TYPE spatialjam_threads gauge
spatialjam_threads 12
# HELP spatialjam_rss_bytes Resident memory (bytes).
# TYPE spatialjam_rss_bytes gauge
spatialjam_rss_bytes 123456789
# HELP spatialjam_connections Signaling connections open (WebSockets at /ws).
# TYPE spatialjam_connections gauge
spatialjam_connections 0
# HELP spatialjam_connections_refused_total Signaling handshakes refused, by the limit they hit: per_client (HTTP 429) or total (HTTP 503).
# TYPE spatialjam_connections_refused_total counter
spatialjam_connections_refused_total{reason="per_client"} 3
spatialjam_connections_refused_total{reason="total"} 0
# HELP spatialjam_rooms Rooms open on this process.
# TYPE spatialjam_rooms gauge
spatialjam_rooms 0
# HELP spatialjam_participants Participants in those rooms.
# TYPE spatialjam_participants gauge
spatialjam_participants 0
# HELP spatialjam_ticks_total Room clock ticks rendered.
# TYPE spatialjam_ticks_total counter
spatialjam_ticks_total 1500
# HELP spatialjam_tick_overruns_total Ticks whose work took longer than 20 ms.
# TYPE spatialjam_tick_overruns_total counter
spatialjam_tick_overruns_total 3
# HELP spatialjam_late_ticks_total Ticks that started more than 10 ms late.
# TYPE spatialjam_late_ticks_total counter
spatialjam_late_ticks_total 2
# HELP spatialjam_skipped_ticks_total Ticks skipped after falling far behind.
# TYPE spatialjam_skipped_ticks_total counter
spatialjam_skipped_ticks_total 1
# HELP spatialjam_tick_errors_total Ticks that raised an error: skipped, their mixes silent for that tick.
# TYPE spatialjam_tick_errors_total counter
spatialjam_tick_errors_total 6
# HELP spatialjam_rooms_failed_total Rooms closed because their ticks kept failing (a second in a row); their members were told.
# TYPE spatialjam_rooms_failed_total counter
spatialjam_rooms_failed_total 1
# HELP spatialjam_tick_ms_p95_max Worst room's 95th percentile tick time (ms).
# TYPE spatialjam_tick_ms_p95_max gauge
spatialjam_tick_ms_p95_max 0.0
# HELP spatialjam_uplink_wait_ms_p95_max Worst source's 95th percentile wait from arrival to its tick (ms): receive buffer and tick phase.
# TYPE spatialjam_uplink_wait_ms_p95_max gauge
spatialjam_uplink_wait_ms_p95_max 0.0
# HELP spatialjam_downlink_wait_ms_p95_max Worst listener's 95th percentile wait from its tick to being sent (ms).
# TYPE spatialjam_downlink_wait_ms_p95_max gauge
spatialjam_downlink_wait_ms_p95_max 0.0
# HELP spatialjam_concealed_frames_total Frames concealed (lost or late) in the sources present now.
# TYPE spatialjam_concealed_frames_total counter
spatialjam_concealed_frames_total 0
# HELP spatialjam_fec_frames_total Of those, frames rebuilt from the next packet's in-band FEC.
# TYPE spatialjam_fec_frames_total counter
spatialjam_fec_frames_total 0
# HELP spatialjam_plc_frames_total Of those, frames concealed by Opus packet-loss concealment.
# TYPE spatialjam_plc_frames_total counter
spatialjam_plc_frames_total 0
# HELP spatialjam_dropped_packets_total Media packets dropped before anything decoded them, by reason (server.media.ingress), since start.
# TYPE spatialjam_dropped_packets_total counter
spatialjam_dropped_packets_total{reason="empty_datagram"} 1
spatialjam_dropped_packets_total{reason="malformed_stun"} 0
spatialjam_dropped_packets_total{reason="malformed_opus"} 2
spatialjam_dropped_packets_total{reason="dc_short"} 0
spatialjam_dropped_packets_total{reason="dc_oversized"} 0
spatialjam_dropped_packets_total{reason="dc_version"} 0
spatialjam_dropped_packets_total{reason="dc_text"} 0
spatialjam_dropped_packets_total{reason="dc_flood"} 0
spatialjam_dropped_packets_total{reason="dc_duration"} 0
# HELP spatialjam_uplink_dropped_frames_total Frames the sources present now dropped, by reason: late, duplicate, overflow (a burst past the buffer), undecodable (concealed).
# TYPE spatialjam_uplink_dropped_frames_total counter
spatialjam_uplink_dropped_frames_total{reason="late"} 0
spatialjam_uplink_dropped_frames_total{reason="duplicate"} 0
spatialjam_uplink_dropped_frames_total{reason="overflow"} 0
spatialjam_uplink_dropped_frames_total{reason="undecodable"} 0
# HELP spatialjam_overload_degradations_total Slow ticks that lowered a room's cap on sources per mix.
# TYPE spatialjam_overload_degradations_total counter
spatialjam_overload_degradations_total 4
# HELP spatialjam_culled_pairs_total Listener-source pairs left out of mixes under overload (pair-ticks).
# TYPE spatialjam_culled_pairs_total counter
spatialjam_culled_pairs_total 40
# HELP spatialjam_clock_phase_shifts_total Times a room clock moved its tick to just after its players' frames arrive.
# TYPE spatialjam_clock_phase_shifts_total counter
spatialjam_clock_phase_shifts_total 5
# HELP spatialjam_ai_musicians AI musicians playing in the rooms.
# TYPE spatialjam_ai_musicians gauge
spatialjam_ai_musicians 0
# HELP spatialjam_ai_sidecar_restarts_total Times the AI sidecar was started again after it died or stopped answering.
# TYPE spatialjam_ai_sidecar_restarts_total counter
spatialjam_ai_sidecar_restarts_total 2
# HELP spatialjam_ai_analysis_dropped_total Analysis audio blocks not sent because the AI sidecar fell behind.
# TYPE spatialjam_ai_analysis_dropped_total counter
spatialjam_ai_analysis_dropped_total 7
# HELP spatialjam_ai_events_total Note events the AI musicians received.
# TYPE spatialjam_ai_events_total counter
spatialjam_ai_events_total 0
# HELP spatialjam_ai_events_late_total Of those, events that arrived after the tick they should have started in (dropped).
# TYPE spatialjam_ai_events_late_total counter
spatialjam_ai_events_late_total 0
# HELP spatialjam_ai_event_lead_ms_p50_min How far ahead of the room clock AI events arrive (ms, median; the least of the rooms).
# TYPE spatialjam_ai_event_lead_ms_p50_min gauge
spatialjam_ai_event_lead_ms_p50_min 0.0
# HELP spatialjam_hrtf_uploads_total Listeners' HRTF uploads, by outcome: taken, refused (bad_sofa), ended early (upload_failed).
# TYPE spatialjam_hrtf_uploads_total counter
spatialjam_hrtf_uploads_total{reason="taken"} 2
spatialjam_hrtf_uploads_total{reason="refused"} 1
# HELP spatialjam_recordings_active Rooms being recorded.
# TYPE spatialjam_recordings_active gauge
spatialjam_recordings_active 0
# HELP spatialjam_recording_dropped_frames_total 20 ms frames of recordings written as silence because the writer fell behind (or its disk failed).
# TYPE spatialjam_recording_dropped_frames_total counter
spatialjam_recording_dropped_frames_total 0
"""  # noqa: E501


def known(hrirs, monkeypatch) -> ServerState:
    """A server whose hub has counted a little of everything, its resources and clock fixed."""
    hub = Hub(hrirs)
    hub.closed_clocks = ClockCounts(ticks=1500, overruns=3, late_ticks=2, skipped_ticks=1,
                                    degradations=4, culled_pairs=40, phase_shifts=5,
                                    tick_errors=6, rooms_failed=1)
    for reason in ("malformed_opus", "malformed_opus", "empty_datagram"):
        hub.drops.add(reason)
    hub.uploads.counts.update({"taken": 2, "refused": 1})
    hub.ai.restarts, hub.ai.dropped_audio = 2, 7
    state = ServerState(hrirs, "cpu", 1234.5678, hub)
    state.connections.refused["per_client"] = 3
    state.started = 100.0
    monkeypatch.setattr(app, "time", SimpleNamespace(monotonic=lambda: 112.25))
    monkeypatch.setattr(app, "process_gauges", lambda: {
        m.ASYNCIO_TASKS: 9, m.OPEN_FDS: 31, m.THREADS: 12, m.RSS: 123456789})
    return state


def split(line: str) -> tuple[str, float]:
    series, _, value = line.rpartition(" ")
    return series, float(value)


async def test_the_exposition_says_what_the_hand_written_one_said(kemar, monkeypatch):
    """Line by line: HELP and TYPE as they were, each series named and labelled as it was with
    the same value; prometheus_client writes every number as a float (``3.0``, ``1.23e+08``)."""
    state = known(kemar, monkeypatch)
    try:
        now = state.metrics().splitlines()
    finally:
        await state.hub.close()
    before = BEFORE.splitlines()
    assert len(now) == len(before)
    for said, says in zip(before, now, strict=True):
        if said.startswith("#"):
            assert says == said
        else:
            assert split(says) == split(said)


async def test_every_metric_a_server_declares_is_in_its_exposition_as_declared(kemar):
    """With the real process gauges (Linux's /proc) and an idle hub."""
    hub = Hub(kemar)
    try:
        text = ServerState(kemar, "cpu", 1000.0, hub).metrics()
    finally:
        await hub.close()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    served = [metric for metric in m.METRICS if not metric.front_only]
    assert len(families) == len(served)
    for metric in served:
        family = families[m.PREFIX + metric.name.removesuffix("_total")]
        assert (family.type, family.documentation) == (metric.kind, metric.help)
        assert {tuple(s.labels) for s in family.samples} <= {
            (metric.label,) if metric.label else ()}
        assert all(s.name == m.PREFIX + metric.name for s in family.samples)  # no _created
    assert set(m.read(text)) == set(served)


def string_literals(path: Path) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def test_names_and_help_texts_are_written_in_the_declarations_only():
    """No module of the server, nor the capacity bench, spells a metric's help text, its name
    with the prefix, or a counter's name: they import the declaration. Plain words that are
    also gauges' names (``rooms``, ``up``…) are fields of /healthz and of the bench's steps."""
    declared = ROOT / "server" / "telemetry" / "metrics.py"
    helps = {metric.help for metric in m.METRICS}
    counters = {metric.name for metric in m.METRICS if metric.kind == "counter"}
    for path in [*(ROOT / "server").rglob("*.py"), ROOT / "bench" / "capacity.py"]:
        if path == declared:
            continue
        written = {s for s in string_literals(path)
                   if s in helps or s in counters or s.startswith(m.PREFIX)}
        assert not written, f"{path.relative_to(ROOT)} spells {sorted(written)}"
    assert helps <= string_literals(declared)
