"""Discrete-emission hidden Markov model (``arch=hmm``): a K-state HMM as a language model and, one HMM
per class, as a classifier.

All inference is batched torch in log space, so it runs on a GPU as well as here:

- forward (filtering): log p(z_t | x_<=t) and log p(x_t | x_<t) per step; the next-token distribution
  log p(x_t+1 | x_<=t) is what ``forward(idx)`` returns as logits, so the model trains through the
  one training loop on the exact marginal likelihood (``arch.training=gradient``);
- backward, state posteriors and expected counts: Baum-Welch EM (``arch.training=em``, fit like the
  n-gram: the run calls ``fit``);
- Viterbi decoding and ancestral sampling.

A log-space "matrix-vector product" log(exp(u) @ exp(L)) is computed as
m + c + log(exp(u - m) @ exp(L - c)) with m the row max of u and c the column max of L: one matmul
per step instead of a (B, K, K) logsumexp, exact up to terms more than ~1e-38 (fp32) below the
largest one in each column; results are clamped there rather than becoming -inf.

FLOPs per token: the forward step is one (K x K) matvec (2K^2); gradient training adds the
next-token distribution (2KV) and backpropagation (x3): 6K^2 + 6KV. One EM pass is forward,
backward and the expected-transition product: 6K^2. Elementwise work (O(K)) is not counted.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from archbench import Recipe, TaskSpec, register_arch
from archbench.errors import UserError
from archbench.model import NeuralLM, NeuralModel
from archs.hmm.forward_filter import _ForwardFilter, _log_matvec, _shift_cols, filter_steps
from archs.hmm.scaled import scaled_expected_counts
from archs.layers.fit_data import labeled_sequences, take_examples

TRAINING = ("gradient", "em")


@dataclass(frozen=True)
class HMMConfig:
    n_states: int = 64
    training: str = "gradient"  # gradient: the training loop on the exact marginal likelihood | em: Baum-Welch
    em_iters: int = 10  # EM: passes over the training set (which is the token budget / em_iters tokens)
    em_pseudocount: float = 0.01  # EM: added to every expected count in the M-step (0 = maximum likelihood)
    init_std: float = 1.0  # std of the random logits the parameters start from
    logit_scale: float = 30.0  # logits = logit_scale x stored parameter: the step size of gradient training, relative to train.lr
    vocab_size: int | None = None  # None -> the task tokenizer's vocabulary

    def __post_init__(self):
        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        if not is_int(self.n_states) or self.n_states < 1:
            raise UserError(f"arch.n_states (K) must be an integer >= 1, got {self.n_states!r}")
        if self.training not in TRAINING:
            raise UserError(f"arch.training must be one of {', '.join(TRAINING)}, got {self.training!r}")
        if not is_int(self.em_iters) or self.em_iters < 1:
            raise UserError(f"arch.em_iters must be an integer >= 1, got {self.em_iters!r}")
        if isinstance(self.em_pseudocount, bool) or not isinstance(self.em_pseudocount, (int, float)) \
                or self.em_pseudocount < 0:
            raise UserError(f"arch.em_pseudocount must be a number >= 0, got {self.em_pseudocount!r}")
        if isinstance(self.init_std, bool) or not isinstance(self.init_std, (int, float)) or self.init_std < 0:
            raise UserError(f"arch.init_std must be a number >= 0, got {self.init_std!r}")
        if isinstance(self.logit_scale, bool) or not isinstance(self.logit_scale, (int, float)) or self.logit_scale <= 0:
            raise UserError(f"arch.logit_scale must be a number > 0, got {self.logit_scale!r}")


SIZES = {
    "tiny": HMMConfig(n_states=64),
    "small": HMMConfig(n_states=256),
    "medium": HMMConfig(n_states=512),
    "large": HMMConfig(n_states=1024),
}
# Gradient training (arch.training=gradient): logit_scale was set for AdamW at lr 3e-3 (the step size
# in logit space is lr x logit_scale), so the recipe states that lr; untuned beyond that choice.
# EM ignores the optimizer keys.
RECIPES = {size: Recipe(source="AdamW lr 3e-3 with logit_scale 30 (the scale was chosen for this lr; untuned)",
                        lr=3e-3, schedule="cosine", warmup_steps=30) for size in SIZES}


class HMM(nn.Module):
    """Parameters are unconstrained: logits = logit_scale x parameter, probabilities their softmax.

    ``logit_scale`` exists for gradient training under the study's one optimizer setting: AdamW moves
    each parameter by about train.lr per step, a learning rate tuned for neural nets (3e-3 here) that
    leaves HMM logits almost where they started (K=64, 300 steps: 6.8 bits/byte at scale 1, about
    3.8 at an effective step of 0.1). Scaling the logits makes the same train.lr move them
    logit_scale times further, with no optimizer special case; EM and likelihoods are unaffected."""

    def __init__(self, n_states: int, vocab_size: int, init_std: float = 1.0, generator: torch.Generator | None = None,
                 logit_scale: float = 1.0):
        super().__init__()
        k, v = n_states, vocab_size
        self.n_states, self.vocab_size, self.logit_scale = k, v, float(logit_scale)
        std = init_std / self.logit_scale
        self.start_logits = nn.Parameter(torch.randn(k, generator=generator) * std)
        self.trans_logits = nn.Parameter(torch.randn(k, k, generator=generator) * std)
        self.emit_logits = nn.Parameter(torch.randn(k, v, generator=generator) * std)

    # ----- parameters -----
    def log_params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.logit_scale
        return (F.log_softmax(c * self.start_logits, -1), F.log_softmax(c * self.trans_logits, -1),
                F.log_softmax(c * self.emit_logits, -1))

    @torch.no_grad()
    def set_probabilities(self, start, trans, emit) -> None:
        """Load probabilities (e.g. from another library); zeros become the smallest normal float."""
        for p, value in ((self.start_logits, start), (self.trans_logits, trans), (self.emit_logits, emit)):
            t = torch.as_tensor(np.asarray(value), dtype=p.dtype, device=p.device)
            p.copy_(torch.log(t.clamp_min(torch.finfo(p.dtype).tiny)) / self.logit_scale)

    def _emissions(self, log_emit: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, K) log p(x_t | z_t = k); 0 at padding (no observation there)."""
        em = log_emit.t()[x]
        return em if mask is None else em * mask.unsqueeze(-1).to(em.dtype)

    # ----- inference -----
    def filter(self, x: torch.Tensor, mask: torch.Tensor | None = None, params=None, reference: bool = False):
        """Forward algorithm. Returns (log p(z_t | x_<=t) (B,T,K), log p(x_t | x_<t) (B,T) with 0 at
        padding, log p(z_t+1 | x_<=t) (B,T,K)). ``reference=True``: plain autograd through the steps."""
        log_start, log_trans, log_emit = params or self.log_params()
        em = self._emissions(log_emit, x, mask)
        a_max = log_trans.max(0).values.detach()  # the shift cancels exactly: no gradient through it
        a_shift = torch.exp(log_trans - a_max)
        if reference:
            return filter_steps(em, log_start, a_shift, a_max)[:3]
        return _ForwardFilter.apply(em, log_start, a_shift, a_max)

    def log_likelihood(self, x: torch.Tensor, mask: torch.Tensor | None = None, params=None) -> torch.Tensor:
        """log p(x_1 .. x_T) per sequence (B,), padding excluded."""
        return self.filter(x, mask, params)[1].sum(1)

    def backward_messages(self, x, mask, log_norm, params) -> torch.Tensor:
        """Scaled backward messages: log beta_t with beta_t(i) = p(x_>t | z_t = i) / p(x_>t | x_<=t)."""
        _, log_trans, log_emit = params
        em = self._emissions(log_emit, x, mask)
        r = log_trans.max(1).values
        a_rows = torch.exp(log_trans - r.unsqueeze(1))  # exp(L - row max): log(A @ exp(g)) = r + log(a_rows @ exp(g))
        b, t_len = x.shape
        beta = [torch.zeros(b, self.n_states, dtype=em.dtype, device=em.device)]
        for t in range(t_len - 2, -1, -1):
            g = em[:, t + 1] + beta[-1]
            m = g.max(-1, keepdim=True).values
            s = torch.exp(g - m) @ a_rows.t()
            beta.append(torch.log(s.clamp_min(torch.finfo(s.dtype).tiny)) + m + r - log_norm[:, t + 1:t + 2])
        return torch.stack(beta[::-1], 1)

    @torch.no_grad()
    def expected_counts(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        """E-step: expected start, transition and emission counts, and the summed log-likelihood."""
        params = self.log_params()
        log_start, log_trans, log_emit = params
        real = torch.ones_like(x, dtype=log_emit.dtype) if mask is None else mask.to(log_emit.dtype)
        fast = scaled_expected_counts(x, self._emissions(log_emit, x, mask), real, log_start, log_trans,
                                      self.vocab_size)
        if fast is not None:  # probability space with scaling; log space only where that underflows
            return fast
        log_filt, log_norm, _ = self.filter(x, mask, params)
        log_beta = self.backward_messages(x, mask, log_norm, params)
        post = torch.exp(log_filt + log_beta)  # p(z_t | x), (B, T, K)
        real = torch.ones_like(x, dtype=post.dtype) if mask is None else mask.to(post.dtype)
        post = post * real.unsqueeze(-1)
        start = post[:, 0].sum(0)
        k, v = self.n_states, self.vocab_size
        emit = torch.zeros(v, k, dtype=post.dtype, device=post.device)
        emit.index_add_(0, x.reshape(-1), post.reshape(-1, k))
        trans = torch.zeros(k, k, dtype=post.dtype, device=post.device)
        if x.shape[1] > 1:
            em = self._emissions(log_emit, x, mask)
            g = em[:, 1:] + log_beta[:, 1:] - log_norm[:, 1:].unsqueeze(-1)  # (B, T-1, K)
            gm = g.max(-1, keepdim=True).values
            left = torch.exp(log_filt[:, :-1] + gm) * real[:, 1:].unsqueeze(-1)
            right = torch.exp(g - gm)
            trans = torch.exp(log_trans) * (left.reshape(-1, k).t() @ right.reshape(-1, k))
        return start, trans, emit.t(), float(log_norm.sum())

    @torch.no_grad()
    def m_step(self, start, trans, emit, pseudocount: float) -> None:
        """Maximum-likelihood (pseudocount 0) or smoothed re-estimation from expected counts."""
        def normalize(c):
            c = c + pseudocount
            return c / c.sum(-1, keepdim=True).clamp_min(torch.finfo(c.dtype).tiny)

        self.set_probabilities(normalize(start).cpu().numpy(), normalize(trans).cpu().numpy(),
                               normalize(emit).cpu().numpy())

    @torch.no_grad()
    def viterbi(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Most likely state path (B, T) (padding repeats the last real state) and its log-probability."""
        log_start, log_trans, log_emit = self.log_params()
        em = self._emissions(log_emit, x, mask)
        b, t_len = x.shape
        k = self.n_states
        keep = torch.arange(k, device=x.device).expand(b, k)
        delta = log_start + em[:, 0]
        back = []
        for t in range(1, t_len):
            best, arg = (delta.unsqueeze(2) + log_trans).max(1)
            new = best + em[:, t]
            if mask is not None:
                real = mask[:, t].unsqueeze(-1)
                new, arg = torch.where(real, new, delta), torch.where(real, arg, keep)
            delta = new
            back.append(arg)
        score, last = delta.max(-1)
        path = [last]
        for arg in reversed(back):
            path.append(arg.gather(1, path[-1].unsqueeze(1)).squeeze(1))
        return torch.stack(path[::-1], 1), score

    @torch.no_grad()
    def sample(self, n: int, length: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(states, tokens), each (n, length), by ancestral sampling."""
        log_start, log_trans, log_emit = self.log_params()
        start, trans, emit = log_start.exp(), log_trans.exp(), log_emit.exp()
        z = torch.multinomial(start.expand(n, -1), 1, generator=generator).squeeze(1)
        states, tokens = [], []
        for t in range(length):
            if t:
                z = torch.multinomial(trans[z], 1, generator=generator).squeeze(1)
            states.append(z)
            tokens.append(torch.multinomial(emit[z], 1, generator=generator).squeeze(1))
        return torch.stack(states, 1), torch.stack(tokens, 1)

    def next_token_logprobs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, V): log p(x_t+1 = v | x_<=t) at every position."""
        params = self.log_params()
        _, _, pred = self.filter(x, None, params)
        e_shift, e_max = _shift_cols(params[2])
        return _log_matvec(pred, e_shift, e_max)


def run_em(hmm: HMM, batches: list[tuple[torch.Tensor, torch.Tensor | None]], iters: int, pseudocount: float,
           max_seconds: float | None = None) -> dict:
    """Baum-Welch: ``iters`` full passes (E-step over every batch, then one M-step)."""
    tokens = sum(int(m.sum()) if m is not None else x.numel() for x, m in batches)
    history, t0, done = [], time.perf_counter(), 0
    for _ in range(iters):
        acc = None
        loglik = 0.0
        for x, m in batches:
            s, tr, e, ll = hmm.expected_counts(x, m)
            acc = [s, tr, e] if acc is None else [acc[0] + s, acc[1] + tr, acc[2] + e]
            loglik += ll
        hmm.m_step(*acc, pseudocount)
        done += 1
        history.append(loglik / tokens)
        if max_seconds and time.perf_counter() - t0 >= max_seconds:
            break
    seconds = time.perf_counter() - t0
    return {"em_iterations": done, "train_loglik_per_token": history, "distinct_tokens": tokens,
            "tokens": tokens * done, "tokens_per_s": tokens * done / seconds if seconds > 0 else None,
            "loglik_note": "each entry is the log-likelihood under the parameters before that iteration's M-step"}


def _pad(seqs: list, device) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(1, max(len(s) for s in seqs))
    x = torch.zeros(len(seqs), t, dtype=torch.long)
    mask = torch.zeros(len(seqs), t, dtype=torch.bool)
    for i, s in enumerate(seqs):
        x[i, :len(s)] = torch.as_tensor(np.asarray(s, dtype=np.int64))
        mask[i, :len(s)] = True
    return x.to(device), mask.to(device)


class HMMLM(NeuralLM):
    """An HMM language model; ``fitted`` (EM) or trained by the loop (gradient), per instance."""

    def __init__(self, cfg: HMMConfig):
        super().__init__()
        self.cfg = cfg
        self.fitted = cfg.training == "em"
        self.hmm = HMM(cfg.n_states, cfg.vocab_size, cfg.init_std, logit_scale=cfg.logit_scale)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.hmm.next_token_logprobs(idx)

    def flops_per_token(self, seq_len: int) -> int:
        k, v = self.cfg.n_states, self.cfg.vocab_size
        return 6 * k * k if self.fitted else 6 * k * k + 6 * k * v

    def fit(self, task, budget, tcfg, device, generator) -> dict:
        """Baum-Welch on the start of the training stream, cut into seq_len windows; the set holds
        token budget / em_iters tokens, so the whole fit reads at most the budget."""
        stream = np.asarray(task.streams["train"], dtype=np.int64)
        limit = budget.fit_tokens(int(tcfg["batch_size"]) * int(tcfg["seq_len"]))
        n = len(stream) if limit is None else min(len(stream), max(1, limit // self.cfg.em_iters))
        seq_len, batch = int(tcfg["seq_len"]), int(tcfg["batch_size"])
        rows = [stream[i:min(i + seq_len, n)] for i in range(0, n, seq_len)]
        batches = [_pad(rows[i:i + batch], device) for i in range(0, len(rows), batch)]
        info = run_em(self.hmm, batches, self.cfg.em_iters, self.cfg.em_pseudocount, budget.seconds)
        info["train_tokens_available"] = int(len(stream))
        return info


class HMMClassifier(NeuralModel):
    """One HMM per class; logits = log p(x | c) + log prior(c). EM fits each class's HMM on its own
    examples with the prior at the class frequencies; gradient training learns all of it jointly on
    the classification loss (discriminative)."""

    def __init__(self, cfg: HMMConfig, num_classes: int):
        super().__init__()
        self.cfg = cfg
        self.fitted = cfg.training == "em"
        self.hmms = nn.ModuleList(HMM(cfg.n_states, cfg.vocab_size, cfg.init_std, logit_scale=cfg.logit_scale)
                                  for _ in range(num_classes))
        self.log_prior = nn.Parameter(torch.zeros(num_classes), requires_grad=not self.fitted)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ll = torch.stack([h.log_likelihood(ids, mask) for h in self.hmms], -1)
        return ll + F.log_softmax(self.log_prior, -1)

    def flops_per_token(self, seq_len: int) -> int:
        """EM: each token passes through its own class's HMM (6K^2); gradient: through all C HMMs'
        forward filters, x3 for backpropagation (6CK^2)."""
        k, c = self.cfg.n_states, len(self.hmms)
        return 6 * k * k if self.fitted else c * 6 * k * k

    def fit(self, task, budget, tcfg, device, generator) -> dict:
        limit = budget.fit_tokens(int(tcfg["batch_size"]) * int(tcfg["seq_len"]))
        seqs, labels = take_examples(*labeled_sequences(task, "train"), limit)
        batch = int(tcfg["batch_size"])
        classes, total = [], {"tokens": 0, "seconds": 0.0}
        for c, hmm in enumerate(self.hmms):
            mine = [s for s, y in zip(seqs, labels) if y == c]
            if not mine:
                raise UserError(f"class {c} has no training example within the budget; "
                                "raise train.max_tokens or give every class examples")
            batches = [_pad(mine[i:i + batch], device) for i in range(0, len(mine), batch)]
            info = run_em(hmm, batches, self.cfg.em_iters, self.cfg.em_pseudocount, budget.seconds)
            classes.append({"examples": len(mine), "em_iterations": info["em_iterations"],
                            "train_loglik_per_token": info["train_loglik_per_token"][-1]})
            total["tokens"] += info["tokens"]
            total["seconds"] += info["tokens"] / info["tokens_per_s"] if info["tokens_per_s"] else 0.0
        counts = torch.bincount(torch.tensor(labels), minlength=len(self.hmms)).to(self.log_prior)
        with torch.no_grad():
            self.log_prior.copy_(torch.log(counts / counts.sum()))
        return {"tokens": total["tokens"], "examples": len(seqs), "classes": classes,
                "tokens_per_s": total["tokens"] / total["seconds"] if total["seconds"] else None}


@register_arch("hmm", kinds=("lm", "classify"), sizes=SIZES, recipes=RECIPES,
               unsupported={"seq2seq": "an HMM generates one sequence; it has no source side to condition on",
                            "mlm": "masked-LM pretraining needs a bidirectional neural encoder (arch=bert)"})
def build(kind: str, hp: HMMConfig, task: TaskSpec):
    hp = replace(hp, vocab_size=task.vocab_size)
    if kind == "classify":
        return HMMClassifier(hp, task.num_classes)
    return HMMLM(hp)
