"""pytest-benchmark suite for room acoustics' cost: 10×10, 20×20, 50×50, acoustics off and on.

Run with ``make bench`` (timings grouped per size, off beside on). Under ``make test`` each
case runs once as a smoke test (benchmarks disabled), asserting nothing about speed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.acoustics import room_scene, room_stage
from bench.mixer import cycling_tick
from bench.plot_ir import main as plot_ir_main
from bench.plot_ir import predicted_arrivals
from dsp.renderer import Renderer
from dsp.room_model import room_model
from hrtf.constants import FRAME, SPEED_OF_SOUND_M_S
from hrtf.library import load_hrtf
from server.cli.main import main

SIZES = [(10, 10), (20, 20), (50, 50)]


@pytest.fixture(scope="module")
def kemar():
    return load_hrtf("kemar")


@pytest.fixture(scope="module")
def rehearsal_room():
    return room_model("rehearsal-room")


def _tick_fn(hrirs, model, listeners, sources, acoustics):
    lp, sp = room_stage(model, listeners, sources)
    audio = (np.random.default_rng(0).standard_normal((sources, FRAME)) * 0.05).astype(np.float32)
    renderer = Renderer(hrirs, listeners, sources)
    if acoustics:
        renderer.set_room(model)
    scenes = [room_scene(lp, sp, k, moving=True) for k in range(8)]
    return cycling_tick(renderer, scenes, audio)


@pytest.mark.parametrize(("listeners", "sources"), SIZES, ids=[f"{a}x{b}" for a, b in SIZES])
@pytest.mark.parametrize("acoustics", ["off", "on"])
def test_acoustics_tick(benchmark, kemar, rehearsal_room, listeners, sources, acoustics):
    benchmark.group = f"acoustics {listeners}x{sources}"
    out = benchmark(_tick_fn(kemar, rehearsal_room, listeners, sources, acoustics == "on"))
    assert out.shape == (listeners, FRAME, 2)
    assert np.isfinite(out).all()


def test_players_stand_inside_the_room_at_ear_height(rehearsal_room):
    lo, hi = rehearsal_room.bounds_m()
    lp, sp = room_stage(rehearsal_room, 50, 20)
    assert (lp[:, :2] > lo[:2]).all() and (lp[:, :2] < hi[:2]).all()
    assert np.array_equal(sp, lp[:20])  # player k is listener k and source k
    assert np.allclose(lp[:, 2], 1.2)
    scene = room_scene(lp, sp, 7, moving=True)
    assert (scene.listener_position[:, :2] > lo[:2]).all()
    assert (scene.listener_position[:, :2] < hi[:2]).all()
    assert np.diagonal(scene.pair_gain).max() == 0.0  # nobody hears themself


def test_cli_reports_every_case_with_its_ratios(capsys):
    assert main(["bench", "acoustics", "--ticks", "2", "--sizes", "2x3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["room"]["name"] == "rehearsal-room"
    assert [(c["listeners"], c["sources"], c["motion"]) for c in report["cases"]] == \
        [(2, 3, "static"), (2, 3, "moving")]
    for case in report["cases"]:
        for key in ("render_off_ms", "render_on_ms", "tick_off_ms", "tick_on_ms"):
            assert case[key]["ticks"] == 2 and case[key]["median"] > 0
        # ratios of the medians and of the minima, rounded to 2 decimals, here recomputed
        # from times rounded to 0.1 µs (a 0.1 ms time: 0.1 % off)
        expected = case["render_on_ms"]["median"] / case["render_off_ms"]["median"]
        assert case["render_ratio"] == pytest.approx(expected, rel=2e-3, abs=0.006)
        fastest = case["tick_on_ms"]["min"] / case["tick_off_ms"]["min"]
        assert case["tick_ratio_min"] == pytest.approx(fastest, rel=2e-3, abs=0.006)
        assert case["tick_on_ms"]["median"] >= case["render_on_ms"]["median"]


def test_cli_refuses_a_malformed_size(capsys):
    assert main(["bench", "acoustics", "--sizes", "10x10,ten"]) == 1
    assert "'ten' is not LISTENERSxSOURCES" in capsys.readouterr().err


def test_plot_ir_predicts_the_floor_reflection_and_writes_a_small_png(tmp_path,
                                                                      rehearsal_room):
    delays_s, walls = predicted_arrivals(rehearsal_room, azimuth_deg=30.0, distance_m=2.0)
    assert len(walls) == 6 and walls[0] == "floor"
    # ears and source 1.2 m up, 2 m apart: the floor's image is 2.4 m below the source
    expected_s = (np.hypot(2.0, 2.4) - 2.0) / SPEED_OF_SOUND_M_S
    assert delays_s[0] == pytest.approx(expected_s, rel=1e-9)
    out = tmp_path / "ir.png"
    assert plot_ir_main(["--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size < 200_000
