"""The contract between the engine and a task."""
from __future__ import annotations

import abc
from typing import Any, Iterator

import torch

from archs import TaskSpec


class Task(abc.ABC):
    name: str
    kind: str  # "lm" | "seq2seq" | "classify"
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
        """Mean loss on (a fixed prefix of) the validation split, for learning curves."""

    @abc.abstractmethod
    def evaluate(self, model, device, seq_len: int) -> dict[str, float]:
        """The task's metrics on the test split."""

    @abc.abstractmethod
    def data_info(self) -> dict[str, Any]:
        """Source, split sizes and fingerprint, for the result record."""
