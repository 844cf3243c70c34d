"""The one evaluation path: the engine puts the model in eval mode with gradients off, lets the task
score it, and times the pass. Tasks only score; they never toggle the model's mode themselves."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any

import torch

from harness import hardware


@contextmanager
def evaluation_mode(model):
    """eval() and no_grad for the block, then back to train() if the model was training
    (models that are not torch modules, e.g. fitted n-grams, pass through)."""
    was_training = bool(getattr(model, "training", False))
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train()


def evaluate(task, model, device: torch.device, seq_len: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the task's test metrics, timing): eval_seconds and inference tokens/s over the tokens the
    task says it scored (``test_tokens``) or generated (``test_generated_tokens``, seq2seq); None
    for tasks that count neither."""
    t0 = time.perf_counter()
    with evaluation_mode(model):
        metrics = task.evaluate(model, device, seq_len)
    hardware.sync(device)
    seconds = time.perf_counter() - t0
    scored = metrics.get("test_tokens") or metrics.get("test_generated_tokens")
    return metrics, {"eval_seconds": seconds,
                     "inference_tokens_per_s": (scored / seconds) if scored and seconds > 0 else None}
