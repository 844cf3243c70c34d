"""GPT step benchmark: one training step of the harness (forward, cross-entropy, backward, gradient
clipping, the engine's AdamW) of a 4-layer d256 4-head GPT at T=256, batch 8, vocab 50304, in fp32
on a CPU (bf16 autocast on CUDA): tokens/s and MFU against the measured matmul peak, with the time
per phase so the limit is visible."""
from __future__ import annotations

import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from harness import hardware

GPT_SHAPE = dict(n_layer=4, d_model=256, n_head=4, seq_len=256, batch=8, vocab=50304)
GPT_DTYPE_NOTE = "fp32 on CPU, bf16 autocast on CUDA"
PHASES = ("forward", "cross_entropy", "backward", "clip_and_adamw")


def gpt_step(device: torch.device):
    """(model, step() -> phase seconds): one training step of the harness at GPT_SHAPE."""
    from archs.gpt import GPT, GPTConfig
    from harness.config import compose_dict
    from harness.train import make_optimizer

    s = GPT_SHAPE
    tcfg = compose_dict([])["train"]  # the engine's optimizer settings
    torch.manual_seed(0)
    with torch.device(device):
        model = GPT(GPTConfig(n_layer=s["n_layer"], n_head=s["n_head"], d_model=s["d_model"],
                              vocab_size=s["vocab"], block_size=s["seq_len"], attention="sdpa"))
    opt = make_optimizer(model, tcfg)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, s["vocab"], (s["batch"], s["seq_len"]), generator=g).to(device)
    y = torch.randint(0, s["vocab"], (s["batch"], s["seq_len"]), generator=g).to(device)
    autocast = hardware.autocast(device, hardware.compute_dtype(device))

    def step() -> dict[str, float]:
        clock = [time.perf_counter()]

        def tick():
            hardware.sync(device)
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
    model, step = gpt_step(device)
    peak, peak_source = hardware.peak_flops(device, dtype)
    for _ in range(warmup):
        step()
    hardware.sync(device)
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


def print_bench(res: dict[str, Any]) -> None:
    print(f"  {res['tokens_per_s_median']:.0f} tokens/s (median step {res['step_seconds_median']:.2f} s, "
          f"best {res['step_seconds_best']:.2f} s); {res['flops_per_token'] / 1e6:.1f} MFLOP/token")
    if res["peak_flops"]:
        print(f"  MFU {100 * res['mfu_median']:.1f}% median, {100 * res['mfu_best']:.1f}% best step, against "
              f"{res['peak_flops'] / 1e9:.1f} GFLOP/s ({res['peak_flops_source']})")
    ph = res["phase_seconds_median"]
    print("  phases (median s): " + ", ".join(f"{k} {ph[k]:.3f}" for k in PHASES)
          + f"; the LM head is {100 * res['lm_head_share_of_flops']:.0f}% of the FLOPs")
