"""What a model is told about the task it is built for, and the task kinds there are."""
from __future__ import annotations

from dataclasses import dataclass

# lm: next-token prediction; seq2seq: source -> target; classify: sequence -> class;
# mlm: masked-LM pretraining (BERT). archbench.model has the contract of each as code.
KINDS = ("lm", "seq2seq", "classify", "mlm")


@dataclass(frozen=True)
class TaskSpec:
    """What a model needs to know about the task it is built for."""

    kind: str
    vocab_size: int
    max_seq_len: int
    num_classes: int | None = None
    pad_id: int | None = None
    bos_id: int | None = None
    eos_id: int | None = None
