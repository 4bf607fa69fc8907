"""The ``spatialjam`` command as a user runs it: render, bench mixer, and their errors."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
import sofar

from hrtf.grid import unit_vectors
from hrtf.sofa import default_sofa_path
from server.cli import main
from server.cli.render import read_wav_mono

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def mono_wav(tmp_path):
    path = tmp_path / "in.wav"
    noise = np.random.default_rng(3).standard_normal(22_050) * 0.2
    scipy.io.wavfile.write(path, 44_100, (noise * 32767).astype(np.int16))
    return path


def levels_db(path):
    rate, data = scipy.io.wavfile.read(path)
    x = data.astype(np.float64)
    return rate, data, 10 * np.log10(np.mean(x**2, axis=0))


def test_render_places_a_source_on_the_left(mono_wav, tmp_path):
    out = tmp_path / "out.wav"
    assert main(["render", "--in", str(mono_wav), "--out", str(out),
                 "--azimuth", "90", "--elevation", "0", "--distance", "1"]) == 0
    rate, data, (left, right) = levels_db(out)
    assert rate == 48_000 and data.ndim == 2 and data.shape[1] == 2 and data.dtype == np.int16
    assert len(data) >= 24_000  # 0.5 s input resampled to 48 kHz, plus the HRTF tail
    assert left - right > 10


def test_render_in_a_room_adds_its_reflections_and_tail(tmp_path):
    """An impulse rendered in a by-hand room: the output rings for about its RT60, and the
    first reflection arrives after the direct sound, not before."""
    src = tmp_path / "click.wav"
    click = np.zeros(4_800, np.float32)
    click[0] = 0.5
    scipy.io.wavfile.write(src, 48_000, click)
    outs = {}
    for name, extra in (("dry", []), ("room", ["--room-dims", "10,8,4", "--rt60", "0.8"])):
        out = tmp_path / f"{name}.wav"
        assert main(["render", "--in", str(src), "--out", str(out), "--float",
                     "--distance", "2", *extra]) == 0
        outs[name] = scipy.io.wavfile.read(out)[1].astype(np.float64)
    dry, room = outs["dry"], outs["room"]
    assert len(room) > len(dry) + int(0.6 * 48_000)  # the tail is not cut
    energy = np.cumsum((room ** 2).sum(axis=1)[::-1])[::-1]
    decay_db = 10 * np.log10(energy / energy[0] + 1e-30)
    t30 = np.argmax(decay_db < -30) / 48_000
    assert 0.8 * 0.4 < t30 < 0.8 * 0.6  # −30 dB at about half the RT60
    direct_end = int(np.argmax(np.abs(dry).sum(axis=1))) + 40
    np.testing.assert_allclose(room[:direct_end] * 1.0, dry[:direct_end], atol=1e-4)


def test_render_orbit_turns_towards_the_left_and_writes_float(tmp_path):
    src = tmp_path / "long.wav"
    noise = np.random.default_rng(4).standard_normal(96_000) * 0.2
    scipy.io.wavfile.write(src, 48_000, noise.astype(np.float32))
    out = tmp_path / "orbit.wav"
    assert main(["render", "--in", str(src), "--out", str(out), "--hrtf", "spherical-head",
                 "--azimuth", "0", "--orbit", "2.0", "--float"]) == 0
    _, data, _ = levels_db(out)
    assert data.dtype == np.float32 and np.abs(data).max() <= 0.98 + 1e-6

    def ild_db(t0):  # left minus right over 0.1 s centred on t0 seconds
        seg = data[int((t0 - 0.05) * 48_000):int((t0 + 0.05) * 48_000)].astype(np.float64)
        return 10 * np.log10(np.mean(seg[:, 0] ** 2) / np.mean(seg[:, 1] ** 2))

    assert ild_db(0.5) > 3.0  # a quarter lap later (+90°): on the left
    assert ild_db(1.5) < -3.0  # three quarters (+270°): on the right


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--in", "/nonexistent.wav"], "does not exist"),
        (["--sofa", "NOTAFILE"], "NOTAFILE"),
    ],
)
def test_render_errors_are_one_line_without_traceback(mono_wav, tmp_path, args, message):
    base = {"--in": str(mono_wav), "--out": str(tmp_path / "o.wav")}
    argv = ["render"]
    for key, value in {**base, **dict(zip(args[::2], args[1::2], strict=True))}.items():
        argv += [key, value]
    done = run_cli(*argv)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_render_refuses_a_file_that_is_not_wav(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("hello")
    done = run_cli("render", "--in", str(bad), "--out", str(tmp_path / "o.wav"))
    assert done.returncode == 1 and "not a readable WAV" in done.stderr
    assert "Traceback" not in done.stderr


def test_render_refuses_a_bad_sofa_file_with_one_line(mono_wav, tmp_path):
    bad = tmp_path / "bad.sofa"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00garbage" * 100)
    done = run_cli("render", "--in", str(mono_wav), "--out", str(tmp_path / "o.wav"),
                   "--sofa", str(bad))
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1 and "bad.sofa" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--distance-model", "linear", "--rolloff", "2"], "rolloff"),
        (["--orbit", "1e-307"], "orbit"),
        (["--ref-distance", "20000"], "reference distance"),
        (["--room", "gym"], "concert-hall"),
        (["--rt60", "0.8"], "dims_m"),
        (["--room-dims", "10,8", "--rt60", "0.8"], "three numbers"),
        (["--room-dims", "1,8,3", "--rt60", "0.8"], "2"),
        (["--room", "club", "--rt60", "9"], "RT60"),
    ],
)
def test_render_refuses_inconsistent_settings_with_one_line(mono_wav, tmp_path, args, message):
    done = run_cli("render", "--in", str(mono_wav), "--out", str(tmp_path / "o.wav"), *args)
    assert done.returncode in (1, 2) and message in done.stderr
    assert "Traceback" not in done.stderr


def test_render_refuses_a_wav_with_an_absurd_sample_rate(tmp_path):
    bad = tmp_path / "fast.wav"
    scipy.io.wavfile.write(bad, 2**31 - 1, np.zeros(100, np.int16))
    done = run_cli("render", "--in", str(bad), "--out", str(tmp_path / "o.wav"))
    assert done.returncode == 1 and "sample rate" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("azimuth", ["nan", "1e9", "left"])
def test_render_refuses_bad_numbers(mono_wav, tmp_path, azimuth):
    done = run_cli("render", "--in", str(mono_wav), "--out", str(tmp_path / "o.wav"),
                   "--azimuth", azimuth)
    assert done.returncode == 2 and "azimuth" in done.stderr


def sine(amplitude: float, seconds: float = 0.25) -> np.ndarray:
    """A 1 kHz sine at 48 kHz, whole periods long (its RMS is exactly amplitude / √2)."""
    return amplitude * np.sin(2 * np.pi * 1_000 * np.arange(int(seconds * 48_000)) / 48_000)


def write_pcm(path: Path, samples: np.ndarray, sample_width: int) -> Path:
    """``samples`` (−1..1) as a mono 48 kHz integer WAV of ``sample_width`` bytes a sample,
    written with the standard library: 8-bit WAV is unsigned and centred on 128."""
    half = 2 ** (8 * sample_width - 1)
    codes = np.clip(np.round(samples * half), -half, half - 1).astype("<i8")
    if sample_width == 1:
        codes += 128
    raw = codes.view(np.uint8).reshape(-1, 8)[:, :sample_width].tobytes()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(sample_width)
        out.setframerate(48_000)
        out.writeframes(raw)
    return path


@pytest.mark.parametrize("sample_width", [1, 2, 3, 4, "float"])
def test_wav_input_is_read_at_the_same_level_at_every_sample_width(tmp_path, sample_width):
    tone = sine(0.5)
    if sample_width == "float":
        path = tmp_path / "tone.wav"
        scipy.io.wavfile.write(path, 48_000, tone.astype(np.float32))
    else:
        path = write_pcm(tmp_path / "tone.wav", tone, sample_width)
    audio = read_wav_mono(str(path)).astype(np.float64)
    # each sample within half a quantisation step (8-bit: 1/256) plus float32 rounding
    step = 1 / 2 ** (8 * sample_width - 1) if sample_width != "float" else 0.0
    np.testing.assert_allclose(audio, tone, rtol=0, atol=step / 2 + 1e-7)
    # 8-bit rounding of this tone moves its level by 0.02 dB (the error follows the tone)
    assert 10 * np.log10(np.mean(audio**2)) == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)),
                                                             abs=0.05)


def test_render_of_8_bit_and_16_bit_copies_of_a_tone_has_the_same_level(tmp_path):
    levels = {}
    for width in (1, 2):
        src = write_pcm(tmp_path / f"tone{width}.wav", sine(0.25), width)
        out = tmp_path / f"out{width}.wav"
        assert main(["render", "--in", str(src), "--out", str(out), "--azimuth", "30"]) == 0
        levels[width] = levels_db(out)[2]
    assert levels[1] == pytest.approx(levels[2], abs=0.1)


@pytest.fixture(scope="module")
def gapped_sofa(tmp_path_factory):
    """KEMAR with every response within 20° of azimuth 30°, elevation 0° set to zero."""
    s = sofar.read_sofa(default_sofa_path(), verify=False, verbose=False).copy()
    measured = unit_vectors(s.SourcePosition[:, 0], s.SourcePosition[:, 1])
    gap = measured @ unit_vectors(np.array(30.0), np.array(0.0)) > np.cos(np.radians(20))
    ir = np.array(s.Data_IR)
    ir[gap] = 0.0
    s.Data_IR = ir
    path = tmp_path_factory.mktemp("sofa") / "gapped.sofa"
    sofar.write_sofa(str(path), s)
    return path


def test_render_fails_with_one_line_where_the_sofa_set_has_no_response(
        mono_wav, tmp_path, gapped_sofa):
    out = tmp_path / "o.wav"
    done = run_cli("render", "--in", str(mono_wav), "--out", str(out), "--sofa", str(gapped_sofa),
                   "--azimuth", "30", "--elevation", "0")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "gapped.sofa" in lines[0] and "azimuth 30°, elevation 0°" in lines[0]
    assert "silent" in lines[0]
    assert not out.exists()


def test_render_warns_but_writes_when_an_orbit_starts_in_a_gap_of_the_sofa_set(
        mono_wav, tmp_path, gapped_sofa, capsys):
    out = tmp_path / "o.wav"
    assert main(["render", "--in", str(mono_wav), "--out", str(out), "--sofa", str(gapped_sofa),
                 "--azimuth", "30", "--orbit", "0.4"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spatialjam render: warning:")
    assert "gapped.sofa" in err[0] and "azimuth 30°, elevation 0°" in err[0]
    assert np.any(scipy.io.wavfile.read(out)[1])  # the orbit leaves the gap: sound is written


def test_render_outside_the_gap_of_a_sofa_set_gives_no_warning(
        mono_wav, tmp_path, gapped_sofa, capsys):
    assert main(["render", "--in", str(mono_wav), "--out", str(tmp_path / "o.wav"),
                 "--sofa", str(gapped_sofa), "--azimuth", "-90"]) == 0
    assert capsys.readouterr().err == ""


def test_bench_mixer_json_reports_engine_baseline_and_ratio(capsys):
    assert main(["bench", "mixer", "--listeners", "3", "--sources", "4", "--ticks", "5",
                 "--baseline-ticks", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["listeners"] == 3 and report["sources"] == 4 and report["device"] == "cpu"
    for key in ("engine_static_ms", "engine_moving_ms", "baseline_ms"):
        assert report[key]["median"] > 0
    assert report["speedup_moving"] == pytest.approx(
        report["baseline_ms"]["median"] / report["engine_moving_ms"]["median"], rel=0.05)


def test_bench_mixer_times_each_frame_size_in_one_run(capsys):
    """Issue 17: ``--frame-ms 5 20`` reports each size's cost per second of audio and its ratio
    to the 20 ms frame's (numbers, not judged here)."""
    assert main(["bench", "mixer", "--listeners", "2", "--sources", "2", "--ticks", "2",
                 "--baseline-ticks", "0", "--frame-ms", "5", "20", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frame_ms"] == 5.0 and report["nfft"] == report["frames"][0]["nfft"]
    five, twenty = report["frames"]
    assert (five["frame"], twenty["frame"]) == (240, 960)
    assert five["engine_moving_ms"]["ticks"] == 4 * twenty["engine_moving_ms"]["ticks"] == 8
    assert twenty["moving_cost_vs_20ms"] == 1.0
    assert five["moving_cost_vs_20ms"] == pytest.approx(
        five["moving_ms_per_audio_s"] / twenty["moving_ms_per_audio_s"], rel=0.02)


def test_bench_mixer_refuses_a_frame_size_no_room_ticks_at():
    done = run_cli("bench", "mixer", "--frame-ms", "7")
    assert done.returncode != 0 and "--frame-ms" in done.stderr


def test_bench_mixer_on_cuda_without_a_gpu_says_so():
    done = run_cli("bench", "mixer", "--listeners", "2", "--sources", "2", "--device", "cuda")
    if done.returncode == 0:
        pytest.skip("a CUDA device is present")
    assert done.returncode == 1 and "CUDA" in done.stderr and "Traceback" not in done.stderr
