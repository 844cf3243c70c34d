"""The HMM's forward recursion in log space, batched, with a hand-written backward pass.

A log-space "matrix-vector product" log(exp(u) @ exp(L)) is computed as m + c + log(exp(u - m) @
exp(L - c)) with m the row max of u and c the column max of L: one matmul per step instead of a
(B, K, K) logsumexp. ``_ForwardFilter`` is an autograd Function whose backward recomputes nothing
it saved (written by hand because autograd through T sequential steps keeps T graphs alive);
``filter_steps`` is the plain-autograd version of the same recursion, its test oracle.
"""
from __future__ import annotations

import torch


def _shift_cols(log_m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """exp(L - column max) and the column max, for log-space products u @ L."""
    c = log_m.max(0).values
    return torch.exp(log_m - c), c


def _log_matvec(log_u: torch.Tensor, m_shift: torch.Tensor, col_max: torch.Tensor) -> torch.Tensor:
    """log(exp(log_u) @ exp(L)) for rows of log_u (..., K), with (m_shift, col_max) = _shift_cols(L)."""
    m = log_u.max(-1, keepdim=True).values
    s = torch.exp(log_u - m) @ m_shift
    return torch.log(s.clamp_min(torch.finfo(s.dtype).tiny)) + m + col_max


def filter_steps(em: torch.Tensor, log_start: torch.Tensor, a_shift: torch.Tensor, a_max: torch.Tensor):
    """The forward recursion, step by step (differentiable by plain autograd: the test oracle for
    _ForwardFilter). em: (B, T, K) log emission of each observed token. Returns the filtered
    log p(z_t | x_<=t), the log normalizers log p(x_t | x_<t) and the predictive log p(z_t+1 | x_<=t),
    plus the intermediates the hand-written backward needs."""
    b, t_len, k = em.shape
    prior = log_start.expand(b, k)
    tiny = torch.finfo(em.dtype).tiny
    filt, norm, pred, us, ss = [], [], [], [], []
    for t in range(t_len):
        joint = prior + em[:, t]
        jm = joint.max(-1, keepdim=True).values.detach()  # the shift cancels exactly: no gradient through it
        u = torch.exp(joint - jm)  # = exp(lf - max lf): one exp serves the normalizer and the product
        lc = jm + torch.log(u.sum(-1, keepdim=True))
        lf = joint - lc
        s = (u @ a_shift).clamp_min(tiny)
        prior = torch.log(s) + (jm - lc) + a_max
        lc = lc.squeeze(-1)
        filt.append(lf), norm.append(lc), pred.append(prior), us.append(u), ss.append(s)
    stack = lambda xs: torch.stack(xs, 1)  # noqa: E731
    return stack(filt), stack(norm), stack(pred), stack(us), stack(ss)


class _ForwardFilter(torch.autograd.Function):
    """The forward algorithm with a hand-written backward. Autograd through the step loop would add a
    (K x K) gradient into the transition matrix at every step; here the per-step backward carries
    only (B, K) adjoints and the transition gradient is one (K x BT) @ (BT x K) matmul at the end."""

    @staticmethod
    def forward(ctx, em, log_start, a_shift, a_max):
        with torch.no_grad():
            filt, norm, pred, u, s = filter_steps(em, log_start, a_shift, a_max)
        ctx.save_for_backward(a_shift, filt, u, s)
        return filt, norm, pred

    @staticmethod
    def backward(ctx, g_filt, g_norm, g_pred):
        a_shift, filt, u, s = ctx.saved_tensors
        b, t_len, k = filt.shape
        g_em = torch.empty_like(filt)
        g_s = torch.empty_like(filt)
        g_joint = torch.zeros(b, k, dtype=filt.dtype, device=filt.device)
        a_t = a_shift.t()
        for t in range(t_len - 1, -1, -1):
            gp = g_pred[:, t] + g_joint  # prior_{t+1} feeds joint_{t+1} one-to-one
            gs = gp / s[:, t]
            g_s[:, t] = gs
            gl = (gs @ a_t) * u[:, t] + g_filt[:, t]  # d/d lf_t (the max shift cancels)
            gc = g_norm[:, t] - gl.sum(-1)  # d/d log c_t
            g_joint = gl + gc.unsqueeze(-1) * torch.exp(filt[:, t])
            g_em[:, t] = g_joint
        g_shift = u.reshape(-1, k).t() @ g_s.reshape(-1, k)
        return g_em, g_joint.sum(0), g_shift, None  # a_max comes in detached (its effect cancels)
