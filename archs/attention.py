"""One attention function for every Transformer arch, with interchangeable backends.

Convention (the only one in the project):
  q: (B, H, Tq, D), k and v: (B, H, Tk, D)
  causal: query i may see key j iff j <= i + (Tk - Tq)   (aligned at the end, so a KV cache works)
  key_padding_mask: (B, Tk) bool, True where the key is a real token (False = padding, never seen)

Backends:
  math     explicit softmax(q k^T * scale + mask) v, accumulated in fp32: the test oracle
  sdpa     torch.nn.functional.scaled_dot_product_attention
  xformers xformers.ops.memory_efficient_attention (CUDA, fp16/bf16), imported only when asked for
  auto     xformers where it can run, else sdpa; ``resolve_backend`` says which one actually runs
"""
from __future__ import annotations

import math as _math

import torch
import torch.nn.functional as F

from harness.errors import UserError

BACKENDS = ("auto", "math", "sdpa", "xformers")


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


def xformers_unavailable_reason(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why xformers memory-efficient attention cannot run here, or None when it can."""
    if device.type != "cuda":
        return f"xformers memory-efficient attention needs a CUDA device (this run is on {device.type})"
    if dtype not in (torch.float16, torch.bfloat16):
        return f"xformers memory-efficient attention runs in fp16/bf16 here, not {dtype}"
    try:
        import xformers.ops  # noqa: F401  (lazy: only when xformers is asked for)
    except Exception as e:  # pragma: no cover - depends on the install
        return f"xformers does not import ({type(e).__name__}: {e})"
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
            raise UserError(f"attention=xformers cannot run: {why}; use attention=sdpa or attention=auto")
    return name


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
    tq, tk = q.shape[-2], k.shape[-2]
    scale = 1.0 / _math.sqrt(q.shape[-1]) if scale is None else scale
    if backend == "math":
        return _math_attention(q, k, v, causal, key_padding_mask, dropout_p, scale)
    if backend == "sdpa":
        if key_padding_mask is None and (not causal or tq == tk):
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal, scale=scale)
        mask = build_mask(tq, tk, causal, key_padding_mask, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    if backend == "xformers":
        return _xformers_attention(q, k, v, causal, key_padding_mask, dropout_p, scale)
    raise UserError(f"unknown attention backend '{backend}'; valid: math, sdpa, xformers")


def attention_weights(q, k, *, causal=False, key_padding_mask=None, scale=None) -> torch.Tensor:
    """The softmax matrix the math backend uses (fp32); rows with no visible key are all zero."""
    scale = 1.0 / _math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.einsum("bhqd,bhkd->bhqk", q.float(), k.float()) * scale
    mask = build_mask(q.shape[-2], k.shape[-2], causal, key_padding_mask, q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.nan_to_num(weights, nan=0.0)  # a fully masked row sees nothing


def _math_attention(q, k, v, causal, key_padding_mask, dropout_p, scale):
    weights = attention_weights(q, k, causal=causal, key_padding_mask=key_padding_mask, scale=scale)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return torch.einsum("bhqk,bhkd->bhqd", weights, v.float()).to(q.dtype)


def _xformers_attention(q, k, v, causal, key_padding_mask, dropout_p, scale):
    import xformers.ops as xops  # lazy: CUDA only

    # xformers wants (B, T, H, D)
    q_, k_, v_ = (t.transpose(1, 2) for t in (q, k, v))
    bias = None
    mask = build_mask(q.shape[-2], k.shape[-2], causal, key_padding_mask, q.device)
    if mask is not None:
        if key_padding_mask is None and q.shape[-2] == k.shape[-2]:
            bias = xops.LowerTriangularMask()
        else:
            # additive bias; xformers needs the last dim's storage aligned to 8 elements
            tk = k.shape[-2]
            pad_tk = (tk + 7) // 8 * 8
            shape = (q.shape[0], q.shape[1], q.shape[-2], pad_tk)
            full = torch.zeros(shape, dtype=q.dtype, device=q.device)
            blocked = torch.tensor(float("-inf"), dtype=q.dtype, device=q.device)
            full[..., :tk] = torch.where(mask, torch.zeros((), dtype=q.dtype, device=q.device), blocked)
            bias = full[..., :tk]
    out = xops.memory_efficient_attention(q_, k_, v_, attn_bias=bias, p=dropout_p, scale=scale)
    return out.transpose(1, 2)
