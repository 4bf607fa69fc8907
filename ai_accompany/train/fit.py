"""Training loops, ONNX export and its check against torch.

An epoch shows the network every training chorale once in each of the 12 keys (the smallest
transposition to each tonic, −6 … +5 semitones), cut into windows of :data:`WINDOW` steps at a
random phase. The GRU starts every window from a zero state, as a live stream does when the
accompanist joins mid-piece.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ai_accompany.train.data import shift_to_key, transpose
from ai_accompany.vocab import (
    H_KEY,
    KEY_UNKNOWN,
    LOOKAHEAD,
    SND_UNKNOWN,
    harmoniser_inputs,
    improviser_inputs,
)

log = logging.getLogger(__name__)

WINDOW = 128  # steps per training window: 8 bars of 4/4
OPSET = 17
LOOKAHEAD_COLUMNS = slice(2, 2 + LOOKAHEAD)
P_FULL_LOOKAHEAD = 0.5  # else the caller knows 0 … LOOKAHEAD − 1 future steps, uniformly
P_KEY_HIDDEN = 0.3  # windows trained without the key


@dataclass
class Sequences:
    """Teacher-forced input rows and targets, one pair per (chorale, key)."""

    xs: list[np.ndarray]
    ys: list[np.ndarray]

    @property
    def steps(self) -> int:
        return sum(len(x) for x in self.xs)


def all_keys(pieces: list[dict], keys: int = 12) -> list[dict]:
    """Every piece in ``keys`` keys (all 12 by default; fewer for smoke tests)."""
    return [transpose(p, shift_to_key(p["key_tonic"], k)) for p in pieces for k in range(keys)]


def harmoniser_sequences(pieces: list[dict]) -> Sequences:
    pairs = [harmoniser_inputs(p["tokens"], p["beat_pos"], (p["key_tonic"], p["key_mode"]))
             for p in pieces]
    return Sequences([x for x, _ in pairs], [y for _, y in pairs])


def improviser_sequences(pieces: list[dict]) -> Sequences:
    pairs = [improviser_inputs(p["tokens"][:, 0], p["chord_root"], p["chord_quality"],
                               p["key_tonic"], p["key_mode"], p["beat_pos"]) for p in pieces]
    return Sequences([x for x, _ in pairs], [y[:, None] for _, y in pairs])


def windows(seqs: Sequences, rng: np.random.Generator, length: int = WINDOW
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All sequences cut into windows at a random phase: ``x`` ``(N, L, F)``, ``y``
    ``(N, L, heads)``, ``mask`` ``(N, L)`` (False on padding)."""
    cuts = []
    for i, x in enumerate(seqs.xs):
        start = -int(rng.integers(0, length)) if len(x) > length else 0
        cuts.extend((i, max(a, 0), min(a + length, len(x))) for a in range(start, len(x), length)
                    if min(a + length, len(x)) > max(a, 0))
    feats, heads = seqs.xs[0].shape[1], seqs.ys[0].shape[1]
    x_out = np.zeros((len(cuts), length, feats), dtype=np.int64)
    y_out = np.zeros((len(cuts), length, heads), dtype=np.int64)
    mask = np.zeros((len(cuts), length), dtype=bool)
    for n, (i, a, b) in enumerate(cuts):
        x_out[n, :b - a] = seqs.xs[i][a:b]
        y_out[n, :b - a] = seqs.ys[i][a:b]
        mask[n, :b - a] = True
    return x_out, y_out, mask


def hide_context(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """What a live caller cannot always say: a random suffix of each step's look-ahead becomes
    unknown, and so does the key of a window with probability :data:`P_KEY_HIDDEN`."""
    known = torch.randint(0, LOOKAHEAD, x.shape[:2], generator=generator)
    full = torch.rand(x.shape[:2], generator=generator) < P_FULL_LOOKAHEAD
    known = torch.where(full, LOOKAHEAD, known)
    hidden = torch.arange(LOOKAHEAD)[None, None, :] >= known[..., None]
    x = x.clone()
    x[..., LOOKAHEAD_COLUMNS] = torch.where(hidden, SND_UNKNOWN, x[..., LOOKAHEAD_COLUMNS])
    no_key = torch.rand(x.shape[0], generator=generator) < P_KEY_HIDDEN
    x[no_key, :, H_KEY] = KEY_UNKNOWN[0]
    x[no_key, :, H_KEY + 1] = KEY_UNKNOWN[1]
    return x


def train_net(net: nn.Module, seqs: Sequences, *, epochs: int, seed: int, batch: int = 64,
              lr: float = 3e-3, max_batches: int | None = None,
              hide: bool = False) -> dict:
    """AdamW with a cosine schedule and gradient clipping at 1; returns the loss history."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    per_epoch = max(1, len(windows(seqs, rng)[0]) // batch)  # window counts vary a little
    if max_batches is not None:
        per_epoch = min(per_epoch, max_batches)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * per_epoch,
                                                pct_start=0.1)
    loss_fn = nn.CrossEntropyLoss(reduction="none")
    history, started = [], time.perf_counter()
    for epoch in range(epochs):
        net.train()
        x_all, y_all, m_all = windows(seqs, rng)
        order = np.resize(rng.permutation(len(x_all)), per_epoch * batch)  # wraps if short
        total, count = 0.0, 0
        for b in range(per_epoch):
            idx = order[b * batch:(b + 1) * batch]
            x, y = torch.from_numpy(x_all[idx]), torch.from_numpy(y_all[idx])
            mask = torch.from_numpy(m_all[idx])
            if hide:
                x = hide_context(x, generator)
            logits, _ = net.sequence(x)
            loss = loss_fn(logits.flatten(0, 2), y.flatten()).view(y.shape).mean(-1)
            loss = (loss * mask).sum() / mask.sum()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            total += float(loss.detach()) * int(mask.sum())
            count += int(mask.sum())
        history.append(total / max(count, 1))
        log.info("epoch %d/%d: train loss %.4f (%.0f s)", epoch + 1, epochs, history[-1],
                 time.perf_counter() - started)
    net.eval()
    return {"train_loss": history, "train_seconds": time.perf_counter() - started,
            "batches_per_epoch": per_epoch}


def export_onnx(net: nn.Module, path: Path, check_x: np.ndarray) -> float:
    """Write the one-step graph to ``path`` and return the largest |ONNX − torch| difference of
    the log-probabilities and state over the steps of ``check_x`` ``(T, F)``."""
    import onnxruntime as ort

    net.eval()
    x0 = torch.from_numpy(check_x[:1]).long()
    s0 = torch.zeros(1, 1, net.hidden)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter says it is legacy
        torch.onnx.export(net, (x0, s0), str(path), input_names=["x", "state"],
                          output_names=["log_probs", "state_out"], opset_version=OPSET,
                          dynamic_axes={"x": {0: "batch"}, "state": {1: "batch"},
                                        "log_probs": {0: "batch"}, "state_out": {1: "batch"}},
                          dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    state_t, state_o = s0, s0.numpy()
    with torch.no_grad():
        for t in range(len(check_x)):
            x = check_x[t:t + 1].astype(np.int64)
            lp_t, state_t = net(torch.from_numpy(x), state_t)
            lp_o, state_o = session.run(None, {"x": x, "state": state_o})
            worst = max(worst, float(np.abs(lp_o - lp_t.numpy()).max()),
                        float(np.abs(state_o - state_t.numpy()).max()))
    return worst
