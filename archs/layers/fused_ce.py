"""Linear + cross-entropy fused and chunked: the LM head's loss without the full (N, V) logits.

At a GPT-2 vocabulary the LM head and its cross-entropy are most of a small model's FLOPs, and the
unfused path writes and re-reads several (N, V) fp32 arrays per step (logits, log-softmax, their
gradient), each freshly allocated. Here the rows go through in chunks: one (chunk, V) buffer holds
a chunk's logits, becomes its softmax in place, then its gradient (softmax - onehot), which is
multiplied straight into grad_hidden and grad_weight. The gradients are made in the forward pass
(a loss is followed by its backward in training) and backward only scales them by grad_output, so
the three matmuls are the same as unfused and nothing is recomputed.

Reduction is the mean over targets that are not ``ignore_index`` (F.cross_entropy's default).
"""
from __future__ import annotations

import torch

CHUNK_ROWS = 256  # rows per chunk: one (256, V) fp32 buffer is 51 MB at V = 50304
GPU_CHUNK_ROWS = 4096  # rows per chunk elsewhere: 824 MB of fp32 logits at V = 50304
_WEAK = 1e-30  # a target probability below this is scored by log-sum-exp, not -log p


class LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, chunk_rows):
        n = hidden.shape[0]
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_h else None
        acc = torch.promote_types(weight.dtype, torch.float32)  # fp32 at least, fp64 stays fp64
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        valid = targets != ignore_index
        safe = torch.where(valid, targets, 0).unsqueeze(1)
        total = torch.zeros((), dtype=acc, device=hidden.device)
        # the planner runs this on meta tensors: no data-dependent branches there
        any_ignored = hidden.device.type != "meta" and not bool(valid.all())
        # on a CPU at one dtype: two reused (chunk, V) buffers and out= kernels, no fresh allocations
        reuse = hidden.device.type == "cpu" and hidden.dtype == weight.dtype == acc
        buf = None
        for s in range(0, n, chunk_rows):
            h, t, ok = hidden[s:s + chunk_rows], safe[s:s + chunk_rows], valid[s:s + chunk_rows]
            rows = h.shape[0]
            if reuse:
                buf = buf if buf is not None else torch.empty(2, rows, weight.shape[0], dtype=acc, device=h.device)
                z, p = torch.mm(h, weight.t(), out=buf[0, :rows]), buf[1, :rows]
            else:
                z = (h @ weight.t()).to(acc)  # autocast decides the matmul dtype; softmax is fp32 at least
                p = torch.empty_like(z)
            torch.ops.aten._softmax.out(z, 1, False, out=p)  # one row-wise kernel: each row read once from memory
            p_t = p.gather(1, t).squeeze(1)
            if h.device.type == "cpu":
                nll = -torch.log(p_t)
                weak = p_t < _WEAK  # -log p loses precision (or is inf) there: the exact log-sum-exp instead
                if bool(weak.any()):
                    zw = z[weak]
                    nll[weak] = torch.logsumexp(zw, 1) - zw.gather(1, t[weak]).squeeze(1)
            else:  # no host sync per chunk on an accelerator (or meta): one more read of the chunk instead
                nll = torch.logsumexp(z, 1) - z.gather(1, t).squeeze(1)
            total += torch.where(ok, nll, 0.0).sum()
            if need_h or need_w:
                p.scatter_add_(1, t, torch.full_like(p_t, -1.0).unsqueeze(1))  # softmax - onehot
                if any_ignored:
                    p.mul_(ok.unsqueeze(1))  # ignored rows have no gradient
                g = p.to(weight.dtype)
                if need_h:
                    if reuse:
                        torch.mm(g, weight, out=grad_h[s:s + rows])
                    else:
                        grad_h[s:s + rows] = g @ weight
                if need_w:
                    if reuse:
                        grad_w.addmm_(g.t(), h)
                    else:
                        grad_w += g.t() @ h
        count = valid.sum().clamp(min=1).to(acc)
        ctx.save_for_backward(grad_h, grad_w, count)
        ctx.weight_dtype = weight.dtype
        return total / count

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, count = ctx.saved_tensors
        scale = grad_out / count
        gh = grad_h * scale.to(grad_h.dtype) if grad_h is not None else None
        gw = (grad_w * scale).to(ctx.weight_dtype) if grad_w is not None else None
        return gh, gw, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         ignore_index: int = -100, chunk_rows: int | None = None) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets``; hidden (..., D), weight (V, D),
    targets (...); equal to F.cross_entropy(F.linear(hidden, weight), targets) without its logits.
    ``chunk_rows``: CHUNK_ROWS on a CPU, GPU_CHUNK_ROWS elsewhere (fewer, larger kernels)."""
    h = hidden.reshape(-1, hidden.shape[-1])
    chunk_rows = chunk_rows or (CHUNK_ROWS if h.device.type == "cpu" else GPU_CHUNK_ROWS)
    return LinearCrossEntropy.apply(h, weight, targets.reshape(-1), ignore_index, chunk_rows)
