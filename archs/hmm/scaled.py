"""The E-step in probability space with per-step scaling (Rabiner 1989, section V.A): the fast path.

Log space costs about a dozen small tensor ops per time step (max, shifts, exps, logs); scaled
probabilities cost four (a product, a sum, a division, a matmul), which is what bounds a batched
forward-backward at small K. Emissions are shifted by their per-position maximum before ``exp`` so
the largest is 1, and every filtered distribution is renormalized, so nothing overflows; if some
step's normalizer still underflows to 0 (a sequence the model finds impossible to fp32 precision),
``None`` is returned and the caller uses the log-space recursion, which is exact there.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def scaled_expected_counts(x: torch.Tensor, em: torch.Tensor, real: torch.Tensor, log_start: torch.Tensor,
                           log_trans: torch.Tensor, vocab_size: int):
    """(start, trans, emit (K, V), log-likelihood) as HMM.expected_counts returns them, or None.

    em: (B, T, K) log emissions with 0 at padding; real: (B, T) 1.0 at real tokens."""
    b, t_len, k = em.shape
    emax = em.max(-1, keepdim=True).values
    e = torch.exp(em - emax)  # (B, T, K), max 1 at each position
    a = torch.exp(log_trans)
    p = torch.exp(log_start).expand(b, k)
    filt = torch.empty_like(e)
    norm = torch.empty(b, t_len, 1, dtype=e.dtype, device=e.device)
    for t in range(t_len):
        w = p * e[:, t]
        c = w.sum(-1, keepdim=True)
        norm[:, t] = c
        f = w / c
        filt[:, t] = f
        p = f @ a
    if not bool((norm > 0).all()):
        return None
    right = torch.empty_like(e)  # e_t * beta_t / c_t, what both the backward step and the counts use
    beta = torch.ones(b, k, dtype=e.dtype, device=e.device)
    a_t = a.t()
    for t in range(t_len - 1, -1, -1):
        r = e[:, t] * beta / norm[:, t]
        right[:, t] = r
        beta = r @ a_t
    # beta_t = right_{t+1} @ A^T; posterior = filt * beta = filt * (right shifted by one) @ A^T
    post = torch.empty_like(e)
    post[:, :-1] = filt[:, :-1] * (right[:, 1:] @ a_t)
    post[:, -1] = filt[:, -1]
    post = post * real.unsqueeze(-1)
    if not bool(torch.isfinite(post).all()):
        return None
    start = post[:, 0].sum(0)
    emit = torch.zeros(vocab_size, k, dtype=post.dtype, device=post.device)
    emit.index_add_(0, x.reshape(-1), post.reshape(-1, k))
    trans = torch.zeros(k, k, dtype=post.dtype, device=post.device)
    if t_len > 1:
        left = filt[:, :-1] * real[:, 1:].unsqueeze(-1)
        trans = a * (left.reshape(-1, k).t() @ right[:, 1:].reshape(-1, k))
    log_lik = (torch.log(norm.squeeze(-1)) + emax.squeeze(-1)) * real
    return start, trans, emit.t(), float(log_lik.sum())
