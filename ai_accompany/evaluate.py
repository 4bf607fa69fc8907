"""``spatialjam ai eval``: every shipped model and the n-gram baseline on the held-out chorales.

The held-out chorales (never trained on; ids in ``models/split.json``) ship quantised in
``models/heldout.npz``, so eval needs neither torch nor music21. Per model:

* ``accuracy`` — teacher-forced: the most likely token equals Bach's, per voice-step (the
  harmoniser predicts three voices a step, the improviser one); ``accuracy_onsets`` counts only
  steps where Bach starts a note (holds make up about 70 % of the steps and are easy);
* ``nll_per_step`` — teacher-forced negative log-likelihood of Bach's step in nats (for the
  harmoniser the sum over alto, tenor and bass), ``nll_per_token`` per voice-step;
* the harmoniser is told each chorale's key (as the listener would estimate it; the n-gram
  baseline ignores it);
* generated (free-running: the model hears its own previous notes; the harmoniser the held-out
  melody with a full look-ahead, greedy; the improviser the held-out chords and key, sampled at
  :data:`TEMPERATURE` / :data:`TOP_P` from seed :data:`SEED`):
  ``in_key_rate`` (new notes whose pitch class is in the chorale's key,
  :data:`~ai_accompany.vocab.SCALES`), ``parallels_per_100_steps`` (consecutive fifths and
  octaves, :func:`count_parallels`: harmoniser over all six pairs of the given soprano and its
  three voices, as shipped — its decoder avoids them — and ``…_raw`` with that rule off;
  improviser between its melody and Bach's bass), the improviser's
  ``chord_tone_rate_strong_beats`` (new notes on a beat that belong to the beat's chord), each
  with Bach's own value on the same chorales as ``bach_…``;
* ``latency_ms_p50`` / ``latency_ms_p99`` — wall time of one ``step()`` call (graph, sampling and
  bookkeeping) while generating, on the providers listed.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ai_accompany.models import (
    BASELINE_FILE,
    HARMONISER_FILE,
    HELDOUT_FILE,
    IMPROVISER_FILE,
    MODEL_NAMES,
    MODELS_DIR,
    Harmoniser,
    Improviser,
    load_baseline,
    load_harmoniser,
    load_improviser,
    onnx_providers,
)
from ai_accompany.train.data import Chorales, load_npz
from ai_accompany.vocab import (
    CHORD_QUALITIES,
    FIRST_PITCH_TOKEN,
    MODES,
    PITCH_LO,
    STEPS_PER_BEAT,
    chord_tone_mask,
    harmoniser_inputs,
    improviser_inputs,
    key_scale_mask,
    sounding,
)

TEMPERATURE = 0.8
TOP_P = 0.95
SEED = 2024
_PERFECT = {0, 7}  # interval classes of octaves (and unisons) and fifths


def midi_lines(tokens: np.ndarray) -> np.ndarray:
    """Sounding MIDI pitches of token columns ``(T, V)``; −1 where a voice rests."""
    snd = sounding(np.asarray(tokens, dtype=np.int64))
    return np.where(snd >= FIRST_PITCH_TOKEN, snd - FIRST_PITCH_TOKEN + PITCH_LO, -1)


def count_parallels(lines: np.ndarray) -> int:
    """Consecutive fifths and octaves in sounding pitches ``(T, V)`` (−1 = rest).

    For each pair of voices and each step t where both sound at t − 1 and t and *both* change
    pitch in the same direction, a parallel is counted when the interval between them is a
    perfect fifth or an octave (unison, compound) before and after — the same interval class.
    """
    count = 0
    for i, j in itertools.combinations(range(lines.shape[1]), 2):
        a, b = lines[:, i], lines[:, j]
        prev_ok = (a[:-1] >= 0) & (b[:-1] >= 0) & (a[1:] >= 0) & (b[1:] >= 0)
        da, db = np.sign(a[1:] - a[:-1]), np.sign(b[1:] - b[:-1])
        moving = prev_ok & (da != 0) & (da == db)
        before, after = np.abs(a[:-1] - b[:-1]) % 12, np.abs(a[1:] - b[1:]) % 12
        same_perfect = (before == after) & np.isin(before, list(_PERFECT))
        count += int(np.sum(moving & same_perfect))
    return count


def in_key_counts(tokens: np.ndarray, tonic: int, mode: int) -> tuple[int, int]:
    """(new notes in the key, new notes) over all token columns."""
    pitched = tokens[tokens >= FIRST_PITCH_TOKEN] - FIRST_PITCH_TOKEN + PITCH_LO
    return int(key_scale_mask(tonic, MODES[mode])[pitched % 12].sum()), len(pitched)


def strong_chord_tone_counts(melody: np.ndarray, piece: dict) -> tuple[int, int]:
    """(new notes on a beat that are chord tones, new notes on a beat)."""
    hits = total = 0
    for t in np.flatnonzero((melody >= FIRST_PITCH_TOKEN)
                            & (piece["beat_pos"] % STEPS_PER_BEAT == 0)):
        pc = (int(melody[t]) - FIRST_PITCH_TOKEN + PITCH_LO) % 12
        hits += bool(chord_tone_mask(int(piece["chord_root"][t]),
                                     CHORD_QUALITIES[int(piece["chord_quality"][t])])[pc])
        total += 1
    return hits, total


def teacher_forced(stepper, pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Accuracy and NLL of Bach's tokens, all sequences batched through the stepper."""
    longest = max(len(x) for x, _ in pairs)
    batch = len(pairs)
    xs = np.zeros((batch, longest, pairs[0][0].shape[1]), dtype=np.int64)
    ys = np.zeros((batch, longest, pairs[0][1].reshape(len(pairs[0][1]), -1).shape[1]),
                  dtype=np.int64)
    mask = np.zeros((batch, longest), dtype=bool)
    for b, (x, y) in enumerate(pairs):
        xs[b, :len(x)], ys[b, :len(x)], mask[b, :len(x)] = x, y.reshape(len(y), -1), True
    state = stepper.initial_state(batch)
    nll = correct = onset_correct = onsets = tokens = 0.0
    for t in range(longest):
        log_probs, state = stepper(xs[:, t], state)
        log_probs = log_probs.reshape(batch, ys.shape[2], -1)[mask[:, t]]
        target = ys[mask[:, t], t]
        picked = np.take_along_axis(log_probs, target[..., None], axis=-1)[..., 0]
        hit = log_probs.argmax(-1) == target
        nll -= float(picked.sum())
        correct += float(hit.sum())
        onset_correct += float(hit[target >= FIRST_PITCH_TOKEN].sum())
        onsets += float((target >= FIRST_PITCH_TOKEN).sum())
        tokens += target.size
    steps = float(mask.sum())
    return {"accuracy": correct / tokens, "accuracy_onsets": onset_correct / max(onsets, 1),
            "nll_per_step": nll / steps, "nll_per_token": nll / tokens}


def _latency(ns: list[int]) -> dict:
    ms = np.array(ns) / 1e6
    return {"latency_ms_p50": float(np.percentile(ms, 50)),
            "latency_ms_p99": float(np.percentile(ms, 99)), "steps_generated": len(ms)}


def generate_harmony(model: Harmoniser, pieces: list[dict]) -> dict:
    """Free-running alto/tenor/bass under each held-out melody; music metrics and latency."""
    in_key = [0, 0]
    bach_in_key = [0, 0]
    parallels = bach_parallels = steps = 0
    ns: list[int] = []
    for piece in pieces:
        tokens = piece["tokens"].astype(np.int64)
        mel = midi_lines(tokens[:, :1])[:, 0]
        key = (piece["key_tonic"], MODES[piece["key_mode"]])
        model.reset()
        out = np.zeros((len(tokens), 3), dtype=np.int64)
        for t in range(len(tokens)):
            ahead = [None if p < 0 else int(p) for p in mel[t + 1:t + 5]]
            started = time.perf_counter_ns()
            model.step(None if mel[t] < 0 else int(mel[t]), ahead, int(piece["beat_pos"][t]),
                       onset=bool(tokens[t, 0] >= FIRST_PITCH_TOKEN), key=key)
            ns.append(time.perf_counter_ns() - started)
            out[t] = model.last_tokens
        for acc, toks in ((in_key, out), (bach_in_key, tokens[:, 1:])):
            hits, total = in_key_counts(toks, piece["key_tonic"], piece["key_mode"])
            acc[0] += hits
            acc[1] += total
        parallels += count_parallels(midi_lines(np.concatenate([tokens[:, :1], out], axis=1)))
        bach_parallels += count_parallels(midi_lines(tokens))
        steps += len(tokens)
    return {"in_key_rate": in_key[0] / max(in_key[1], 1),
            "bach_in_key_rate": bach_in_key[0] / max(bach_in_key[1], 1),
            "parallels_per_100_steps": 100 * parallels / steps,
            "bach_parallels_per_100_steps": 100 * bach_parallels / steps, **_latency(ns)}


def generate_melody(model: Improviser, pieces: list[dict], seed: int = SEED) -> dict:
    """Free-running melodies over each held-out chorale's chords and key (sampled)."""
    rng = np.random.default_rng(seed)
    sums = dict.fromkeys(("key", "key_n", "bkey", "bkey_n", "ct", "ct_n", "bct", "bct_n"), 0)
    parallels = bach_parallels = steps = 0
    ns: list[int] = []
    for piece in pieces:
        tokens = piece["tokens"].astype(np.int64)
        model.reset()
        out = np.zeros(len(tokens), dtype=np.int64)
        quality = [CHORD_QUALITIES[int(q)] for q in piece["chord_quality"]]
        mode = MODES[piece["key_mode"]]
        for t in range(len(tokens)):
            root = int(piece["chord_root"][t])
            started = time.perf_counter_ns()
            model.step(None if root > 11 else root, quality[t], piece["key_tonic"], mode,
                       int(piece["beat_pos"][t]), TEMPERATURE, TOP_P, rng)
            ns.append(time.perf_counter_ns() - started)
            out[t] = model.last_token
        for prefix, melody in (("", out), ("b", tokens[:, 0])):
            hits, total = in_key_counts(melody, piece["key_tonic"], piece["key_mode"])
            sums[prefix + "key"] += hits
            sums[prefix + "key_n"] += total
            hits, total = strong_chord_tone_counts(melody, piece)
            sums[prefix + "ct"] += hits
            sums[prefix + "ct_n"] += total
        bass = tokens[:, 3:]
        parallels += count_parallels(midi_lines(np.concatenate([out[:, None], bass], axis=1)))
        bach_parallels += count_parallels(midi_lines(tokens[:, [0, 3]]))
        steps += len(tokens)
    rate = lambda a, b: sums[a] / max(sums[b], 1)  # noqa: E731
    return {"in_key_rate": rate("key", "key_n"), "bach_in_key_rate": rate("bkey", "bkey_n"),
            "chord_tone_rate_strong_beats": rate("ct", "ct_n"),
            "bach_chord_tone_rate_strong_beats": rate("bct", "bct_n"),
            "parallels_per_100_steps": 100 * parallels / steps,
            "bach_parallels_per_100_steps": 100 * bach_parallels / steps, **_latency(ns)}


def load_heldout(models_dir: Path = MODELS_DIR) -> Chorales:
    path = Path(models_dir) / HELDOUT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no held-out chorales at {path}; python -m ai_accompany.train "
                                "writes them")
    return load_npz(path)


def evaluate(models: Sequence[str] = MODEL_NAMES, models_dir: Path = MODELS_DIR,
             providers: Sequence[str] | None = None) -> dict:
    """The metrics above for each named model (:data:`MODEL_NAMES`), as a JSON-ready dict."""
    unknown = sorted(set(models) - set(MODEL_NAMES))
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r}; choose from {', '.join(MODEL_NAMES)}")
    models_dir = Path(models_dir)
    heldout = load_heldout(models_dir)
    pieces = [heldout.chorale(i) for i in range(len(heldout))]
    providers = list(providers or onnx_providers())
    baseline = (load_baseline(models_dir / BASELINE_FILE)
                if any(m.startswith("baseline") for m in models) else None)
    results = {}
    for name in models:
        if name.endswith("harmoniser"):
            model = (baseline.harmoniser if name.startswith("baseline") else
                     load_harmoniser(models_dir / HARMONISER_FILE, providers))
            pairs = [harmoniser_inputs(p["tokens"], p["beat_pos"], (p["key_tonic"], p["key_mode"]))
                     for p in pieces]
            row = {**teacher_forced(model.stepper, pairs), **generate_harmony(model, pieces)}
            model.avoid_parallels = False
            row["parallels_per_100_steps_raw"] = generate_harmony(
                model, pieces)["parallels_per_100_steps"]
        else:
            model = (baseline.improviser if name.startswith("baseline") else
                     load_improviser(models_dir / IMPROVISER_FILE, providers))
            pairs = [improviser_inputs(p["tokens"][:, 0], p["chord_root"], p["chord_quality"],
                                       p["key_tonic"], p["key_mode"], p["beat_pos"])
                     for p in pieces]
            row = {**teacher_forced(model.stepper, pairs), **generate_melody(model, pieces)}
        row["kind"] = "n-gram (numpy)" if name.startswith("baseline") else "onnx"
        results[name] = row
    return {"heldout": {"chorales": len(heldout), "steps": heldout.steps,
                        "file": str(models_dir / HELDOUT_FILE)},
            "generation": {"improviser_temperature": TEMPERATURE, "improviser_top_p": TOP_P,
                           "seed": SEED, "harmoniser": "greedy, full look-ahead"},
            "providers": providers, "models": results}


def format_table(report: dict) -> str:
    """The report as a fixed-width table, one row per model, Bach's reference in brackets."""
    head = (f"{'model':<20} {'acc':>6} {'acc/on':>6} {'nll/step':>8} {'in-key':>13} "
            f"{'par/100 (Bach)':>15} {'p50 ms':>7} {'p99 ms':>7}")
    lines = [f"held-out: {report['heldout']['chorales']} chorales, "
             f"{report['heldout']['steps']} steps; providers: {', '.join(report['providers'])}",
             head, "-" * len(head)]
    for name, r in report["models"].items():
        lines.append(
            f"{name:<20} {r['accuracy']:6.3f} {r['accuracy_onsets']:6.3f} "
            f"{r['nll_per_step']:8.3f} {r['in_key_rate']:6.3f} ({r['bach_in_key_rate']:.3f}) "
            f"{r['parallels_per_100_steps']:6.2f} ({r['bach_parallels_per_100_steps']:5.2f}) "
            f"{r['latency_ms_p50']:7.3f} {r['latency_ms_p99']:7.3f}")
        if "parallels_per_100_steps_raw" in r:
            lines.append(f"{'':<20} parallels per 100 steps without the decoder's rule "
                         f"{r['parallels_per_100_steps_raw']:.2f}")
        if "chord_tone_rate_strong_beats" in r:
            lines.append(f"{'':<20} chord tones on beats {r['chord_tone_rate_strong_beats']:.3f}"
                         f" (Bach {r['bach_chord_tone_rate_strong_beats']:.3f})")
    return "\n".join(lines)


def run_eval(args) -> int:
    """The CLI's ``ai eval``: print the table, or the JSON with ``--json``."""
    report = evaluate(args.models or MODEL_NAMES)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0
