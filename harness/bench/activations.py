"""Activation memory of a GPT training forward under each activation-checkpointing mode (none,
selective, full), counted exactly: the bytes of every tensor storage created during the forward +
loss that is still alive when it returns, i.e. what autograd (and selective checkpointing's cache of
matmul / attention outputs) holds for backward. A dispatch mode sees every op's inputs and outputs;
a storage first seen as an output is new, and a weak reference says whether it survived.

Deterministic (no allocator, no timing), so a test asserts the order full < selective < none on it.
A saved-tensors hook would not do: non-reentrant checkpointing packs its layers' saved tensors with
its own hooks, and selective checkpointing keeps its saved outputs outside autograd's hooks. The
recompute's own transient memory in backward (one layer at a time) is not part of this count.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

ACT_SHAPE = dict(n_layer=4, d_model=256, n_head=4, seq_len=256, batch=4, vocab=256)


class _NewStorages(TorchDispatchMode):
    """Records the storages ops create (not those they were given), by weak reference."""

    def __init__(self):
        super().__init__()
        self.given: dict[int, StorageWeakRef] = {}
        self.made: dict[int, tuple[StorageWeakRef, int]] = {}

    def _live(self, table: dict, key: int) -> bool:
        ref = table.get(key)
        return ref is not None and not (ref[0] if isinstance(ref, tuple) else ref).expired()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for t in tree_flatten((args, kwargs))[0]:
            if isinstance(t, torch.Tensor):
                s = t.untyped_storage()
                if not self._live(self.made, s._cdata):
                    self.given[s._cdata] = StorageWeakRef(s)
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                s = t.untyped_storage()
                if not self._live(self.given, s._cdata) and not self._live(self.made, s._cdata):
                    self.made[s._cdata] = (StorageWeakRef(s), s.nbytes())
        return out

    def alive_bytes(self) -> int:
        return sum(n for ref, n in self.made.values() if not ref.expired())


def held_for_backward(forward: Callable[[], torch.Tensor]) -> int:
    """Bytes of the storages ``forward()`` created that are alive once it returned (its result too)."""
    mode = _NewStorages()
    with mode:
        loss = forward()
    held = mode.alive_bytes()
    loss.backward()  # the graph was whole: backward runs (and frees it)
    return held


def gpt_activation_bytes(mode: str, shape: dict[str, int] | None = None, seed: int = 0) -> int:
    """held_for_backward of one training forward + fused LM loss of a GPT under checkpointing ``mode``."""
    from archs.gpt import GPT, GPTConfig

    s = shape or ACT_SHAPE
    torch.manual_seed(seed)
    cfg = GPTConfig(n_layer=s["n_layer"], n_head=s["n_head"], d_model=s["d_model"], vocab_size=s["vocab"],
                    block_size=s["seq_len"], positions="rope", attention="sdpa", activation_checkpointing=mode)
    model = GPT(cfg).train()
    g = torch.Generator().manual_seed(seed)
    x, y = (torch.randint(0, s["vocab"], (s["batch"], s["seq_len"]), generator=g) for _ in range(2))
    return held_for_backward(lambda: model(x, targets=y))


def activation_bench(shape: dict[str, int] | None = None) -> dict[str, Any]:
    """The three modes at one shape (fp32 on the CPU), with each one's share of none's bytes."""
    s = shape or ACT_SHAPE
    rows = {m: gpt_activation_bytes(m, s) for m in ("none", "selective", "full")}
    return {"shape": s, "dtype": "float32", "device": "cpu", "bytes": rows,
            "share_of_none": {m: b / rows["none"] for m, b in rows.items()},
            "method": "storages created in forward + loss and alive when it returns (harness/bench/activations.py)"}


def print_activations(res: dict[str, Any]) -> None:
    for m, b in res["bytes"].items():
        print(f"  {m:9} {b / 2**20:8.2f} MiB held for backward ({100 * res['share_of_none'][m]:.0f}% of none)")

