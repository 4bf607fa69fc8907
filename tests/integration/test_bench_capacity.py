"""``spatialjam bench capacity``: its accounting, its verdict, its light bots' stream counting,
and a small real run through the command line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import capacity
from bench.capacity import (
    limiting_cost,
    many_rooms_plan,
    one_room_plan,
    parse_metrics,
    per_participant,
    verdict,
)
from bench.lightbot import ArrivalCounter, StreamWindow, encode_loop, music
from bench.procstat import Snapshot, cpu_seconds, machine_jiffies, rss_bytes, snapshot, usage
from hrtf.constants import FRAME

ROOT = Path(__file__).resolve().parents[2]


# /proc accounting ---------------------------------------------------------------------------

def stat_line(comm: str, utime: int, stime: int) -> str:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    return f"4242 ({comm}) S 1 4242 4242 0 -1 4194304 100 0 0 0 {utime} {stime} 0 0 20 0 3 0\n"


@pytest.mark.parametrize("comm", ["python", "a b", "x) S 1 2 (y", ")("])
def test_cpu_seconds_adds_user_and_system_time_whatever_the_command_name(comm):
    assert cpu_seconds(stat_line(comm, 250, 50), clk_tck=100) == pytest.approx(3.0)


def burn_cpu(seconds: float) -> None:
    start = time.process_time()
    while time.process_time() - start < seconds:
        sum(range(10_000))


def test_cpu_seconds_of_this_process_grows_with_work():
    before = cpu_seconds(Path("/proc/self/stat").read_text())
    burn_cpu(0.2)
    assert cpu_seconds(Path("/proc/self/stat").read_text()) - before >= 0.15


def test_rss_is_read_in_kib_and_its_absence_is_an_error():
    status = "Name:\tpython\nVmPeak:\t  900 kB\nVmRSS:\t  2048 kB\nThreads:\t4\n"
    assert rss_bytes(status) == 2048 * 1024
    with pytest.raises(ValueError, match="VmRSS"):
        rss_bytes("Name:\tzombie\nState:\tZ (zombie)\n")
    assert rss_bytes(Path("/proc/self/status").read_text()) > 1 << 20


def test_machine_jiffies_count_idle_and_iowait_as_not_busy():
    text = "cpu  100 5 20 800 50 3 2 0 0 0\ncpu0 50 2 10 400 25 1 1 0 0 0\n"
    assert machine_jiffies(text) == (130, 980)


def snap(at, server, loop, rss=300 << 20, bots=0.0, busy=0, total=0):
    return Snapshot(at=at, server_cpu_s=server, loop_cpu_s=loop, server_rss=rss,
                    bots_cpu_s=bots, machine_busy=busy, machine_total=total)


def test_usage_splits_the_server_into_its_event_loop_and_other_threads():
    before = snap(10.0, server=5.0, loop=2.0, bots=1.0, busy=1000, total=4000)
    after = snap(12.0, server=6.2, loop=2.8, rss=310 << 20, bots=1.5, busy=1300, total=4400)
    got = usage(before, after)
    assert got["server_cpu_pct"] == pytest.approx(60.0)  # 1.2 s of CPU in 2 s
    assert got["loop_cpu_pct"] == pytest.approx(40.0)
    assert got["off_loop_cpu_pct"] == pytest.approx(20.0)
    assert got["bots_cpu_pct"] == pytest.approx(25.0)
    assert got["machine_busy_pct"] == pytest.approx(75.0)
    assert got["rss_mb"] == pytest.approx(310.0)
    with pytest.raises(ValueError, match="time order"):
        usage(after, before)


def test_usage_of_a_real_process_is_its_own():
    import os

    me = os.getpid()
    first = snapshot(me, [me])
    burn_cpu(0.2)
    last = snapshot(me, [me])
    got = usage(first, last)
    assert got["server_cpu_pct"] > 0 and got["loop_cpu_pct"] > 0  # pytest runs in the main thread
    # /proc counts CPU in clock ticks (10 ms), and the two readings of one snapshot are
    # microseconds apart: they may fall either side of a tick, never two
    tick = 1 / os.sysconf("SC_CLK_TCK")
    as_bots = last.bots_cpu_s - first.bots_cpu_s
    as_server = last.server_cpu_s - first.server_cpu_s
    assert as_bots == pytest.approx(as_server, abs=2 * tick + 1e-9)
    assert got["rss_mb"] > 1


METRICS = "\n".join(
    ["# HELP spatialjam_up Whether the server is serving.", "# TYPE spatialjam_up gauge",
     "spatialjam_up 1", "spatialjam_rooms 2", "spatialjam_participants 8"]
    + [f"spatialjam_{name} {k}" for k, name in enumerate(capacity.COUNTERS.values())]) + "\n"


def test_metrics_are_read_without_their_prefix_and_a_missing_counter_is_named():
    values = parse_metrics(METRICS)
    assert values["participants"] == 8 and values["late_ticks_total"] == 1
    with pytest.raises(RuntimeError, match="culled_pairs_total"):
        parse_metrics(METRICS.replace("spatialjam_culled_pairs_total", "spatialjam_other"))


# the verdict ------------------------------------------------------------------------------

def clean_step(**changes) -> dict:
    step = {"phase": "one room", "participants": 10, "rooms": 1, "join_errors": 0,
            "late_ticks": 0, "skipped_ticks": 0, "tick_overruns": 0, "tick_ms_p50": 4.0,
            "tick_ms_p95": 6.0, "sources_cap": 0, "overload_degradations": 0,
            "culled_pairs": 0, "concealed_frames": 0, "lost_packets": 0, "missing_frames": 0,
            "short_bots": 0, "server_cpu_pct": 60.0, "loop_cpu_pct": 30.0,
            "off_loop_cpu_pct": 30.0, "bots_cpu_pct": 10.0, "machine_busy_pct": 40.0}
    step.update(changes)
    step["reasons"] = verdict(step)
    return step


def test_a_clean_step_holds_and_concealment_alone_does_not_fail_it():
    assert verdict(clean_step()) == []
    assert verdict(clean_step(concealed_frames=3)) == []


@pytest.mark.parametrize(("change", "words"), [
    ({"late_ticks": 2}, "2 late ticks"),
    ({"skipped_ticks": 4}, "4 skipped ticks"),
    ({"tick_overruns": 1}, "1 ticks over 20 ms"),
    ({"tick_ms_p95": 20.0}, "tick p95 20.0 ms"),
    ({"sources_cap": 7}, "overload cap engaged (cap 7"),
    ({"overload_degradations": 1}, "overload cap engaged"),
    ({"culled_pairs": 30}, "30 pairs culled"),
    ({"lost_packets": 2, "missing_frames": 1}, "3 downlink frames lost"),
    ({"short_bots": 1}, "1 bots received under half"),
    ({"join_errors": 1}, "could not join"),
])
def test_each_real_time_criterion_fails_a_step_by_itself(change, words):
    reasons = verdict(clean_step(**change))
    assert len(reasons) == 1 and words in reasons[0], reasons


@pytest.mark.parametrize(("change", "words"), [
    ({"loop_cpu_pct": 92.0, "late_ticks": 5}, "the event loop thread: 92 %"),
    ({"tick_ms_p95": 16.0, "overload_degradations": 3}, "the tick's render and encode"),
    ({"culled_pairs": 400, "tick_ms_p95": 9.0}, "the tick's render and encode"),
    ({"machine_busy_pct": 98.0, "late_ticks": 1}, "the machine's cores: 98 % busy"),
    ({"late_ticks": 1}, "no budget ran out"),
])
def test_the_limit_is_the_budget_that_ran_out(change, words):
    assert words in limiting_cost(clean_step(**change))


def test_per_participant_costs_are_the_slopes_and_where_they_reach_a_budget():
    steps = [clean_step(participants=n, server_cpu_pct=20 + 3 * n, loop_cpu_pct=10 + 2 * n,
                        off_loop_cpu_pct=10 + n, rss_mb=270 + 0.5 * n) for n in (5, 10, 15)]
    got = per_participant(steps, cpus=2)
    assert got["cpu_ms_per_s"] == pytest.approx(30.0)
    assert got["cpu_pct_core"] == pytest.approx(3.0)
    assert got["loop_ms_per_s"] == pytest.approx(20.0)
    assert got["off_loop_ms_per_s"] == pytest.approx(10.0)
    assert got["rss_mb"] == pytest.approx(0.5)
    assert got["loop_full_at"] == 45  # 10 + 2n = 100
    assert got["cores_full_at"] == 60  # 20 + 3n = 200
    assert per_participant(steps[:1]) == {}


def test_the_plans_add_step_participants_up_to_the_most():
    assert [len(s) for s in one_room_plan(12, 5)] == [5, 5, 2]
    one = [bot for step in one_room_plan(12, 5) for bot in step]
    assert len(set(one)) == 12 and {room for room, _ in one} == {"one-room"}
    many = many_rooms_plan(13, rooms_of=4, step=5)  # 2 rooms a step; 3 whole rooms fit
    assert [len(s) for s in many] == [8, 4]
    rooms = {room for step in many for room, _ in step}
    assert len(rooms) == 3
    assert all(sum(r == room for step in many for r, _ in step) == 4 for room in rooms)


# the light bots' counting --------------------------------------------------------------------

def test_a_stream_window_counts_lost_packets_and_frames_the_sender_dropped():
    w = StreamWindow()
    w.add(10, 0, 100, at=0.00)
    w.add(11, FRAME, 100, at=0.02)
    w.add(14, 4 * FRAME, 100, at=0.08)  # 12 and 13 never came
    w.add(15, 7 * FRAME, 100, at=0.10)  # the next number, two frames further on: dropped
    w.add(15, 7 * FRAME, 100, at=0.11)  # a duplicate
    w.add(16, 8 * FRAME, 0, at=0.30)
    got = w.summary()
    assert got["packets"] == 6 and got["lost"] == 2 and got["missing_frames"] == 2
    assert got["reordered"] == 1 and got["empty"] == 1
    assert got["max_gap_s"] == pytest.approx(0.19)


def test_a_stream_window_counts_frames_of_the_rooms_size():
    w = StreamWindow(frame=240)  # a 5 ms room
    w.add(1, 0, 100, at=0.0)
    w.add(2, 240, 100, at=0.005)
    w.add(3, 720, 100, at=0.010)  # one 5 ms frame never sent
    assert w.missing_frames == 1
    w.restart()
    w.add(4, 960, 100, at=0.015)
    assert w.missing_frames == 0 and w.frame == 240
    assert capacity.streams([{**w.summary(), "max_gap_s": 0.0, "decoded": 0, "decoded_ok": 0,
                              "audible": 0, "packets": 90}], 1.0, frame_ms=5.0)[
        "short_bots"] == 1  # under half of 200 packets a second


def test_a_stream_window_follows_sequence_and_timestamp_wraps():
    w = StreamWindow()
    w.add(65_534, 2**32 - 2 * FRAME, 100, at=0.0)
    w.add(65_535, 2**32 - FRAME, 100, at=0.02)
    w.add(0, 0, 100, at=0.04)
    w.add(1, FRAME, 100, at=0.06)
    assert w.lost == 0 and w.missing_frames == 0 and w.reordered == 0


def test_a_new_window_still_sees_a_gap_across_its_start():
    w = StreamWindow()
    w.add(1, FRAME, 100, at=0.0)
    w.add(2, 2 * FRAME, 100, at=0.02)
    w.restart()
    assert w.packets == 0 and w.lost == 0
    w.add(5, 5 * FRAME, 100, at=0.08)
    assert w.packets == 1 and w.lost == 2


def test_the_arrival_counter_hands_one_packet_in_n_to_the_decoder():
    class Packet:
        def __init__(self, seq):
            self.sequence_number, self.timestamp, self._data = seq, seq * FRAME, b"\x01" * 40

    counter = ArrivalCounter(decode_every=5, clock=lambda: 1.0)
    frames = [counter.add(Packet(seq))[1] for seq in range(12)]
    assert [k for k, f in enumerate(frames) if f is not None] == [0, 5, 10]
    assert counter.window.packets == 12 and counter.window.lost == 0


def test_the_uplink_is_music_encoded_once_into_20_ms_opus_packets():
    signal = music(1.0)
    assert signal.dtype.name == "float32" and 0.05 < float(abs(signal).max()) <= 1.0
    payloads = encode_loop(signal)
    assert 49 <= len(payloads) <= 51 and all(len(p) > 20 for p in payloads)


# the real thing ---------------------------------------------------------------------------

def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", "bench", "capacity", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_bench_capacity_ramps_real_bots_and_reports_per_participant_costs(tmp_path):
    done = run_cli("--max-bots", "4", "--step", "2", "--hold", "2", "--rooms-of", "2",
                   "--json", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    progress = [line for line in done.stderr.splitlines() if line.startswith("[")]
    assert report["benchmark"] == "capacity"
    for key, rooms_of in (("one_room", None), ("many_rooms", 2)):
        phase = report[key]
        steps = phase["steps"]
        assert steps, phase
        assert steps[0]["participants"] == 2 and steps[0]["bots"] == 2
        for step in steps:
            assert step["participants"] == step["bots"]  # the server counts every bot
            if rooms_of:
                assert step["rooms"] == step["participants"] // rooms_of
            assert step["server_cpu_pct"] > 0 and step["rss_mb"] > 50
            assert step["tick_ms_p50"] > 0 and step["delivered"] > 0
            assert step["decoded"] > 0 and step["decoded_ok"] == step["decoded"]
            assert step["reasons"] == verdict(step) and step["held"] == (not step["reasons"])
        # the ramp stops at the first step that failed (after its second try)
        assert all(s["held"] for s in steps[:-1])
        held = [s["participants"] for s in steps if s["held"]]
        assert phase["held_participants"] == (held[-1] if held else 0)
        assert (phase["failed_at"] is None) == steps[-1]["held"]
        assert (phase["limit"] is None) == steps[-1]["held"]
        if phase["per_participant"]:  # a line fitted (its slope may round to 0 on a short,
            # noisy ramp of two or three counts: two steps at one CPU reading happen)
            fitted = phase["per_participant"]
            assert math.isfinite(fitted["cpu_ms_per_s"]) and math.isfinite(fitted["rss_mb"])
    # others' music reaches each mix: some decoded frames are not silent
    assert sum(s["audible"] for s in report["one_room"]["steps"]) > 0
    assert len(progress) >= 2
    kinds = sorted(p.suffix for p in tmp_path.iterdir())
    assert kinds == [".json", ".md", ".png"]
    assert next(tmp_path.glob("*.png")).read_bytes()[:4] == b"\x89PNG"
    assert "| one room | 2 |" in next(tmp_path.glob("*.md")).read_text()


@pytest.mark.parametrize(("args", "code", "words"), [
    (["--step", "0"], 2, "step must lie in 1..256"),
    (["--hold", "nan"], 2, "hold must be finite"),
    (["--max-bots", "many"], 2, "max bots must be a whole number"),
    (["--max-bots", "4", "--rooms-of", "8"], 1, "--rooms-of 8 is more than --max-bots 4"),
])
def test_bench_capacity_refuses_bad_arguments_with_one_line(args, code, words):
    done = run_cli(*args, timeout=60)
    assert done.returncode == code
    errors = [line for line in done.stderr.splitlines() if not line.startswith(("usage", " "))]
    assert len(errors) == 1 and words in errors[0], done.stderr
    assert "Traceback" not in done.stderr
