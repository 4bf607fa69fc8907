"""The front of ``serve --workers N`` merges its workers' ``/metrics`` by each metric's
declared rule (:mod:`server.telemetry.aggregate`), without I/O; and, over two made-up workers,
answers what it answered before (commit 15fbfcb, when it merged by name suffixes): then, after
one worker is replaced, its counts stay in the sums; while it does not answer, its last counts
stand for it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

import server.routing.front as front
from server.telemetry import aggregate
from server.telemetry import metrics as m
from server.telemetry.metrics import Merge
from server.web.admission import ConnectionLimits

# merging, rule by rule -----------------------------------------------------------------------

#: Three workers say 0, 5 and 2; the front says 1 where the metric is its own.
MERGED = {Merge.SUM: 7.0, Merge.MAX: 5.0, Merge.MIN_NONZERO: 2.0, Merge.OWN: 1.0}


@pytest.mark.parametrize("metric", m.METRICS, ids=lambda metric: metric.name)
def test_each_metric_is_merged_by_its_declared_rule(metric):
    def value(number: float) -> m.Value:
        return {"a": number} if metric.label else number

    workers = [{metric: value(0.0)}, {metric: value(5.0)}, {metric: value(2.0)}]
    own = {metric: value(1.0)} if metric.merge is Merge.OWN else {}
    assert aggregate.merge(workers, own) == {metric: value(MERGED[metric.merge])}


def test_the_rules_are_those_the_names_said_before():
    """Worst cases (``_max``) the largest, the least lead (``_min``) the smallest but 0, the
    slowest warm-up; what the front writes itself its own; everything else summed."""
    by_rule = {rule: {x.name for x in m.METRICS if x.merge is rule} for rule in Merge}
    assert by_rule[Merge.MAX] == {x.name for x in m.METRICS if x.name.endswith("_max")} | {
        "engine_warmup_seconds"}
    assert by_rule[Merge.MIN_NONZERO] == {x.name for x in m.METRICS if x.name.endswith("_min")}
    assert by_rule[Merge.OWN] == {"up", "uptime_seconds", "connections",
                                  "connections_refused_total"} | {
        x.name for x in m.METRICS if x.front_only}
    assert {x.name for x in m.METRICS if x.front_only} == {
        "workers", "worker_up", "worker_rooms", "worker_load", "worker_cpu_cores",
        "worker_restarts_total"}


def test_the_fronts_own_gauges_are_added_and_its_own_series_stand_alone():
    workers = [{m.THREADS: 30.0, m.UP: 1.0, m.CONNECTIONS: 3.0},
               {m.THREADS: 20.0, m.UP: 1.0, m.CONNECTIONS: 4.0}]
    own = {m.THREADS: 2.0, m.UP: 1.0, m.CONNECTIONS: 6.0}
    assert aggregate.merge(workers, own) == {m.THREADS: 52.0, m.UP: 1.0, m.CONNECTIONS: 6.0}
    assert aggregate.merge([], own) == own  # no worker answers
    assert aggregate.merge(workers) == {m.THREADS: 50.0}


def test_retired_counters_are_added_to_the_series_the_workers_have_now():
    retired = aggregate.summed([
        {m.TICKS: 100.0, m.DROPPED_PACKETS: {"malformed_opus": 2.0}},
        {m.TICKS: 5.0, m.DROPPED_PACKETS: {"malformed_opus": 1.0}, m.AI_EVENTS: 7.0}])
    assert retired == {m.TICKS: 105.0, m.DROPPED_PACKETS: {"malformed_opus": 3.0},
                       m.AI_EVENTS: 7.0}
    now = [{m.TICKS: 10.0, m.DROPPED_PACKETS: {"empty_datagram": 1.0}}]
    assert aggregate.merge(now, retired=retired) == {  # no worker counts AI events now
        m.TICKS: 115.0, m.DROPPED_PACKETS: {"empty_datagram": 1.0, "malformed_opus": 3.0}}


# the front over two workers, as before -------------------------------------------------------

#: Worker 1's series: what a worker wrote for a known hub state.
WORKER = """\
spatialjam_up 1
spatialjam_uptime_seconds 12.25
spatialjam_engine_warmup_seconds 1.235
spatialjam_asyncio_tasks 9
spatialjam_open_fds 31
spatialjam_threads 12
spatialjam_rss_bytes 123456789
spatialjam_connections 0
spatialjam_connections_refused_total{reason="per_client"} 3
spatialjam_connections_refused_total{reason="total"} 0
spatialjam_rooms 0
spatialjam_participants 0
spatialjam_ticks_total 1500
spatialjam_tick_overruns_total 3
spatialjam_late_ticks_total 2
spatialjam_skipped_ticks_total 1
spatialjam_tick_errors_total 6
spatialjam_rooms_failed_total 1
spatialjam_tick_ms_p95_max 0.0
spatialjam_tick_lateness_ms_p50_max 0.0
spatialjam_tick_lateness_ms_p99_max 0.0
spatialjam_uplink_wait_ms_p95_max 0.0
spatialjam_downlink_wait_ms_p95_max 0.0
spatialjam_concealed_frames_total 0
spatialjam_fec_frames_total 0
spatialjam_plc_frames_total 0
spatialjam_dropped_packets_total{reason="empty_datagram"} 1
spatialjam_dropped_packets_total{reason="malformed_stun"} 0
spatialjam_dropped_packets_total{reason="malformed_opus"} 2
spatialjam_uplink_dropped_frames_total{reason="late"} 0
spatialjam_uplink_dropped_frames_total{reason="duplicate"} 0
spatialjam_uplink_dropped_frames_total{reason="overflow"} 0
spatialjam_uplink_dropped_frames_total{reason="undecodable"} 0
spatialjam_overload_degradations_total 4
spatialjam_culled_pairs_total 40
spatialjam_clock_phase_shifts_total 5
spatialjam_ai_musicians 0
spatialjam_ai_sidecar_restarts_total 2
spatialjam_ai_analysis_dropped_total 7
spatialjam_ai_events_total 0
spatialjam_ai_events_late_total 0
spatialjam_ai_event_lead_ms_p50_min 0.0
spatialjam_hrtf_uploads_total{reason="taken"} 2
spatialjam_hrtf_uploads_total{reason="refused"} 1
spatialjam_recordings_active 0
spatialjam_recording_dropped_frames_total 0
"""

#: The front's series then, in the order it wrote them.
FRONT = """\
spatialjam_up 1
spatialjam_uptime_seconds 60.5
spatialjam_connections 0
spatialjam_connections_refused_total{reason="per_client"} 0
spatialjam_connections_refused_total{reason="total"} 4
spatialjam_workers 2
spatialjam_worker_up{worker="1"} 1
spatialjam_worker_up{worker="2"} 1
spatialjam_worker_rooms{worker="1"} 0
spatialjam_worker_rooms{worker="2"} 2
spatialjam_worker_load{worker="1"} 0
spatialjam_worker_load{worker="2"} 0.5
spatialjam_worker_cpu_cores{worker="1"} 0.25
spatialjam_worker_cpu_cores{worker="2"} 1
spatialjam_worker_restarts_total{worker="1"} 0
spatialjam_worker_restarts_total{worker="2"} 0
spatialjam_engine_warmup_seconds 2.5
spatialjam_asyncio_tasks 22
spatialjam_open_fds 72
spatialjam_threads 26
spatialjam_rss_bytes 246914578
spatialjam_rooms 2
spatialjam_participants 0
spatialjam_ticks_total 2000
spatialjam_tick_overruns_total 6
spatialjam_late_ticks_total 4
spatialjam_skipped_ticks_total 2
spatialjam_tick_errors_total 12
spatialjam_rooms_failed_total 2
spatialjam_tick_ms_p95_max 7.25
spatialjam_tick_lateness_ms_p50_max 0.0
spatialjam_tick_lateness_ms_p99_max 0.0
spatialjam_uplink_wait_ms_p95_max 0
spatialjam_downlink_wait_ms_p95_max 0
spatialjam_concealed_frames_total 0
spatialjam_fec_frames_total 0
spatialjam_plc_frames_total 0
spatialjam_dropped_packets_total{reason="empty_datagram"} 2
spatialjam_dropped_packets_total{reason="malformed_stun"} 0
spatialjam_dropped_packets_total{reason="malformed_opus"} 4
spatialjam_uplink_dropped_frames_total{reason="late"} 0
spatialjam_uplink_dropped_frames_total{reason="duplicate"} 0
spatialjam_uplink_dropped_frames_total{reason="overflow"} 0
spatialjam_uplink_dropped_frames_total{reason="undecodable"} 0
spatialjam_overload_degradations_total 8
spatialjam_culled_pairs_total 80
spatialjam_clock_phase_shifts_total 10
spatialjam_ai_musicians 0
spatialjam_ai_sidecar_restarts_total 4
spatialjam_ai_analysis_dropped_total 14
spatialjam_ai_events_total 0
spatialjam_ai_events_late_total 0
spatialjam_ai_event_lead_ms_p50_min 40.5
spatialjam_hrtf_uploads_total{reason="taken"} 4
spatialjam_hrtf_uploads_total{reason="refused"} 1
spatialjam_recordings_active 0
spatialjam_recording_dropped_frames_total 0
"""

#: After worker 2 was replaced (its new process has ticked 20 times): its counts stay.
REPLACED = {
    'worker_restarts_total{worker="2"}': 1, "ticks_total": 2020, "tick_overruns_total": 9,
    "late_ticks_total": 6, "skipped_ticks_total": 3, "tick_errors_total": 18,
    "rooms_failed_total": 3, 'dropped_packets_total{reason="empty_datagram"}': 3,
    'dropped_packets_total{reason="malformed_opus"}': 6, "overload_degradations_total": 12,
    "culled_pairs_total": 120, "clock_phase_shifts_total": 15,
    "ai_sidecar_restarts_total": 6, "ai_analysis_dropped_total": 21,
    'hrtf_uploads_total{reason="taken"}': 6}
#: Then while worker 2 does not answer: its gauges are gone, its last counts stand.
SILENT = {
    'worker_up{worker="2"}': 0, 'worker_rooms{worker="2"}': 0, 'worker_load{worker="2"}': 0,
    "engine_warmup_seconds": 1.235, "asyncio_tasks": 13, "open_fds": 41, "threads": 14,
    "rss_bytes": 123457789, "rooms": 0, "tick_ms_p95_max": 0, "ai_event_lead_ms_p50_min": 0}


def series(text: str) -> dict[str, float]:
    """``{series without the prefix: value}`` of Prometheus text, in the order written."""
    return {sample.name.removeprefix(m.PREFIX)
            + "".join(f'{{{k}="{v}"}}' for k, v in sample.labels.items()): float(sample.value)
            for family in text_string_to_metric_families(text) for sample in family.samples}


async def test_the_front_answers_what_it_answered_before(monkeypatch):
    two = (WORKER.replace("ticks_total 1500", "ticks_total 500")
           .replace("tick_ms_p95_max 0.0", "tick_ms_p95_max 7.25")
           .replace("ai_event_lead_ms_p50_min 0.0", "ai_event_lead_ms_p50_min 40.5")
           .replace("engine_warmup_seconds 1.235", "engine_warmup_seconds 2.5")
           .replace("rooms 0", "rooms 2")
           .replace('spatialjam_hrtf_uploads_total{reason="refused"} 1\n', ""))
    texts = {8001: m.exposition(m.read(WORKER)), 8002: m.exposition(m.read(two))}

    async def http_get(port: int, path: str, timeout_s: float):
        assert path == "/metrics"
        return 200, {}, texts[port].encode()

    monkeypatch.setattr(front, "http_get", http_get)
    monkeypatch.setattr(front, "process_gauges", lambda: {
        m.ASYNCIO_TASKS: 4, m.OPEN_FDS: 10, m.THREADS: 2, m.RSS: 1000})
    monkeypatch.setattr(front, "time", SimpleNamespace(monotonic=lambda: 160.5))
    workers = [SimpleNamespace(index=0, up=True, port=8001, proc=SimpleNamespace(pid=11),
                               health={"rooms": 0, "load": 0.0}, cpu=0.25, restarts=0),
               SimpleNamespace(index=1, up=True, port=8002, proc=SimpleNamespace(pid=12),
                               health={"rooms": 2, "load": 0.5}, cpu=1.0, restarts=0)]
    limits = ConnectionLimits()
    limits.refused["total"] = 4
    state = front.FrontState(None, SimpleNamespace(workers=workers), limits)
    state.started = 100.0

    expected = series(FRONT)
    assert series(await state.metrics()) == expected
    workers[1].proc.pid, workers[1].restarts = 13, 1
    texts[8002] = m.exposition(m.read(two.replace("ticks_total 500", "ticks_total 20")))
    assert series(await state.metrics()) == (expected := expected | REPLACED)
    workers[1].up = False
    assert series(await state.metrics()) == expected | SILENT
    workers[1].up, texts[8002] = True, "<html>not metrics</html>\n"
    assert series(await state.metrics()) == expected | SILENT | {
        'worker_up{worker="2"}': 1, 'worker_rooms{worker="2"}': 2,
        'worker_load{worker="2"}': 0.5}  # up, but what it says is not read: as silent
