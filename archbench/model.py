"""What the engine and the tasks may call on a model, per task kind, as code.

Every model, neural or count-based, offers ``num_params()`` and ``flops_per_token(seq_len)``
(training FLOPs per token, forward + backward, from the arch's own formula; None where FLOPs do not
describe the work). Per kind (the Protocol classes below are the contracts; ``check_model`` holds a
freshly built model to them, so a plug-in that misses a method fails at build time, by name):

  lm        ``target_logprobs(x, y) -> (B, T)``: log p(y_t | x_<=t), what LM evaluation reads (all a
            count-based model must have). Neural LMs also give ``forward(idx) -> logits (B, T, V)``
            for training and ``next_token_logprobs(idx) -> (B, T, V)`` for generation and lm-eval.
            Both are causal: position t depends on x_<=t only. Optional: ``fused_lm_loss = True`` and
            ``forward(idx, targets=y) -> mean cross-entropy``: the model fuses its LM head with the
            loss (never forming the logits); the LM task's training loss then calls that.
  seq2seq   ``encode(src, src_mask) -> memory`` (a tensor or tuple of tensors, batch first, so a
            search can reorder it with index_select), ``decode(memory, src_mask, tgt_in) -> logits
            (B, T, V)`` (teacher-forced, causal over tgt_in), and ``forward(src, src_mask, tgt_in)`` =
            decode(encode(...)). Greedy/beam search is one shared implementation over these calls.
            Optional: ``pair_flops(src_len, tgt_len)``: training FLOPs of one pair of these real
            lengths (ints or numpy arrays), the seq2seq FLOPs convention (see ``seq2seq_flops``).
  classify  ``forward(ids, mask) -> logits (B, num_classes)``.
  mlm       ``forward(ids, mask, token_type_ids=None, next_sentence=False) -> logits (B, T, V)``:
            bidirectional token logits at every position. With ``TaskSpec.num_classes = 2`` and
            ``next_sentence=True`` it returns (token logits, next-sentence logits (B, 2)).
  fitted    models fit by counting or EM rather than gradient steps set ``fitted = True`` and
            implement ``fit(task, budget, tcfg, device, generator) -> dict`` (with "tokens": the
            training tokens read; optionally "tokens_per_s"); the engine calls it instead of the
            training loop and reads ``num_params()`` after it.

Masks are bool, shape (B, T), True where the token is real (False = padding), everywhere.
Special token ids (pad, bos, eos) come in the TaskSpec the model is built with.

Optional for planning (harness/planner.py): ``planning_block() -> PlanningBlock`` names one of the
model's repeated layers, so a model too big for the machine can be estimated by timing one real
layer; without it the planner falls back to FLOPs at the measured peak.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from archbench.errors import UserError


@runtime_checkable
class Countable(Protocol):
    def num_params(self) -> int: ...
    def flops_per_token(self, seq_len: int) -> int | None: ...


@runtime_checkable
class LanguageModel(Countable, Protocol):
    def target_logprobs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Seq2SeqModel(Countable, Protocol):
    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> Any: ...
    def decode(self, memory: Any, src_mask: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Classifier(Countable, Protocol):
    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class MaskedLM(Countable, Protocol):
    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, token_type_ids=None, next_sentence: bool = False): ...


@runtime_checkable
class FittedModel(Countable, Protocol):
    fitted: bool

    def fit(self, task, budget, tcfg, device, generator) -> dict: ...


CONTRACTS: dict[str, type] = {"lm": LanguageModel, "seq2seq": Seq2SeqModel, "classify": Classifier,
                              "mlm": MaskedLM}


def check_model(model: Any, kind: str, arch: str) -> None:
    """A UserError naming the missing methods when a built model does not keep its kind's contract
    (a plug-in's mistake, caught before any training)."""
    contract = FittedModel if getattr(model, "fitted", False) else CONTRACTS[kind]
    needed = [n for n in ("num_params", "flops_per_token", *_methods(CONTRACTS[kind]),
                          *(("fit",) if contract is FittedModel else ())) if not callable(getattr(model, n, None))]
    if needed:
        raise UserError(f"arch '{arch}' built a {type(model).__name__} for task kind '{kind}' that lacks "
                        f"{', '.join(needed)} (see archbench.model.{contract.__name__})")


def _methods(proto: type) -> list[str]:
    own = [n for n, v in vars(proto).items() if callable(v) and not n.startswith("_")]
    return own or ["__call__"]


@dataclass(frozen=True)
class PlanningBlock:
    """One repeated layer of a model, for timing it alone (harness/planner.py)."""

    module: nn.Module  # the layer, on any device (the planner materializes a copy)
    count: int  # how many such layers one forward pass runs
    make_inputs: Callable[[int, int, torch.device], dict[str, Any]]  # (batch, seq_len, device) -> module kwargs
    flops_per_token: Callable[[int], int]  # training FLOPs per token of one such layer at seq_len


class NeuralModel(nn.Module, abc.ABC):
    """Base of the gradient-trained models: counts its parameters; states its FLOPs per token."""

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


SEQ2SEQ_FLOPS_CONVENTION = (
    "seq2seq FLOPs are counted per pair from its real source length s and target length t (padding not "
    "counted): 6 x each matrix's weights per token it multiplies (encoder matrices per source token, decoder "
    "matrices per target token) + 12 d per query-key pair of each attention (s x s, t x t, t x s), causal "
    "masks not discounted; flops_per_token = those FLOPs / (s + t), averaged over the training pairs")


def seq2seq_flops(model: Any, src_lens, tgt_lens) -> float | None:
    """Training FLOPs of pairs with these real lengths, by the model's ``pair_flops`` (summed in
    float64: a large model's total over a data set overflows int64); None if it states none."""
    pair = getattr(model, "pair_flops", None)
    if not callable(pair):
        return None
    s = np.asarray(src_lens, dtype=np.float64)
    t = np.asarray(tgt_lens, dtype=np.float64)
    return float(np.sum(pair(s, t)))
