"""``python -m ai_accompany.train``: parse the chorales, train, export to ONNX, evaluate, record.

Writes into ``--out`` (default: the shipped ``ai_accompany/models/``): ``harmoniser.onnx``,
``improviser.onnx``, ``baseline.npz``, ``heldout.npz`` (the held-out chorales, quantised, for eval
and the tests), ``card.json`` and ``README.md`` (how they were made and how they score). The
held-out ids are fixed in ``ai_accompany/models/split.json``, written once when it is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from ai_accompany.models import (
    BASELINE_FILE,
    CARD_FILE,
    FORECASTER_FILE,
    HARMONISER_FILE,
    HELDOUT_FILE,
    IMPROVISER_FILE,
    MODELS_DIR,
)

log = logging.getLogger("ai_accompany.train")
FOLK_HELDOUT = "models/heldout_folk.npz"

SPLIT_FILE = MODELS_DIR / "split.json"
DEFAULT_EPOCHS = 6


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ai_accompany.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("harmoniser", "improviser", "baseline", "forecaster",
                                        "all"), default="all",
                   help="forecaster: the melody forecaster, on folk tunes (Ryan's Mammoth and "
                        "O'Neill's, the held-out ones left out) and the training chorales' "
                        "melodies")
    p.add_argument("--folk-tunes", type=_positive, metavar="N",
                   help="the forecaster: the first N folk tunes only (smoke tests)")
    p.add_argument("--epochs", type=_positive, default=DEFAULT_EPOCHS,
                   help=f"passes over the training chorales in all keys (default "
                        f"{DEFAULT_EPOCHS})")
    p.add_argument("--chorales", type=_positive, metavar="N",
                   help="train on the first N training chorales only (smoke tests)")
    p.add_argument("--keys", type=int, choices=range(1, 13), default=12, metavar="K",
                   help="transpose each chorale into K keys (default 12)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=MODELS_DIR, metavar="DIR")
    p.add_argument("--data", type=Path, metavar="FILE.npz",
                   help="train on every chorale of this file (e.g. models/heldout.npz) instead "
                        "of music21's corpus; no held-out split, no eval")
    p.add_argument("--hidden", type=_positive, default=256, help="GRU width (default 256)")
    p.add_argument("--batch", type=_positive, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--max-batches", type=_positive, metavar="N",
                   help="at most N batches per epoch (smoke tests)")
    p.add_argument("--threads", type=_positive, default=2, help="torch CPU threads (default 2)")
    return p


def _versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for dist in ("torch", "onnx", "onnxruntime", "numpy", "music21"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_split(corpus) -> list[str]:
    """The fixed held-out ids; made and written to ``split.json`` only when it is missing."""
    from ai_accompany.train.data import HELDOUT_MODULUS, make_split

    if SPLIT_FILE.is_file():
        return json.loads(SPLIT_FILE.read_text())["heldout"]
    held = make_split(corpus)
    SPLIT_FILE.write_text(json.dumps({
        "rule": "melody groups (same soprano intervals) whose first corpus id has "
                f"zlib.crc32(id) % {HELDOUT_MODULUS} == 0; never trained on",
        "corpus": "music21 corpus.chorales.Iterator(), four-voice chorales",
        "heldout": held}, indent=1) + "\n")
    log.info("wrote a new split: %d held-out chorales in %s", len(held), SPLIT_FILE)
    return held


def _train_one(name: str, args, pieces: list[dict], out: Path) -> dict:
    import torch

    from ai_accompany.train import fit, nets

    torch.manual_seed(args.seed)
    if name == "harmoniser":
        seqs, net = fit.harmoniser_sequences(pieces), nets.harmoniser_net(args.hidden)
    elif name == "forecaster":
        pieces = forecaster_pieces(args, pieces)
        seqs, net = fit.improviser_sequences(pieces), nets.improviser_net(args.hidden)
    else:
        seqs, net = fit.improviser_sequences(pieces), nets.improviser_net(args.hidden)
    log.info("%s: %d sequences, %d steps", name, len(seqs.xs), seqs.steps)
    history = fit.train_net(net, seqs, epochs=args.epochs, seed=args.seed, batch=args.batch,
                            lr=args.lr, max_batches=args.max_batches,
                            hide=name == "harmoniser")
    path = out / {"harmoniser": HARMONISER_FILE, "forecaster": FORECASTER_FILE}.get(
        name, IMPROVISER_FILE)
    diff = fit.export_onnx(net, path, seqs.xs[0][:32])
    log.info("%s: exported %s (%.0f kB), ONNX vs torch max |diff| %.2e", name, path,
             path.stat().st_size / 1e3, diff)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path),
            "parameters": sum(p.numel() for p in net.parameters()),
            "architecture": f"{net.description}; GRU and head width {args.hidden}",
            "hyperparameters": {"hidden": args.hidden, "dropout": 0.1, "batch": args.batch,
                                "lr_max": args.lr, "schedule": "one-cycle (10 % warm-up)",
                                "optimizer": "AdamW, weight decay 0.01, clip 1.0",
                                "window_steps": fit.WINDOW, "epochs": args.epochs,
                                "batches_per_epoch": history["batches_per_epoch"],
                                **({"lookahead_hidden": "a random suffix, half the steps",
                                    "key_hidden": f"{fit.P_KEY_HIDDEN:.0%} of the windows"}
                                   if name == "harmoniser" else {})},
            **({"data": args.forecaster_data} if name == "forecaster" else {}),
            "train_seconds": round(history["train_seconds"], 1),
            "train_loss_per_epoch": [round(v, 4) for v in history["train_loss"]],
            "onnx": {"opset": fit.OPSET, "inputs": "x (batch, columns) int64, state "
                     "(1, batch, hidden) float32", "outputs": "log_probs, state_out",
                     "max_abs_diff_vs_torch": diff, "checked_steps": 32}}


def forecaster_pieces(args, chorales: list[dict]) -> list[dict]:
    """The forecaster's data: the training chorales' melodies (already in their keys) and the
    folk tunes but the held-out ones, each in up to ``args.keys`` keys, none with chords."""
    from ai_accompany.train.data import shift_to_key, transpose
    from ai_accompany.train.folk import training_pieces
    from ai_accompany.tunes import folk
    from ai_accompany.vocab import CHORD_QUALITIES, NO_CHORD_ROOT

    held = {t.name for t in folk()}
    tunes = training_pieces(held, args.folk_tunes)
    moved = []
    for p in tunes:
        for k in range(args.keys):
            try:
                moved.append(transpose(p, shift_to_key(p["key_tonic"], k)))
            except ValueError:  # a transposition that leaves the vocabulary's range
                continue
    none = CHORD_QUALITIES.index("none")
    melodies = [{**p, "chord_root": np.full(len(p["tokens"]), NO_CHORD_ROOT),
                 "chord_quality": np.full(len(p["tokens"]), none)} for p in chorales]
    log.info("forecaster: %d folk tunes (%d in their keys), %d chorale melodies", len(tunes),
             len(moved), len(melodies))
    ryans = sum(p["id"].startswith("ryansMammoth/") for p in tunes)
    args.forecaster_data = (
        f"{len(tunes)} folk tunes: {ryans} of Ryan's Mammoth Collection (music21's "
        f"ryansMammoth) and {len(tunes) - ryans} of O'Neill's Music of Ireland (oneills1850); "
        "2/2, 2/4 and 4/4 tunes on the 16th grid, the held-out ones of "
        f"{FOLK_HELDOUT} left out with every tune of the same title or opening, in up to "
        f"{args.keys} keys ({len(moved)} pieces); and the "
        f"training chorales' soprano lines ({len(melodies)} pieces); no chords; a melody "
        "forecaster: the improviser's network, predicting each step's note from the notes "
        "before it")
    return moved + melodies


def _fit_baseline(pieces: list[dict], out: Path) -> dict:
    from ai_accompany.ngram import HarmoniserNgram, ImproviserNgram, save_baseline
    from ai_accompany.train import fit

    started = time.perf_counter()
    hs, ims = fit.harmoniser_sequences(pieces), fit.improviser_sequences(pieces)
    harmoniser = HarmoniserNgram.fit(hs.xs, hs.ys)
    improviser = ImproviserNgram.fit(ims.xs, [y[:, 0] for y in ims.ys])
    path = out / BASELINE_FILE
    save_baseline(path, harmoniser, improviser)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path),
            "kind": "interpolated n-gram, Witten-Bell (see ai_accompany/ngram.py)",
            "contexts": {"harmoniser": [len(k) for k in harmoniser.table.keys],
                         "improviser": [len(k) for k in improviser.table.keys]},
            "train_seconds": round(time.perf_counter() - started, 1)}


def _commands(card: dict) -> str:
    """Each distinct training command and the models it made."""
    by_command: dict[str, list[str]] = {}
    for name, entry in card["models"].items():
        by_command.setdefault(entry["command"], []).append(name)
    return "; ".join(f"`{cmd}` ({', '.join(names)})" for cmd, names in by_command.items())


def write_readme(card: dict, path: Path) -> None:
    """``README.md`` beside the models: the card in prose and one table."""
    from ai_accompany.evaluate import format_table

    data = card["data"]
    lines = ["# The accompanist's shipped models", "",
             "Written by `python -m ai_accompany.train`; do not edit by hand (see `card.json` "
             "for every number).", "",
             "Reproduce (each model is seeded on its own: one run of all gives what separate "
             f"runs give): {_commands(card)}", "",
             "## Data", "",
             f"- {data['corpus']}: {data['chorales']} four-voice chorales, "
             f"{data['train_chorales']} for training, {data['heldout_chorales']} held out "
             f"({data['heldout_rule']}; ids in `split.json`, quantised in `heldout.npz`).",
             f"- Grid: {data['grid']}. Transposition: {data['transposition']}.",
             "- Tokens and input columns: `ai_accompany/vocab.py`; the step API that plays "
             "these files: `ai_accompany/models.py`.",
             f"- Seed {card['seed']}; versions: "
             + ", ".join(f"{k} {v}" for k, v in card["versions"].items() if v), "",
             "## Models", ""]
    for name in ("harmoniser", "improviser", "baseline", "forecaster"):
        m = card["models"].get(name)
        if not m:
            continue
        detail = (f"{m['parameters']:,} parameters, {m['hyperparameters']['epochs']} epochs, "
                  f"{m['train_seconds']:.0f} s, ONNX opset {m['onnx']['opset']}, "
                  f"max |ONNX − torch| {m['onnx']['max_abs_diff_vs_torch']:.1e}"
                  if "onnx" in m else f"{m['kind']}, {m['train_seconds']:.0f} s")
        if m.get("data"):
            detail += f"; data: {m['data']}"
        lines.append(f"- `{m['file']}` ({m['bytes'] / 1e6:.2f} MB): {detail}")
    if card.get("metrics"):
        lines += ["", "## Held-out metrics (`spatialjam ai eval`)", "", "```",
                  format_table(card["metrics"]), "```", "",
                  "acc: teacher-forced per voice-step; acc/on: on Bach's note onsets only; "
                  "nll/step in nats (harmoniser: summed over its 3 voices); in-key and "
                  "parallel fifths/octaves per 100 steps of generated music, Bach's own value "
                  "in brackets; latency of one `step()` call."]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(args.threads)
    from ai_accompany.train.data import load_corpus, load_npz
    from ai_accompany.train.fit import all_keys

    started = time.perf_counter()
    if args.data is not None:
        source = load_npz(args.data)
        train_ids, heldout = list(source.ids), None
        corpus_name = f"chorales of {args.data}"
    else:
        source = load_corpus()
        held = set(load_split(source))
        train_ids = [cid for cid in source.ids if cid not in held]
        heldout = source.select([cid for cid in source.ids if cid in held])
        corpus_name = "music21 corpus.chorales.Iterator() (J. S. Bach, four-voice chorales)"
    if args.chorales:
        train_ids = train_ids[:args.chorales]
    train = source.select(train_ids)
    pieces = all_keys([train.chorale(i) for i in range(len(train))], args.keys)
    log.info("%d training chorales in %d keys: %d steps", len(train), args.keys,
             sum(len(p["tokens"]) for p in pieces))

    command = " ".join(["python -m ai_accompany.train",
                        *(argv if argv is not None else sys.argv[1:])])
    card_path = out / CARD_FILE
    card = json.loads(card_path.read_text()) if card_path.is_file() else {"models": {}}
    for entry in card["models"].values():  # each model keeps the run that made it
        entry.setdefault("command", card.get("command"))
    selected = ("harmoniser", "improviser", "baseline") if args.model == "all" else (args.model,)
    for name in selected:
        card["models"][name] = (_fit_baseline(pieces, out) if name == "baseline"
                                else _train_one(name, args, pieces, out))
        card["models"][name]["command"] = command
    if heldout is not None:
        heldout.save(out / HELDOUT_FILE)
    card.update({
        "command": command,
        "seed": args.seed, "versions": _versions(),
        "total_seconds": round(time.perf_counter() - started, 1),
        "data": {"corpus": corpus_name, "chorales": len(source),
                 "train_chorales": len(train),
                 "heldout_chorales": 0 if heldout is None else len(heldout),
                 "heldout_rule": "melody groups by CRC-32 of their first id, one in ten"
                                 if heldout is not None else "none",
                 "train_steps_per_key": train.steps,
                 "grid": "16th notes; per voice REST / HOLD / onset of MIDI 28..91; beat "
                         "position in 16ths since the downbeat; chord per quarter-note beat; "
                         "key per chorale",
                 "transposition": f"each chorale into {args.keys} keys (shift −6..+5 "
                                  "semitones to each tonic)"}})
    if heldout is not None and (out / HARMONISER_FILE).is_file() and (
            out / IMPROVISER_FILE).is_file() and (out / BASELINE_FILE).is_file():
        from ai_accompany.evaluate import evaluate

        card["metrics"] = evaluate(models_dir=out, providers=["CPUExecutionProvider"])
        card["metrics"]["heldout"]["file"] = HELDOUT_FILE
    card_path.write_text(json.dumps(card, indent=1, default=float) + "\n")
    if "metrics" in card:
        write_readme(card, out / "README.md")
    log.info("done in %.0f s: %s", time.perf_counter() - started, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
