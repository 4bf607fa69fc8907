"""The workers' ``/metrics`` as one (no I/O): what the front of ``serve --workers N`` answers.

Each worker's text is read (:func:`server.telemetry.metrics.read`); the series of one metric
and label value are combined across the workers by the metric's declared
:class:`~server.telemetry.metrics.Merge`: summed (counters, amounts), the largest (worst cases),
the smallest other than 0, or the front's own value alone (``up``, ``connections``, the
per-worker series…). The front's own process gauges (threads, resident memory…) are combined
with the workers' by the same rule, so the totals read as those of one server.

A restarted worker's counters start again from zero; the front adds what it last read of the
worker before (``retired``), so that the sums never go down between two scrapes: see
:mod:`server.routing.front`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from server.telemetry.metrics import METRICS, Merge, Metric, Value, Values


def merge(workers: Iterable[Mapping[Metric, Value]], front: Mapping[Metric, Value] | None = None,
          retired: Mapping[Metric, Value] | None = None) -> Values:
    """The deployment's values: each declared metric that a worker or the front has, combined
    by its rule; ``retired`` counters are added to the metrics the workers have now."""
    sources = list(workers)
    front, retired = front or {}, retired or {}
    merged: Values = {}
    for metric in METRICS:
        if metric.merge is Merge.OWN:
            if metric in front:
                merged[metric] = front[metric]
            continue
        values = [source[metric] for source in sources if metric in source]
        if values and metric in retired:
            values.append(retired[metric])
        if metric in front:
            values.append(front[metric])
        if values:
            merged[metric] = combine(metric, values)
    return merged


def summed(sources: Iterable[Mapping[Metric, Value]]) -> Values:
    """Every series of ``sources`` summed, whatever its metric's rule (counters of workers)."""
    gathered: dict[Metric, list[Value]] = {}
    for source in sources:
        for metric, value in source.items():
            gathered.setdefault(metric, []).append(value)
    return {metric: _combined(Merge.SUM, metric, values) for metric, values in gathered.items()}


def combine(metric: Metric, values: list[Value]) -> Value:
    """One metric's values from several processes as one, by its rule (series by series)."""
    return _combined(metric.merge, metric, values)


def _combined(rule: Merge, metric: Metric, values: list[Value]) -> Value:
    gathered: dict[str | None, list[float]] = {}
    for value in values:
        for key, number in (value.items() if isinstance(value, dict) else [(None, value)]):
            gathered.setdefault(key, []).append(number)
    combined = {key: _rule(rule, numbers) for key, numbers in gathered.items()}
    if metric.label is None:
        return combined.get(None, 0.0)
    return {key: number for key, number in combined.items() if key is not None}


def _rule(rule: Merge, numbers: list[float]) -> float:
    if rule is Merge.MAX:
        return max(numbers)
    if rule is Merge.MIN_NONZERO:  # a worker without any (0) has no say
        present = [n for n in numbers if n != 0]
        return min(present) if present else 0.0
    return sum(numbers)
