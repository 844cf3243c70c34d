"""How much training data a fitted model (counts, EM) may read: the same train.* budget keys the
gradient loop obeys, turned into tokens, so a comparison at "the same budget" means the same data."""
from __future__ import annotations

from typing import Any, Mapping


def token_budget(tcfg: Mapping[str, Any]) -> int | None:
    """train.max_tokens, or else train.max_steps x batch_size x seq_len (the tokens a gradient run
    with this budget processes on LM windows), the smaller when both are set; None = no token limit
    (only train.max_seconds is set)."""
    limits = []
    if tcfg.get("max_tokens"):
        limits.append(int(tcfg["max_tokens"]))
    if tcfg.get("max_steps"):
        limits.append(int(tcfg["max_steps"]) * int(tcfg["batch_size"]) * int(tcfg["seq_len"]))
    return min(limits) if limits else None


def take_examples(sequences: list, labels: list, budget: int | None) -> tuple[list, list]:
    """Labeled sequences in their given order until ``budget`` tokens are used (at least one)."""
    if budget is None:
        return list(sequences), list(labels)
    used, n = 0, 0
    for s in sequences:
        if used + len(s) > budget and n:
            break
        used += len(s)
        n += 1
    return list(sequences[:n]), list(labels[:n])


def labeled_sequences(task, split: str = "train") -> tuple[list, list[int]]:
    """(token-id arrays without padding, class indices) of a classify task's split: what a
    class-conditional generative model is fit on. Tasks offer it as ``labeled_sequences(split)``."""
    from harness.errors import UserError

    if not hasattr(task, "labeled_sequences"):
        raise UserError(f"task '{getattr(task, 'name', task)}' does not offer labeled_sequences(split), "
                        "which class-conditional fitted models (n-gram, HMM with EM) read")
    seqs, labels = task.labeled_sequences(split)
    return [s for s in seqs], [int(y) for y in labels]
