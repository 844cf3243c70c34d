"""The one training loop for every neural arch.

AdamW (weight decay on matrices only), linear warmup then cosine decay to ``min_lr_ratio * lr``,
gradient clipping, periodic validation for learning curves, a tqdm bar, and a divergence check
(a NaN/inf, or a loss far above its start: DivergenceWatch) that ends the run as ``diverged``. It stops at the first budget reached: steps, tokens or seconds.
Throughput counts only the time spent in training steps (validation excluded), after two
warm-up steps, with the device synchronized before each clock read.
"""
from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from tqdm.auto import tqdm

from archbench import Budget
from harness import distributed, hardware
from harness.evaluate import evaluation_mode
from harness.resume import Checkpointer, rng_state

TIMING_WARMUP_STEPS = 2


@dataclass
class TrainOutcome:
    status: str  # "ok" | "diverged"
    steps: int = 0
    tokens_seen: int = 0
    train_seconds: float = 0.0
    tokens_per_s: float | None = None
    stop_reason: str = ""
    flops: float | None = None  # counted per batch where the task counts them (seq2seq: real lengths)
    error: str | None = None
    resumed_from: dict[str, Any] | None = None  # the mid-run checkpoint this run continued from
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
          generator: torch.Generator, desc: str = "", dist: distributed.Dist = distributed.SINGLE,
          ckpt: Checkpointer | None = None) -> TrainOutcome:
    """Train ``model`` on ``task`` until the first limit of ``budget`` (already resolved for this
    model's FLOPs per token) is reached; ``tcfg`` holds the optimizer and schedule settings. Under
    ``dist`` each rank trains on its share of every global batch (harness/distributed.py); with
    ``ckpt`` the run saves mid-run checkpoints and resumes from the latest (harness/resume.py)."""
    batch_size, seq_len = int(tcfg["batch_size"]), int(tcfg["seq_len"])
    horizon, horizon_reason = budget.horizon(batch_size * seq_len)
    if horizon_reason == "max_steps" and (budget.token_limit or budget.seconds):
        print(f"note: train.max_steps={horizon} ({horizon * batch_size * seq_len:,} tokens) is the limit that will "
              f"stop this run first if reached before budget {budget.given()}")
    limits = (horizon if horizon is not None else math.inf, horizon_reason,
              float(budget.seconds) if budget.seconds else math.inf)
    eval_every, eval_batches = int(tcfg["eval_every"]), int(tcfg["eval_batches"])
    autocast, inner = hardware.autocast(device, dtype), distributed.unwrap(model)
    opt = make_optimizer(model, tcfg)
    batches = task.train_batches(batch_size, seq_len, generator)
    out, clock = TrainOutcome(status="ok"), _Clock()
    state = {"last_loss": None}  # no training step yet
    if ckpt is not None:
        _resume(ckpt, model, opt, batches, generator, out, clock, state)
    watch = DivergenceWatch(float(tcfg.get("diverge_factor", 0) or 0), int(tcfg.get("diverge_patience", 0) or 0))

    def validate():
        with autocast, evaluation_mode(inner), distributed.gathered(inner):
            val = task.validation_loss(inner, device, seq_len, eval_batches)
        out.curve.append({"step": out.steps, "tokens": out.tokens_seen, "train_loss": state["last_loss"],
                          "val_loss": val})
        return val

    model.train()
    bar = tqdm(total=horizon, initial=out.steps, desc=desc, leave=False, dynamic_ncols=True, mininterval=1.0,
               disable=not tcfg.get("progress", True) or not dist.is_main)
    step = Stepper(model, task, opt, device, autocast, tcfg, dist)
    with ckpt if ckpt is not None else contextlib.nullcontext():
        try:
            while not _stopped(out, *limits):
                if eval_every and out.steps % eval_every == 0:
                    validate()
                for group in opt.param_groups:
                    group["lr"] = lr_at(out.steps, tcfg, horizon)
                hardware.sync(device)
                t0 = time.perf_counter()
                state["last_loss"], n_tokens, why = step(next(batches))
                why = why or watch.check(state["last_loss"])
                if why:
                    return _diverged(out, f"{why} at step {out.steps}", bar)
                clock.add(out, n_tokens, time.perf_counter() - t0, step.last_flops)
                bar.update(1)
                bar.set_postfix(loss=f"{state['last_loss']:.3f}", refresh=False)
                if ckpt is not None:
                    _checkpoint(ckpt, model, opt, generator, out, clock, state, device)
            val = validate()
            if not math.isfinite(val):
                return _diverged(out, f"validation loss is {val}", bar)
        finally:
            bar.close()
    out.tokens_per_s = clock.tokens_per_s(out)
    return out


def _resume(ckpt: Checkpointer, model, opt, batches, generator, out: TrainOutcome, clock, state) -> None:
    """Continue from the latest checkpoint: weights, optimizer, counters, curve, data position."""
    meta = ckpt.load(model, opt)
    if meta is None:
        return
    for _ in range(int(meta["batches_drawn"])):  # replay the data stream to where it stood
        next(batches)
    if not torch.equal(generator.get_state(), meta["generator"]):
        raise RuntimeError(f"resuming {ckpt.source}: the data generator did not return to the saved position")
    out.steps, out.tokens_seen, out.train_seconds = meta["step"], meta["tokens_seen"], meta["train_seconds"]
    out.flops = meta.get("flops")
    out.curve = list(meta["curve"])
    clock.tokens, clock.seconds = meta["clock"]
    state["last_loss"] = meta["last_loss"]
    out.resumed_from = {"path": str(ckpt.source), "step": meta["step"], "reason": meta.get("reason")}


def _checkpoint(ckpt: Checkpointer, model, opt, generator, out: TrainOutcome, clock, state, device) -> None:
    """Save when due or when a signal arrived (then stop: Interrupted, or the outer handler's requeue)."""
    signum = ckpt.signalled(device)
    if not signum and not ckpt.due(out.steps):
        return
    meta = {"step": out.steps, "tokens_seen": out.tokens_seen, "train_seconds": out.train_seconds, "flops": out.flops,
            "curve": out.curve, "clock": (clock.tokens, clock.seconds), "last_loss": state["last_loss"],
            "batches_drawn": out.steps, "generator": generator.get_state(),
            "reason": signal.Signals(signum).name if signum else "checkpoint_every", **rng_state()}
    path = ckpt.save(model, opt, meta)
    if signum:
        ckpt.pass_on(signum, path, out.steps)


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


class Stepper:
    """One optimizer step over a global batch: this rank's rows in ``grad_accum`` micro-batches, each
    loss scaled by 1/grad_accum, gradients averaged over ranks by DDP/FSDP. Returns (mean loss over
    the global batch, tokens read by all ranks, None), or (None, tokens, why) when the loss or the
    gradient norm is not finite (the run has diverged; no update is applied). ``last_flops``: the
    global batch's FLOPs where the task counts them per batch (Task.batch_flops), else None."""

    def __init__(self, model, task, opt, device, autocast, tcfg: Mapping[str, Any], dist: distributed.Dist):
        self.model, self.task, self.opt, self.device, self.autocast, self.dist = model, task, opt, device, autocast, dist
        self.accum, self.grad_clip = int(tcfg.get("grad_accum", 1)), float(tcfg["grad_clip"])
        self.inner, self.last_flops = distributed.unwrap(model), None

    def __call__(self, batch) -> tuple[float | None, int, str | None]:
        self.opt.zero_grad(set_to_none=True)
        parts = distributed.micro_batches(batch, self.dist, self.accum)
        loss_sum, n_tokens, flops = 0.0, 0, []
        for i, part in enumerate(parts):
            flops.append(self.task.batch_flops(self.inner, part))
            with distributed.no_sync(self.model, last=i == len(parts) - 1):
                with self.autocast:
                    loss, n = self.task.loss(self.model, part, self.device)
                (loss / self.accum).backward()
            loss_sum, n_tokens = loss_sum + loss.detach(), n_tokens + n
        counted = None not in flops
        loss_sum, n_tokens, total = distributed.all_sum([float(loss_sum), float(n_tokens), sum(flops) if counted else 0.0],
                                                        self.dist, self.device)
        self.last_flops = total if counted else None
        loss_mean = loss_sum / (self.accum * self.dist.world_size)
        if not math.isfinite(loss_mean):
            return None, int(n_tokens), f"loss is {loss_mean}"
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
        if not torch.isfinite(grad_norm):
            return None, int(n_tokens), f"gradient norm is {grad_norm.item()}"
        self.opt.step()
        return loss_mean, int(n_tokens), None  # float() above also synchronized with the device


class _Clock:
    """Training time and tokens, and the same after the first TIMING_WARMUP_STEPS for tokens/s."""

    def __init__(self):
        self.tokens, self.seconds = 0, 0.0

    def add(self, out: TrainOutcome, n_tokens: int, dt: float, flops: float | None = None) -> None:
        out.steps += 1
        out.tokens_seen += n_tokens
        if flops is not None:
            out.flops = (out.flops or 0.0) + flops
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
