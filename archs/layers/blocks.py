"""The layers every Transformer arch here is built from: norms, the MLP, one residual layer
(self-attention, optional cross-attention, MLP) in pre- or post-norm order, sinusoidal positions,
and the analytic FLOP formula they share."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from archbench.errors import UserError
from archs.layers.attention import KVCache, MultiHeadAttention

NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "gelu_tanh", "swiglu")  # gelu_tanh: GPT-2's tanh approximation of GELU


def make_norm(kind: str, d: int, *, bias: bool = True, eps: float = 1e-5) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(d, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return nn.RMSNorm(d, eps=eps)
    raise UserError(f"unknown norm '{kind}'; valid: {', '.join(NORMS)}")


class MLP(nn.Module):
    """GELU: W2 gelu(W1 x) (gelu_tanh: GPT-2's tanh approximation, Hendrycks & Gimpel 2016).  SwiGLU (Shazeer 2020, Llama): W2 (silu(W_gate x) * W_up x), with the gate
    and up projections fused into one matrix (the same parameters as two)."""

    def __init__(self, d_model: int, d_ff: int, kind: str = "gelu", *, bias: bool = True):
        super().__init__()
        if kind not in MLPS:
            raise UserError(f"unknown mlp '{kind}'; valid: {', '.join(MLPS)}")
        self.kind = kind
        self.fc = nn.Linear(d_model, (2 if kind == "swiglu" else 1) * d_ff, bias=bias)
        self.proj = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            gate, up = self.fc(x).chunk(2, dim=-1)
            return self.proj(F.silu(gate) * up)
        return self.proj(F.gelu(self.fc(x), approximate="tanh" if self.kind == "gelu_tanh" else "none"))


class TransformerLayer(nn.Module):
    """x + attn(x) [+ cross-attn(x, memory)] + mlp(x), each sublayer with dropout on its output.

    ``norm_first=True`` normalizes each sublayer's input (GPT-2, Llama: stable at high learning
    rates); ``False`` normalizes after each residual sum (Vaswani 2017, BERT)."""

    def __init__(self, d_model: int, n_head: int, d_ff: int, *, norm: str = "layernorm", mlp: str = "gelu",
                 bias: bool = True, dropout: float = 0.0, norm_eps: float = 1e-5, norm_first: bool = True,
                 cross_attention: bool = False, backend: str = "sdpa"):
        super().__init__()
        self.norm_first = norm_first
        self.attn = MultiHeadAttention(d_model, n_head, bias=bias, dropout=dropout, backend=backend)
        self.norm_attn = make_norm(norm, d_model, bias=bias, eps=norm_eps)
        if cross_attention:
            self.cross = MultiHeadAttention(d_model, n_head, bias=bias, dropout=dropout, backend=backend, cross=True)
            self.norm_cross = make_norm(norm, d_model, bias=bias, eps=norm_eps)
        else:
            self.cross = None
        self.mlp = MLP(d_model, d_ff, mlp, bias=bias)
        self.norm_mlp = make_norm(norm, d_model, bias=bias, eps=norm_eps)
        self.drop = nn.Dropout(dropout)

    def _sublayer(self, x, norm, fn):
        if self.norm_first:
            return x + self.drop(fn(norm(x)))
        return norm(x + self.drop(fn(x)))

    def forward(self, x: torch.Tensor, *, causal: bool = False, key_padding_mask: torch.Tensor | None = None,
                memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        x = self._sublayer(x, self.norm_attn, lambda h: self.attn(
            h, causal=causal, key_padding_mask=key_padding_mask, rope=rope, cache=cache, layer=layer))
        if self.cross is not None:
            x = self._sublayer(x, self.norm_cross, lambda h: self.cross(h, memory=memory, key_padding_mask=memory_mask))
        return self._sublayer(x, self.norm_mlp, self.mlp)


def sinusoidal_positions(length: int, d_model: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Vaswani et al. (2017) section 3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(length, d_model, device=device, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : d_model // 2]
    return pe.to(dtype)


def attention_flops_per_token(n_attn_layers: int, d_model: int, seq_len: int) -> int:
    """Training FLOPs per token of the score and value products, QK^T and AV, over a full
    T x T matrix (no saving for causal masks): 2 matmuls x 2 FLOP/MAC x 3 (fwd + bwd) x d x T."""
    return 12 * n_attn_layers * d_model * seq_len


def init_gpt2_style(model: nn.Module, n_layer: int) -> None:
    """Normal(0, 0.02) matrices and embeddings, zero biases, and residual output projections
    scaled by 1/sqrt(2 * n_layer) (GPT-2); norms keep their ones/zeros."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
    for name, p in model.named_parameters():
        if name.endswith("proj.weight"):
            nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))
