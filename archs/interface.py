"""What the engine and the tasks may call on a model, per task kind.

Every model, neural or count-based, offers ``num_params()`` and ``flops_per_token(seq_len)``
(training FLOPs per token, forward + backward, from the arch's own formula; None where FLOPs do not
describe the work). Per kind:

  lm        ``forward(idx) -> logits (B, T, V)`` for training, and ``target_logprobs(x, y) -> (B, T)``:
            log p(y_t | x_<=t), what the LM evaluation reads (count-based models implement only this).
  seq2seq   ``encode(src, src_mask) -> memory`` (a tensor or tuple of tensors, batch first, so a
            search can reorder it with index_select), ``decode(memory, src_mask, tgt_in) -> logits
            (B, T, V)`` (teacher-forced, causal over tgt_in), and ``forward(src, src_mask, tgt_in)`` =
            decode(encode(...)). Greedy/beam search is one shared implementation over these calls.
  classify  ``forward(ids, mask) -> logits (B, num_classes)``.

Masks are bool, shape (B, T), True where the token is real (False = padding), everywhere.
Special token ids (pad, bos, eos) come in the TaskSpec the model is built with.

Models that are fit rather than trained (n-gram counts, HMM EM) set ``fitted = True`` (on the instance,
when a config chooses) and implement ``fit(task, tcfg, device, generator) -> dict`` (with "tokens": the
training tokens read; optionally "tokens_per_s" measured by the fit); the engine calls that instead
of running gradient steps, and reads ``num_params()`` after it.
"""
from __future__ import annotations

import abc

import torch
import torch.nn as nn
import torch.nn.functional as F


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


def matmul_params(module: nn.Module) -> int:
    """Parameters that take part in a matrix multiply per token (Linear weights), counted once."""
    seen, total = set(), 0
    for m in module.modules():
        if isinstance(m, nn.Linear) and id(m.weight) not in seen:
            seen.add(id(m.weight))
            total += m.weight.numel()
    return total
