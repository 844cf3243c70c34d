"""One attention function and one attention module for every Transformer arch, with
interchangeable backends.

Convention (the only one in the project):
  q: (B, H, Tq, D), k and v: (B, H, Tk, D)   (v may have its own last dim)
  causal: query i may see key j iff j <= i + (Tk - Tq)   (aligned at the end, so a KV cache works)
  key_padding_mask: (B, Tk) bool, True where the key is a real token (False = padding, never seen)
  A query that sees no key at all (every key padded, or causal with Tq > Tk) gets a zero output and
  zero gradient on every backend.

Backends:
  math     explicit softmax(q k^T * scale + mask) v, accumulated in fp32: the test oracle
  sdpa     torch.nn.functional.scaled_dot_product_attention
  xformers xformers.ops.memory_efficient_attention (CUDA, fp16/bf16), imported only when asked for
  auto     xformers where it can run, else sdpa; ``resolve_backend`` says which one actually runs
"""
from __future__ import annotations

import functools
import math as _math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from archbench.errors import UserError

BACKENDS = ("auto", "math", "sdpa", "xformers")
RUNNABLE = ("math", "sdpa", "xformers")


# ----------------------------------------------------------------------------- masks

def build_mask(tq: int, tk: int, causal: bool, key_padding_mask: torch.Tensor | None, device) -> torch.Tensor | None:
    """Boolean (B or 1, 1, Tq, Tk) mask, True = may attend; None when nothing is masked."""
    mask = None
    if causal:
        i = torch.arange(tq, device=device)[:, None]
        j = torch.arange(tk, device=device)[None, :]
        mask = (j <= i + (tk - tq))[None, None]
    if key_padding_mask is not None:
        pad = key_padding_mask.to(torch.bool)[:, None, None, :]
        mask = pad if mask is None else (mask & pad)
    return mask


def _may_have_empty_rows(tq: int, tk: int, causal: bool, key_padding_mask) -> bool:
    """Whether some query might see no key (known without reading the mask, so no device sync)."""
    return key_padding_mask is not None or (causal and tq > tk)


def _without_empty_rows(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask where every empty row is opened up, (.., Tq, 1) bool: the row had a visible key).

    Kernels return NaN (or garbage) for a row with no visible key; opening the row keeps every kernel
    finite and the caller zeroes that row's output afterwards, so all backends agree on zeros."""
    visible = mask.any(dim=-1, keepdim=True)
    return mask | ~visible, visible


# ----------------------------------------------------------------------------- backend choice

def xformers_unavailable_reason(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why xformers memory-efficient attention cannot run here, or None when it can."""
    if device.type != "cuda":
        return f"xformers memory-efficient attention needs a CUDA device (this run is on {device.type})"
    if dtype not in (torch.float16, torch.bfloat16):
        return f"xformers memory-efficient attention runs in fp16/bf16 here, not {dtype}"
    return _xformers_probe(str(device), dtype)


def xformers_build() -> dict | None:
    """What the installed xformers says it was built for, read from its own metadata without
    importing it: its version, the torch its wheel requires, and cpp_lib.json (torch and CUDA of the
    compiled extension). None when xformers is not installed."""
    import importlib.metadata as md
    import importlib.util
    import json
    import os

    try:
        info: dict = {"version": md.version("xformers")}
    except md.PackageNotFoundError:
        return None
    info["requires_torch"] = next((r.split(";")[0].replace(" ", "")[len("torch"):] for r in md.requires("xformers") or []
                                   if r.replace(" ", "").startswith(("torch=", "torch>", "torch<", "torch~"))), None)
    spec = importlib.util.find_spec("xformers")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "cpp_lib.json")
        if os.path.isfile(path):
            with open(path) as f:
                lib = json.load(f)
            built = lib.get("version", {}) if isinstance(lib.get("version"), dict) else lib
            info["built_for_torch"] = built.get("torch") or built.get("torch_version")
            info["built_for_cuda"] = built.get("cuda") or built.get("cuda_version")
    return info


@functools.cache
def _xformers_probe(device: str, dtype: torch.dtype) -> str | None:
    """Import xformers (lazily: only here) and run one tiny call, since a wheel built for another
    torch or CUDA imports fine and fails only when its kernels are called."""
    build = xformers_build()
    if build is None:
        return "xformers is not installed"
    try:
        import xformers.ops as xops

        x = torch.zeros(1, 8, 1, 8, device=device, dtype=dtype)
        xops.memory_efficient_attention(x, x, x)
    except Exception as e:  # pragma: no cover - depends on the install
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        built = build.get("built_for_torch") or build.get("requires_torch") or "an unknown torch"
        return (f"xformers {build['version']} was built for torch {built}, but torch {torch.__version__} is "
                f"installed, and its kernels do not load ({type(e).__name__}: {first})")
    return None


def resolve_backend(name: str, device: torch.device, dtype: torch.dtype) -> str:
    """The backend that will actually run; a clear error when the one asked for cannot."""
    if name not in BACKENDS:
        raise UserError(f"unknown attention backend '{name}'; valid: {', '.join(BACKENDS)}")
    if name == "auto":
        return "xformers" if xformers_unavailable_reason(device, dtype) is None else "sdpa"
    if name == "xformers":
        why = xformers_unavailable_reason(device, dtype)
        if why:
            raise UserError(f"attention=xformers cannot run: {why}; install the matching pair (README "
                            "'Running on GPUs') or use attention=sdpa or attention=auto")
    return name


def backend_choice(asked: str, ran: str, device: torch.device, dtype: torch.dtype) -> dict:
    """For the run record: the backend asked for, the one that ran, and why each other one did not."""
    not_chosen = {}
    for b in RUNNABLE:
        if b == ran:
            continue
        if asked != "auto":
            not_chosen[b] = f"attention={asked} was asked for"
        elif b == "xformers":
            not_chosen[b] = xformers_unavailable_reason(device, dtype)
        elif b == "sdpa":
            not_chosen[b] = "auto prefers xformers where it runs"
        else:
            not_chosen[b] = "the explicit-softmax test oracle (T x T memory): never chosen by auto"
    return {"asked": asked, "ran": ran, "not_chosen": not_chosen}


# ----------------------------------------------------------------------------- the function

def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    backend: str = "sdpa",
) -> torch.Tensor:
    """softmax(q k^T * scale, masked) v over (B, H, T, D) tensors; see the module docstring."""
    scale = 1.0 / _math.sqrt(q.shape[-1]) if scale is None else scale
    if backend == "math":
        return _math_attention(q, k, v, causal, key_padding_mask, dropout_p, scale)
    if backend == "sdpa":
        return _sdpa_attention(q, k, v, causal, key_padding_mask, dropout_p, scale)
    if backend == "xformers":
        if q.device.type == "meta":  # planning: xformers has no meta kernels; sdpa's fused path saves the same
            return _sdpa_attention(q, k, v, causal, key_padding_mask, dropout_p, scale)
        return _xformers_attention(q, k, v, causal, key_padding_mask, dropout_p, scale)
    raise UserError(f"unknown attention backend '{backend}'; valid: {', '.join(RUNNABLE)}")


def attention_weights(q, k, *, causal=False, key_padding_mask=None, scale=None) -> torch.Tensor:
    """The softmax matrix of the math backend ((B, H, Tq, Tk), in fp32 or wider); a row with no
    visible key is zero."""
    scale = 1.0 / _math.sqrt(q.shape[-1]) if scale is None else scale
    tq, tk = q.shape[-2], k.shape[-2]
    acc = _accumulation_dtype(q.dtype)
    scores = torch.einsum("bhqd,bhkd->bhqk", q.to(acc), k.to(acc)) * scale
    mask = build_mask(tq, tk, causal, key_padding_mask, q.device)
    if mask is None:
        return torch.softmax(scores, dim=-1)
    if not _may_have_empty_rows(tq, tk, causal, key_padding_mask):
        return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    mask, visible = _without_empty_rows(mask)
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return weights * visible


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for fp16/bf16/fp32 inputs, float64 for float64 (gradcheck)."""
    return torch.promote_types(dtype, torch.float32)


def _math_attention(q, k, v, causal, key_padding_mask, dropout_p, scale):
    weights = attention_weights(q, k, causal=causal, key_padding_mask=key_padding_mask, scale=scale)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return torch.einsum("bhqk,bhkd->bhqd", weights, v.to(weights.dtype)).to(q.dtype)


def _sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    if q.device.type != "meta":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                              is_causal=is_causal, scale=scale)
    # Planning (harness/planner.py) runs models on the meta device, where sdpa falls back to its math
    # decomposition and would save a T x T weight matrix that no fused kernel keeps. Call the fused
    # CPU kernel's meta function instead: it saves what fused kernels save (q, k, v, out, logsumexp).
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device).masked_fill(~attn_mask, float("-inf"))
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]


def _sdpa_attention(q, k, v, causal, key_padding_mask, dropout_p, scale):
    tq, tk = q.shape[-2], k.shape[-2]
    if key_padding_mask is None and (not causal or tq == tk or tq == 1):
        # torch's is_causal is aligned at the start; it equals ours when Tq == Tk, and a single
        # query at the end sees every key
        return _sdpa(q, k, v, dropout_p=dropout_p, is_causal=causal and tq == tk, scale=scale)
    mask = build_mask(tq, tk, causal, key_padding_mask, q.device)
    if not _may_have_empty_rows(tq, tk, causal, key_padding_mask):
        return _sdpa(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    mask, visible = _without_empty_rows(mask)
    out = _sdpa(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    return out.masked_fill(~visible, 0.0)


def _xformers_attention(q, k, v, causal, key_padding_mask, dropout_p, scale):
    import xformers.ops as xops  # lazy: CUDA only
    from xformers.ops import fmha

    tq, tk = q.shape[-2], k.shape[-2]
    q_, k_, v_ = (rearrange(t, "b h t d -> b t h d") for t in (q, k, v))  # xformers wants (B, T, H, D)
    visible = None
    if key_padding_mask is None and not causal:
        bias = None
    elif key_padding_mask is None and tq <= tk:
        bias = fmha.attn_bias.LowerTriangularFromBottomRightMask()  # our end-aligned causal mask
    else:
        mask = build_mask(tq, tk, causal, key_padding_mask, q.device)
        mask, visible = _without_empty_rows(mask)
        # additive bias of q's dtype; xformers wants the key dim's storage aligned to 8 elements
        pad_tk = (tk + 7) // 8 * 8
        storage = torch.zeros(q.shape[0], q.shape[1], tq, pad_tk, dtype=q.dtype, device=q.device)
        bias = storage[..., :tk]
        bias.masked_fill_(~mask, float("-inf"))
    out = xops.memory_efficient_attention(q_, k_, v_, attn_bias=bias, p=dropout_p, scale=scale)
    out = rearrange(out, "b t h d -> b h t d")
    return out if visible is None else out.masked_fill(~visible, 0.0)


# ----------------------------------------------------------------------------- rotary positions

class RotaryEmbedding(nn.Module):
    """RoPE (Su et al. 2021) in the rotate-half layout of GPT-NeoX / Llama: cos and sin tables for
    positions [0, max_len), sliced per call so a KV cache can start at any offset."""

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
        self.head_dim, self.max_len, self.base = head_dim, max_len, base
        cos, sin = self._tables(None)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _tables(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.head_dim
        inv_freq = 1.0 / self.base ** (torch.arange(0, d, 2, dtype=torch.float32, device=device) / d)
        angles = torch.outer(torch.arange(self.max_len, dtype=torch.float32, device=device), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)  # (max_len, head_dim)
        return angles.cos(), angles.sin()

    def reset_buffers(self) -> None:
        """Recompute the tables where they live (a model built on meta, then given real memory)."""
        self.cos, self.sin = self._tables(self.cos.device)

    def forward(self, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        if start + length > self.cos.shape[0]:
            raise ValueError(f"positions up to {start + length} exceed the RoPE table of {self.cos.shape[0]}")
        return self.cos[start:start + length], self.sin[start:start + length]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, D) by the (T, D) tables."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


# ----------------------------------------------------------------------------- KV cache

class KVCache:
    """Per-layer key/value buffers for incremental decoding, preallocated to ``max_len`` positions.

    ``pos`` is how many positions are filled; a model call with T new tokens writes them at
    [pos, pos + T) in every layer and then advances ``pos`` once (``advance``)."""

    def __init__(self, n_layer: int, batch: int, n_head: int, max_len: int, head_dim: int,
                 *, dtype: torch.dtype, device):
        shape = (batch, n_head, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.max_len = max_len
        self.pos = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.pos + k.shape[-2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {end} needed")
        self.k[layer][:, :, self.pos:end] = k
        self.v[layer][:, :, self.pos:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, n: int) -> None:
        self.pos += n

    def select(self, index: torch.Tensor) -> "KVCache":
        """A cache of rows ``index`` (a search reordering its beams or dropping finished rows)."""
        out = object.__new__(KVCache)
        out.k = [t.index_select(0, index.to(t.device)) for t in self.k]
        out.v = [t.index_select(0, index.to(t.device)) for t in self.v]
        out.max_len, out.pos = self.max_len, self.pos
        return out


# ----------------------------------------------------------------------------- the module

class MultiHeadAttention(nn.Module):
    """Multi-head attention shared by GPT, BERT and the encoder-decoder Transformer.

    Self-attention projects q, k, v with one fused matrix; cross-attention (``cross=True``) projects
    q from x and k, v from ``memory`` with a fused (2d) matrix. Parameter counts equal separate
    q/k/v projections, so published totals (GPT-2, BERT, Llama) are matched exactly."""

    def __init__(self, d_model: int, n_head: int, *, bias: bool = True, dropout: float = 0.0,
                 backend: str = "sdpa", cross: bool = False):
        super().__init__()
        if d_model % n_head:
            raise UserError(f"n_head={n_head} does not divide d_model={d_model}; pick a divisor of d_model")
        self.n_head, self.cross, self.backend, self.dropout = n_head, cross, backend, dropout
        if cross:
            self.q = nn.Linear(d_model, d_model, bias=bias)
            self.kv = nn.Linear(d_model, 2 * d_model, bias=bias)
        else:
            self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x: torch.Tensor, *, memory: torch.Tensor | None = None, causal: bool = False,
                key_padding_mask: torch.Tensor | None = None, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        if self.cross:
            q = rearrange(self.q(x), "b t (h d) -> b h t d", h=self.n_head)
            k, v = rearrange(self.kv(memory), "b t (two h d) -> two b h t d", two=2, h=self.n_head)
        else:
            q, k, v = rearrange(self.qkv(x), "b t (three h d) -> three b h t d", three=3, h=self.n_head)
            if rope is not None:
                q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
            if cache is not None:
                k, v = cache.update(layer, k, v)
        y = attend(q, k, v, causal=causal, key_padding_mask=key_padding_mask,
                   dropout_p=self.dropout if self.training else 0.0, backend=self.backend)
        return self.proj(rearrange(y, "b h t d -> b t (h d)"))
