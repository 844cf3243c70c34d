"""LSTM language model on torch.nn.LSTM (cuDNN on a GPU), with optional weight tying."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from archs import TaskSpec, register_arch
from archs.interface import NeuralLM


@dataclass(frozen=True)
class LSTMConfig:
    n_layer: int = 1
    d_embed: int = 128
    d_hidden: int = 256
    dropout: float = 0.0
    tie_embeddings: bool = False  # needs d_embed == d_hidden (or a projection; we keep it exact)
    vocab_size: int | None = None  # None -> the task tokenizer's vocabulary


SIZES = {
    "tiny": LSTMConfig(n_layer=1, d_embed=128, d_hidden=256),
    "small": LSTMConfig(n_layer=2, d_embed=512, d_hidden=512, dropout=0.2, tie_embeddings=True),
}


class LSTMLM(NeuralLM):
    def __init__(self, cfg: LSTMConfig):
        super().__init__()
        if cfg.tie_embeddings and cfg.d_embed != cfg.d_hidden:
            raise ValueError(f"tie_embeddings needs d_embed == d_hidden (got {cfg.d_embed} and {cfg.d_hidden})")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_embed)
        self.drop = nn.Dropout(cfg.dropout)
        self.rnn = nn.LSTM(cfg.d_embed, cfg.d_hidden, num_layers=cfg.n_layer, batch_first=True,
                           dropout=cfg.dropout if cfg.n_layer > 1 else 0.0)
        self.head = nn.Linear(cfg.d_hidden, cfg.vocab_size)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.drop(self.embed(idx)))
        return self.head(self.drop(h))

    def flops_per_token(self, seq_len: int) -> int:
        """3 x forward; forward per token = 2 * (sum over layers of 4h(d_in + h)) + 2 * h * V
        (the four gate matmuls of each layer and the output projection; elementwise ops ignored)."""
        c = self.cfg
        gates = sum(4 * c.d_hidden * ((c.d_embed if i == 0 else c.d_hidden) + c.d_hidden) for i in range(c.n_layer))
        return 6 * (gates + c.d_hidden * c.vocab_size)


@register_arch("lstm", kinds=("lm",), sizes=SIZES,
               unsupported={"seq2seq": "LSTM seq2seq not built yet", "classify": "LSTM classifier not built yet"})
def build(kind: str, hp: LSTMConfig, task: TaskSpec) -> LSTMLM:
    return LSTMLM(replace(hp, vocab_size=task.vocab_size))
