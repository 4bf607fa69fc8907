"""Every series of ``/metrics``, declared once: its name, kind, help text, label and how the
front of ``serve --workers N`` combines the workers' values (:mod:`server.telemetry.aggregate`).

A process's numbers are :data:`Values`: declared :class:`Metric` → a number, or, for a metric
with a label (``reason``, ``worker``), label value → number. :func:`exposition` writes them as
Prometheus text through prometheus_client (a collector of metric families, its
``generate_latest``), in the order declared here; :func:`read` reads that text back with
prometheus_client's parser, keeping the declared metrics. Who gathers the values:
:mod:`server.telemetry.collect` (a process, its rooms), :mod:`server.web.app` (the server's own),
:mod:`server.routing.front` (the front's own).

Every name carries :data:`PREFIX`; a counter's name ends in ``_total`` (prometheus_client writes
counter families so). No I/O here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric as Family
from prometheus_client.parser import text_string_to_metric_families

PREFIX = "spatialjam_"


class Merge(enum.Enum):
    """How the front combines one series across its workers."""

    #: Summed: counters, and gauges of amounts (rooms, threads, resident memory…), so that the
    #: totals read as those of one server; the front's own process gauges are added to them.
    SUM = "sum"
    #: The largest: the worst case (the worst room's p95 tick…), the slowest warm-up.
    MAX = "max"
    #: The smallest other than 0: a worker without any (an AI musician…) says 0 and has no say.
    MIN_NONZERO = "min_nonzero"
    #: The front's own value: it writes this series itself, and the workers' are not read.
    OWN = "own"


@dataclass(frozen=True)
class Metric:
    """One declared metric (its name without :data:`PREFIX`)."""

    name: str
    kind: Literal["gauge", "counter"]
    help: str
    #: The label of a metric with one series per label value (``reason``, ``worker``).
    label: str | None = None
    merge: Merge = Merge.SUM
    #: Written by the front of ``serve --workers N`` only (never by a worker).
    front_only: bool = False

    def __post_init__(self) -> None:
        if self.kind == "counter" and not self.name.endswith("_total"):
            raise ValueError(f"counter {self.name!r}: a counter's name ends in _total")
        if self.front_only and self.merge is not Merge.OWN:
            raise ValueError(f"{self.name!r} is the front's only: its merge is Merge.OWN")


#: A process's numbers: per metric, one number or one per label value.
Value = float | dict[str, float]
Values = dict[Metric, Value]

_declared: list[Metric] = []


def _declare(name: str, kind: Literal["gauge", "counter"], help_text: str,
             label: str | None = None, merge: Merge = Merge.SUM,
             front_only: bool = False) -> Metric:
    _declared.append(metric := Metric(name, kind, help_text, label, merge, front_only))
    return metric


def _gauge(name: str, help_text: str, label: str | None = None, merge: Merge = Merge.SUM,
           front_only: bool = False) -> Metric:
    return _declare(name, "gauge", help_text, label, merge, front_only)


def _counter(name: str, help_text: str, label: str | None = None, merge: Merge = Merge.SUM,
             front_only: bool = False) -> Metric:
    return _declare(name, "counter", help_text, label, merge, front_only)


# every serving process (the single server, a worker, the front) -------------------------------

UP = _gauge("up", "Whether the server is serving.", merge=Merge.OWN)
UPTIME = _gauge("uptime_seconds", "Seconds since start-up.", merge=Merge.OWN)
ENGINE_WARMUP = _gauge("engine_warmup_seconds",
                       "Time to load the HRTF set and compile the kernels.", merge=Merge.MAX)
ASYNCIO_TASKS = _gauge("asyncio_tasks", "Asyncio tasks on the server's loop that are not done.")
OPEN_FDS = _gauge("open_fds", "File descriptors open (files and sockets).")
THREADS = _gauge("threads", "OS threads of the process.")
RSS = _gauge("rss_bytes", "Resident memory (bytes).")
CONNECTIONS = _gauge("connections", "Signaling connections open (WebSockets at /ws).",
                     merge=Merge.OWN)
CONNECTIONS_REFUSED = _counter(
    "connections_refused_total", "Signaling handshakes refused, by the limit they hit: "
    "per_client (HTTP 429) or total (HTTP 503).", label="reason", merge=Merge.OWN)

# a process with rooms (the single server, a worker) ------------------------------------------

ROOMS = _gauge("rooms", "Rooms open on this process.")
PARTICIPANTS = _gauge("participants", "Participants in those rooms.")
TICKS = _counter("ticks_total", "Room clock ticks rendered.")
TICK_OVERRUNS = _counter("tick_overruns_total", "Ticks whose work took longer than their "
                         "room's frame (20 ms by default).")
LATE_TICKS = _counter("late_ticks_total", "Ticks that started more than half their room's frame "
                      "late.")
SKIPPED_TICKS = _counter("skipped_ticks_total", "Ticks skipped after falling far behind.")
TICK_ERRORS = _counter("tick_errors_total", "Ticks that raised an error: skipped, their mixes "
                       "silent for that tick.")
ROOMS_FAILED = _counter("rooms_failed_total", "Rooms closed because their ticks kept failing "
                        "(a second in a row); their members were told.")
TICK_MS_P95_MAX = _gauge("tick_ms_p95_max", "Worst room's 95th percentile tick time (ms).",
                         merge=Merge.MAX)
TICK_LATENESS_MS_P50_MAX = _gauge(
    "tick_lateness_ms_p50_max", "Worst room's median lateness of its ticks' start after their "
    "deadline (ms, over the last 10 s).", merge=Merge.MAX)
TICK_LATENESS_MS_P99_MAX = _gauge(
    "tick_lateness_ms_p99_max", "Worst room's 99th percentile lateness of its ticks' start "
    "after their deadline (ms, over the last 10 s).", merge=Merge.MAX)
UPLINK_WAIT_MS_P95_MAX = _gauge(
    "uplink_wait_ms_p95_max", "Worst source's 95th percentile wait from arrival to its tick "
    "(ms): receive buffer and tick phase.", merge=Merge.MAX)
DOWNLINK_WAIT_MS_P95_MAX = _gauge(
    "downlink_wait_ms_p95_max", "Worst listener's 95th percentile wait from its tick to being "
    "sent (ms).", merge=Merge.MAX)
CONCEALED_FRAMES = _counter("concealed_frames_total", "Frames concealed (lost or late) in the "
                            "sources present now.")
FEC_FRAMES = _counter("fec_frames_total", "Of those, frames rebuilt from the next packet's "
                      "in-band FEC.")
PLC_FRAMES = _counter("plc_frames_total", "Of those, frames concealed by Opus packet-loss "
                      "concealment.")
DROPPED_PACKETS = _counter("dropped_packets_total", "Media packets dropped before anything "
                           "decoded them, by reason (server.media.ingress), since start.",
                           label="reason")
UPLINK_DROPPED_FRAMES = _counter(
    "uplink_dropped_frames_total", "Frames the sources present now dropped, by reason: late, "
    "duplicate, overflow (a burst past the buffer), undecodable (concealed).", label="reason")
OVERLOAD_DEGRADATIONS = _counter("overload_degradations_total", "Slow ticks that lowered a "
                                 "room's cap on sources per mix.")
CULLED_PAIRS = _counter("culled_pairs_total", "Listener-source pairs left out of mixes under "
                        "overload (pair-ticks).")
CLOCK_PHASE_SHIFTS = _counter("clock_phase_shifts_total", "Times a room clock moved its tick "
                              "to just after its players' frames arrive.")
AI_MUSICIANS = _gauge("ai_musicians", "AI musicians playing in the rooms.")
AI_SIDECAR_RESTARTS = _counter("ai_sidecar_restarts_total", "Times the AI sidecar was started "
                               "again after it died or stopped answering.")
AI_ANALYSIS_DROPPED = _counter("ai_analysis_dropped_total", "Analysis audio blocks not sent "
                               "because the AI sidecar fell behind.")
AI_EVENTS = _counter("ai_events_total", "Note events the AI musicians received.")
AI_EVENTS_LATE = _counter("ai_events_late_total", "Of those, events that arrived after the "
                          "tick they should have started in (dropped).")
AI_EVENT_LEAD_MS_P50_MIN = _gauge(
    "ai_event_lead_ms_p50_min", "How far ahead of the room clock AI events arrive (ms, median; "
    "the least of the rooms).", merge=Merge.MIN_NONZERO)
HRTF_UPLOADS = _counter("hrtf_uploads_total", "Listeners' HRTF uploads, by outcome: taken, "
                        "refused (bad_sofa), ended early (upload_failed).", label="reason")
RECORDINGS_ACTIVE = _gauge("recordings_active", "Rooms being recorded.")
RECORDING_DROPPED_FRAMES = _counter(
    "recording_dropped_frames_total", "Room frames of recordings written as silence because "
    "the writer fell behind (or its disk failed).")

# the front of serve --workers N, one series per worker ---------------------------------------

WORKERS = _gauge("workers", "Worker processes (serve --workers).", merge=Merge.OWN,
                 front_only=True)
WORKER_UP = _gauge("worker_up", "Whether the worker serves and answers.", label="worker",
                   merge=Merge.OWN, front_only=True)
WORKER_ROOMS = _gauge("worker_rooms", "Rooms open on the worker.", label="worker",
                      merge=Merge.OWN, front_only=True)
WORKER_LOAD = _gauge("worker_load", "The worker's measured tick load: its rooms' mean tick time "
                     "over the last second / 20 ms, summed.", label="worker", merge=Merge.OWN,
                     front_only=True)
WORKER_CPU_CORES = _gauge("worker_cpu_cores", "The worker process's CPU use (cores) between its "
                          "last two health polls.", label="worker", merge=Merge.OWN,
                          front_only=True)
WORKER_RESTARTS = _counter("worker_restarts_total", "Times the worker was started again after "
                           "it exited.", label="worker", merge=Merge.OWN, front_only=True)

#: Every metric, in the order of the exposition.
METRICS: tuple[Metric, ...] = tuple(_declared)
#: By name (without the prefix).
BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
if len(BY_NAME) != len(METRICS):
    raise ValueError("a metric is declared twice")


def exposition(values: Mapping[Metric, Value]) -> str:
    """``values`` as Prometheus text (format 0.0.4): each metric's HELP and TYPE, then its
    series, in the declared order; prometheus_client writes numbers as floats (``3.0``)."""
    return generate_latest(_Snapshot(values)).decode()


class _Snapshot:
    """A prometheus_client collector of fixed values."""

    def __init__(self, values: Mapping[Metric, Value]) -> None:
        self.values = values

    def collect(self) -> Iterable[Family]:
        for metric in METRICS:
            if metric in self.values:
                yield family(metric, self.values[metric])


def family(metric: Metric, value: Value) -> Family:
    """One metric's prometheus_client family: a counter's is named without ``_total`` and its
    samples with it; no ``_created`` series."""
    kind = CounterMetricFamily if metric.kind == "counter" else GaugeMetricFamily
    if metric.label is None:
        if isinstance(value, dict):
            raise TypeError(f"{metric.name} has no label: one number, not {value!r}")
        return kind(PREFIX + metric.name, metric.help, value=value)
    if not isinstance(value, dict):
        raise TypeError(f"{metric.name} has one number per {metric.label}, not {value!r}")
    labelled = kind(PREFIX + metric.name, metric.help, labels=[metric.label])
    for key, number in value.items():
        labelled.add_metric([key], number)
    return labelled


def read(text: str) -> Values:
    """The declared metrics in Prometheus text (others are left out), read by
    prometheus_client's parser. A labelled metric whose family has no series yet reads as
    ``{}``. ValueError: a line that is not Prometheus text."""
    values: Values = {}
    for parsed in text_string_to_metric_families(text):
        # the parser names a counter's family without _total, its samples with it
        name = parsed.name.removeprefix(PREFIX) + ("_total" if parsed.type == "counter" else "")
        metric = BY_NAME.get(name) if parsed.name.startswith(PREFIX) else None
        if metric is not None and metric.label is not None:
            values.setdefault(metric, {})
        for sample in parsed.samples:
            metric = BY_NAME.get(sample.name.removeprefix(PREFIX)) \
                if sample.name.startswith(PREFIX) else None
            if metric is None:
                continue
            if metric.label is None:
                values[metric] = float(sample.value)
                continue
            series = values.get(metric)
            if not isinstance(series, dict):
                series = values[metric] = {}
            series[sample.labels.get(metric.label, "")] = float(sample.value)
    return values


def counters(values: Mapping[Metric, Value]) -> Values:
    """Those of ``values`` that are counters."""
    return {m: v for m, v in values.items() if m.kind == "counter"}


def flatten(values: Mapping[Metric, Value]) -> dict[str, float]:
    """One number per series, named as the exposition names it less :data:`PREFIX`:
    ``ticks_total``, ``dropped_packets_total{reason="malformed_opus"}``."""
    flat = {}
    for metric, value in values.items():
        if isinstance(value, dict):
            flat.update({f'{metric.name}{{{metric.label}="{key}"}}': number
                         for key, number in value.items()})
        else:
            flat[metric.name] = value
    return flat
