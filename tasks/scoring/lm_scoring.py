"""How a language model's log-likelihood of a token sequence is measured.

One definition, used by our LM evaluator (tasks/lm.py) and by the lm-eval adapter
(harness/lmeval/model.py), so that our bits per byte and lm-eval's agree to the last digit:

* ``rolling_nll``: every token after a context is predicted exactly once, in non-overlapping windows of
  the run's context length (what perplexity and bits per byte are made of);
* ``continuation_scores``: log p(continuation | context) and whether greedy decoding would produce the
  continuation, each prediction seeing as much of the context as the window allows (lm-eval's
  ``loglikelihood``);
* ``rolling_scores``: the same windows, also summed by position inside the window (loss vs context);
* ``boundary_ids``: a text scored as a document that starts after a document boundary (the separator
  the LM task joins documents with), so its first token is predicted too.

Models are called through the lm contract in archbench/model.py only; both are causal (position t sees
x_<=t), which is what makes right-padding a batch of windows of different lengths harmless.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from archbench import EVAL_BATCH


def boundary_ids(tokenizer, text: str, boundary: str) -> tuple[torch.Tensor, int]:
    """(ids, n_context): encode(boundary) + encode(text), with the boundary tokens as context only."""
    context = tokenizer.encode(boundary)
    if len(context) < 1:
        raise ValueError(f"document boundary {boundary!r} encodes to no tokens")
    ids = np.concatenate([context, tokenizer.encode(text)]).astype(np.int64)
    return torch.from_numpy(ids), len(context)


@torch.no_grad()
def rolling_nll(model, ids: torch.Tensor, n_context: int, seq_len: int, device,
                batch_size: int = EVAL_BATCH) -> tuple[float, int]:
    """Summed negative log-likelihood (nats, float64) of ids[n_context:] and how many tokens that is.

    ids[:n_context] is context only; every later token is a target. Targets are scored in
    non-overlapping windows of ``seq_len``: the window whose first target is at position s reads
    inputs ids[s-1 : s-1+L] and predicts ids[s : s+L] (the last window may be shorter).
    """
    scores = rolling_scores(model, ids, n_context, seq_len, device, batch_size)
    return scores.total, scores.count


@dataclass
class RollingScores:
    """What one pass of the rolling windows measures: the total NLL (nats) and target count, and the
    same split by position inside the window (index j predicts with j + 1 tokens of input)."""
    total: float
    count: int
    by_position_nll: np.ndarray  # (seq_len,) summed nats, float64
    by_position_count: np.ndarray  # (seq_len,) targets at each position
    token_nll: list = None  # per-target nats in stream order (ids[n_context:]), float64 chunks

    def per_token(self) -> np.ndarray:
        """The NLL (nats) of every target, in the order of ids[n_context:]."""
        return np.concatenate(self.token_nll) if self.token_nll else np.zeros(0)

    def mean_by_position(self) -> list[float]:
        """Mean nats per token at each window position that scored at least one target."""
        n = self.by_position_count
        return [float(s / c) for s, c in zip(self.by_position_nll, n) if c > 0]


@torch.no_grad()
def rolling_scores(model, ids: torch.Tensor, n_context: int, seq_len: int, device,
                   batch_size: int = EVAL_BATCH, stride: int | None = None) -> RollingScores:
    """rolling_nll's windows, also summed per window position (for loss-vs-context-position curves).

    ``stride`` < seq_len: sliding windows instead (the protocol of Press et al. 2021 and HF's perplexity
    guide): the first window scores all its targets, each later window of ``seq_len`` inputs moves by
    ``stride`` and scores only its last ``stride`` targets, so every target but the first ones sees at
    least seq_len - stride tokens of context and the score depends far less on the window length."""
    if stride is not None and stride < seq_len:
        return _sliding_scores(model, ids, n_context, seq_len, stride, device, batch_size)
    if ids.dim() != 1:
        raise ValueError(f"ids must be 1-D, got shape {tuple(ids.shape)}")
    if not 1 <= n_context <= len(ids):
        raise ValueError(f"n_context must be in [1, {len(ids)}], got {n_context}")
    n = len(ids)
    starts = range(n_context, n, seq_len)
    full = [s for s in starts if s + seq_len <= n]
    short = [s for s in starts if s + seq_len > n]  # at most one: the tail
    out = RollingScores(0.0, 0, np.zeros(seq_len, dtype=np.float64), np.zeros(seq_len, dtype=np.int64), [])

    add = functools.partial(_add, out)

    offsets = torch.arange(seq_len + 1)
    for i in range(0, len(full), batch_size):
        first = torch.tensor(full[i:i + batch_size]) - 1
        window = ids[first[:, None] + offsets].to(device)
        add(model.target_logprobs(window[:, :-1], window[:, 1:]))
    for s in short:
        window = ids[s - 1:n][None].to(device)
        add(model.target_logprobs(window[:, :-1], window[:, 1:]))
    return out


def _add(out: RollingScores, lp: torch.Tensor, first_position: int = 0) -> None:
    """Count scored log-probs (B, W) whose first column is window position ``first_position``."""
    nll = -lp.double()
    out.total += nll.sum().item()
    out.count += nll.numel()
    cols = slice(first_position, first_position + nll.shape[1])
    out.by_position_nll[cols] += nll.sum(0).cpu().numpy()
    out.by_position_count[cols] += nll.shape[0]
    out.token_nll.append(nll.reshape(-1).cpu().numpy())  # windows come in stream order


def _sliding_scores(model, ids, n_context: int, seq_len: int, stride: int, device, batch_size: int) -> RollingScores:
    n = len(ids)
    out = RollingScores(0.0, 0, np.zeros(seq_len, dtype=np.float64), np.zeros(seq_len, dtype=np.int64), [])
    first_end = min(n, n_context + seq_len)
    window = ids[n_context - 1:first_end][None].to(device)
    _add(out, model.target_logprobs(window[:, :-1], window[:, 1:]))
    if first_end == n:
        return out
    # later blocks of `stride` targets [s, e), each read from a full window ending at e
    blocks = [(s, min(s + stride, n)) for s in range(first_end, n, stride)]
    full = [b for b in blocks if b[1] - b[0] == stride]
    offsets = torch.arange(seq_len + 1)
    for i in range(0, len(full), batch_size):
        lo = torch.tensor([e for _, e in full[i:i + batch_size]]) - 1 - seq_len
        w = ids[lo[:, None] + offsets].to(device)
        _add(out, model.target_logprobs(w[:, :-1], w[:, 1:])[:, -stride:], seq_len - stride)
    for s, e in blocks[len(full):]:  # the tail, shorter than a stride
        w = ids[e - 1 - seq_len:e][None].to(device)
        _add(out, model.target_logprobs(w[:, :-1], w[:, 1:])[:, -(e - s):], seq_len - (e - s))
    return out


@torch.no_grad()
def continuation_scores(model, requests: list[tuple[torch.Tensor, int]], seq_len: int, device,
                        batch_size: int = EVAL_BATCH) -> list[tuple[float, bool]]:
    """For each (ids, n_context): (sum of log p over ids[n_context:] in float64, is_greedy).

    is_greedy: every continuation token is the argmax of the model's next-token distribution
    (``next_token_logprobs``). A continuation longer than ``seq_len`` is scored in chunks of ``seq_len``
    targets, each chunk reading the ``seq_len`` tokens right before its last target, so every prediction
    sees the most context the window allows. Windows of all requests are batched longest first and
    right-padded (harmless for causal models).
    """
    windows = []  # (request, inputs, targets, how many of the last targets are scored)
    for r, (ids, n_context) in enumerate(requests):
        if not 1 <= n_context <= len(ids):
            raise ValueError(f"n_context must be in [1, {len(ids)}], got {n_context}")
        n = len(ids)
        for s in range(n_context, n, seq_len):
            e = min(s + seq_len, n)
            lo = max(0, e - 1 - seq_len)
            windows.append((r, ids[lo:e - 1], ids[lo + 1:e], e - s))
    logprob = [0.0] * len(requests)
    greedy = [True] * len(requests)
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i][1]))
    for b in range(0, len(order), batch_size):
        chunk = [windows[i] for i in order[b:b + batch_size]]
        x = torch.zeros(len(chunk), len(chunk[0][1]), dtype=torch.long)
        for row, (_, inputs, _, _) in enumerate(chunk):
            x[row, :len(inputs)] = inputs
        lp = model.next_token_logprobs(x.to(device))
        for row, (r, inputs, targets, k) in enumerate(chunk):
            m = len(inputs)
            dist = lp[row, m - k:m]
            tgt = targets[m - k:].to(dist.device)
            logprob[r] += dist.gather(-1, tgt[:, None]).double().sum().item()
            greedy[r] = greedy[r] and bool((dist.argmax(-1) == tgt).all())
    return list(zip(logprob, greedy))
