"""The workers' ``/metrics`` as one (no I/O): what the front of ``serve --workers N`` answers.

Each worker's Prometheus text is parsed into series (a name with its labels, and a value);
series with the same name and labels are combined across workers:

- names ending in ``_max`` (the worst room's p95 tick…) take the largest value, names ending in
  ``_min`` the smallest other than 0 (a worker without AI musicians says 0),
  ``engine_warmup_seconds`` the largest;
- every other series is summed: counters (ticks, drops…) and gauges of amounts (rooms,
  participants, threads, resident memory…), so the totals read as those of one server (the
  front adds its own process's threads, memory, file descriptors and tasks to those).

A restarted worker's counters start again from zero; the front adds what it last read of the
worker before (``retired``), so that the sums never go down between two scrapes. The front
writes its own ``up``, ``uptime_seconds`` and connection counts, and one series per worker
(``worker_up``, ``worker_load``… with a ``worker`` label): see :mod:`server.routing.front`.
"""

from __future__ import annotations

from collections.abc import Iterable

PREFIX = "spatialjam_"
#: Series the front writes itself rather than combining the workers'.
OWN = frozenset({"up", "uptime_seconds", "connections", "connections_refused_total"})
LARGEST = frozenset({"engine_warmup_seconds"})


class Metrics:
    """Parsed Prometheus text: each name's HELP and TYPE, and its series' values, in order."""

    def __init__(self) -> None:
        #: name (without the prefix) → (help text, type)
        self.meta: dict[str, tuple[str, str]] = {}
        #: series (name without the prefix, with its labels) → value
        self.values: dict[str, float] = {}

    @classmethod
    def parse(cls, text: str) -> Metrics:
        metrics = cls()
        helps: dict[str, str] = {}
        for line in text.splitlines():
            if line.startswith("# HELP " + PREFIX):
                name, _, help_text = line[len("# HELP " + PREFIX):].partition(" ")
                helps[name] = help_text
            elif line.startswith("# TYPE " + PREFIX):
                name, _, kind = line[len("# TYPE " + PREFIX):].partition(" ")
                metrics.meta[name] = (helps.get(name, ""), kind)
            elif line.startswith(PREFIX):
                series, _, value = line[len(PREFIX):].rpartition(" ")
                try:
                    metrics.values[series] = float(value)
                except ValueError:
                    continue
        return metrics

    def counters(self) -> dict[str, float]:
        """The series of names whose TYPE is counter."""
        return {s: v for s, v in self.values.items()
                if self.meta.get(name_of(s), ("", ""))[1] == "counter"}


def name_of(series: str) -> str:
    return series.split("{", 1)[0]


def combine(name: str, values: list[float]) -> float:
    if name.endswith("_max") or name in LARGEST:
        return max(values)
    if name.endswith("_min"):  # a worker without any (0) has no say
        present = [v for v in values if v != 0]
        return min(present) if present else 0.0
    return sum(values)


def merge(workers: Iterable[Metrics], retired: dict[str, float] | None = None) -> Metrics:
    """One :class:`Metrics` from the workers', less :data:`OWN`, with ``retired`` counters
    added (see the module)."""
    merged = Metrics()
    gathered: dict[str, list[float]] = {}
    for metrics in workers:
        for name, meta in metrics.meta.items():
            if name not in OWN:
                merged.meta.setdefault(name, meta)
        for series, value in metrics.values.items():
            if name_of(series) not in OWN:
                gathered.setdefault(series, []).append(value)
    for series, value in (retired or {}).items():
        if series in gathered or name_of(series) in merged.meta:
            gathered.setdefault(series, []).append(value)
    for series, values in gathered.items():
        merged.values[series] = combine(name_of(series), values)
    return merged


def render(metrics: Metrics) -> list[str]:
    """Prometheus text lines: each name's HELP and TYPE, then its series."""
    by_name: dict[str, list[str]] = {}
    for series in metrics.values:
        by_name.setdefault(name_of(series), []).append(series)
    lines = []
    for name, (help_text, kind) in metrics.meta.items():
        lines += [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} {kind}"]
        lines += [f"{PREFIX}{series} {_number(metrics.values[series])}"
                  for series in by_name.get(name, ())]
    return lines


def _number(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
