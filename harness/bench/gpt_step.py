"""GPT step benchmark: one training step of the harness (forward, the LM task's loss, backward,
gradient clipping, the engine's AdamW) of a 4-layer d256 4-head GPT at T=256, batch 8, vocab 50304,
in fp32 on a CPU (bf16 autocast on CUDA), beside nanoGPT's model.py at the same shape when its path
is given (``--nanogpt PATH`` or $NANOGPT_DIR; it is not vendored): both models are built in one
process and their steps run in interleaved rounds (the order alternating), so a shared machine's
load falls on both alike; the ratio of best steps is the comparison. Time per phase is printed.

Phases. harness: forward = the model up to its final hidden state; cross_entropy = LM head +
cross-entropy fused and chunked (archs/layers/fused_ce.py; its gradients are made here too);
backward; clip_and_adamw. nanoGPT: forward = the model up to its logits (a hook on lm_head);
cross_entropy = F.cross_entropy on the logits; backward; clip_and_adamw (its configure_optimizers).
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from harness import hardware

GPT_SHAPE = dict(n_layer=4, d_model=256, n_head=4, seq_len=256, batch=8, vocab=50304)
GPT_DTYPE_NOTE = "fp32 on CPU, bf16 autocast on CUDA"
PHASES = ("forward", "cross_entropy", "backward", "clip_and_adamw")
NANOGPT_ENV = "NANOGPT_DIR"


def _batch(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    s = GPT_SHAPE
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, s["vocab"], (s["batch"], s["seq_len"]), generator=g).to(device)
    y = torch.randint(0, s["vocab"], (s["batch"], s["seq_len"]), generator=g).to(device)
    return x, y


class _Clock:
    def __init__(self, device: torch.device):
        self.device, self.marks = device, [time.perf_counter()]

    def tick(self, *_):
        hardware.sync(self.device)
        self.marks.append(time.perf_counter())

    def phases(self) -> dict[str, float]:
        m = self.marks
        return {n: b - a for n, a, b in zip(PHASES, m, m[1:])} | {"step": m[-1] - m[0]}


def gpt_step(device: torch.device):
    """(model, step() -> phase seconds): one training step of the harness at GPT_SHAPE."""
    from archs.gpt import GPT, GPTConfig
    from harness.config import compose_dict
    from harness.train import make_optimizer
    from tasks.lm import lm_loss

    s = GPT_SHAPE
    tcfg = compose_dict([])["train"]  # the engine's optimizer settings
    torch.manual_seed(0)
    with torch.device(device):
        model = GPT(GPTConfig(n_layer=s["n_layer"], n_head=s["n_head"], d_model=s["d_model"],
                              vocab_size=s["vocab"], block_size=s["seq_len"], attention="sdpa"))
    opt = make_optimizer(model, tcfg)
    x, y = _batch(device)
    # the LM task's training loss; the clock ticks when ln_f ends (the forward/cross-entropy boundary)
    return model, _phased_step(device, model, opt, model.ln_f, lambda: lm_loss(model, x, y),
                               float(tcfg["grad_clip"]))


class _HiddenHook:
    """Reads the clock when ``module``'s forward ends (the forward/cross-entropy boundary)."""

    def __init__(self, module: torch.nn.Module):
        self.clock: _Clock | None = None
        module.register_forward_hook(lambda *_: self.clock.tick() if self.clock else None)


def load_nanogpt(path: str | None) -> tuple[Any, str]:
    """(nanoGPT's model module, where) or (None, why not): from ``path`` or $NANOGPT_DIR."""
    where = path or os.environ.get(NANOGPT_ENV)
    if not where:
        return None, f"no nanoGPT: pass --nanogpt PATH or set ${NANOGPT_ENV} to a nanoGPT checkout"
    file = Path(where) / "model.py" if Path(where).is_dir() else Path(where)
    if not file.is_file():
        return None, f"no nanoGPT model.py at {file}"
    spec = importlib.util.spec_from_file_location("nanogpt_model", file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, str(file)


def nanogpt_step(mod, device: torch.device):
    """(model, step() -> phase seconds): nanoGPT's training step (its model, loss, optimizer) at GPT_SHAPE."""
    s = GPT_SHAPE
    torch.manual_seed(0)
    cfg = mod.GPTConfig(block_size=s["seq_len"], vocab_size=s["vocab"], n_layer=s["n_layer"],
                        n_head=s["n_head"], n_embd=s["d_model"], dropout=0.0, bias=True)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its parameter counts
        model = mod.GPT(cfg).to(device)
        opt = model.configure_optimizers(0.1, 3e-3, (0.9, 0.95), device.type)
    x, y = _batch(device)
    return model, _phased_step(device, model, opt, model.lm_head, lambda: model(x, y)[1], 1.0)


def _phased_step(device: torch.device, model, opt, boundary: torch.nn.Module, loss_of: Callable[[], torch.Tensor],
                 grad_clip: float) -> Callable[[], dict[str, float]]:
    """One training step timed by phase, the same for both models: forward (up to ``boundary``'s
    output), cross-entropy, backward, clip + AdamW."""
    autocast = hardware.autocast(device, hardware.compute_dtype(device))
    hook = _HiddenHook(boundary)

    def step() -> dict[str, float]:
        clock = _Clock(device)
        hook.clock = clock
        with autocast:
            loss = loss_of()
            clock.tick()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clock.tick()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        clock.tick()
        return clock.phases()

    return step


def _interleaved(steps: dict[str, Callable[[], dict]], rounds: int, warmup: int) -> dict[str, list[dict]]:
    names = list(steps)
    for _ in range(warmup):
        for n in names:
            steps[n]()
    out: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            out[n].append(steps[n]())
    return out


def _summary(phases: list[dict], tokens: int, fpt: int, peak: float | None) -> dict[str, Any]:
    med = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
    best = min(p["step"] for p in phases)
    return {"step_seconds_median": med["step"], "step_seconds_best": best,
            "tokens_per_s_median": tokens / med["step"], "tokens_per_s_best": tokens / best,
            "mfu_median": tokens * fpt / med["step"] / peak if peak else None,
            "mfu_best": tokens * fpt / best / peak if peak else None,
            "phase_seconds_median": med, "phase_seconds_all": phases}


def gpt_step_bench(device: torch.device, steps: int = 5, warmup: int = 2, nanogpt: str | None = None,
                   threads: int | None = None) -> dict[str, Any]:
    """Both steps side by side (interleaved rounds) at ``threads`` (default: the current count)."""
    if threads:
        torch.set_num_threads(threads)
    s = GPT_SHAPE
    dtype = hardware.compute_dtype(device)
    model, step = gpt_step(device)
    mod, nano_where = load_nanogpt(nanogpt)
    runs = {"harness": step}
    if mod is not None:
        runs["nanogpt"] = nanogpt_step(mod, device)[1]
    peak_before, peak_source = hardware.peak_flops(device, dtype)
    timed = _interleaved(runs, steps, warmup)
    peak = peak_before
    if device.type == "cpu" and peak:  # a loaded machine: keep the higher of two probes (the lower MFU)
        peak = max(peak, hardware.probe_cpu_peak())
        peak_source = "measured: best of 8 fp32 1024x1024 matmuls, the higher of a probe before and after the steps"
    tokens = s["batch"] * s["seq_len"]
    fpt = model.flops_per_token(s["seq_len"])
    res = {"shape": s, "dtype": str(dtype).replace("torch.", ""), "params": model.num_params(),
           "flops_per_token": fpt, "tokens_per_step": tokens, "timed_steps": steps, "warmup_steps": warmup,
           "peak_flops": peak, "peak_flops_before": peak_before, "peak_flops_source": peak_source,
           "lm_head_share_of_flops": 6 * s["d_model"] * s["vocab"] / fpt, "threads": torch.get_num_threads(),
           "nanogpt": nano_where if mod is not None else None, "nanogpt_skipped": None if mod else nano_where}
    res |= _summary(timed["harness"], tokens, fpt, peak)
    if mod is not None:
        res["nanogpt_result"] = _summary(timed["nanogpt"], tokens, fpt, peak)
        res["speedup_best"] = res["nanogpt_result"]["step_seconds_best"] / res["step_seconds_best"]
        res["speedup_median"] = res["nanogpt_result"]["step_seconds_median"] / res["step_seconds_median"]
    return res


def _line(name: str, r: dict[str, Any], peak: float | None) -> str:
    ph = r["phase_seconds_median"]
    mfu = f", MFU {100 * r['mfu_best']:.1f}% best" if peak else ""
    return (f"  {name:8} {r['tokens_per_s_best']:7.0f} tokens/s best ({r['tokens_per_s_median']:.0f} median; "
            f"step best {r['step_seconds_best']:.3f} s{mfu}); phases (median s): "
            + ", ".join(f"{k} {ph[k]:.3f}" for k in PHASES))


def print_bench(res: dict[str, Any]) -> None:
    print(f"  {res['threads']} thread(s); {res['flops_per_token'] / 1e6:.1f} MFLOP/token, the LM head "
          f"{100 * res['lm_head_share_of_flops']:.0f}% of them; {res['timed_steps']} interleaved rounds "
          f"after {res['warmup_steps']} warm-up")
    print(_line("harness", res, res["peak_flops"]))
    if res["nanogpt"]:
        print(_line("nanoGPT", res["nanogpt_result"], res["peak_flops"]))
        print(f"  harness / nanoGPT speed, same run: {res['speedup_best']:.2f}x (best steps), "
              f"{res['speedup_median']:.2f}x (median steps); nanoGPT from {res['nanogpt']}")
    else:
        print(f"  nanoGPT skipped: {res['nanogpt_skipped']}")
    if res["peak_flops"]:
        print(f"  MFU against {res['peak_flops'] / 1e9:.1f} GFLOP/s ({res['peak_flops_source']})")
    sys.stdout.flush()
