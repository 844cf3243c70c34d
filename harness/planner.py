"""Plan a run before building it: will it fit, and if not, how fast would it be?

Every gradient-trained run is first built on the ``meta`` device (shapes, no memory) and given a
memory plan for the configured batch, sequence length, precision and optimizer:

  weights     sum of parameter bytes (parameters stay fp32; bf16 runs autocast)
  gradients   one per trainable parameter, the parameter's dtype
  optimizer   AdamW: exp_avg and exp_avg_sq per trainable parameter, the parameter's dtype
  activations the bytes autograd saves for backward in one training forward + loss, counted
              exactly by running the task's loss on the meta model (each storage once, parameters
              excluded), plus one layer's worth when the model recomputes layers in backward
              (activation checkpointing), plus, for selective checkpointing, every layer's matmul
              and attention outputs (what it keeps); under bf16 autocast float32 tensors are counted at 2 bytes
              and the bf16 copies of matmul weights are added (an approximation)

It fits when the total is at most ``HEADROOM`` of the memory available now (/proc/meminfo
MemAvailable on CPU, torch.cuda.mem_get_info on GPU); allocator fragmentation and transient
buffers are covered only by that headroom.

A run that does not fit is never materialized. One real layer of the model's repeated block
(``planning_block()``, archbench/model.py) is built on the device and timed for a forward +
backward at the configured sequence length (with the batch cut so one timing costs at most
``BLOCK_FLOP_CAP`` FLOPs, then scaled linearly back to the configured batch), and one AdamW step on
that layer's parameters is timed. The whole step is estimated as

  step_s = block_s * (batch / timed_batch) * flops_per_token(model) / flops_per_token(block)
           + adamw_s(block) * params(model) / params(block)

i.e. the rest of the model runs at the rate measured for the block. Every number that comes from
this is in the record's ``plan`` object, which carries ``estimate: true``.
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from archbench.errors import UserError
from archbench.model import matmul_params
from harness import hardware
from harness.train import make_optimizer

HEADROOM = 0.9  # the plan fits when it needs at most this share of the available memory
BLOCK_FLOP_CAP = 2e11  # at most this many FLOPs per timed block pass (~2 s on a 100 GFLOP/s CPU)
TIMED_REPEATS = 3  # timed passes after one warm-up; the fastest one is used
ADAMW_STATES = 2  # exp_avg, exp_avg_sq


@dataclass
class Plan:
    model: Any  # the model on the meta device
    fits: bool
    record: dict[str, Any] = field(default_factory=dict)


def available_memory(device: torch.device) -> tuple[int | None, str]:
    """Bytes this process could allocate now on ``device``, and where the number comes from."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free), "torch.cuda.mem_get_info (free)"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "/proc/meminfo MemAvailable"
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "sysconf SC_AVPHYS_PAGES"
    except (ValueError, OSError):
        return None, "unknown"


def _unique_params(model) -> list[torch.nn.Parameter]:
    seen, out = set(), []
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def _nbytes(params) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def saved_activation_bytes(model, task, tcfg, dtype: torch.dtype, seed: int, weight_copies: bool = True) -> int:
    """Bytes autograd saves in one training forward + loss, counted on the meta model; with
    ``weight_copies`` plus autocast's low-precision copy of every matmul weight (under FSDP the
    mixed-precision policy gathers bf16 layers one at a time instead: counted by the caller)."""
    meta = torch.device("meta")
    batch = next(task.train_batches(int(tcfg["batch_size"]), int(tcfg["seq_len"]),
                                    torch.Generator().manual_seed(seed)))
    param_storages = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: set[int] = set()
    total = 0
    shrink = torch.finfo(dtype).bits / 32 if dtype != torch.float32 else 1.0

    def pack(t: torch.Tensor):
        nonlocal total
        storage = t.untyped_storage()
        key = storage._cdata
        if key not in param_storages and key not in seen:
            seen.add(key)
            total += int(storage.nbytes() * (shrink if t.dtype == torch.float32 else 1.0))
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        # kept until the count ends: a freed storage's address could come back and read as seen
        held = task.loss(model, batch, meta)  # noqa: F841
        mode = getattr(model, "checkpointing", "none")  # a model that recomputes layers says how
        if mode != "none" and hasattr(model, "planning_block"):
            # activation checkpointing keeps only each layer's input; while a layer is recomputed
            # in backward its full activations exist once more: count one layer's worth
            pb = model.planning_block()
            pb.module(**pb.make_inputs(int(tcfg["batch_size"]), int(tcfg["seq_len"]), meta))
            if mode == "selective":
                total += pb.count * _selective_layer_bytes(pb, tcfg, shrink)
    if weight_copies and dtype != torch.float32:  # autocast keeps a low-precision copy of every matmul weight for backward
        total += int(matmul_params(model) * torch.finfo(dtype).bits / 8)
    return total


def _selective_layer_bytes(pb, tcfg, shrink: float) -> int:
    """What selective checkpointing keeps of one layer beyond its input (kept by autograd's hooks
    outside it): the outputs of its matmuls and attention kernel (archs/layers/checkpointing.py)."""
    from archs.layers.checkpointing import selective_saved_bytes

    inputs = pb.make_inputs(int(tcfg["batch_size"]), int(tcfg["seq_len"]), torch.device("meta"))
    size = lambda t: int(t.numel() * t.element_size() * (shrink if t.dtype == torch.float32 else 1.0))  # noqa: E731
    with torch.no_grad():
        return selective_saved_bytes(lambda: pb.module(**inputs), size)


def plan_memory(arch_spec, task, hp, spec, tcfg, device: torch.device, dtype: torch.dtype, seed: int, *,
                world_size: int = 1, sharded: bool = False, available: int | None = None) -> Plan:
    """The per-device memory plan. Under FSDP (``sharded``) weights, gradients and AdamW states are
    split over ``world_size`` devices and one layer is gathered whole (two with prefetch); each
    device's activations are those of its micro-batch (batch_size / (world_size x grad_accum)).
    ``available`` (bytes per device) overrides the probe, e.g. to plan for GPUs this machine lacks."""
    with torch.device("meta"):
        model = arch_spec.build(task.kind, hp, spec)
    params = _unique_params(model)
    trainable = [p for p in params if p.requires_grad]
    weights, grads = _nbytes(params), _nbytes(trainable)
    optimizer = ADAMW_STATES * grads
    micro = max(1, int(tcfg["batch_size"]) // (world_size * int(tcfg.get("grad_accum", 1))))
    try:
        activations = saved_activation_bytes(model, task, {**tcfg, "batch_size": micro}, dtype, seed,
                                             weight_copies=not sharded)
        act_note = "counted on the meta device"
    except UserError:  # the task found a mistake in the config (e.g. seq_len too short): one line, exit 2
        raise
    except Exception as e:  # an op without a meta kernel: plan without activations, and say so
        activations, act_note = None, f"not counted: the meta forward failed ({type(e).__name__}: {e})"
    state = weights + grads + optimizer
    # autocast's whole-model bf16 weight copies (in activations unless sharded): FSDP would not keep them
    copies = int(matmul_params(model) * torch.finfo(dtype).bits / 8) if dtype != torch.float32 and not sharded else 0
    shards = world_size if sharded else 1
    gathered = 2 * _largest_layer_bytes(model, dtype) if sharded and world_size > 1 else 0
    total = -(-state // shards) + gathered + (activations or 0)
    source = "given"
    if available is None:
        available, source = available_memory(device)
    fits = available is None or total <= HEADROOM * available
    record = {
        "estimate": True, "fits": fits, "device": device.type, "available_bytes": available,
        "available_source": source, "headroom": HEADROOM, "batch_size": int(tcfg["batch_size"]),
        "micro_batch": micro, "seq_len": int(tcfg["seq_len"]), "precision": str(dtype).replace("torch.", ""),
        "optimizer": "AdamW", "world_size": world_size, "sharded": sharded,
        "memory": {"weights_bytes": weights, "gradients_bytes": grads, "optimizer_bytes": optimizer,
                   "activations_bytes": activations, "gathered_layers_bytes": gathered, "total_bytes": total},
        "activations": act_note,
        "gpus_needed": gpus_needed(state, gathered or 2 * _largest_layer_bytes(model, dtype),
                                   (activations or 0) - copies, available) if available else None,
        "memory_formula": ("per device: (weights + gradients (trainable, param dtype) + AdamW 2 states per "
                           "trainable param) / world_size under FSDP (else whole) + 2 gathered layers under "
                           "FSDP + bytes saved for backward by one training forward and loss of the micro-batch; "
                           f"fits iff total <= {HEADROOM} x available"),
    }
    return Plan(model=model, fits=fits, record=record)


def _largest_layer_bytes(model, dtype: torch.dtype) -> int:
    """Bytes of the largest ModuleList element's parameters in the compute dtype (what FSDP gathers)."""
    size = torch.finfo(dtype).bits // 8
    layers = [m for lst in model.modules() if isinstance(lst, torch.nn.ModuleList) for m in lst]
    return max((sum(p.numel() for p in _unique_params(m)) * size for m in layers), default=0)


def gpus_needed(state: int, gathered: int, activations: int, per_device: int) -> int | None:
    """The fewest devices of ``per_device`` bytes that hold the run under FSDP at the same micro-batch
    (None when even one layer's share plus the activations does not fit a device)."""
    room = HEADROOM * per_device - gathered - activations
    if room <= 0:
        return None
    return max(1, math.ceil(state / room))


def _materialize(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A real copy of a meta module on ``device``, freshly initialized (the values only need to be
    ordinary numbers: timing does not depend on them)."""
    real = copy.deepcopy(module).to_empty(device=device)
    with torch.no_grad():
        for m in real.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return real


def time_block(model, tcfg, device: torch.device, dtype: torch.dtype, available: int | None) -> dict[str, Any]:
    """Time one real layer of the model's repeated block; see the module docstring for the formula."""
    pb = model.planning_block()
    batch, seq_len = int(tcfg["batch_size"]), int(tcfg["seq_len"])
    block_params = _unique_params(pb.module)
    n_block = sum(p.numel() for p in block_params)
    need = (2 + ADAMW_STATES) * _nbytes(block_params)
    if available is not None and need > HEADROOM * available:
        return {"skipped": f"one layer needs {need} bytes for weights, gradients and AdamW states; "
                           f"{available} are available"}
    f_block = pb.flops_per_token(seq_len)
    timed_batch = max(1, min(batch, int(BLOCK_FLOP_CAP // max(1, f_block * seq_len))))
    block = _materialize(pb.module, device).train()
    autocast = hardware.autocast(device, dtype)
    times = []
    for i in range(1 + TIMED_REPEATS):
        inputs = pb.make_inputs(timed_batch, seq_len, device)
        hardware.sync(device)
        t0 = time.perf_counter()
        with autocast:
            out = block(**inputs)
        out.float().sum().backward()
        hardware.sync(device)
        if i:
            times.append(time.perf_counter() - t0)
    opt = make_optimizer(block, tcfg)  # the engine's optimizer, as the run would step it
    opt_times = []
    for i in range(1 + TIMED_REPEATS):
        hardware.sync(device)
        t0 = time.perf_counter()
        opt.step()
        hardware.sync(device)
        if i:
            opt_times.append(time.perf_counter() - t0)
    return {"timed_batch": timed_batch, "seq_len": seq_len, "block_seconds": min(times),
            "block_seconds_all": times, "adamw_seconds": min(opt_times), "block_params": n_block,
            "block_flops_per_token": f_block, "block_count": pb.count}


def estimate_speed(plan: Plan, tcfg, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Estimated step time, tokens/s and MFU for a planned run (all flagged as estimates)."""
    model = plan.model
    batch, seq_len = int(tcfg["batch_size"]), int(tcfg["seq_len"])
    tokens = batch * seq_len
    fpt = model.flops_per_token(seq_len)
    n_params = model.num_params()
    peak, peak_source = hardware.peak_flops(device, dtype)
    speed: dict[str, Any] = {"estimate": True, "tokens_per_step": tokens, "peak_flops": peak,
                             "peak_flops_source": peak_source}
    if hasattr(model, "planning_block"):
        block = time_block(model, tcfg, device, dtype, plan.record.get("available_bytes"))
        speed["block"] = block
        if "skipped" not in block:
            compute = block["block_seconds"] * (batch / block["timed_batch"]) * fpt / block["block_flops_per_token"]
            optim = block["adamw_seconds"] * n_params / block["block_params"]
            speed["step_seconds"] = compute + optim
            speed["step_seconds_parts"] = {"forward_backward": compute, "adamw": optim}
            speed["formula"] = ("block_s * (batch / timed_batch) * flops_per_token(model) / flops_per_token(block) "
                                "+ adamw_s(block) * params(model) / params(block)")
    if "step_seconds" in speed:
        speed["method"] = "timed one layer"
        mfu_known = True
    elif fpt and peak:
        speed["method"] = "peak bound"
        speed["step_seconds"] = tokens * fpt / peak
        speed["formula"] = ("tokens * flops_per_token / peak_flops: a lower bound on the step time (every FLOP "
                            "at the measured peak), so tokens_per_s is an upper bound and MFU is not estimated")
        mfu_known = False
    else:
        speed["method"] = "none: no planning_block and no FLOP count"
        mfu_known = False
    step = speed.get("step_seconds")
    speed["tokens_per_s"] = tokens / step if step else None
    speed["mfu"] = (speed["tokens_per_s"] * fpt / peak) if (mfu_known and fpt and peak) else None
    if step and tcfg.get("max_steps"):
        speed["budget_seconds"] = step * int(tcfg["max_steps"])
    plan.record["speed"] = speed
    return speed


def describe(plan: Plan) -> str:
    """One line for the console."""
    m, gib = plan.record["memory"], 2**30
    avail = plan.record["available_bytes"]
    act = f"{m['activations_bytes'] / gib:.1f}" if m["activations_bytes"] is not None else "?"
    line = (f"plan (estimate): weights {m['weights_bytes'] / gib:.1f} + grads {m['gradients_bytes'] / gib:.1f} + "
            f"AdamW {m['optimizer_bytes'] / gib:.1f} + activations {act} = {m['total_bytes'] / gib:.1f} GiB")
    line += f" vs {avail / gib:.1f} GiB available" if avail else " (available memory unknown)"
    if plan.record.get("sharded"):
        line += f" per device ({plan.record['world_size']} devices, FSDP)"
    line += "" if plan.fits else ": does not fit"
    need = plan.record.get("gpus_needed")
    if not plan.fits and need and avail:
        line += f"; needs {need} devices of {avail / gib:.0f} GiB with dist=fsdp (torchrun --nproc_per_node={need})"
    speed = plan.record.get("speed") or {}
    if speed.get("step_seconds"):
        line += f"; est. {speed['step_seconds']:.1f} s/step, {speed['tokens_per_s']:.1f} tok/s"
    return line

