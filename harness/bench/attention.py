"""Attention benchmark: forward + backward time and peak memory of each attention backend (math and
sdpa on a CPU; xformers too on CUDA) for causal self-attention at B=1, H=8, D=64 and
T = 128 .. 4096, with the exponent of peak memory ~ T^k fitted per backend."""
from __future__ import annotations

import statistics
from typing import Any, Callable

import torch

from archs.layers.attention import attend, xformers_unavailable_reason
from harness import hardware
from harness.bench.measure import FIT_FROM, fit_exponent, time_of

LENGTHS = (128, 256, 512, 1024, 2048, 4096)
ATTN_SHAPE = dict(batch=1, heads=8, head_dim=64)


def attention_step(backend: str, t: int, device: torch.device, dtype: torch.dtype) -> Callable[[], None]:
    b, h, d = ATTN_SHAPE["batch"], ATTN_SHAPE["heads"], ATTN_SHAPE["head_dim"]
    q, k, v = (torch.randn(b, h, t, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3))

    def step():
        attend(q, k, v, causal=True, backend=backend).sum().backward()
        q.grad = k.grad = v.grad = None

    return step


def attention_bench(device: torch.device, lengths=LENGTHS) -> dict[str, Any]:
    """Times of every backend and length (peak memory is measured later, see harness/bench/memory.py)."""
    dtype = hardware.compute_dtype(device)  # fp32 on a CPU, bf16 on CUDA
    backends = ["math", "sdpa"] + (["xformers"] if xformers_unavailable_reason(device, dtype) is None else [])
    b, h, d = ATTN_SHAPE["batch"], ATTN_SHAPE["heads"], ATTN_SHAPE["head_dim"]
    rows = []
    for backend in backends:
        for t in lengths:
            times = time_of(attention_step(backend, t, device, dtype), device)
            flops = 3 * 2 * 2 * b * h * t * t * d  # QK^T and AV, forward + backward, full T x T
            rows.append({"backend": backend, "seq_len": t, "seconds": statistics.median(times),
                         "seconds_all": times, "gflops_per_s": flops / statistics.median(times) / 1e9})
            print(f"  {backend:8s} T={t:5d}  fwd+bwd {1e3 * statistics.median(times):9.2f} ms", flush=True)
    return {"shape": {**ATTN_SHAPE, "causal": True, "dtype": str(dtype).replace("torch.", "")},
            "rows": rows, "fit_from_seq_len": FIT_FROM}


def add_memory(att: dict[str, Any], peaks: list[int | None]) -> None:
    """Attach the measured peaks to the rows and fit the growth exponents of memory and time per backend."""
    for r, m in zip(att["rows"], peaks):
        r["peak_mem_bytes"] = m
    att["exponents"] = {}
    for backend in dict.fromkeys(r["backend"] for r in att["rows"]):
        mine = [r for r in att["rows"] if r["backend"] == backend]
        att["exponents"][backend] = {
            "memory": fit_exponent([r["seq_len"] for r in mine], [r["peak_mem_bytes"] for r in mine]),
            "time": fit_exponent([r["seq_len"] for r in mine], [r["seconds"] for r in mine]),
        }


def _fmt(v, spec=".2f"):
    return format(v, spec) if v is not None else "n/a"


def print_memory(att: dict[str, Any]) -> None:
    for r in att["rows"]:
        print(f"  {r['backend']:8s} T={r['seq_len']:5d}  {_fmt((r['peak_mem_bytes'] or 0) / 2**20, '9.1f')} MiB")
    for backend, e in att["exponents"].items():
        print(f"  {backend}: peak memory ~ T^{_fmt(e['memory'])}, time ~ T^{_fmt(e['time'])} "
              f"(least squares on log-log over T >= {FIT_FROM})")
