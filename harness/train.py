"""The one training loop for every neural arch.

AdamW (weight decay on matrices only), linear warmup then cosine decay to ``min_lr_ratio * lr``,
gradient clipping, periodic validation for learning curves, a tqdm bar, and a divergence check
(a NaN/inf, or a loss far above its start: DivergenceWatch) that ends the run as ``diverged``. It stops at the first budget reached: steps, tokens or seconds.
Throughput counts only the time spent in training steps (validation excluded), after two
warm-up steps, with the device synchronized before each clock read.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from tqdm.auto import tqdm

from archbench import Budget
from harness import hardware
from harness.evaluate import evaluation_mode

TIMING_WARMUP_STEPS = 2


@dataclass
class TrainOutcome:
    status: str  # "ok" | "diverged"
    steps: int = 0
    tokens_seen: int = 0
    train_seconds: float = 0.0
    tokens_per_s: float | None = None
    stop_reason: str = ""
    error: str | None = None
    curve: list[dict[str, Any]] = field(default_factory=list)


def lr_at(step: int, tcfg: Mapping[str, Any], horizon: int | None) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``min_lr_ratio * lr`` at the horizon, or (schedule
    inverse_sqrt, Vaswani et al. 2017 eq. 3 with its peak stated as lr) lr * sqrt(warmup / (step + 1))."""
    lr, warmup = float(tcfg["lr"]), int(tcfg["warmup_steps"])
    if step < warmup:
        return lr * (step + 1) / warmup
    if tcfg.get("schedule", "cosine") == "inverse_sqrt":
        return lr * math.sqrt(warmup / (step + 1))
    if horizon is None:  # only a time budget: no horizon to decay over, constant after warmup
        return lr
    progress = min(1.0, (step - warmup) / max(1, horizon - warmup))
    floor = lr * float(tcfg["min_lr_ratio"])
    return floor + 0.5 * (lr - floor) * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, tcfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": float(tcfg["weight_decay"])},
              {"params": no_decay, "weight_decay": 0.0}]
    # the fused kernel updates a tensor in one pass instead of a dozen elementwise ones: ~5x faster
    # than the default on a CPU (harness.bench), and supported for floating CPU and CUDA tensors
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params) or None
    return torch.optim.AdamW(groups, lr=float(tcfg["lr"]), betas=tuple(tcfg["betas"]), fused=fused)


def train(model, task, tcfg: Mapping[str, Any], budget: Budget, device: torch.device, dtype: torch.dtype,
          generator: torch.Generator, desc: str = "") -> TrainOutcome:
    """Train ``model`` on ``task`` until the first limit of ``budget`` (already resolved for this
    model's FLOPs per token) is reached; ``tcfg`` holds the optimizer and schedule settings."""
    batch_size, seq_len = int(tcfg["batch_size"]), int(tcfg["seq_len"])
    horizon, horizon_reason = budget.horizon(batch_size * seq_len)
    if horizon_reason == "max_steps" and (budget.token_limit or budget.seconds):
        print(f"note: train.max_steps={horizon} ({horizon * batch_size * seq_len:,} tokens) is the limit that will "
              f"stop this run first if reached before budget {budget.given()}")
    limits = (horizon if horizon is not None else math.inf, horizon_reason,
              float(budget.seconds) if budget.seconds else math.inf)
    eval_every, eval_batches = int(tcfg["eval_every"]), int(tcfg["eval_batches"])
    autocast = hardware.autocast(device, dtype)
    opt = make_optimizer(model, tcfg)
    batches = task.train_batches(batch_size, seq_len, generator)
    out, clock = TrainOutcome(status="ok"), _Clock()
    last_loss = None  # no training step yet
    watch = DivergenceWatch(float(tcfg.get("diverge_factor", 0) or 0), int(tcfg.get("diverge_patience", 0) or 0))

    def validate():
        with autocast, evaluation_mode(model):
            val = task.validation_loss(model, device, seq_len, eval_batches)
        out.curve.append({"step": out.steps, "tokens": out.tokens_seen, "train_loss": last_loss, "val_loss": val})
        return val

    model.train()
    bar = tqdm(total=horizon, desc=desc, disable=not tcfg.get("progress", True), leave=False,
               dynamic_ncols=True, mininterval=1.0)
    try:
        while not _stopped(out, *limits):
            if eval_every and out.steps % eval_every == 0:
                validate()
            for group in opt.param_groups:
                group["lr"] = lr_at(out.steps, tcfg, horizon)
            batch = next(batches)
            hardware.sync(device)
            t0 = time.perf_counter()
            last_loss, n_tokens, why = _step(model, task, opt, batch, device, autocast, float(tcfg["grad_clip"]))
            why = why or watch.check(last_loss)
            if why:
                return _diverged(out, f"{why} at step {out.steps}", bar)
            clock.add(out, n_tokens, time.perf_counter() - t0)
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.3f}", refresh=False)
        val = validate()
        if not math.isfinite(val):
            return _diverged(out, f"validation loss is {val}", bar)
    finally:
        bar.close()
    out.tokens_per_s = clock.tokens_per_s(out)
    return out


class DivergenceWatch:
    """The divergence rule: a training loss above ``factor`` x the first step's loss for ``patience``
    consecutive steps (a loss that climbed far above where it started and stayed there) diverged,
    like a non-finite loss does. factor or patience 0 turns the rule off."""

    def __init__(self, factor: float, patience: int):
        self.factor, self.patience = factor, patience
        self.first: float | None = None
        self.run = 0

    def check(self, loss: float | None) -> str | None:
        if loss is None or not self.factor or not self.patience:
            return None
        if self.first is None:
            self.first = loss
            return None
        self.run = self.run + 1 if loss > self.factor * self.first else 0
        if self.run >= self.patience:
            return (f"training loss {loss:.4g} above {self.factor:g} x the first step's {self.first:.4g} "
                    f"for {self.patience} consecutive steps")
        return None


def _stopped(out: TrainOutcome, max_steps: float, horizon_reason: str, max_seconds: float) -> bool:
    """True (and the reason set) once a limit is reached."""
    if out.steps >= max_steps:
        out.stop_reason = horizon_reason
    elif out.train_seconds >= max_seconds:
        out.stop_reason = "max_seconds"
    return bool(out.stop_reason)


def _step(model, task, opt, batch, device, autocast, grad_clip: float) -> tuple[float | None, int, str | None]:
    """One optimizer step: (loss, tokens read, None), or (None, tokens, why) when a loss or gradient
    is not finite (the run has diverged; no update is applied)."""
    with autocast:
        loss, n_tokens = task.loss(model, batch, device)
    if not torch.isfinite(loss):
        return None, n_tokens, f"loss is {loss.item()}"
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if not torch.isfinite(grad_norm):
        return None, n_tokens, f"gradient norm is {grad_norm.item()}"
    opt.step()
    return loss.item(), n_tokens, None  # .item() also synchronizes with the device


class _Clock:
    """Training time and tokens, and the same after the first TIMING_WARMUP_STEPS for tokens/s."""

    def __init__(self):
        self.tokens, self.seconds = 0, 0.0

    def add(self, out: TrainOutcome, n_tokens: int, dt: float) -> None:
        out.steps += 1
        out.tokens_seen += n_tokens
        out.train_seconds += dt
        if out.steps > TIMING_WARMUP_STEPS:
            self.tokens += n_tokens
            self.seconds += dt

    def tokens_per_s(self, out: TrainOutcome) -> float | None:
        if self.seconds > 0:
            return self.tokens / self.seconds
        return out.tokens_seen / out.train_seconds if out.train_seconds > 0 else None


def _diverged(out: TrainOutcome, why: str, bar) -> TrainOutcome:
    bar.close()
    out.status, out.error, out.stop_reason = "diverged", why, "diverged"
    return out
