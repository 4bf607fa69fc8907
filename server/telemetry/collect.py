"""What a process says in ``/metrics``: its rooms' numbers (:func:`collect`), its resources
(:func:`process_gauges`), as :data:`~server.telemetry.metrics.Values` of the declared metrics.

Read on a ``/metrics`` request only. The front of ``serve --workers N`` imports this module for
:func:`process_gauges`: the rooms' types are imported for type checking only, so that the front
still imports neither the engine nor aiortc.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

from server.telemetry import metrics as m
from server.tick.counts import clock_counts

if TYPE_CHECKING:
    from server.rooms.hub import Hub


def collect(hub: Hub) -> m.Values:
    """The numbers of a process's rooms: the open rooms' and, for counters, the closed ones'."""
    runners = [live.runner for live in hub.rooms.values()]
    clocks = sum((clock_counts(r) for r in runners), hub.closed_clocks)
    buffers = [b for r in runners for b in r.buffers.values()]
    decoders = [d for r in runners for d in r.decoders.values()]
    voices = [v for r in runners for v in r.ai_voices.values()]
    return {
        m.ROOMS: len(hub.rooms),
        m.PARTICIPANTS: sum(len(live.participants) for live in hub.rooms.values()),
        m.TICKS: clocks.ticks,
        m.TICK_OVERRUNS: clocks.overruns,
        m.LATE_TICKS: clocks.late_ticks,
        m.SKIPPED_TICKS: clocks.skipped_ticks,
        m.TICK_ERRORS: clocks.tick_errors,
        m.ROOMS_FAILED: clocks.rooms_failed,
        m.TICK_MS_P95_MAX: max((r.stats.percentile_ms(95) for r in runners), default=0.0),
        m.TICK_LATENESS_MS_P50_MAX: max((r.stats.lateness_ms.percentile(50) for r in runners),
                                        default=0.0),
        m.TICK_LATENESS_MS_P99_MAX: max((r.stats.lateness_ms.percentile(99) for r in runners),
                                        default=0.0),
        m.UPLINK_WAIT_MS_P95_MAX: max((b.waits_ms.percentile(95) for b in buffers),
                                      default=0.0),
        m.DOWNLINK_WAIT_MS_P95_MAX: max((t.waits_ms.percentile(95) for r in runners
                                         for t in r.tracks.values()), default=0.0),
        m.CONCEALED_FRAMES: sum(b.stats.concealed for b in buffers),
        m.FEC_FRAMES: sum(d.stats.fec for d in decoders),
        m.PLC_FRAMES: sum(d.stats.plc for d in decoders),
        m.DROPPED_PACKETS: dict(hub.drops.counts),
        m.UPLINK_DROPPED_FRAMES: {
            "late": sum(b.stats.late for b in buffers),
            "duplicate": sum(b.stats.duplicates for b in buffers),
            "overflow": sum(b.stats.dropped for b in buffers),
            "undecodable": sum(d.stats.corrupt for d in decoders),
        },
        m.OVERLOAD_DEGRADATIONS: clocks.degradations,
        m.CULLED_PAIRS: clocks.culled_pairs,
        m.CLOCK_PHASE_SHIFTS: clocks.phase_shifts,
        m.AI_MUSICIANS: len(voices),
        m.AI_SIDECAR_RESTARTS: hub.ai.restarts,
        m.AI_ANALYSIS_DROPPED: hub.ai.dropped_audio,
        m.AI_EVENTS: sum(v.events for v in voices),
        m.AI_EVENTS_LATE: sum(v.late for v in voices),
        m.AI_EVENT_LEAD_MS_P50_MIN: min((v.lead_ms.percentile(50) for v in voices
                                         if len(v.lead_ms)), default=0.0),
        m.HRTF_UPLOADS: dict(hub.uploads.counts),
        m.RECORDINGS_ACTIVE: hub.recordings.active,
        m.RECORDING_DROPPED_FRAMES: hub.recordings.dropped_frames_total,
    }


def process_gauges(proc: Path = Path("/proc/self")) -> m.Values:
    """This process's resources: the asyncio tasks of the running loop that are not done, and
    from Linux's ``proc`` (left out where there is none): open file descriptors, OS threads
    (every thread, not only Python's: numba's workers too) and resident memory in bytes.

    ``spatialjam bench soak`` watches these for leaks. Reading them costs a few system calls.
    """
    values: m.Values = {m.ASYNCIO_TASKS: len(asyncio.all_tasks())}
    try:
        status = (proc / "status").read_text()
        fds = len(os.listdir(proc / "fd"))
    except OSError:
        return values
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    values[m.OPEN_FDS] = fds
    values[m.THREADS] = int(fields["Threads"])
    values[m.RSS] = int(fields["VmRSS"].split()[0]) * 1024
    return values
