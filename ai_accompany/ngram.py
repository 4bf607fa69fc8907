"""The non-neural baseline: interpolated n-gram (Markov) models of the same chorales.

Each baseline is a *stepper* with the networks' contract — ``initial_state(batch)`` and
``__call__(x, state) -> (log_probs, state)`` on the same integer input rows ``x``
(:mod:`ai_accompany.vocab`) — so the runtime decoders and eval treat it like an ONNX graph. Its
state is the little history the contexts need: the sounding pitch of each accompanying voice
(harmoniser), the last two melody onsets (improviser).

Probabilities interpolate from the longest context down to a uniform distribution over
:data:`~ai_accompany.vocab.NUM_TOKENS` with Witten–Bell weights:

.. math:: P_k(y \\mid c_k) = \\lambda_k \\frac{n(c_k, y)}{n(c_k)} + (1 - \\lambda_k) P_{k-1},
          \\qquad \\lambda_k = \\frac{n(c_k)}{n(c_k) + u(c_k)}

with :math:`n` the count of the context and :math:`u` the number of distinct tokens seen after
it (Witten & Bell 1991; Chen & Goodman 1998, §2.4). An unseen context falls through to the order
below. Counts cover the training chorales in all 12 keys.

Harmoniser, per voice v ∈ {alto, tenor, bass}, chained like the network's heads (bass, then
tenor, then alto), contexts from longest to shortest: (v, melody kind, melody pitch, v's previous
pitch, metric class, *below*) where *below* is this step's tenor for the alto, this step's bass
for the tenor and the melody's next pitch for the bass; the same without *below*; (v, melody
kind, melody pitch, metric class); (v, melody kind, metric class) — no key. Improviser:
(previous token, last two onset pitches, chord root, chord quality, metric class), the same
without the older onset, (previous token kind, metric class). Melody kind is rest / hold /
onset; the metric class is the 16th within the beat, with the bar's downbeat apart
(:func:`metric_class`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ai_accompany.vocab import (
    FIRST_PITCH_TOKEN,
    H_BASS,
    H_BEAT,
    H_PREV,
    H_TENOR,
    HOLD,
    NUM_TOKENS,
    SND_REST,
    STEPS_PER_BEAT,
)

FORMAT_VERSION = 1
_KIND = 3  # rest, hold, onset
_METRIC = STEPS_PER_BEAT + 1


def metric_class(beat_slot: np.ndarray) -> np.ndarray:
    """0 on the bar's downbeat, else 1 + the 16th within the beat (1 = other beats)."""
    beat_slot = np.asarray(beat_slot)
    return np.where(beat_slot == 0, 0, 1 + beat_slot % STEPS_PER_BEAT)


def _kind(token: np.ndarray) -> np.ndarray:
    return np.minimum(token, 2)


def _encode(parts: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Mixed-radix key of context components ``(values, cardinality)``, order included."""
    key = np.zeros(np.broadcast_shapes(*(np.shape(v) for v, _ in parts)), dtype=np.int64)
    for values, card in parts:
        key = key * card + np.asarray(values, dtype=np.int64)
    return key


class InterpolatedTable:
    """Counts of next tokens per context, for a ladder of context orders (shortest first)."""

    def __init__(self, keys: list[np.ndarray], ptr: list[np.ndarray], tokens: list[np.ndarray],
                 counts: list[np.ndarray]):
        self.keys, self.ptr, self.tokens, self.counts = keys, ptr, tokens, counts
        self.totals = [np.add.reduceat(c, p[:-1]).astype(np.float64) if len(c) else
                       np.zeros(0) for c, p in zip(counts, ptr, strict=True)]
        self.distinct = [np.diff(p).astype(np.float64) for p in ptr]

    @classmethod
    def count(cls, context_keys: list[np.ndarray], targets: np.ndarray) -> InterpolatedTable:
        """Tables from one key array per order (each ``(N,)``) and the targets ``(N,)``."""
        keys, ptr, toks, cnts = [], [], [], []
        for k in context_keys:
            pair, count = np.unique(k * NUM_TOKENS + targets, return_counts=True)
            ctx, tok = np.divmod(pair, NUM_TOKENS)
            uniq, start = np.unique(ctx, return_index=True)
            keys.append(uniq)
            ptr.append(np.append(start, len(ctx)).astype(np.int64))
            toks.append(tok.astype(np.uint8))
            cnts.append(count.astype(np.int32))
        return cls(keys, ptr, toks, cnts)

    def log_probs(self, context_keys: list[np.ndarray]) -> np.ndarray:
        """Log-probabilities ``S + (NUM_TOKENS,)`` for keys of any shape ``S`` (one per order)."""
        shape = np.shape(context_keys[0])
        prob = np.full((int(np.prod(shape)), NUM_TOKENS), 1.0 / NUM_TOKENS)
        for order, key in enumerate(context_keys):
            key = np.asarray(key).reshape(-1)
            table = self.keys[order]
            idx = np.searchsorted(table, key)
            idx_c = np.minimum(idx, len(table) - 1)
            found = np.flatnonzero((idx < len(table)) & (table[idx_c] == key))
            if not len(found):
                continue
            ctx = idx_c[found]
            n, u = self.totals[order][ctx], self.distinct[order][ctx]
            lam = n / (n + u)
            start, stop = self.ptr[order][ctx], self.ptr[order][ctx + 1]
            lengths = stop - start
            flat = np.repeat(start - np.cumsum(lengths) + lengths, lengths) + np.arange(
                lengths.sum())
            ml = np.zeros((len(found), NUM_TOKENS))
            ml[np.repeat(np.arange(len(found)), lengths), self.tokens[order][flat]] = (
                self.counts[order][flat])
            prob[found] = lam[:, None] * ml / n[:, None] + (1 - lam[:, None]) * prob[found]
        return np.log(prob).reshape(*shape, NUM_TOKENS).astype(np.float32)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out = {}
        for o in range(len(self.keys)):
            out.update({f"{prefix}{o}_keys": self.keys[o], f"{prefix}{o}_ptr": self.ptr[o],
                        f"{prefix}{o}_tokens": self.tokens[o],
                        f"{prefix}{o}_counts": self.counts[o]})
        return out

    @classmethod
    def from_arrays(cls, z, prefix: str, orders: int) -> InterpolatedTable:
        return cls(*([z[f"{prefix}{o}_{name}"] for o in range(orders)]
                     for name in ("keys", "ptr", "tokens", "counts")))


class HarmoniserNgram:
    """Baseline harmoniser stepper: ``x`` ``(B, 16)`` → log-probs ``(B, 3, NUM_TOKENS)``.

    State ``(B, 3)``: the sounding-pitch index of alto, tenor and bass before this step.
    """

    ORDERS = 4

    def __init__(self, table: InterpolatedTable):
        self.table = table

    @staticmethod
    def initial_state(batch: int) -> np.ndarray:
        return np.full((batch, 3), SND_REST, dtype=np.int64)

    @staticmethod
    def _update(x: np.ndarray, state: np.ndarray) -> np.ndarray:
        prev = x[:, H_PREV:H_PREV + 3]
        return np.where(prev == HOLD, state, prev)

    @staticmethod
    def _contexts(x: np.ndarray, state: np.ndarray) -> list[np.ndarray]:
        voice = np.broadcast_to(np.arange(3), state.shape)
        mel_kind = np.broadcast_to(_kind(x[:, :1]), state.shape)
        mel = np.broadcast_to(x[:, 1:2], state.shape)
        # below each voice: alto ← this step's tenor, tenor ← this step's bass, bass ← the
        # melody's next step
        below = np.stack([x[:, H_TENOR + 1], x[:, H_BASS + 1], x[:, 2]], axis=1)
        metric = np.broadcast_to(metric_class(x[:, H_BEAT:H_BEAT + 1]), state.shape)
        v, k, m, c = (voice, 3), (mel_kind, _KIND), (mel, NUM_TOKENS), (metric, _METRIC)
        own = (state, NUM_TOKENS)
        return [_encode([v, k, c]), _encode([v, k, m, c]), _encode([v, k, m, own, c]),
                _encode([v, k, m, own, c, (below, NUM_TOKENS)])]

    def __call__(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        state = self._update(np.asarray(x, dtype=np.int64), state)
        return self.table.log_probs(self._contexts(x, state)), state

    @classmethod
    def fit(cls, xs: list[np.ndarray], targets: list[np.ndarray]) -> HarmoniserNgram:
        """Count teacher-forced sequences (``x`` ``(T, 16)`` and targets ``(T, 3)`` each)."""
        keys, ys = [[] for _ in range(cls.ORDERS)], []
        for x, y in zip(xs, targets, strict=True):
            state = cls.initial_state(1)
            states = np.empty((len(x), 3), dtype=np.int64)
            for t in range(len(x)):
                state = cls._update(x[t:t + 1], state)
                states[t] = state[0]
            for o, k in enumerate(cls._contexts(x, states)):
                keys[o].append(k.reshape(-1))
            ys.append(y.reshape(-1))
        return cls(InterpolatedTable.count([np.concatenate(k) for k in keys],
                                           np.concatenate(ys).astype(np.int64)))


class ImproviserNgram:
    """Baseline improviser stepper: ``x`` ``(B, 9)`` → log-probs ``(B, NUM_TOKENS)``.

    State ``(B, 2)``: the last and the one-before-last melody onset (sounding-pitch indices).
    """

    ORDERS = 3

    def __init__(self, table: InterpolatedTable):
        self.table = table

    @staticmethod
    def initial_state(batch: int) -> np.ndarray:
        return np.full((batch, 2), SND_REST, dtype=np.int64)

    @staticmethod
    def _update(x: np.ndarray, state: np.ndarray) -> np.ndarray:
        onset = x[:, 0] >= FIRST_PITCH_TOKEN
        return np.where(onset[:, None], np.stack([x[:, 0], state[:, 0]], axis=1), state)

    @staticmethod
    def _contexts(x: np.ndarray, state: np.ndarray) -> list[np.ndarray]:
        prev, root, qual = (x[:, 0], NUM_TOKENS), (x[:, 2], 13), (x[:, 3], 10)
        p1, p2 = (state[:, 0], NUM_TOKENS), (state[:, 1], NUM_TOKENS)
        metric = (metric_class(x[:, 6]), _METRIC)
        return [_encode([(_kind(x[:, 0]), _KIND), metric]),
                _encode([prev, p1, root, qual, metric]),
                _encode([prev, p1, p2, root, qual, metric])]

    def __call__(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        state = self._update(np.asarray(x, dtype=np.int64), state)
        return self.table.log_probs(self._contexts(x, state)), state

    @classmethod
    def fit(cls, xs: list[np.ndarray], targets: list[np.ndarray]) -> ImproviserNgram:
        """Count teacher-forced sequences (``x`` ``(T, 9)`` and targets ``(T,)`` each)."""
        keys, ys = [[] for _ in range(cls.ORDERS)], []
        for x, y in zip(xs, targets, strict=True):
            state = cls.initial_state(1)
            states = np.empty((len(x), 2), dtype=np.int64)
            for t in range(len(x)):
                state = cls._update(x[t:t + 1], state)
                states[t] = state[0]
            for o, k in enumerate(cls._contexts(x, states)):
                keys[o].append(k)
            ys.append(y)
        return cls(InterpolatedTable.count([np.concatenate(k) for k in keys],
                                           np.concatenate(ys).astype(np.int64)))


def save_baseline(path: Path, harmoniser: HarmoniserNgram, improviser: ImproviserNgram) -> None:
    """Both baselines in one compressed ``.npz``."""
    np.savez_compressed(path, version=FORMAT_VERSION, **harmoniser.table.arrays("h"),
                        **improviser.table.arrays("i"))


def load_baseline_file(path: Path) -> tuple[HarmoniserNgram, ImproviserNgram]:
    """Read :func:`save_baseline`'s file; ``ValueError`` for another format version."""
    with np.load(path) as z:
        if int(z["version"]) != FORMAT_VERSION:
            raise ValueError(f"{path}: baseline format {int(z['version'])}, expected "
                             f"{FORMAT_VERSION}; retrain with python -m ai_accompany.train")
        return (HarmoniserNgram(InterpolatedTable.from_arrays(z, "h", HarmoniserNgram.ORDERS)),
                ImproviserNgram(InterpolatedTable.from_arrays(z, "i", ImproviserNgram.ORDERS)))

