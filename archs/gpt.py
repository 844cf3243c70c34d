"""GPT: a decoder-only Transformer, read top to bottom (nanoGPT's shape).

Size ladder: one base config, a few lines per size. Attention goes through archs/attention.py so
every backend (math / sdpa / xformers) serves the same model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from archs import TaskSpec, register_arch
from archs.attention import attend
from archs.interface import NeuralLM, matmul_params


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 128
    d_ff: int | None = None  # None -> 4 * d_model
    vocab_size: int | None = None  # None -> the task tokenizer's vocabulary
    block_size: int | None = None  # None -> the task's context length
    dropout: float = 0.0
    bias: bool = True
    tie_embeddings: bool = True
    attention: str = "sdpa"


SIZES = {
    "tiny": GPTConfig(n_layer=2, n_head=4, d_model=128),
    "small": GPTConfig(n_layer=12, n_head=12, d_model=768, vocab_size=50257, block_size=1024),  # GPT-2 124M
}


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)
        self.backend = cfg.attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b t (three h d) -> three b h t d", three=3, h=self.n_head)
        y = attend(q, k, v, causal=True, dropout_p=self.dropout if self.training else 0.0, backend=self.backend)
        return self.resid_drop(self.proj(rearrange(y, "b h t d -> b t (h d)")))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        d_ff = cfg.d_ff or 4 * cfg.d_model
        self.fc = nn.Linear(cfg.d_model, d_ff, bias=cfg.bias)
        self.proj = nn.Linear(d_ff, cfg.d_model, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(NeuralLM):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.d_model % cfg.n_head:
            raise ValueError(f"n_head={cfg.n_head} does not divide d_model={cfg.d_model}")
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / (2 * cfg.n_layer) ** 0.5)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.cfg.block_size:
            raise ValueError(f"sequence of {t} tokens is longer than block_size {self.cfg.block_size}")
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def flops_per_token(self, seq_len: int) -> int:
        """6 * N_matmul + 12 * L * d * T (torchtitan/PaLM): N_matmul counts every Linear weight once,
        the tied LM head included; the second term is QK^T and AV over the full T x T score matrix."""
        c = self.cfg
        return 6 * matmul_params(self) + 12 * c.n_layer * c.d_model * seq_len


@register_arch("gpt", kinds=("lm",), sizes=SIZES,
               unsupported={"seq2seq": "decoder-only; use arch=transformer", "classify": "no classifier head yet"})
def build(kind: str, hp: GPTConfig, task: TaskSpec) -> GPT:
    from dataclasses import replace

    return GPT(replace(hp, vocab_size=task.vocab_size, block_size=task.max_seq_len))
