"""pytest-benchmark for the AI's decisions: one 20 ms block heard and decided (listening, the
harmoniser and the melody forecast for each 16th step due), and the status with its plan.

Run with ``make bench``; under ``make test`` each case runs once as a smoke test (benchmarks
disabled), asserting nothing about speed. The signal is a held-out pop tune played into a
room at its tempo, the AI accompanying it in the pop style.
"""

from __future__ import annotations

import pytest

from ai_accompany.brain import Brain, BrainConfig
from ai_accompany.ipc import ANALYSIS_RATE
from ai_accompany.online import BEAT_ZERO, BLOCK, melody_events
from ai_accompany.tunes import generated
from dsp.downmix import AnalysisDownmix
from dsp.synth import Synth


@pytest.fixture(scope="module")
def heard():
    """A brain that has heard half the tune, and the rest of the tune's blocks."""
    tune = generated("pop", 1)[0]
    player, downmix = Synth("epiano"), AnalysisDownmix(ANALYSIS_RATE)
    player.schedule(melody_events(tune))
    blocks = [downmix.process(player.render(k * BLOCK, BLOCK)) for k in range(1500)]
    brain = Brain(BrainConfig(bpm=tune.bpm, beat_zero=BEAT_ZERO, style="pop", count_in_beats=4))
    for k in range(750):
        brain.hear(k * BLOCK, blocks[k])
    assert brain.status()["waiting"] is None  # it plays
    return brain, blocks


def test_ai_block(benchmark, heard):
    brain, blocks = heard
    state = {"k": 750}

    def step():
        k = state["k"]
        state["k"] += 1
        return brain.hear(k * BLOCK, blocks[750 + (k - 750) % 750], report=False)  # on, again

    benchmark(step)


def test_ai_status_with_its_plan(benchmark, heard):
    brain, _ = heard
    status = benchmark(brain.status)
    assert {"playing", "coming"} <= status.keys()
