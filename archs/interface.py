"""What the engine and the tasks may call on a model, per task kind.

Every model, neural or count-based, offers ``num_params()`` and ``flops_per_token(seq_len)``
(training FLOPs per token, forward + backward, from the arch's own formula; None where FLOPs do not
describe the work). Per kind:

  lm        ``forward(idx) -> logits (B, T, V)`` for training, and ``target_logprobs(x, y) -> (B, T)``:
            log p(y_t | x_<=t), what the LM evaluation reads (all a count-based model must have).
            Optional: ``next_token_logprobs(idx) -> (B, T, V)``, the whole next-token distribution at
            every position (log-probabilities), for greedy checks and generation (harness/lmeval_adapter.py);
            NeuralLM has it. Both are causal: position t depends on x_<=t only.
  seq2seq   ``encode(src, src_mask) -> memory`` (a tensor or tuple of tensors, batch first, so a
            search can reorder it with index_select), ``decode(memory, src_mask, tgt_in) -> logits
            (B, T, V)`` (teacher-forced, causal over tgt_in), and ``forward(src, src_mask, tgt_in)`` =
            decode(encode(...)). Greedy/beam search is one shared implementation over these calls.
  classify  ``forward(ids, mask) -> logits (B, num_classes)``.
  mlm       ``forward(ids, mask, token_type_ids=None, next_sentence=False) -> logits (B, T, V)``:
            bidirectional token logits at every position (masked-LM pretraining). When the task
            trains sentence pairs it builds the model with ``TaskSpec.num_classes = 2`` and calls
            with ``next_sentence=True``, which returns (token logits, next-sentence logits (B, 2)).

Masks are bool, shape (B, T), True where the token is real (False = padding), everywhere.
Special token ids (pad, bos, eos) come in the TaskSpec the model is built with.

Optional for planning (harness/plan.py): ``planning_block() -> PlanningBlock`` names one of the
model's repeated layers, so a model too big for the machine can be estimated by timing one real
layer; without it the planner falls back to FLOPs at the measured peak.

Models that are fit rather than trained (n-gram counts, HMM EM) set ``fitted = True`` (on the instance,
when a config chooses) and implement ``fit(task, tcfg, device, generator) -> dict`` (with "tokens": the
training tokens read; optionally "tokens_per_s" measured by the fit); the engine calls that instead
of running gradient steps, and reads ``num_params()`` after it.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class PlanningBlock:
    """One repeated layer of a model, for timing it alone (harness/plan.py)."""

    module: nn.Module  # the layer, on any device (the planner materializes a copy)
    count: int  # how many such layers one forward pass runs
    make_inputs: Callable[[int, int, torch.device], dict[str, Any]]  # (batch, seq_len, device) -> module kwargs
    flops_per_token: Callable[[int], int]  # training FLOPs per token of one such layer at seq_len


class NeuralModel(nn.Module, abc.ABC):
    fitted = False

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @abc.abstractmethod
    def flops_per_token(self, seq_len: int) -> int | None:
        """Training FLOPs per token (forward + backward) at this context length."""


class NeuralLM(NeuralModel):
    """A neural language model: ``forward`` gives next-token logits at every position."""

    def target_logprobs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = self(x).float()
        return F.log_softmax(logits, dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)

    def next_token_logprobs(self, idx: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self(idx).float(), dim=-1)


def matmul_params(module: nn.Module) -> int:
    """Parameters that take part in a matrix multiply per token (Linear weights), counted once."""
    seen, total = set(), 0
    for m in module.modules():
        if isinstance(m, nn.Linear) and id(m.weight) not in seen:
            seen.add(id(m.weight))
            total += m.weight.numel()
    return total
