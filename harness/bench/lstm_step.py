"""The LSTM seq2seq training step on a CPU: packed loop vs fused real-token run, subnormals kept vs flushed.

``python -m harness.bench --only lstm``. The cells of ``study=tasks`` that dominated its wall time:
``lstm`` tiny on ``mt`` (builtin gettext pairs) and ``summarization`` (256-byte documents), byte
tokens, at its tuned recipe (AdamW, lr 8e-2, clip 1), trained from the same initialization and
batches under four settings: the encoder through
``pack_padded_sequence`` (a per-time-step loop on a CPU) or through
archs/layers/real_token_lstm.py (one fused oneDNN call per layer and direction), each with subnormal
floats computed as such or flushed to zero (``flush_denormal``, the run default). Subnormals appear
once training has moved the gates (after ~10 steps at this lr), so each setting trains
``steps`` steps and the time per step is taken over the last ``timed`` of them; two rounds, the
settings in reverse order in the second, best of the two. The final losses are printed beside
the times: the settings compute the same function (tests/test_lstm.py: 1e-5), but at this lr the
first steps spike and rounding differences grow, so after many steps the losses drift apart.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any

import torch

from harness import hardware

SETTINGS = [("packed", False), ("packed", True), ("real-token", False), ("real-token", True)]


def _train(task, path: str, flush: bool, steps: int, timed: int) -> dict[str, Any]:
    """``steps`` of the engine's own training step (harness.train.Stepper), the last ``timed`` timed."""
    from archbench import get_arch
    from archs.layers.real_token_lstm import packed_reference
    from harness import distributed
    from harness.train import Stepper, make_optimizer

    with hardware.denormals_flushed(flush), packed_reference() if path == "packed" else contextlib.nullcontext():
        torch.manual_seed(0)
        arch = get_arch("lstm")
        model = arch.build("seq2seq", arch.sizes["tiny"], task.spec(64))
        tcfg = arch.recipes["tiny"].values()
        step = Stepper(model, task, make_optimizer(model, tcfg), torch.device("cpu"), contextlib.nullcontext(),
                       tcfg, distributed.SINGLE)
        batches = task.train_batches(tcfg["batch_size"], tcfg["seq_len"], torch.Generator().manual_seed(0))
        times, tokens, loss, diverged = [], 0, None, None
        for i in range(steps):
            batch = next(batches)
            t0 = time.perf_counter()
            loss, n, why = step(batch)  # loss None: not finite (the engine would end the run as diverged)
            if why and diverged is None:
                diverged = i
            if i >= steps - timed:
                times.append(time.perf_counter() - t0)
                tokens += n
    return {"s_per_step": sum(times) / len(times), "tokens_per_s": tokens / sum(times),
            "final_loss": loss if loss is not None else float("nan"), "diverged_at_step": diverged}


def lstm_step_bench(steps: int = 20, timed: int = 8, tasks=("mt", "summarization")) -> dict[str, Any]:
    return {name: _one_task(name, steps, timed) for name in tasks}


def _one_task(name: str, steps: int, timed: int) -> dict[str, Any]:
    from archbench import build_task
    from harness.config import compose_dict

    task = build_task(compose_dict([f"task={name}", "task.max_eval_examples=4"])["task"])
    print(f"  {name}:")
    best: dict[str, dict[str, Any]] = {}
    for order in (SETTINGS, SETTINGS[::-1]):
        for path, flush in order:
            setting = f"{path}, subnormals {'flushed' if flush else 'kept'}"
            run = _train(task, path, flush, steps, timed)
            if setting not in best or run["s_per_step"] < best[setting]["s_per_step"]:
                best[setting] = run
    base = best["packed, subnormals kept"]["s_per_step"]
    for setting, r in best.items():
        note = (f"final loss {r['final_loss']:.4f}" if r["diverged_at_step"] is None else
                f"DIVERGED (loss not finite from step {r['diverged_at_step']}): its time is not comparable")
        print(f"    {setting:32s} {r['s_per_step']:.3f} s/step  {r['tokens_per_s']:8,.0f} tokens/s  "
              f"{base / r['s_per_step']:5.2f}x the packed loop with subnormals  {note}")
    return best
