"""``spatialjam ai demo``: a melody through listening, the models, the synth and the binaural
engine, as a person would run it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import scipy.io.wavfile
import scipy.signal
import soundfile

from ai_accompany import online
from ai_accompany.brain import DEFAULT_LEAD_MS
from ai_accompany.tunes import generated
from dsp.synth import Synth
from server.cli.ai_demo import melody_events, run_demo_path


def test_the_ai_follows_the_tune_deciding_each_note_just_before_it_sounds():
    _, ai, report = run_demo_path(100.0, "accompany", "organ", 12.0, follow=True)
    status = report["status"]
    assert status["locked"] and abs(status["bpm"] - 100.0) < 2.0 and status["key"] == "C major"
    assert status["models"] == "onnx"
    assert report["events"] >= 20 and report["late"] == 0
    # Decided its lead (40 ms) before the tick that plays it: not a beat ahead, as before,
    # when it harmonised the melody of a beat ago.
    assert 0 < report["lead_ms_p50"] <= DEFAULT_LEAD_MS + 20.0
    # It plays while the tune plays (after the listener has locked on).
    first = melody_events(100.0)[0].start
    assert np.sqrt(np.mean(ai[first + 48_000 * 4:] ** 2)) > 0.01


def test_the_demo_command_writes_a_binaural_file(tmp_path):
    out = tmp_path / "demo.wav"
    done = subprocess.run([sys.executable, "-m", "server.cli", "ai", "demo", "--out", str(out),
                           "--seconds", "8", "--role", "improvise", "--instrument", "epiano"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "AI notes" in done.stdout
    rate, data = scipy.io.wavfile.read(out)
    assert rate == 48_000 and data.ndim == 2 and data.shape[1] == 2
    assert np.abs(data).max() > 1000

    bad = subprocess.run([sys.executable, "-m", "server.cli", "ai", "demo", "--out",
                          str(tmp_path / "missing" / "x.wav"), "--seconds", "8"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "cannot write" in bad.stderr


def test_ai_accompany_plays_along_with_a_players_recording(tmp_path):
    """A player's recording (a pop tune at 44.1 kHz) in; the AI finds the tempo and key by
    listening and plays along; the two out, binaurally, at 48 kHz."""
    tune = generated("pop", 1)[0]
    synth = Synth("organ")
    synth.schedule(online.melody_events(tune))
    played = np.concatenate([synth.render(k, 960) for k in range(0, 20 * 48_000, 960)])
    recording = tmp_path / "me.wav"
    soundfile.write(recording, scipy.signal.resample_poly(played, 147, 160), 44_100)
    out = tmp_path / "with_ai.wav"
    done = subprocess.run([sys.executable, "-m", "server.cli", "ai", "accompany", "--in",
                           str(recording), "--out", str(out), "--style", "folk"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    notes = int(done.stdout.split(" AI notes")[0].rsplit(" ", 1)[1])
    assert notes > 20 and "(0 too late" in done.stdout and "key G major" in done.stdout, \
        done.stdout
    data, rate = soundfile.read(out)
    assert rate == 48_000 and data.shape[1] == 2 and len(data) >= 20 * 48_000
    alone = subprocess.run([sys.executable, "-m", "server.cli", "ai", "accompany", "--in",
                            str(tmp_path / "missing.wav"), "--out", str(out)],
                           capture_output=True, text=True, timeout=300)
    assert alone.returncode != 0 and "cannot read" in alone.stderr
    assert alone.stderr.count("\n") == 1
