"""Training on several processes: torchrun's environment -> a process group, a model wrapped for DDP
or FSDP2, each rank's share of the global batch, metrics reduced over ranks, rank-0 gating.

The global batch is ``train.batch_size`` at any world size: every rank draws the same global batch
from the same seeded generator and keeps its own rows, cut into ``train.grad_accum`` micro-batches,
so world_size x grad_accum must divide it. DDP and FSDP average gradients over ranks and each
micro-batch loss is divided by grad_accum, so a step's gradient is the mean over the global batch
(exactly so when every micro-batch has the same number of targets, as in LM; other tasks weight
each micro-batch equally, as torchtitan does).

FSDP2 (``torch.distributed.fsdp.fully_shard``, the torchtitan recipe) shards every element of the
model's ModuleLists (the repeated layers) and then the root, over a 1-D device mesh (the run builds
the model on meta and shards it there, harness/meta_init.py, so it is never whole). On CUDA the
mixed-precision policy computes in bf16 from fp32 master weights and reduces gradients in fp32; on
CPU (gloo) everything stays fp32. Evaluation code may call methods other than ``forward`` (e.g.
``target_logprobs``), which FSDP's hooks do not see, so ``gathered`` unshards every parameter for it.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from archbench.errors import UserError

MODES = ("none", "ddp", "fsdp")
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class Dist:
    mode: str = "none"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    mesh: Any = None

    @property
    def active(self) -> bool:
        return self.mode != "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def record(self, grad_accum: int, batch_size: int, dtype: torch.dtype) -> dict[str, Any]:
        """What the run record says about how the work was split."""
        out = {"mode": self.mode, "world_size": self.world_size, "grad_accum": grad_accum,
               "global_batch": batch_size, "micro_batch": batch_size // (self.world_size * grad_accum),
               "peak_memory_of": "rank 0's device"}
        if self.mode == "fsdp":
            out["sharding"] = "FSDP2 fully_shard per ModuleList element + root, 1-D mesh (full shard)"
            out["mixed_precision"] = ({"param_dtype": "bfloat16", "reduce_dtype": "float32", "master": "float32"}
                                      if dtype != torch.float32 else {"all": "float32"})
        elif self.mode == "ddp":
            out["sharding"] = "none: DDP replicates the model, all-reduces gradients"
        return out


SINGLE = Dist()


def env_rank() -> int:
    """This process's rank as torchrun (or Slurm through submitit) states it; 0 when launched alone."""
    return int(os.environ.get("RANK", "0"))


def check_batch(mode: str, batch_size: int, grad_accum: int, world_size: int | None = None) -> None:
    """world_size x grad_accum must divide the global batch (one line naming the numbers)."""
    if mode not in MODES:
        raise UserError(f"unknown dist '{mode}'; valid: {', '.join(MODES)}")
    world = world_size if world_size is not None else (int(os.environ.get("WORLD_SIZE", "1")) if mode != "none" else 1)
    if batch_size % (world * grad_accum):
        raise UserError(f"train.batch_size={batch_size} (the global batch) is not divisible by world size {world} "
                        f"x train.grad_accum={grad_accum}; pick a batch size that is a multiple of "
                        f"{world * grad_accum}, or change grad_accum / --nproc_per_node")


def _export_slurm_env() -> None:
    """Under Slurm without torchrun (submitit: one task per GPU), derive torchrun's variables."""
    if "RANK" in os.environ or "SLURM_PROCID" not in os.environ:
        return
    try:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    except (ImportError, RuntimeError):
        return


def setup(mode: str, device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun (or Slurm) describes; returns it and this rank's device."""
    if mode == "none":
        return SINGLE, device
    _export_slurm_env()
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise UserError(f"dist={mode} needs torchrun's environment ({', '.join(missing)} not set); launch with "
                        f"`torchrun --nproc_per_node=N -m harness.sweep ... dist={mode}`, or use dist=none")
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if device.type == "cuda":  # bound to this rank's GPU up front (NCCL's eager init)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (world,))
    return Dist(mode, rank, world, local, mesh), device


def teardown(d: Dist, ok: bool = True) -> None:
    """Leave the process group (after a barrier when the run ended normally on every rank)."""
    if d.active and dist.is_initialized():
        if ok:
            dist.barrier()
        dist.destroy_process_group()


def full_state_dict(model, d: Dist) -> dict[str, Any]:
    """The whole model's tensors on CPU (gathered from every rank under FSDP; rank 0 gets them)."""
    if not isinstance(model, torch.nn.Module):
        return model.state_dict()
    if d.mode == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in unwrap(model).state_dict().items()}


def _layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated layers: every element of every ModuleList, innermost lists first."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    return [layer for layers in reversed(lists) for layer in layers]


def wrap(model: torch.nn.Module, d: Dist, dtype: torch.dtype, device: torch.device,
         compile_layers: bool = False) -> torch.nn.Module:
    """The model as the training step calls it: itself, DDP-wrapped, or sharded in place by FSDP2.
    ``compile_layers``: torch.compile each repeated layer first (torchtitan's order: compile, then
    shard), one compiled graph serving every layer of the same shape. A model already sharded (built
    on meta and sharded there, harness/meta_init.py) is returned as it is."""
    if d.mode == "fsdp" and is_sharded(model):
        return model
    if compile_layers:
        for layer in _layers(model):
            layer.compile()
    if d.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if d.mode == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = (MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
              if dtype != torch.float32 else MixedPrecisionPolicy())
        for layer in _layers(model):  # bottom-up: a parent's group takes what its layers leave
            fully_shard(layer, mesh=d.mesh, mp_policy=mp)
        fully_shard(model, mesh=d.mesh, mp_policy=mp)
    return model


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself (DDP's inner module): what evaluation and checkpoints see."""
    return getattr(model, "module", model) if type(model).__name__ == "DistributedDataParallel" else model


def is_sharded(model) -> bool:
    """Is any part of ``model`` sharded by FSDP2 already?"""
    return bool(_fsdp_modules(model))


def _fsdp_modules(model) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)] if isinstance(model, torch.nn.Module) else []


@contextlib.contextmanager
def gathered(model):
    """Every FSDP parameter unsharded (whole) inside the block, resharded after; a no-op otherwise."""
    mods = _fsdp_modules(model)
    settable = all(hasattr(m, "set_reshard_after_forward") for m in mods)  # torch >= 2.7
    for m in mods:
        if settable:
            m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    try:
        yield model
    finally:
        for m in mods:
            m.reshard()
            if settable:
                m.set_reshard_after_forward(True, recurse=False)


def micro_batches(batch, d: Dist, grad_accum: int) -> list:
    """This rank's rows of a global batch, cut into ``grad_accum`` equal micro-batches."""
    def rows(x, lo, hi):
        if torch.is_tensor(x):
            return x[lo:hi]
        if isinstance(x, (list, tuple)):
            return type(x)(rows(v, lo, hi) for v in x)
        if isinstance(x, dict):
            return {k: rows(v, lo, hi) for k, v in x.items()}
        return x

    n = _batch_len(batch)
    part = n // (d.world_size * grad_accum)
    first = d.rank * grad_accum * part
    return [rows(batch, first + i * part, first + (i + 1) * part) for i in range(grad_accum)]


def _batch_len(batch) -> int:
    if torch.is_tensor(batch):
        return batch.shape[0]
    values = batch.values() if isinstance(batch, dict) else batch
    return next(_batch_len(v) for v in values if torch.is_tensor(v) or isinstance(v, (list, tuple, dict)))


def no_sync(model, last: bool):
    """Skip the gradient all-reduce on every micro-batch but the last (DDP no_sync; FSDP2's switch)."""
    if last:
        return contextlib.nullcontext()
    if hasattr(model, "no_sync"):
        return model.no_sync()
    return _fsdp_no_sync(model) if _fsdp_modules(model) else contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def all_sum(values: list[float], d: Dist, device: torch.device) -> list[float]:
    """Elementwise sums over ranks of a few numbers (one collective)."""
    if not d.active:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()
