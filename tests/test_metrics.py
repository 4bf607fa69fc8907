"""``/metrics`` declared once (:mod:`server.telemetry.metrics`): what the exposition writes,
prometheus_client's parser reads back as declared; a help text is changed in one place."""

from __future__ import annotations

import dataclasses

import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.telemetry import metrics as m


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
