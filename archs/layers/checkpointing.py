"""Activation checkpointing of a repeated layer: none, full or selective (op-level).

  none       autograd keeps every tensor the layer's backward needs (the most memory, no recompute)
  full       only the layer's inputs are kept; the whole layer runs again in backward (the least
             memory, one more forward of every layer: ~1.33x the step's FLOPs)
  selective  the outputs of the expensive ops -- matmuls and the attention kernel -- are kept, and
             the cheap pointwise ops between them (norms, activations, rotary, residual adds) run
             again in backward: most of full's saving on the elementwise tensors, almost none of
             its recompute FLOPs (torch.utils.checkpoint's selective checkpoint contexts; the
             policy of torchtitan's op-level SAC, keeping every matmul rather than every other one)

``true`` / ``false`` from older configs mean full / none.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from archbench.errors import UserError

MODES = ("none", "full", "selective")

_aten = torch.ops.aten
# matmuls as they reach the dispatcher (nn.Linear is mm / addmm, einsum and @ on batches are bmm)
_MATMULS = {_aten.mm.default, _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default}


def mode_of(value: Any, who: str) -> str:
    """The checkpointing mode a config value names (true -> full, false / null -> none)."""
    if value is None or value is False:
        return "none"
    if value is True:
        return "full"
    if isinstance(value, str) and value in MODES:
        return value
    raise UserError(f"{who}: unknown activation_checkpointing {value!r}; valid: {', '.join(MODES)} "
                    "(true = full, false = none)")


def saves(func) -> bool:
    """Does the selective policy keep this op's output? Matmuls, and every fused attention kernel:
    sdpa's flash / efficient / cudnn / CPU variants and xformers' cutlass kernel (their names say
    attention), xformers' FlashAttention kernels (flash_fwd)."""
    if func in _MATMULS:
        return True
    name = func.name() if hasattr(func, "name") else str(func)
    return "attention" in name or "flash_fwd" in name


def _policy(ctx, func, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if saves(func) else CheckpointPolicy.PREFER_RECOMPUTE


def _selective_contexts():
    return create_selective_checkpoint_contexts(_policy)


def run_layer(mode: str, layer: Callable, *args, **kwargs):
    """``layer(*args, **kwargs)`` under ``mode`` (call it only while training: recompute needs backward)."""
    if mode == "none":
        return layer(*args, **kwargs)
    if mode == "full":
        return checkpoint(layer, *args, use_reentrant=False, **kwargs)
    return checkpoint(layer, *args, use_reentrant=False, context_fn=_selective_contexts, **kwargs)


class _SavedOutputs(torch.utils._python_dispatch.TorchDispatchMode):
    """Sums ``size(t)`` over the outputs of the ops the selective policy keeps."""

    def __init__(self, size: Callable[[torch.Tensor], int]):
        super().__init__()
        self.size, self.total = size, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if saves(func):
            flat = out if isinstance(out, (tuple, list)) else (out,)
            self.total += sum(self.size(t) for t in flat if isinstance(t, torch.Tensor))
        return out


def selective_saved_bytes(fn: Callable[[], Any], size: Callable[[torch.Tensor], int] | None = None) -> int:
    """Bytes the selective policy keeps for one call of ``fn`` (e.g. one layer's forward on the meta
    device): the sum over the outputs of the ops it saves (``size`` per tensor; default its bytes)."""
    mode = _SavedOutputs(size or (lambda t: t.numel() * t.element_size()))
    with mode:
        fn()
    return mode.total

