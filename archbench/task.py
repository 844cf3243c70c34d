"""The task contract: what the engine asks of a task, and the task registry.

A task is a ``Task`` subclass registered with ``@register_task(name)``; its kind is read from the
class. The engine builds it as ``cls(task_config)`` and asks for training batches, a training loss,
a validation loss and ``evaluate``. The engine, not the task, switches the model to ``eval()``
around validation and evaluation (and back to ``train()``), so a task only scores.
"""
from __future__ import annotations

import abc
from typing import Any, Iterator, Mapping

import torch

from archbench.errors import UserError
from archbench.registry import Registry
from archbench.spec import KINDS, TaskSpec

# Examples (or LM windows) per forward pass when a task scores a split: evaluation only, it does
# not change any number, only how many rows go through the model at once.
EVAL_BATCH = 32


class Task(abc.ABC):
    name: str
    kind: str  # one of archbench.spec.KINDS
    primary_metric: str
    lower_is_better: bool
    fingerprint: str  # sha256 over the exact examples of every split, in order

    @abc.abstractmethod
    def spec(self, seq_len: int) -> TaskSpec:
        """What a model built for this task must know (vocabulary, context, classes)."""

    @abc.abstractmethod
    def train_batches(self, batch_size: int, seq_len: int, generator: torch.Generator) -> Iterator[Any]:
        """An endless stream of training batches drawn with ``generator``."""

    @abc.abstractmethod
    def loss(self, model, batch, device) -> tuple[torch.Tensor, int]:
        """Mean training loss (nats per target token, or per example for classify) and the number of
        tokens the model read for it: what tokens_seen, tokens/s and FLOPs count (for an LM, its
        targets; for seq2seq, source + target; for classify, the input)."""

    @abc.abstractmethod
    def validation_loss(self, model, device, seq_len: int, max_batches: int) -> float:
        """Mean loss on (a fixed prefix of) the validation split, for learning curves. The model is
        already in eval mode and gradients are off."""

    @abc.abstractmethod
    def evaluate(self, model, device, seq_len: int) -> dict[str, float]:
        """The task's metrics on the test split. The model is in eval mode, gradients are off."""

    def flops_per_token(self, model, seq_len: int) -> float | None:
        """Training FLOPs per token read, for budgets, MFU and the record: the model's own figure
        at ``seq_len`` (a seq2seq task averages its training pairs' real lengths instead)."""
        return model.flops_per_token(seq_len)

    def batch_flops(self, model, batch) -> float | None:
        """Training FLOPs of this batch where they depend on it (seq2seq: each pair's real
        lengths); None: the engine counts tokens x flops_per_token."""
        return None

    @abc.abstractmethod
    def data_info(self) -> dict[str, Any]:
        """Source, split sizes and fingerprint, for the result record (``fingerprint`` and
        ``source`` at least)."""


def _check_task(name: str, cls: Any) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"task '{name}' must be a subclass of archbench.Task, got {cls!r}")
    kind = getattr(cls, "kind", None)
    if kind not in KINDS:
        raise ValueError(f"task '{name}': class {cls.__name__} has kind {kind!r}; valid kinds: {', '.join(KINDS)}")


TASKS: Registry[type[Task]] = Registry("task", _check_task)


def register_task(name: str, *, replace: bool = False):
    """Class decorator: ``@register_task("lm")`` on a Task subclass; its ``kind`` is read from it."""

    def deco(cls: type[Task]) -> type[Task]:
        TASKS.register(name, cls, replace=replace)
        return cls

    return deco


def task_kind(name: str) -> str:
    """The kind of a registered task, known without building any data."""
    return TASKS.get(name).kind


def build_task(cfg: Mapping[str, Any]) -> Task:
    """The task named by ``cfg["name"]``, built from its config."""
    return TASKS.get(cfg["name"])(cfg)
