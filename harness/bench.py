"""Micro-benchmarks: ``python -m harness.bench`` (not tests; numbers depend on the machine and its load).

attention   forward + backward time and peak memory of each attention backend (math and sdpa on a
            CPU; xformers too on CUDA) for causal self-attention at B=1, H=8, D=64 and
            T = 128 .. 4096, with the exponent of peak memory ~ T^k fitted per backend (least
            squares on log-log over T >= 512, where fixed overheads no longer dominate).
gpt         one training step of the harness (forward, cross-entropy, backward, gradient clipping,
            the engine's AdamW) of a 4-layer d256 4-head GPT at T=256, batch 8, vocab 50304, in fp32
            on a CPU (bf16 autocast on CUDA): tokens/s and MFU against the measured matmul peak,
            with the time per phase so the limit is visible.

Peak memory on CPU is the process's resident high-water mark above its level before the measured
call (Linux /proc/self/status VmHWM, reset through /proc/self/clear_refs), with glibc told to serve
every allocation over 64 KiB by mmap so that freed tensors leave the resident set; on CUDA it is
torch.cuda.max_memory_allocated above the level before the call. Memory is measured after all
timings, since serving every block by mmap slows allocation-heavy code. Warm-up calls come first
and the clock is read after synchronizing the device (nanoGPT's bench.py).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from archs.layers.attention import attend, xformers_unavailable_reason
from harness import hardware

LENGTHS = (128, 256, 512, 1024, 2048, 4096)
FIT_FROM = 512
ATTN_SHAPE = dict(batch=1, heads=8, head_dim=64)
GPT_SHAPE = dict(n_layer=4, d_model=256, n_head=4, seq_len=256, batch=8, vocab=50304)
GPT_DTYPE_NOTE = "fp32 on CPU, bf16 autocast on CUDA"


# ----------------------------------------------------------------------------- measuring

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _mmap_large_allocations() -> bool:
    """Make freed large CPU buffers leave the resident set, so the RSS high-water mark is a peak."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 16)) and bool(libc.mallopt(m_trim_threshold, 1 << 16))
    except OSError:
        return False


def _proc_status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_memory_of(fn: Callable[[], Any], device: torch.device) -> int | None:
    """Bytes above the starting level at the peak of one call of ``fn``; None where not measurable."""
    if device.type == "cuda":
        _sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        base = _proc_status("VmRSS:")
        fn()
        return _proc_status("VmHWM:") - base
    except OSError:
        return None


def time_of(fn: Callable[[], Any], device: torch.device, *, warmup: int = 1, repeats: int = 3,
            budget_s: float = 3.0) -> list[float]:
    """Seconds per call: ``warmup`` untimed calls, then up to ``repeats`` timed ones (fewer once
    ``budget_s`` is spent, at least one)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < repeats and (not times or sum(times) < budget_s):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def fit_exponent(lengths, values) -> float | None:
    pts = [(math.log(t), math.log(v)) for t, v in zip(lengths, values) if t >= FIT_FROM and v and v > 0]
    if len(pts) < 2:
        return None
    x, y = zip(*pts)
    return float(np.polyfit(x, y, 1)[0])


# ----------------------------------------------------------------------------- attention

def _attention_step(backend: str, t: int, device: torch.device, dtype: torch.dtype) -> Callable[[], None]:
    b, h, d = ATTN_SHAPE["batch"], ATTN_SHAPE["heads"], ATTN_SHAPE["head_dim"]
    q, k, v = (torch.randn(b, h, t, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3))

    def step():
        attend(q, k, v, causal=True, backend=backend).sum().backward()
        q.grad = k.grad = v.grad = None

    return step


def attention_bench(device: torch.device, lengths=LENGTHS) -> dict[str, Any]:
    """Times of every backend and length (peak memory is measured later, see ``attention_memory``)."""
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    backends = ["math", "sdpa"] + (["xformers"] if xformers_unavailable_reason(device, dtype) is None else [])
    b, h, d = ATTN_SHAPE["batch"], ATTN_SHAPE["heads"], ATTN_SHAPE["head_dim"]
    rows = []
    for backend in backends:
        for t in lengths:
            times = time_of(_attention_step(backend, t, device, dtype), device)
            flops = 3 * 2 * 2 * b * h * t * t * d  # QK^T and AV, forward + backward, full T x T
            rows.append({"backend": backend, "seq_len": t, "seconds": statistics.median(times),
                         "seconds_all": times, "gflops_per_s": flops / statistics.median(times) / 1e9})
            print(f"  {backend:8s} T={t:5d}  fwd+bwd {1e3 * statistics.median(times):9.2f} ms", flush=True)
    return {"shape": {**ATTN_SHAPE, "causal": True, "dtype": str(dtype).replace("torch.", "")},
            "rows": rows, "fit_from_seq_len": FIT_FROM}


# ----------------------------------------------------------------------------- GPT training step

PHASES = ("forward", "cross_entropy", "backward", "clip_and_adamw")


def _gpt_step(device: torch.device):
    """(model, step(record) -> phase seconds or None): one training step of the harness at GPT_SHAPE."""
    from omegaconf import OmegaConf

    from archs.gpt import GPT, GPTConfig
    from harness.sweep import _compose
    from harness.train import make_optimizer

    s = GPT_SHAPE
    dtype = hardware.compute_dtype(device)
    tcfg = OmegaConf.to_container(_compose([]), resolve=True)["train"]  # the engine's optimizer settings
    torch.manual_seed(0)
    with torch.device(device):
        model = GPT(GPTConfig(n_layer=s["n_layer"], n_head=s["n_head"], d_model=s["d_model"],
                              vocab_size=s["vocab"], block_size=s["seq_len"], attention="sdpa"))
    opt = make_optimizer(model, tcfg)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, s["vocab"], (s["batch"], s["seq_len"]), generator=g).to(device)
    y = torch.randint(0, s["vocab"], (s["batch"], s["seq_len"]), generator=g).to(device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step() -> dict[str, float]:
        clock = [time.perf_counter()]

        def tick():
            _sync(device)
            clock.append(time.perf_counter())

        with autocast:
            logits = model(x)
            tick()
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
            tick()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        tick()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(tcfg["grad_clip"]))
        opt.step()
        tick()
        return {n: b - a for n, a, b in zip(PHASES, clock, clock[1:])} | {"step": clock[-1] - clock[0]}

    return model, step


def gpt_step_bench(device: torch.device, steps: int = 5, warmup: int = 2) -> dict[str, Any]:
    s = GPT_SHAPE
    dtype = hardware.compute_dtype(device)
    model, step = _gpt_step(device)
    peak, peak_source = hardware.peak_flops(device, dtype)
    for _ in range(warmup):
        step()
    _sync(device)
    phases = [step() for _ in range(steps)]
    if device.type == "cpu" and peak:  # a loaded machine: keep the higher of two probes (the lower MFU)
        peak = max(peak, hardware.cpu_matmul_peak.__wrapped__())
        peak_source = "measured: best of 8 fp32 1024x1024 matmuls, the higher of a probe before and after the steps"
    tokens = s["batch"] * s["seq_len"]
    fpt = model.flops_per_token(s["seq_len"])
    med = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
    best = min(p["step"] for p in phases)
    return {
        "shape": s, "dtype": str(dtype).replace("torch.", ""), "params": model.num_params(),
        "flops_per_token": fpt, "tokens_per_step": tokens, "timed_steps": steps, "warmup_steps": warmup,
        "step_seconds_median": med["step"], "step_seconds_best": best,
        "tokens_per_s_median": tokens / med["step"], "tokens_per_s_best": tokens / best,
        "peak_flops": peak, "peak_flops_source": peak_source,
        "mfu_median": tokens * fpt / med["step"] / peak if peak else None,
        "mfu_best": tokens * fpt / best / peak if peak else None,
        "phase_seconds_median": med, "phase_seconds_all": phases,
        "lm_head_share_of_flops": 6 * s["d_model"] * s["vocab"] / fpt,
        "threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------- peak memory (fresh process)

def _memory_worker(device_name: str, threads: int, attention_rows: list[tuple[str, int, str]], gpt: bool) -> dict:
    """Runs in a fresh process whose allocator serves every large block by mmap from the start, so
    that no freed heap memory hides an allocation from the resident high-water mark."""
    mmap = _mmap_large_allocations()
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    out: dict[str, Any] = {"malloc_mmap_threshold_set": mmap, "attention": [], "gpt": None}
    for backend, t, dtype in attention_rows:
        step = _attention_step(backend, t, device, getattr(torch, dtype))
        step()  # warm-up: lazily created state is not part of the peak
        out["attention"].append(peak_memory_of(step, device))
    if gpt:
        _model, step = _gpt_step(device)
        step()  # creates the AdamW state
        out["gpt"] = peak_memory_of(step, device)
    return out


def measure_memory(results: dict[str, Any], device: torch.device) -> None:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    att = results.get("attention")
    rows = [(r["backend"], r["seq_len"], att["shape"]["dtype"]) for r in att["rows"]] if att else []
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        mem = pool.submit(_memory_worker, str(device), torch.get_num_threads(), rows, "gpt" in results).result()
    results["malloc_mmap_threshold_set"] = mem["malloc_mmap_threshold_set"]
    if att:
        for r, m in zip(att["rows"], mem["attention"]):
            r["peak_mem_bytes"] = m
        att["exponents"] = {}
        for backend in dict.fromkeys(r["backend"] for r in att["rows"]):
            mine = [r for r in att["rows"] if r["backend"] == backend]
            att["exponents"][backend] = {
                "memory": fit_exponent([r["seq_len"] for r in mine], [r["peak_mem_bytes"] for r in mine]),
                "time": fit_exponent([r["seq_len"] for r in mine], [r["seconds"] for r in mine]),
            }
    if "gpt" in results:
        results["gpt"]["peak_mem_bytes"] = mem["gpt"]


# ----------------------------------------------------------------------------- entry

def _fmt(v, spec=".2f"):
    return format(v, spec) if v is not None else "n/a"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=("attention", "gpt", "baselines"),
                    help="run one part (baselines: harness/bench_baselines.py with its defaults)")
    ap.add_argument("--device", default="auto", choices=hardware.DEVICES)
    ap.add_argument("--max-len", type=int, default=LENGTHS[-1], help="longest attention sequence (default 4096)")
    ap.add_argument("--steps", type=int, default=5, help="timed GPT steps (default 5)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = hardware.resolve_device(args.device)
    env = hardware.environment(device)
    print(f"device: {env['device_name']} ({device.type}), {env['threads']} threads, torch {env['torch']}; "
          "timings on a shared machine vary with its load")
    results: dict[str, Any] = {"env": env}
    if args.only in (None, "attention"):
        print(f"attention: causal self-attention, B={ATTN_SHAPE['batch']} H={ATTN_SHAPE['heads']} "
              f"D={ATTN_SHAPE['head_dim']}, forward + backward")
        results["attention"] = attention_bench(device, [t for t in LENGTHS if t <= args.max_len])
    if args.only in (None, "gpt"):
        s = GPT_SHAPE
        print(f"gpt training step: {s['n_layer']} layers, d {s['d_model']}, {s['n_head']} heads, T {s['seq_len']}, "
              f"batch {s['batch']}, vocab {s['vocab']}, {GPT_DTYPE_NOTE}")
        res = gpt_step_bench(device, steps=args.steps)
        print(f"  {res['tokens_per_s_median']:.0f} tokens/s (median step {res['step_seconds_median']:.2f} s, "
              f"best {res['step_seconds_best']:.2f} s); {res['flops_per_token'] / 1e6:.1f} MFLOP/token")
        if res["peak_flops"]:
            print(f"  MFU {100 * res['mfu_median']:.1f}% median, {100 * res['mfu_best']:.1f}% best step, against "
                  f"{res['peak_flops'] / 1e9:.1f} GFLOP/s ({res['peak_flops_source']})")
        ph = res["phase_seconds_median"]
        print("  phases (median s): " + ", ".join(f"{k} {ph[k]:.3f}" for k in PHASES)
              + f"; the LM head is {100 * res['lm_head_share_of_flops']:.0f}% of the FLOPs")
        results["gpt"] = res
    if "attention" in results or "gpt" in results:
        print("peak memory above the level before the call (a fresh process):")
        measure_memory(results, device)
    if "attention" in results:
        for r in results["attention"]["rows"]:
            print(f"  {r['backend']:8s} T={r['seq_len']:5d}  {_fmt((r['peak_mem_bytes'] or 0) / 2**20, '9.1f')} MiB")
        for backend, e in results["attention"]["exponents"].items():
            print(f"  {backend}: peak memory ~ T^{_fmt(e['memory'])}, time ~ T^{_fmt(e['time'])} "
                  f"(least squares on log-log over T >= {FIT_FROM})")
    if "gpt" in results:
        print(f"  gpt training step: {(results['gpt']['peak_mem_bytes'] or 0) / 2**20:.0f} MiB")
    if args.only in (None, "baselines"):
        from harness import bench_baselines

        print("baselines (python -m harness.bench_baselines for its options):")
        bench_baselines.main([])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
