"""The fused, chunked linear + cross-entropy equals F.cross_entropy(F.linear(...)) in loss and gradients."""
import pytest
import torch
import torch.nn.functional as F

from archs.layers.fused_ce import linear_cross_entropy


def _both(n, d, v, chunk, ignore=()):
    g = torch.Generator().manual_seed(n * 7 + v)
    h = torch.randn(n, d, generator=g, dtype=torch.float64) * 2
    w = torch.randn(v, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, v, (n,), generator=g)
    for i in ignore:
        y[i] = -100
    out = []
    for fused in (True, False):
        hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
        loss = (linear_cross_entropy(hh, ww, y, chunk_rows=chunk) if fused
                else F.cross_entropy(hh @ ww.t(), y))
        (loss * 3.0).backward()  # a grad_output other than 1
        out.append((loss.detach(), hh.grad, ww.grad))
    return out


@pytest.mark.parametrize("n,chunk", [(37, 8), (64, 64), (10, 256)])
def test_equals_plain_cross_entropy(n, chunk):
    (lf, hf, wf), (lp, hp, wp) = _both(n, 16, 53, chunk)
    assert abs(lf.item() - lp.item()) < 1e-6
    assert torch.allclose(hf, hp, atol=1e-6, rtol=0) and torch.allclose(wf, wp, atol=1e-6, rtol=0)


def test_ignored_targets_are_skipped_like_cross_entropy():
    (lf, hf, wf), (lp, hp, wp) = _both(29, 8, 31, 5, ignore=(0, 3, 11, 28))
    assert abs(lf.item() - lp.item()) < 1e-6
    assert torch.allclose(hf, hp, atol=1e-6, rtol=0) and torch.allclose(wf, wp, atol=1e-6, rtol=0)
    assert hf[3].abs().max() == 0  # an ignored row gets no gradient


def test_fp32_batched_shapes_and_gpt_loss_path():
    """The LM task's loss through GPT.forward(x, targets=y) equals cross-entropy of GPT.forward's logits."""
    from archs.gpt import GPT, GPTConfig
    from tasks.lm import lm_loss

    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, d_model=32, vocab_size=97, block_size=16))
    x, y = torch.randint(0, 97, (3, 16)), torch.randint(0, 97, (3, 16))
    fused = lm_loss(model, x, y)
    fused.backward()
    g_fused = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    plain = F.cross_entropy(model(x).reshape(-1, 97), y.reshape(-1))
    plain.backward()
    assert abs(fused.item() - plain.item()) < 1e-6
    for a, p in zip(g_fused, model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-6, rtol=1e-5)


def test_confidently_wrong_rows_keep_their_exact_loss():
    """A target far below the row's maximum (-log p under-resolved) is scored by log-sum-exp."""
    g = torch.Generator().manual_seed(5)
    h = torch.randn(6, 4, generator=g, dtype=torch.float64) * 60
    w = torch.randn(9, 4, generator=g, dtype=torch.float64)
    logits = h @ w.t()
    y = logits.argmin(1)  # the least likely token of each row: p far below 1e-30
    assert (torch.softmax(logits, 1).gather(1, y[:, None]) < 1e-30).any()
    hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
    fused = linear_cross_entropy(hh, ww, y, chunk_rows=4)
    fused.backward()
    hp, wp = h.clone().requires_grad_(), w.clone().requires_grad_()
    plain = F.cross_entropy(hp @ wp.t(), y)
    plain.backward()
    assert abs(fused.item() - plain.item()) < 1e-6 * max(1.0, abs(plain.item()))
    assert torch.allclose(hh.grad, hp.grad, atol=1e-6) and torch.allclose(ww.grad, wp.grad, atol=1e-6)
