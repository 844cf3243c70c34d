"""Attention on a GPU, the way the FlashAttention papers report it: causal self-attention forward +
backward TFLOP/s and peak memory per backend at GPU-sized shapes, not launch overhead at B=1.

Shapes: head dim 64 and 128, T = 512 .. 16384, hidden size 2048 (H = 2048 / D heads) and 16k tokens
per batch (B = 16384 / T), as in FlashAttention-2's benchmarks, with B raised so that B*H >= 128 at
every length (a GPU's SMs all busy). FLOPs (FlashAttention-2's benchmark convention): forward
4 * B * H * T^2 * D (two matmuls), halved for causal; backward 2.5 x forward; so forward + backward
3.5 x forward. Backends: the project's math and sdpa (sdpa's own choice, and each of its CUDA kernels
forced: flash, efficient, cudnn), and xformers where it runs. A cell whose math-backend score matrix
would not fit is skipped with the reason, and a kernel that refuses a shape is reported, not fatal.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from archs.layers.attention import attend, xformers_unavailable_reason
from harness import hardware

HEAD_DIMS = (64, 128)
LENGTHS = (512, 1024, 2048, 4096, 8192, 16384)
HIDDEN = 2048
TOKENS = 16384
MIN_BH = 128
SDPA_KERNELS = ("flash", "efficient", "cudnn")


def shape_plan(head_dims=HEAD_DIMS, lengths=LENGTHS) -> list[dict[str, int]]:
    """(B, H, T, D) of every cell: H = HIDDEN / D, B = max(TOKENS / T, ceil(MIN_BH / H))."""
    plan = []
    for d in head_dims:
        h = HIDDEN // d
        for t in lengths:
            b = max(TOKENS // t, math.ceil(MIN_BH / h), 1)
            plan.append({"batch": b, "heads": h, "seq_len": t, "head_dim": d})
    return plan


def attention_flops(batch: int, heads: int, seq_len: int, head_dim: int, causal: bool = True,
                    mode: str = "fwd_bwd") -> float:
    """FlashAttention-2's count: fwd 4*B*H*T^2*D (halved when causal), bwd 2.5 x fwd, fwd_bwd 3.5 x fwd."""
    fwd = 4 * batch * heads * seq_len ** 2 * head_dim / (2 if causal else 1)
    return {"fwd": fwd, "bwd": 2.5 * fwd, "fwd_bwd": 3.5 * fwd}[mode]


def math_bytes(cell: dict[str, int]) -> int:
    """What the math backend materializes at least: fp32 scores, weights and their gradient (B, H, T, T)."""
    return 3 * 4 * cell["batch"] * cell["heads"] * cell["seq_len"] ** 2


def _backends(device: torch.device, dtype: torch.dtype) -> list[str]:
    names = ["math", "sdpa"] + [f"sdpa:{k}" for k in SDPA_KERNELS]
    return names + (["xformers"] if xformers_unavailable_reason(device, dtype) is None else [])


def _kernel_context(backend: str):
    import contextlib

    if not backend.startswith("sdpa:"):
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kernel = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
              "cudnn": SDPBackend.CUDNN_ATTENTION}[backend.split(":")[1]]
    return sdpa_kernel([kernel])


def _time_cell(backend: str, cell: dict[str, int], device, dtype, repeats: int) -> tuple[float, int | None]:
    """(best seconds of forward + backward, peak bytes above the inputs) of one cell and backend."""
    b, h, t, d = cell["batch"], cell["heads"], cell["seq_len"], cell["head_dim"]
    q, k, v = (torch.randn(b, h, t, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn(b, h, t, d, device=device, dtype=dtype)
    impl = "sdpa" if backend.startswith("sdpa") else backend

    def step():
        with _kernel_context(backend):
            attend(q, k, v, causal=True, backend=impl).backward(grad)
        q.grad = k.grad = v.grad = None

    step()  # warm-up (kernel selection, autotuning)
    hardware.sync(device)
    base = hardware.reset_peak_memory(device)
    step()
    hardware.sync(device)
    peak = hardware.peak_memory_above(device, base)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = math.inf
    for _ in range(repeats):
        start.record()
        step()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return best, peak


def attention_gpu_bench(device: torch.device, max_len: int = LENGTHS[-1], repeats: int = 5,
                        dtype: torch.dtype = torch.bfloat16) -> dict[str, Any]:
    free = torch.cuda.mem_get_info(device)[0]
    rows = []
    for cell in shape_plan(lengths=[t for t in LENGTHS if t <= max_len]):
        for backend in _backends(device, dtype):
            row = {"backend": backend, **cell}
            if backend == "math" and math_bytes(cell) > 0.6 * free:
                row["skipped"] = f"the math backend's score matrices need >= {math_bytes(cell) / 2**30:.0f} GiB"
            else:
                try:
                    seconds, peak = _time_cell(backend, cell, device, dtype, repeats)
                    row |= {"seconds": seconds, "peak_mem_bytes": peak,
                            "tflops_per_s": attention_flops(**cell) / seconds / 1e12}
                except (RuntimeError, NotImplementedError) as e:  # a kernel that does not take this shape
                    row["skipped"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:120]}"
                torch.cuda.empty_cache()
            rows.append(row)
            print_row(row)
    return {"dtype": str(dtype).replace("torch.", ""), "causal": True, "rows": rows,
            "flops": "FlashAttention-2: 3.5 x 4*B*H*T^2*D / 2 (causal), forward + backward"}


def print_row(r: dict[str, Any]) -> None:
    cell = f"B={r['batch']:3d} H={r['heads']:2d} T={r['seq_len']:5d} D={r['head_dim']:3d}"
    if "skipped" in r:
        print(f"  {r['backend']:14s} {cell}  skipped: {r['skipped']}", flush=True)
    else:
        print(f"  {r['backend']:14s} {cell}  fwd+bwd {1e3 * r['seconds']:8.2f} ms  {r['tflops_per_s']:6.1f} TFLOP/s  "
              f"peak {(r['peak_mem_bytes'] or 0) / 2**20:8.0f} MiB", flush=True)
