"""A model for FSDP that is never whole on any rank: built on the ``meta`` device (shapes only) while
its initialization is recorded, sharded, given empty local shards on the real device, and then
initialized by replaying the recorded init, one parameter at a time, into this rank's shards.

Why replay and not a model-specific ``init_weights``: the weights must be IDENTICAL to those of the
ordinary build with the same seed (a 2-process FSDP run equals the 1-process run), and the ordinary
build's values are whatever its constructors drew from the device's random stream, in their order.
So the recorder (a dispatch mode) logs every op of the meta build that fills a tensor without
reading another one: factories (empty, zeros, randn ...) and in-place fills (normal_, uniform_,
fill_, zero_, and in-place arithmetic on the same tensor such as trunc_normal_'s mul_ / add_ /
clamp_). The replay runs them in the same order on the real device, so each random op draws the
same numbers as in the ordinary build. A storage's values before its last whole overwrite are
dead: such draws run into a scratch tensor freed at once (the random stream still advances), and
the live ones into a tensor of that one storage, which is cut to this rank's shard and freed after
its last op. Peak extra memory: about the largest parameter, not the model.

Buffers computed from arithmetic (rotary tables) are not replayed: the module that owns them
recomputes them with ``reset_buffers()``. What this cannot replay -- a parameter computed from other
tensors, a random op fed by tensors, a buffer without ``reset_buffers`` -- makes ``build`` return
None with the reason, and the caller builds the model whole as before.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

_aten = torch.ops.aten
# in-place ops whose result does not depend on the tensor's previous values
OVERWRITES = {_aten.normal_.default, _aten.uniform_.default, _aten.fill_.Scalar, _aten.zero_.default,
              _aten.random_.default, getattr(_aten.random_, "from"), _aten.random_.to, _aten.exponential_.default,
              _aten.bernoulli_.float, _aten.log_normal_.default, _aten.cauchy_.default, _aten.geometric_.default}


def _key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def _seeded(func) -> bool:
    return torch.Tag.nondeterministic_seeded in getattr(func, "tags", ())


def _writes_self(func) -> bool:
    args = func._schema.arguments
    return bool(args) and args[0].alias_info is not None and args[0].alias_info.is_write


@dataclass
class _Op:
    func: Any
    args: tuple
    kwargs: dict
    key: int  # the storage it makes or fills
    nbytes: int
    view: tuple | None  # (dtype, shape, stride, offset) of the filled tensor; None for a factory
    seeded: bool
    whole: bool  # makes the storage, or overwrites all of it


class Recorder(TorchDispatchMode):
    """Logs the meta build's fills (see the module docstring) and what it cannot replay."""

    def __init__(self):
        super().__init__()
        self.ops: list[_Op] = []
        self.computed: set[int] = set()  # storages written from other tensors
        self.problem: str | None = None
        self._keep: list = []  # the recorded meta tensors: no storage address is reused while recording

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if not tensors:  # a factory: it makes the storage (randn draws; empty does not)
            if isinstance(out, torch.Tensor):
                self._keep.append(out)
                self.ops.append(_Op(func, args, kwargs, _key(out), out.untyped_storage().nbytes(), None,
                                    _seeded(func), True))
        elif _writes_self(func) and len(tensors) == 1:  # fills its own tensor from scalars
            t = tensors[0]
            self._keep.append(t)
            whole = func in OVERWRITES and t.is_contiguous() and t.numel() * t.element_size() == t.untyped_storage().nbytes()
            self.ops.append(_Op(func, args[1:], kwargs, _key(t), t.untyped_storage().nbytes(),
                                (t.dtype, tuple(t.shape), tuple(t.stride()), t.storage_offset()), _seeded(func), whole))
        else:
            if _seeded(func):
                self.problem = f"a random op fed by tensors ({func}) during construction"
            written = [tensors[0]] if _writes_self(func) else [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
            inputs = {_key(t) for t in tensors}
            for t in written:
                if _writes_self(func) or _key(t) not in inputs:
                    self._keep.append(t)
                    self.computed.add(_key(t))
        return out


def record(build: Callable[[], Any]) -> tuple[Any, Recorder]:
    """``build()`` on the meta device, its init recorded."""
    rec = Recorder()
    with torch.device("meta"), rec:
        model = build()
    return model, rec


def why_not(model: torch.nn.Module, rec: Recorder) -> str | None:
    """Why the recorded init cannot be replayed for this model, or None."""
    if rec.problem:
        return rec.problem
    made = {op.key for op in rec.ops}
    for name, p in model.named_parameters():
        if _key(p) in rec.computed or _key(p) not in made:
            return f"parameter {name} is computed from other tensors at construction"
    for mname, m in model.named_modules():
        if any(True for _ in m.buffers(recurse=False)) and not callable(getattr(m, "reset_buffers", None)):
            return f"module {mname or type(m).__name__} has buffers and no reset_buffers()"
    return None


def _epochs(ops: list[_Op]) -> list[tuple[int, int, bool]]:
    """Per op: (first op, last op) of its epoch -- a run of ops on one storage between whole
    overwrites -- and whether that epoch is live (the storage's last)."""
    by_key: dict[int, list[int]] = {}
    for i, op in enumerate(ops):
        by_key.setdefault(op.key, []).append(i)
    out: list[tuple[int, int, bool]] = [(0, 0, False)] * len(ops)
    for idx in by_key.values():
        starts = [j for j, i in enumerate(idx) if ops[i].whole or j == 0]
        for s, e in zip(starts, starts[1:] + [len(idx)]):
            span = (idx[s], idx[e - 1], e == len(idx))
            for i in idx[s:e]:
                out[i] = span
    return out


def replay(ops: list[_Op], device: torch.device, finish: Callable[[int, torch.UntypedStorage], None]) -> int:
    """Run the recorded init on ``device``; ``finish(key, storage)`` takes each storage's final
    values. Dead epochs without a random op are skipped. Returns the peak bytes held at once."""
    epochs = _epochs(ops)
    live: dict[int, torch.UntypedStorage] = {}
    held = peak = 0
    for i, op in enumerate(ops):
        first, last, final = epochs[i]
        if not final and not any(ops[j].seeded for j in range(first, last + 1) if ops[j].key == op.key):
            continue  # overwritten later and draws nothing: no effect on anything
        if op.view is None:  # a factory: run it where the ordinary build would
            kwargs = {**op.kwargs, "device": device} if "device" in op.kwargs else op.kwargs
            args = tree_map(lambda a: device if isinstance(a, torch.device) else a, op.args)
            live[op.key] = op.func(*args, **kwargs).untyped_storage()
            held += op.nbytes
        else:
            if i == first:
                live[op.key] = torch.empty(op.nbytes, dtype=torch.uint8, device=device).untyped_storage()
                held += op.nbytes
            dtype, shape, stride, offset = op.view
            target = torch.empty(0, dtype=dtype, device=device).set_(live[op.key], offset, shape, stride)
            op.func(target, *op.args, **op.kwargs)
        peak = max(peak, held)
        if i == last:
            storage = live.pop(op.key)
            held -= op.nbytes
            if final:
                finish(op.key, storage)
    return peak


def _ties(model: torch.nn.Module) -> list[tuple[str, str]]:
    """(alias, name) for every parameter reachable under a second name (a tied LM head)."""
    first: dict[int, str] = {}
    out = []
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            out.append((name, first[id(p)]))
        else:
            first[id(p)] = name
    return out


def build_sharded(build: Callable[[], Any], shard: Callable[[torch.nn.Module], Any],
                  device: torch.device) -> tuple[torch.nn.Module | None, str]:
    """(the model built on meta, sharded by ``shard``, its shards on ``device`` initialized as the
    ordinary build would; how) -- or (None, why not) when the init cannot be replayed."""
    try:
        model, rec = record(build)
    except Exception as e:  # noqa: BLE001 -- a constructor that needs real tensors: the ordinary build says more
        return None, f"the build does not run on the meta device ({type(e).__name__}: {e})"
    reason = why_not(model, rec) if isinstance(model, torch.nn.Module) else "not a torch module"
    if reason:
        return None, reason
    views: dict[int, list[tuple[str, tuple]]] = {}  # storage -> (parameter name, its view of it)
    for name, p in model.named_parameters():
        views.setdefault(_key(p), []).append((name, (p.dtype, tuple(p.shape), tuple(p.stride()), p.storage_offset())))
    ties = _ties(model)
    shard(model)
    model.to_empty(device=device)
    for alias, name in ties:  # to_empty gives each module its own tensor: tie them again
        owner, _, attr = alias.rpartition(".")
        setattr(model.get_submodule(owner), attr, model.get_parameter(name))

    def finish(key: int, storage: torch.UntypedStorage) -> None:
        for name, (dtype, shape, stride, offset) in views.get(key, ()):
            full = torch.empty(0, dtype=dtype, device=device).set_(storage, offset, shape, stride)
            param = model.get_parameter(name)
            if hasattr(param, "device_mesh"):  # a DTensor: keep this rank's part
                from torch.distributed.tensor import distribute_tensor

                part = distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None)
                param.to_local().copy_(part.to_local())
            else:
                param.copy_(full)

    with torch.no_grad():
        for m in model.modules():
            if callable(getattr(m, "reset_buffers", None)):
                m.reset_buffers()
        peak = replay(rec.ops, device, finish)
    return model, (f"built on the meta device, sharded, then each parameter initialized whole on {device.type} "
                   f"one at a time by replaying the ordinary build's init (peak {peak / 2**20:.1f} MiB at once)")
