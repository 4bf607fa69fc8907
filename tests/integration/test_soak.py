"""``spatialjam bench soak``: its leak verdict on made-up series (leaks found, noise not), its
``/proc`` reading, the server's resource gauges, and real soaks through the command line: half
a minute here, five minutes in the slow test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.procstat import resources, status_kib
from bench.soak import LIMITS, WARMUP_MIN_CYCLES, Limits, judge, slope_per_min, warmup_s
from server.telemetry import metrics as m
from server.telemetry.collect import process_gauges

ROOT = Path(__file__).resolve().parents[2]


# the verdict on made-up series -----------------------------------------------------------------

def series(cycles: int = 40, cycle_s: float = 7.5, seed: int = 3, **trend) -> list[dict]:
    """Checkpoints of a server that leaks nothing, with more checkpoint-to-checkpoint noise
    than the real soak sees (43 or 44 fds, 23 threads, 108 tasks, RSS within 1 MiB); each
    ``trend`` (``fds=1.0``: one more per cycle; ``rss_mib=0.5``) adds a steady growth."""
    rng = np.random.default_rng(seed)
    points = []
    for k in range(cycles):
        point = {"cycle": k, "t_s": 2.0 + k * cycle_s,
                 "rss_mib": 300.0 + rng.normal(0, 1.0), "fds": 43 + int(rng.integers(-1, 2)),
                 "threads": 23 + int(rng.integers(-1, 2)), "tasks": 108 + int(rng.integers(-3, 4)),
                 "participants": 8, "expected_participants": 8, "rooms": 2, "expected_rooms": 2}
        for key, per_cycle in trend.items():
            point[key] += per_cycle * k
            if key != "rss_mib":
                point[key] = int(point[key])
        points.append(point)
    return points


@pytest.mark.parametrize("seed", range(5))
def test_a_server_that_leaks_nothing_passes_despite_noise(seed):
    got = judge(series(seed=seed), warmup=100.0)
    assert got["leaks"] == [], got["leaks"]
    assert got["rss_judged"] and abs(got["rss_slope_mib_per_min"]) < LIMITS.rss_mib_per_min
    assert got["judged"] == sum(1 for c in series() if c["t_s"] >= 100.0)


@pytest.mark.parametrize(("trend", "words"), [
    ({"fds": 1.0}, "open file descriptors grew"),
    ({"threads": 0.5}, "threads grew"),
    ({"tasks": 1.0}, "asyncio tasks grew"),
    ({"rss_mib": 0.5}, "resident memory grew 4"),  # 0.5 MiB a 7.5 s cycle: 4 MiB/min
])
def test_each_kind_of_leak_is_found_by_itself(trend, words):
    leaks = judge(series(**trend), warmup=100.0)["leaks"]
    assert len(leaks) == 1 and words in leaks[0], leaks


def test_one_connection_left_behind_every_few_cycles_is_a_leak():
    # three sockets, a thread and a dozen tasks every fourth cycle of 40
    points = series()
    for k, point in enumerate(points):
        point["fds"] += 3 * (k // 4)
        point["threads"] += k // 4
        point["tasks"] += 12 * (k // 4)
    leaks = judge(points, warmup=100.0)["leaks"]
    assert len(leaks) == 3, leaks


def test_one_socket_left_behind_every_few_cycles_is_a_leak():
    points = series()
    for k, point in enumerate(points):
        point["fds"] += k // 4
    leaks = judge(points, warmup=100.0)["leaks"]
    assert len(leaks) == 1 and "open file descriptors grew" in leaks[0], leaks


def test_growth_during_the_warm_up_alone_is_no_leak():
    points = series()
    for point in points:  # thread pools and arenas fill in the first 90 s, then stay
        ramp = min(point["t_s"], 90.0) / 90.0
        point["threads"] += int(6 * ramp)
        point["rss_mib"] += 20 * ramp
    got = judge(points, warmup=100.0)
    assert got["leaks"] == []
    assert got["growth"]["threads"] <= LIMITS.threads


def test_rss_slope_counts_only_over_a_long_enough_span():
    short = series(cycles=6, rss_mib=0.5)  # 40 s: 4 MiB/min, but too short to tell from noise
    got = judge(short, warmup=6.0, rss_warmup=0.0)
    assert not got["rss_judged"] and got["leaks"] == []
    assert got["rss_slope_mib_per_min"] > 2.0  # still reported
    assert judge(short, warmup=6.0, rss_warmup=0.0,
                 limits=Limits(rss_min_span_min=0.1))["leaks"]
    assert judge(short, warmup=6.0)["rss_slope_mib_per_min"] is None  # before RSS_WARMUP_S


def test_memory_climbing_past_the_warm_up_of_the_counts_is_judged_from_later_on():
    points = series(cycles=30)
    for point in points:  # allocator arenas fill for 110 s, then stay
        point["rss_mib"] += 20 * min(point["t_s"], 110.0) / 110.0
    # from the end of a 50 s warm-up of the counts, the climb would read as a leak
    assert judge(points, warmup=50.0, rss_warmup=0.0)["leaks"]
    got = judge(points, warmup=50.0)
    assert got["leaks"] == [] and got["rss_judged"]


def test_the_first_cycles_are_warm_up_however_short_the_run():
    points = series(cycles=6)
    points[0]["fds"] += 50  # the start, before anything warmed up
    got = judge(points, warmup=0.0)
    assert got["judged"] == len(points) - WARMUP_MIN_CYCLES and got["leaks"] == []


def test_a_participant_the_server_still_holds_is_a_leak():
    points = series()
    points[-5]["participants"] = 9
    leaks = judge(points, warmup=100.0)["leaks"]
    assert len(leaks) == 1 and "held 9 participants in 2 rooms; the soak had 8" in leaks[0]


def test_too_few_checkpoints_give_no_verdict_on_growth():
    got = judge(series(cycles=3, tasks=100.0), warmup=0.0)
    assert got["judged"] == 1 and got["growth"] == {} and got["leaks"] == []


def test_warm_up_is_a_third_of_the_run_up_to_two_minutes():
    assert warmup_s(30.0) == pytest.approx(10.0)
    assert warmup_s(300.0) == pytest.approx(100.0)
    assert warmup_s(3600.0) == pytest.approx(120.0)


def test_slope_is_per_minute():
    assert slope_per_min([0.0, 30.0, 60.0, 90.0], [10.0, 11.0, 12.0, 13.0]) == pytest.approx(2.0)


# /proc and the server's gauges ------------------------------------------------------------------

def test_status_fields_are_read_in_kib_and_a_missing_one_is_named():
    assert status_kib("Name:\tx\nVmHWM:\t  4096 kB\nVmRSS:\t 2048 kB\n", "VmHWM") == 4096
    with pytest.raises(ValueError, match="VmHWM"):
        status_kib("Name:\tzombie\n", "VmHWM")


def test_resources_of_this_process_count_its_open_files_and_threads(tmp_path):
    before = resources(os.getpid())
    with open(tmp_path / "a", "w"), open(tmp_path / "b", "w"):
        during = resources(os.getpid())
    assert during["fds"] == before["fds"] + 2
    assert during["threads"] >= 1 and during["rss_mib"] > 1
    assert during["peak_rss_mib"] >= during["rss_mib"] * 0.9


async def test_the_process_gauges_count_this_loops_tasks_and_this_process():
    import asyncio

    gauges = process_gauges()
    idle = asyncio.get_running_loop().create_task(asyncio.sleep(10))
    try:
        assert process_gauges()[m.ASYNCIO_TASKS] == gauges[m.ASYNCIO_TASKS] + 1
    finally:
        idle.cancel()
    assert gauges[m.OPEN_FDS] > 0 and gauges[m.THREADS] >= 1
    assert gauges[m.RSS] > 1 << 20
    assert all(metric.kind == "gauge" and metric.help for metric in gauges)


async def test_without_proc_only_the_task_count_is_given(tmp_path):
    assert set(process_gauges(tmp_path / "nowhere")) == {m.ASYNCIO_TASKS}


# real soaks -------------------------------------------------------------------------------------

def run_soak(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", "bench", "soak", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def check_report(report: dict, tmp_path: Path) -> None:
    """What every soak's report must show, leak or not."""
    churn = report["churn"]
    assert report["benchmark"] == "soak" and report["failure"] is None
    # churn really happened, and the server honoured every seat it still held
    assert churn["cycles"] >= 3
    assert churn["clean_leaves"] >= churn["cycles"] and churn["socket_drops"] >= churn["cycles"]
    assert churn["seat_rejoins"] >= churn["cycles"]
    assert churn["seat_rejoins_kept"] == churn["seat_rejoins"]
    assert churn["takeovers"] >= churn["cycles"] and churn["takeovers_kept"] == churn["takeovers"]
    assert churn["processes_killed"] >= 1 and churn["long_stalls"] >= 1
    assert churn["rooms_closed"] >= 1 and churn["rooms_not_closed"] == 0
    assert churn["rejoins_after_close"] >= 1 and churn["stage_edits"] > 100
    assert churn["joins"] == (churn["fresh_joins"] + churn["seat_rejoins"] + churn["takeovers"]
                              + churn["rejoins_after_close"])
    # the server counted the soak's population at every checkpoint
    points = report["checkpoints"]
    assert len(points) == churn["cycles"] + 1
    for point in points:
        assert point["participants"] == point["expected_participants"] == 8
        assert point["rooms"] == point["expected_rooms"] == 2
        assert point["fds"] > 0 and point["threads"] > 0 and point["tasks"] > 0
    # its tick counters never went down, though rooms closed
    for key in ("ticks", "late_ticks", "skipped_ticks", "tick_overruns"):
        values = [p[key] for p in points]
        assert values == sorted(values), (key, values)
    memory = report["memory"]
    assert memory["rss_start_mib"] > 50 and memory["rss_peak_mib"] >= memory["rss_end_mib"]
    for key in ("fds", "threads", "tasks"):
        assert set(report["resources"][key]) == {"start", "baseline", "end", "max",
                                                 "growth_after_warmup"}
    assert report["server_stop"] == 0  # it stopped cleanly on SIGTERM afterwards
    assert len(report["samples"]) >= report["seconds"] / 2
    assert report["verdict"] == ("leak" if report["leaks"] else "no leak found")
    kinds = sorted(p.suffix for p in tmp_path.iterdir())
    assert kinds == [".json", ".md", ".png"]
    assert next(tmp_path.glob("*.png")).read_bytes()[:4] == b"\x89PNG"
    assert "| asyncio tasks |" in next(tmp_path.glob("*.md")).read_text()


def test_half_a_minute_of_churn_is_counted_and_measured(tmp_path):
    done = run_soak("--minutes", "0.5", "--json", "--out", str(tmp_path), timeout=240)
    report = json.loads(done.stdout)
    check_report(report, tmp_path)
    # half a minute is too short to judge memory (nothing after RSS_WARMUP_S); counts are
    assert report["memory"]["rss_slope_mib_per_min"] is None
    assert not report["memory"]["rss_slope_judged"] and report["judged_checkpoints"] >= 2
    assert done.returncode == (1 if report["leaks"] else 0), done.stderr[-2000:]
    if report["leaks"]:
        assert "soak found a leak" in done.stderr.splitlines()[-1]


@pytest.mark.slow
def test_five_minutes_of_churn_leak_nothing(tmp_path):
    done = run_soak("--minutes", "5", "--json", "--out", str(tmp_path), timeout=560)
    report = json.loads(done.stdout)
    check_report(report, tmp_path)
    assert report["memory"]["rss_slope_judged"]
    assert report["memory"]["rss_slope_mib_per_min"] < LIMITS.rss_mib_per_min
    assert report["leaks"] == [], report["leaks"]
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize(("args", "words"), [
    (["--minutes", "0.05"], "minutes must lie in 0.1..1440"),
    (["--minutes", "inf"], "minutes must be finite"),
    (["--bots", "2"], "bots must lie in 3..14"),
    (["--rooms", "0"], "rooms must lie in 1..8"),
    (["--seed", "x"], "seed must be a whole number"),
])
def test_bench_soak_refuses_bad_arguments_with_one_line(args, words):
    done = run_soak(*args, timeout=60)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if not line.startswith(("usage", " "))]
    assert len(errors) == 1 and words in errors[0], done.stderr
    assert "Traceback" not in done.stderr
