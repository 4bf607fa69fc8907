"""The two networks (torch): one embedding per integer input column, a GRU, MLP heads.

Training runs them over whole windows (``sequence``); the exported graph is one step
(``forward``): ``x`` ``(B, F)`` int64 and ``state`` ``(1, B, H)`` float32 in, ``log_probs`` and
``state_out`` out. The log-softmax is inside the graph; sampling is not (see
:mod:`ai_accompany.models`).

The harmoniser's three heads are chained: bass from the GRU output, tenor from it and this step's
bass, alto from it and this step's bass and tenor (the last four input columns,
:data:`~ai_accompany.vocab.HARMONISER_COLUMNS`), so the voices agree on one chord instead of
each taking its own most likely note. Those columns never enter the GRU.
"""

from __future__ import annotations

import torch
from torch import nn

from ai_accompany.vocab import (
    HARMONISER_CARDINALITY,
    HARMONISER_CORE_COLUMNS,
    IMPROVISER_CARDINALITY,
    NUM_TOKENS,
)


def _embedding_dim(cardinality: int) -> int:
    if cardinality >= NUM_TOKENS:
        return 32
    return 16 if cardinality >= 20 else 8


def _head(width: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden, NUM_TOKENS))


class Embeddings(nn.Module):
    """One embedding table per integer column, concatenated."""

    def __init__(self, cardinality: tuple[int, ...]):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(c, _embedding_dim(c)) for c in cardinality)
        self.width = sum(_embedding_dim(c) for c in cardinality)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([e(x[..., i]) for i, e in enumerate(self.tables)], dim=-1)


class ImproviserNet(nn.Module):
    """Embeddings → dropout → GRU(hidden) → Linear-GELU-Linear → log-softmax."""

    heads = 1
    description = ("one embedding per input column, dropout 0.1, GRU, Linear-GELU-Linear head, "
                   "log-softmax over the next melody token")

    def __init__(self, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.hidden = hidden
        self.embed = Embeddings(IMPROVISER_CARDINALITY)
        self.drop = nn.Dropout(dropout)
        self.gru = nn.GRU(self.embed.width, hidden, batch_first=True)
        self.out = _head(hidden, hidden, dropout)

    def sequence(self, x: torch.Tensor, state: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, T, 1, NUM_TOKENS)`` and the final state for ``x`` ``(B, T, F)``."""
        y, state = self.gru(self.drop(self.embed(x)), state)
        return self.out(y)[..., None, :], state

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step, the exported graph: log-probs ``(B, NUM_TOKENS)``."""
        logits, state_out = self.sequence(x[:, None, :], state)
        return torch.log_softmax(logits[:, 0, 0], dim=-1), state_out


class HarmoniserNet(nn.Module):
    """GRU over the first twelve columns; bass, tenor | bass, alto | bass + tenor heads."""

    heads = 3
    description = ("one embedding per input column, dropout 0.1, GRU over the melody, "
                   "look-ahead, beat, previous voices and key; chained Linear-GELU-Linear heads: "
                   "bass, tenor given this step's bass, alto given both; log-softmax each")

    def __init__(self, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.hidden = hidden
        self.embed = Embeddings(HARMONISER_CARDINALITY[:HARMONISER_CORE_COLUMNS])
        self.decided = Embeddings(HARMONISER_CARDINALITY[HARMONISER_CORE_COLUMNS:])
        half = self.decided.width // 2
        self.drop = nn.Dropout(dropout)
        self.gru = nn.GRU(self.embed.width, hidden, batch_first=True)
        self.bass = _head(hidden, hidden, dropout)
        self.tenor = _head(hidden + half, hidden, dropout)
        self.alto = _head(hidden + 2 * half, hidden, dropout)

    def sequence(self, x: torch.Tensor, state: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, T, 3, NUM_TOKENS)`` (alto, tenor, bass) and the final state."""
        core = x[..., :HARMONISER_CORE_COLUMNS]
        y, state = self.gru(self.drop(self.embed(core)), state)
        decided = self.drop(self.decided(x[..., HARMONISER_CORE_COLUMNS:]))
        half = decided.shape[-1] // 2
        bass = self.bass(y)
        tenor = self.tenor(torch.cat([y, decided[..., :half]], dim=-1))
        alto = self.alto(torch.cat([y, decided], dim=-1))
        return torch.stack([alto, tenor, bass], dim=-2), state

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step, the exported graph: log-probs ``(B, 3, NUM_TOKENS)``."""
        logits, state_out = self.sequence(x[:, None, :], state)
        return torch.log_softmax(logits[:, 0], dim=-1), state_out


def harmoniser_net(hidden: int = 256, dropout: float = 0.1) -> HarmoniserNet:
    return HarmoniserNet(hidden, dropout)


def improviser_net(hidden: int = 256, dropout: float = 0.1) -> ImproviserNet:
    return ImproviserNet(hidden, dropout)
