"""n-gram baseline (``arch=ngram``): interpolated modified Kneser-Ney, fit by counting.

Language modeling: the model is estimated on the task's training token stream (one stream that
starts with ``<s>``, no ``</s>``: the test split is one stream too) and asked for
log p(y_t | the last order-1 tokens of the window), the same windows every arch is scored on.
Classification: one n-gram LM per class over that class's training sequences, and Bayes' rule,
logit_c = log p(x | c) + log p(c), with p(c) the class frequencies of the training examples.

Both read at most the token budget of the run (archbench/budget.py). FLOPs do not describe counting,
so ``flops_per_token`` is None and MFU stays null. Word-level files and ARPA: archs/ngram_words.py.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch

from archbench import TaskSpec, register_arch
from archbench.errors import UserError
from archs.layers.fit_data import labeled_sequences, take_examples
from archs.ngram.backoff import NO_TOKEN, BackoffLM
from archs.ngram.kneser_ney import KENLM_FALLBACK, MAX_ORDER, estimate


@dataclass(frozen=True)
class NGramConfig:
    order: int = 3
    discount_fallback: bool = True  # True: D = 0.5, 1, 1.5 where counts-of-counts fail (lmplz --discount_fallback)

    def __post_init__(self):
        if isinstance(self.order, bool) or not isinstance(self.order, int) or not 1 <= self.order <= MAX_ORDER:
            raise UserError(f"arch.order must be an integer from 1 to {MAX_ORDER}, got {self.order!r}")
        if not isinstance(self.discount_fallback, bool):
            raise UserError(f"arch.discount_fallback must be true or false, got {self.discount_fallback!r}")


SIZES = {
    **{f"{n}gram": NGramConfig(order=n) for n in range(1, MAX_ORDER + 1)},
    # the size names every arch shares, so a study can sweep archs at one size
    "tiny": NGramConfig(order=3),
    "small": NGramConfig(order=4),
    "medium": NGramConfig(order=5),
    "large": NGramConfig(order=6),
}


class CountModel:
    """What tasks ask of every model, for a model fit by counting (no parameters, no train mode)."""

    fitted = True
    training = False

    def train(self, mode: bool = True):
        return self

    def eval(self):
        return self

    def flops_per_token(self, seq_len: int) -> None:
        return None


def token_names(vocab_size: int) -> list[str]:
    """Vocabulary strings for a task's token ids (ARPA needs text): ``<id:N>``, then ``<s>``."""
    return [f"<id:{i}>" for i in range(vocab_size)] + ["<s>"]


def _require_fit(model: BackoffLM | None) -> BackoffLM:
    if model is None:
        raise RuntimeError("the n-gram model is used before fit()")
    return model


class NGramLM(CountModel):
    def __init__(self, cfg: NGramConfig, vocab_size: int):
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.lm: BackoffLM | None = None

    def num_params(self) -> int:
        """Stored numbers (n-gram probabilities and back-off weights); 0 before fitting."""
        return self.lm.num_values() if self.lm is not None else 0

    def fit(self, task, budget, tcfg, device, generator) -> dict:
        stream = np.asarray(task.streams["train"], dtype=np.int64)
        limit = budget.fit_tokens(int(tcfg["batch_size"]) * int(tcfg["seq_len"]))
        used = stream[:limit] if limit is not None else stream
        t0 = time.perf_counter()
        self.lm = estimate(used, np.array([len(used)]), order=self.cfg.order, vocab=token_names(self.vocab_size),
                           eos=None, discount_fallback=KENLM_FALLBACK if self.cfg.discount_fallback else None)
        seconds = time.perf_counter() - t0
        return {"tokens": int(len(used)), "train_tokens_available": int(len(stream)),
                "tokens_per_s": len(used) / seconds if seconds > 0 else None, **self.lm.info}

    @torch.no_grad()
    def target_logprobs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        lm = _require_fit(self.lm)
        xs = x.detach().cpu().numpy().astype(np.int64)
        width = max(1, lm.order - 1)
        padded = np.concatenate([np.full((xs.shape[0], width - 1), NO_TOKEN, dtype=np.int64), xs], axis=1)
        ctx = np.lib.stride_tricks.sliding_window_view(padded, width, axis=1)  # (B, T, width)
        lp = lm.logprob(ctx.reshape(-1, width), y.detach().cpu().numpy().reshape(-1))
        return torch.from_numpy(lp.reshape(y.shape)).to(device=x.device, dtype=torch.float32)

    @torch.no_grad()
    def next_token_logprobs(self, idx: torch.Tensor) -> torch.Tensor:
        """The whole next-token distribution at every position (B, T, V), for greedy checks and generation."""
        lm = _require_fit(self.lm)
        xs = idx.detach().cpu().numpy().astype(np.int64)
        width = max(1, lm.order - 1)
        padded = np.concatenate([np.full((xs.shape[0], width - 1), NO_TOKEN, dtype=np.int64), xs], axis=1)
        ctx = np.lib.stride_tricks.sliding_window_view(padded, width, axis=1).reshape(-1, width)
        dist = lm.log_distribution(ctx)
        return torch.from_numpy(dist.reshape(*xs.shape, -1)).to(device=idx.device, dtype=torch.float32)

    def sample(self, n: int, length: int, seed: int = 0, prefix: list[int] | None = None) -> list[list[int]]:
        return _require_fit(self.lm).sample(np.random.default_rng(seed), n, length, prefix)

    def state_dict(self) -> dict:
        """The fitted tables (numpy arrays), for checkpoints (harness/checkpoints.py)."""
        return {"lm": _backoff_state(_require_fit(self.lm))}

    def load_state_dict(self, state: dict) -> None:
        self.lm = BackoffLM(**state["lm"])


class NGramClassifier(CountModel):
    """One Kneser-Ney LM per class; logits are log p(x | c) + log p(c)."""

    def __init__(self, cfg: NGramConfig, vocab_size: int, num_classes: int):
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.num_classes = num_classes
        self.lms: list[BackoffLM] = []
        self.log_prior = np.zeros(num_classes)

    def num_params(self) -> int:
        return sum(lm.num_values() for lm in self.lms) + (self.num_classes if self.lms else 0)

    def fit(self, task, budget, tcfg, device, generator) -> dict:
        limit = budget.fit_tokens(int(tcfg["batch_size"]) * int(tcfg["seq_len"]))
        seqs, labels = take_examples(*labeled_sequences(task, "train"), limit)
        labels_np = np.array(labels)
        t0 = time.perf_counter()
        self.lms, per_class = [], []
        for c in range(self.num_classes):
            mine = [np.asarray(s, dtype=np.int64) for s, y in zip(seqs, labels) if y == c]
            if not mine:
                raise UserError(f"class {c} has no training example within the budget; "
                                "raise train.max_tokens or give every class examples")
            lm = estimate(np.concatenate(mine), np.array([len(s) for s in mine]), order=self.cfg.order,
                          vocab=token_names(self.vocab_size), eos=None,
                          discount_fallback=KENLM_FALLBACK if self.cfg.discount_fallback else None)
            self.lms.append(lm)
            per_class.append({"examples": len(mine), "discount_fallback_orders": lm.info["discount_fallback_orders"]})
        counts = np.bincount(labels_np, minlength=self.num_classes)
        self.log_prior = np.log(counts / counts.sum())
        tokens = int(sum(len(s) for s in seqs))
        seconds = time.perf_counter() - t0
        return {"tokens": tokens, "examples": len(seqs), "classes": per_class,
                "tokens_per_s": tokens / seconds if seconds > 0 else None}

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not self.lms:
            raise RuntimeError("the n-gram classifier is used before fit()")
        ids_np, mask_np = ids.detach().cpu().numpy(), mask.detach().cpu().numpy().astype(bool)
        sentences = [row[m].astype(np.int64) for row, m in zip(ids_np, mask_np)]
        out = np.empty((len(sentences), self.num_classes))
        for c, lm in enumerate(self.lms):
            lp, sent = lm.sentence_logprobs(sentences)
            out[:, c] = np.bincount(sent, weights=lp, minlength=len(sentences)) + self.log_prior[c]
        return torch.from_numpy(out).to(device=ids.device, dtype=torch.float32)

    __call__ = forward

    def state_dict(self) -> dict:
        if not self.lms:
            raise RuntimeError("the n-gram classifier is saved before fit()")
        return {"lms": [_backoff_state(lm) for lm in self.lms], "log_prior": self.log_prior}

    def load_state_dict(self, state: dict) -> None:
        self.lms = [BackoffLM(**lm) for lm in state["lms"]]
        self.log_prior = np.asarray(state["log_prior"])


def _backoff_state(lm: BackoffLM) -> dict:
    return {f.name: getattr(lm, f.name) for f in dataclasses.fields(lm)}


@register_arch("ngram", kinds=("lm", "classify"), sizes=SIZES, fitted=True,
               unsupported={"seq2seq": "an n-gram LM has no source side to condition on",
                            "mlm": "masked-LM pretraining needs a bidirectional neural encoder (arch=bert)"})
def build(kind: str, hp: NGramConfig, task: TaskSpec):
    if kind == "classify":
        return NGramClassifier(hp, task.vocab_size, task.num_classes)
    return NGramLM(hp, task.vocab_size)
