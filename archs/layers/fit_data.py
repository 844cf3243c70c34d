"""The training data a fitted model (counts, EM) reads: labeled sequences cut to the token limit of
the run's Budget (archbench/budget.py, ``fit_tokens``), so "the same budget" means the same data for
fitted and gradient-trained models."""
from __future__ import annotations

from archbench.errors import UserError


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
    if not hasattr(task, "labeled_sequences"):
        raise UserError(f"task '{getattr(task, 'name', task)}' does not offer labeled_sequences(split), "
                        "which class-conditional fitted models (n-gram, HMM with EM) read")
    seqs, labels = task.labeled_sequences(split)
    return [s for s in seqs], [int(y) for y in labels]
