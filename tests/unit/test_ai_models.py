"""The accompanist's shipped models (issue 6): they load, play valid notes, follow key and chords,
eval reports every field, and the training path still exports a loadable network."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ai_accompany import models
from ai_accompany.evaluate import count_parallels, load_heldout
from ai_accompany.models import MODEL_NAMES
from ai_accompany.vocab import (
    HARMONISER_COLUMNS,
    HOLD,
    IMPROVISER_COLUMNS,
    NUM_TOKENS,
    VOICE_RANGES,
    chord_tone_mask,
    harmoniser_inputs,
    improviser_inputs,
    key_scale_mask,
    match_chord,
)
from server.cli import main as cli_main

# "Ode to Joy" in C major, (MIDI pitch, 16ths): eight bars of 4/4.
ODE = [(64, 4), (64, 4), (65, 4), (67, 4), (67, 4), (65, 4), (64, 4), (62, 4),
       (60, 4), (60, 4), (62, 4), (64, 4), (64, 6), (62, 2), (62, 8),
       (64, 4), (64, 4), (65, 4), (67, 4), (67, 4), (65, 4), (64, 4), (62, 4),
       (60, 4), (60, 4), (62, 4), (64, 4), (62, 6), (60, 2), (60, 8)]
# I – vi – IV – V7, one chord a bar, four times over.
PROGRESSION = [(0, "maj"), (9, "min"), (5, "maj"), (7, "dom7")] * 4


def melody_steps(tune):
    """Per 16th step: (pitch, onset)."""
    return [(p, k == 0) for p, n in tune for k in range(n)]


@pytest.fixture(scope="module")
def harmoniser():
    return models.load_harmoniser(providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def improviser():
    return models.load_improviser(providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def baseline():
    return models.load_baseline()


@pytest.mark.parametrize("name, columns", [("harmoniser", len(HARMONISER_COLUMNS)),
                                           ("improviser", len(IMPROVISER_COLUMNS))])
def test_shipped_onnx_graphs_give_normalised_log_probs_and_a_state(name, columns):
    stepper = models.OnnxStepper(models.MODELS_DIR / f"{name}.onnx", ["CPUExecutionProvider"])
    assert stepper.columns == columns
    batch = 3
    state = stepper.initial_state(batch)
    x = np.zeros((batch, columns), dtype=np.int64)
    for _ in range(4):
        log_probs, state = stepper(x, state)
    assert log_probs.shape[0] == batch and log_probs.shape[-1] == NUM_TOKENS
    assert state.shape == (1, batch, stepper.hidden)
    # exp(log-softmax) sums to 1 up to float32 rounding over 66 terms
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, atol=1e-4)


def harmonise(model, key):
    """New notes of alto, tenor and bass under "Ode to Joy"; every voice checked for range."""
    steps = melody_steps(ODE)
    model.reset()
    notes = []
    for t, (pitch, onset) in enumerate(steps):
        ahead = [p for p, _ in steps[t + 1:t + 5]]
        voices = model.step(pitch, ahead, t % 16, onset=onset, key=key)
        for name, p, new in zip(("alto", "tenor", "bass"), voices, model.last_onsets,
                                strict=True):
            lo, hi = VOICE_RANGES[name]
            assert isinstance(p, int) and lo <= p <= hi, (t, name, p)
            if new:
                notes.append(p)
    assert len(notes) >= 3 * 8  # it does move: at least a new note per voice and bar
    c_major = key_scale_mask(0, "major")
    return np.mean([c_major[p % 12] for p in notes]), len(notes)


def test_harmoniser_keeps_a_c_major_melody_in_key_and_its_voices_in_range(harmoniser):
    in_key, count = harmonise(harmoniser, key=(0, "major"))  # measured 0.98
    assert in_key >= 0.9, f"{in_key:.2f} of {count} new notes in C major"


def test_harmoniser_mostly_stays_in_key_when_not_told_the_key(harmoniser):
    # measured 0.86: it hears the opening E–E–F–G as A minor (E major, then A minor chords)
    # before the cadences settle C major
    in_key, count = harmonise(harmoniser, key=None)
    assert in_key >= 0.75, f"{in_key:.2f} of {count} new notes in C major"


def test_harmoniser_step_rejects_bad_input_with_the_value_named(harmoniser):
    harmoniser.reset()
    with pytest.raises(ValueError, match="beat_pos"):
        harmoniser.step(60, [], -1)
    with pytest.raises(ValueError, match="MIDI note"):
        harmoniser.step(200, [], 0)
    with pytest.raises(ValueError, match="key_mode"):
        harmoniser.step(60, [], 0, key=(0, "dorian"))


def improvise(model, seed, temperature=1.0, top_p=0.9):
    """Four bars a chord; (pitch, chord) of every new note on a beat, and every sounding pitch."""
    rng = np.random.default_rng(seed)
    model.reset()
    on_beats, heard = [], []
    for t in range(16 * len(PROGRESSION)):
        root, quality = PROGRESSION[t // 16]
        pitch = model.step(root, quality, 0, "major", t % 16, temperature, top_p, rng)
        if pitch is not None:
            assert model.sounding == pitch
            if t % 4 == 0:
                on_beats.append((pitch, root, quality))
        heard.append(model.sounding)
    return on_beats, heard


def chord_tone_rate(on_beats):
    return np.mean([chord_tone_mask(r, q)[p % 12] for p, r, q in on_beats])


def uniform_chance_rate():
    """A uniform-random melody over the improviser's range: fraction that are chord tones."""
    lo, hi = VOICE_RANGES["soprano"]
    pitches = np.arange(lo, hi + 1)
    return np.mean([chord_tone_mask(r, q)[pitches % 12].mean() for r, q in PROGRESSION])


def test_improviser_plays_chord_tones_on_the_beat_well_above_chance(improviser):
    on_beats = []
    for seed in range(3):
        on_beats += improvise(improviser, seed)[0]
    chance = uniform_chance_rate()  # 0.28 for this progression
    rate = chord_tone_rate(on_beats)
    # measured 0.97–0.99 over three sets of three seeds (the n-gram baseline 0.95–0.98), so
    # chance + 0.5 leaves about 0.2 of slack for a retrained model
    assert len(on_beats) >= 30
    assert rate >= chance + 0.5, f"chord tones {rate:.2f} vs chance {chance:.2f}"


def test_improviser_notes_are_in_range_and_none_means_hold_or_rest(improviser):
    _, heard = improvise(improviser, seed=7)
    lo, hi = VOICE_RANGES["soprano"]
    assert any(p is not None for p in heard)
    assert all(p is None or lo <= p <= hi for p in heard)
    with pytest.raises(ValueError, match="chord_quality"):
        improviser.step(0, "sus4", 0, "major", 0)
    with pytest.raises(ValueError, match="top_p"):
        improviser.step(0, "maj", 0, "major", 0, 1.0, 0.0)


def test_improviser_feed_follows_the_given_notes(improviser):
    improviser.reset()
    improviser.feed(60, 0, "maj", 0, "major", 0)
    assert improviser.sounding == 60
    improviser.feed(60, 0, "maj", 0, "major", 1)
    assert improviser.last_token == HOLD  # the same pitch again without an onset: held
    improviser.feed(None, 0, "maj", 0, "major", 2)
    assert improviser.sounding is None


def test_baseline_loads_and_plays_both_roles(baseline):
    baseline.harmoniser.reset()
    for t, (pitch, onset) in enumerate(melody_steps(ODE[:8])):
        voices = baseline.harmoniser.step(pitch, [], t % 16, onset=onset)
        assert all(VOICE_RANGES[n][0] <= p <= VOICE_RANGES[n][1]
                   for n, p in zip(("alto", "tenor", "bass"), voices, strict=True))
    on_beats, _ = improvise(baseline.improviser, seed=1)
    assert len(on_beats) >= 10
    assert chord_tone_rate(on_beats) >= uniform_chance_rate() + 0.5


def test_ngram_steppers_score_a_batch_as_they_score_each_row(baseline):
    heldout = load_heldout()
    pieces = [heldout.chorale(i) for i in range(2)]
    for stepper, inputs in (
            (baseline.harmoniser.stepper,
             [harmoniser_inputs(p["tokens"], p["beat_pos"])[0][:20] for p in pieces]),
            (baseline.improviser.stepper,
             [improviser_inputs(p["tokens"][:, 0], p["chord_root"], p["chord_quality"],
                                p["key_tonic"], p["key_mode"], p["beat_pos"])[0][:20]
              for p in pieces])):
        batch_state = stepper.initial_state(2)
        states = [stepper.initial_state(1) for _ in pieces]
        for t in range(20):
            batch_lp, batch_state = stepper(np.stack([x[t] for x in inputs]), batch_state)
            for b, x in enumerate(inputs):
                lp, states[b] = stepper(x[t:t + 1], states[b])
                np.testing.assert_allclose(batch_lp[b], lp[0], rtol=1e-6)
            assert np.all(np.isfinite(batch_lp))


def test_count_parallels_finds_fifths_and_octaves_in_similar_motion_only():
    fifths = np.array([[67, 60], [69, 62]])  # C–G up to D–A: parallel fifths
    octaves = np.array([[72, 60], [71, 59]])  # parallel octaves, down
    both_down = np.array([[67, 60], [62, 55]])
    contrary = np.array([[67, 60], [74, 55]])  # a fifth to a twelfth in contrary motion
    oblique = np.array([[67, 60], [67, 55]])  # one voice holds
    to_sixth = np.array([[67, 60], [69, 60 + 1]])
    assert count_parallels(fifths) == 1
    assert count_parallels(octaves) == 1
    assert count_parallels(both_down) == 1
    assert count_parallels(contrary) == 0
    assert count_parallels(oblique) == 0
    assert count_parallels(to_sixth) == 0
    assert count_parallels(np.array([[67, -1], [69, 62]])) == 0  # a rest breaks the line


@pytest.mark.parametrize("pcs, expected", [
    ({0: 1, 4: 1, 7: 1}, (0, "maj")),
    ({9: 1, 0: 1, 4: 1}, (9, "min")),
    ({7: 1, 11: 1, 2: 1, 5: 1}, (7, "dom7")),
    ({11: 1, 2: 1, 5: 1}, (11, "dim")),
])
def test_match_chord_names_plain_chords(pcs, expected):
    weights = np.zeros(12)
    for pc, w in pcs.items():
        weights[pc] = w
    assert match_chord(weights) == expected


def test_sample_with_a_tiny_top_p_takes_the_most_likely_allowed_token():
    log_probs = np.log(np.array([0.1, 0.5, 0.4]))
    allowed = np.array([True, False, True])
    rng = np.random.default_rng(0)
    assert {models.sample(log_probs, allowed, 1.0, 1e-6, rng) for _ in range(20)} == {2}
    assert models.sample(log_probs, allowed, 0.0, 1.0, rng) == 2


@pytest.mark.slow  # every model over every held-out chorale: about a minute
def test_eval_json_has_every_field_for_every_model(capsys):
    assert cli_main(["ai", "eval", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["models"]) == set(MODEL_NAMES)
    common = {"accuracy", "accuracy_onsets", "nll_per_step", "nll_per_token", "in_key_rate",
              "bach_in_key_rate", "parallels_per_100_steps", "bach_parallels_per_100_steps",
              "latency_ms_p50", "latency_ms_p99", "steps_generated", "kind"}
    for name, row in report["models"].items():
        expected = common | ({"chord_tone_rate_strong_beats",
                              "bach_chord_tone_rate_strong_beats"}
                             if name.endswith("improviser") else {"parallels_per_100_steps_raw"})
        assert set(row) == expected, name
        assert 0 <= row["accuracy"] <= 1 and 0 < row["nll_per_step"] < 50
        assert 0 < row["latency_ms_p50"] <= row["latency_ms_p99"]
    assert report["heldout"]["chorales"] >= 20


def test_eval_rejects_an_unknown_model_as_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["ai", "eval", "--models", "choir"])
    assert exc.value.code == 2


def test_heldout_chorales_are_the_fixed_split():
    split = json.loads((models.MODELS_DIR / "split.json").read_text())["heldout"]
    assert load_heldout().ids == sorted(split)


@pytest.mark.slow  # torch (the train extra), a training run and an ONNX export
def test_a_tiny_training_run_exports_loadable_models(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from ai_accompany.train.__main__ import main as train_main

    heldout = models.MODELS_DIR / models.HELDOUT_FILE
    assert train_main(["--data", str(heldout), "--chorales", "2", "--keys", "2", "--epochs", "1",
                       "--max-batches", "2", "--hidden", "16", "--out", str(tmp_path)]) == 0
    card = json.loads((tmp_path / "card.json").read_text())
    for name in ("harmoniser", "improviser"):
        assert card["models"][name]["onnx"]["max_abs_diff_vs_torch"] < 1e-4
    harmoniser = models.load_harmoniser(tmp_path / "harmoniser.onnx", ["CPUExecutionProvider"])
    voices = harmoniser.step(64, [64, 64], 0)
    assert all(VOICE_RANGES[n][0] <= p <= VOICE_RANGES[n][1]
               for n, p in zip(("alto", "tenor", "bass"), voices, strict=True))
    improviser = models.load_improviser(tmp_path / "improviser.onnx", ["CPUExecutionProvider"])
    improviser.step(0, "maj", 0, "major", 0, 1.0, 0.9, np.random.default_rng(0))
    baseline = models.load_baseline(tmp_path / "baseline.npz")
    baseline.harmoniser.step(64, [], 0)


def test_an_accompanists_voices_lean_to_what_the_melody_will_sound(harmoniser):
    """With ``consonant`` and a forecast of the coming melody note (here: the true one, one
    step before it is heard), the voices clash with it far less than the plain decoder's."""
    clashes = {}
    for consonant in (False, True):
        harmoniser.reset()
        harmoniser.consonant = consonant
        bad = total = 0
        steps = melody_steps(ODE)
        for k, (pitch, _) in enumerate(steps):
            heard = steps[k - 1][0] if k else None  # the live brain hears the step before
            forecast = np.zeros(12)
            forecast[pitch % 12] = 1.0
            voices = harmoniser.step(heard, [heard], k % 16, key=(0, "major"),
                                     forecast=forecast if consonant else None)
            bad += sum((v - pitch) % 12 not in models.CONSONANT_INTERVALS for v in voices)
            total += 3
        clashes[consonant] = bad / total
    harmoniser.consonant = False
    assert clashes[True] < 0.05 and clashes[True] < 0.5 * clashes[False], clashes


def test_the_melody_forecast_expects_a_scale_to_go_on():
    """Fed a C major scale going up and down in 8th notes, the forecast gives the note that
    comes next far more than the 1 in 7 of a guess within the key."""
    forecast, kind = models.load_forecast(["CPUExecutionProvider"])
    line = [60, 62, 64, 65, 67, 69, 71, 72, 71, 69, 67, 65, 64, 62] * 3
    steps = [p for p in line for _ in range(2)]
    chances = []
    for k in range(1, len(steps)):
        p = forecast.step(steps[k - 1], 0, "maj", 0, "major", k % 16)
        assert p.shape == (12,) and abs(p.sum() - 1) < 1e-6
        if k >= 8:
            chances.append(p[steps[k] % 12])
    assert np.mean(chances) > 0.4, (kind, np.mean(chances))


def test_a_tiny_forecaster_training_run_exports_a_loadable_model(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    pytest.importorskip("music21")
    from ai_accompany.train.__main__ import main as train_main

    heldout = models.MODELS_DIR / models.HELDOUT_FILE
    assert train_main(["--model", "forecaster", "--data", str(heldout), "--chorales", "2",
                       "--folk-tunes", "3", "--keys", "2", "--epochs", "1", "--max-batches",
                       "2", "--hidden", "16", "--out", str(tmp_path)]) == 0
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["models"]["forecaster"]["onnx"]["max_abs_diff_vs_torch"] < 1e-4
    model = models.Improviser(models.OnnxStepper(tmp_path / models.FORECASTER_FILE))
    p = models.MelodyForecast(model, chords=False).step(60, 0, "maj", 0, "major", 0)
    assert p.shape == (12,) and abs(p.sum() - 1) < 1e-6
