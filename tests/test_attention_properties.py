"""Property tests of the attention function and of the models built on it (hypothesis).

Each example draws shapes, a mask mode and a seed; the tensors are fresh random draws from that
seed, so a failing example is replayed exactly from hypothesis' report.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
import torch
from hypothesis import given, strategies as st

from archbench import TaskSpec
from archs.bert import BertConfig, BertForMaskedLM
from archs.gpt import GPT, GPTConfig
from archs.layers.attention import attend, attention_weights, xformers_unavailable_reason
from archs.transformer import EncoderDecoderTransformer, TransformerConfig

CPU_BACKENDS = ("math", "sdpa")
MASK_MODES = ("none", "causal", "padding", "both")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@dataclass
class Case:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    causal: bool
    key_padding_mask: torch.Tensor | None
    g: torch.Generator

    def kw(self) -> dict:
        return {"causal": self.causal, "key_padding_mask": self.key_padding_mask}


def _randn(g, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=g, dtype=dtype)


@st.composite
def cases(draw, mode: str = "none", self_attention: bool | None = None, dtype=torch.float32, max_t: int = 9,
          max_bh: int = 3, dims=(1, 2, 4, 8, 16)):
    """Random q, k, v (B, H, T, D) and a mask of the given mode; padding masks are arbitrary
    boolean patterns (rows with no visible key included)."""
    seed = draw(st.integers(0, 2**31 - 1))
    b, h = draw(st.integers(1, max_bh)), draw(st.integers(1, max_bh))
    d = draw(st.sampled_from(dims))
    tq = draw(st.integers(1, max_t))
    same = draw(st.booleans()) if self_attention is None else self_attention
    tk = tq if same else draw(st.integers(1, max_t))
    g = torch.Generator().manual_seed(seed)
    q, k, v = _randn(g, b, h, tq, d, dtype=dtype), _randn(g, b, h, tk, d, dtype=dtype), _randn(g, b, h, tk, d, dtype=dtype)
    pad = None
    if mode in ("padding", "both"):
        keep = draw(st.floats(0.0, 1.0))
        pad = torch.rand(b, tk, generator=g) < keep
    return Case(q, k, v, causal=mode in ("causal", "both"), key_padding_mask=pad, g=g)


# ---------------------------------------------------------------------------- 1. backends agree

@pytest.mark.parametrize("mode", MASK_MODES)
@given(data=st.data())
def test_sdpa_equals_math(mode, data):
    c = data.draw(cases(mode))
    ref = attend(c.q, c.k, c.v, backend="math", **c.kw())
    out = attend(c.q, c.k, c.v, backend="sdpa", **c.kw())
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@needs_cuda
@pytest.mark.parametrize("mode", MASK_MODES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@given(data=st.data())
def test_xformers_equals_math(mode, dtype, data):
    why = xformers_unavailable_reason(torch.device("cuda"), dtype)
    if why:  # e.g. installed against another torch than its build's: tests/test_install_profiles.py checks that
        pytest.skip(f"xformers cannot run here: {why}")
    c = data.draw(cases(mode, dtype=dtype))
    q, k, v = (t.cuda() for t in (c.q, c.k, c.v))
    pad = c.key_padding_mask.cuda() if c.key_padding_mask is not None else None
    ref = attend(q, k, v, causal=c.causal, key_padding_mask=pad, backend="math")
    out = attend(q, k, v, causal=c.causal, key_padding_mask=pad, backend="xformers")
    torch.testing.assert_close(out.float(), ref.float(), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_query_with_no_visible_key_is_zero_on_every_backend(backend):
    """sdpa alone returns NaN (torch version dependent) for such rows; attend returns zeros, with zero grads."""
    q, k, v = (torch.randn(2, 2, 3, 4, requires_grad=True) for _ in range(3))
    pad = torch.tensor([[False, False, False], [True, False, True]])
    out = attend(q, k, v, key_padding_mask=pad, backend=backend)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.equal(q.grad[0], torch.zeros_like(q.grad[0])) and torch.isfinite(k.grad).all()
    # causal with more queries than keys: the first Tq - Tk queries see nothing
    out = attend(torch.randn(1, 1, 5, 4), torch.randn(1, 1, 2, 4), torch.randn(1, 1, 2, 4), causal=True, backend=backend)
    assert torch.equal(out[..., :3, :], torch.zeros(1, 1, 3, 4)) and out[..., 3:, :].abs().sum() > 0


# ---------------------------------------------------------------------------- 2. permutations

@pytest.mark.parametrize("backend", CPU_BACKENDS)
@given(data=st.data())
def test_permuting_queries_permutes_outputs(backend, data):
    c = data.draw(cases("none"))
    perm = torch.randperm(c.q.shape[-2], generator=c.g)
    out = attend(c.q, c.k, c.v, backend=backend)
    out_perm = attend(c.q[:, :, perm], c.k, c.v, backend=backend)
    torch.testing.assert_close(out_perm, out[:, :, perm], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("mode", ["none", "padding"])
@given(data=st.data())
def test_permuting_keys_and_values_together_changes_nothing(backend, mode, data):
    c = data.draw(cases(mode))
    perm = torch.randperm(c.k.shape[-2], generator=c.g)
    pad = c.key_padding_mask[:, perm] if c.key_padding_mask is not None else None
    out = attend(c.q, c.k, c.v, key_padding_mask=c.key_padding_mask, backend=backend)
    out_perm = attend(c.q, c.k[:, :, perm], c.v[:, :, perm], key_padding_mask=pad, backend=backend)
    torch.testing.assert_close(out_perm, out, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------- 3. causality

@pytest.mark.parametrize("backend", CPU_BACKENDS)
@given(data=st.data(), pos=st.integers(0, 8))
def test_attention_is_causal(backend, data, pos):
    c = data.draw(cases("causal", self_attention=True))
    t = min(pos, c.q.shape[-2] - 1)
    q2, k2, v2 = (x.clone() for x in (c.q, c.k, c.v))
    for x in (q2, k2, v2):
        x[:, :, t + 1:] = _randn(c.g, *x[:, :, t + 1:].shape) * 100
    out = attend(c.q, c.k, c.v, causal=True, backend=backend)
    out2 = attend(q2, k2, v2, causal=True, backend=backend)
    torch.testing.assert_close(out2[:, :, : t + 1], out[:, :, : t + 1], atol=1e-6, rtol=1e-5)


@st.composite
def gpt_configs(draw):
    n_head = draw(st.sampled_from([1, 2, 4]))
    return GPTConfig(
        n_layer=draw(st.integers(1, 2)), n_head=n_head, d_model=8 * n_head, vocab_size=draw(st.integers(5, 40)),
        block_size=16, norm=draw(st.sampled_from(["layernorm", "rmsnorm"])),
        mlp=draw(st.sampled_from(["gelu", "swiglu"])), positions=draw(st.sampled_from(["learned", "rope"])),
        tie_embeddings=draw(st.booleans()), bias=draw(st.booleans()),
        attention=draw(st.sampled_from(CPU_BACKENDS)))


def _tokens(g, vocab, *shape):
    return torch.randint(0, vocab, shape, generator=g)


@given(cfg=gpt_configs(), seed=st.integers(0, 2**31 - 1), t=st.integers(2, 16), pos=st.integers(0, 15))
def test_gpt_logits_are_causal(cfg, seed, t, pos):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = GPT(cfg).eval()
    pos = min(pos, t - 2)
    idx = _tokens(g, cfg.vocab_size, 2, t)
    changed = idx.clone()
    changed[:, pos + 1:] = _tokens(g, cfg.vocab_size, 2, t - pos - 1)
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(b[:, : pos + 1], a[:, : pos + 1], atol=1e-5, rtol=1e-5)


@st.composite
def encdec_models(draw):
    n_head = draw(st.sampled_from([1, 2]))
    cfg = TransformerConfig(n_encoder_layer=draw(st.integers(1, 2)), n_decoder_layer=draw(st.integers(1, 2)),
                            n_head=n_head, d_model=8 * n_head, vocab_size=draw(st.integers(5, 30)),
                            norm_first=draw(st.booleans()), share_embeddings=draw(st.booleans()),
                            tie_output=draw(st.booleans()), attention=draw(st.sampled_from(CPU_BACKENDS)))
    seed = draw(st.integers(0, 2**31 - 1))
    torch.manual_seed(seed)
    return EncoderDecoderTransformer(cfg).eval(), torch.Generator().manual_seed(seed)


@given(mg=encdec_models(), s=st.integers(1, 10), t=st.integers(2, 10), pos=st.integers(0, 9))
def test_encdec_decoder_is_causal(mg, s, t, pos):
    model, g = mg
    v = model.cfg.vocab_size
    pos = min(pos, t - 2)
    src = _tokens(g, v, 2, s)
    src_mask = torch.ones(2, s, dtype=torch.bool)
    src_mask[1, s // 2 + 1:] = False  # the second source is padded
    tgt = _tokens(g, v, 2, t)
    changed = tgt.clone()
    changed[:, pos + 1:] = _tokens(g, v, 2, t - pos - 1)
    with torch.no_grad():
        a, b = model(src, src_mask, tgt), model(src, src_mask, changed)
    torch.testing.assert_close(b[:, : pos + 1], a[:, : pos + 1], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------- 4. padding

@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("causal", [False, True])
@given(data=st.data(), magnitude=st.sampled_from([1e3, 1e8, 1e15]))
def test_padded_keys_change_nothing(backend, causal, data, magnitude):
    c = data.draw(cases("padding"))
    pad = c.key_padding_mask
    out = attend(c.q, c.k, c.v, causal=causal, key_padding_mask=pad, backend=backend)
    hidden = ~pad[:, None, :, None]
    k2 = torch.where(hidden, _randn(c.g, *c.k.shape) * magnitude, c.k)
    v2 = torch.where(hidden, _randn(c.g, *c.v.shape) * magnitude, c.v)
    out2 = attend(c.q, k2, v2, causal=causal, key_padding_mask=pad, backend=backend)
    assert torch.isfinite(out2).all()
    torch.testing.assert_close(out2, out, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("mode", MASK_MODES)
@given(data=st.data())
def test_example_does_not_depend_on_its_batch(backend, mode, data):
    c = data.draw(cases(mode))
    out = attend(c.q, c.k, c.v, backend=backend, **c.kw())
    for i in range(c.q.shape[0]):
        pad = c.key_padding_mask[i:i + 1] if c.key_padding_mask is not None else None
        alone = attend(c.q[i:i + 1], c.k[i:i + 1], c.v[i:i + 1], causal=c.causal, key_padding_mask=pad,
                       backend=backend)
        torch.testing.assert_close(alone, out[i:i + 1], atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------- 5. convexity

@pytest.mark.parametrize("mode", MASK_MODES)
@given(data=st.data())
def test_weights_are_a_distribution_over_visible_keys(mode, data):
    c = data.draw(cases(mode))
    w = attention_weights(c.q, c.k, **c.kw())
    assert (w >= 0).all()
    sums = w.sum(-1)
    has_key = sums > 0.5  # rows with a visible key sum to 1, the others (nothing visible) to 0
    torch.testing.assert_close(sums[has_key], torch.ones_like(sums[has_key]), atol=1e-5, rtol=0)
    assert torch.equal(sums[~has_key], torch.zeros_like(sums[~has_key]))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("mode", MASK_MODES)
@given(data=st.data())
def test_output_lies_within_the_attended_values(backend, mode, data):
    c = data.draw(cases(mode))
    out = attend(c.q, c.k, c.v, backend=backend, **c.kw())
    w = attention_weights(c.q, c.k, **c.kw())
    seen = (w > 0)[..., None]  # (B, H, Tq, Tk, 1): keys each query attends to
    vals = c.v[:, :, None]  # (B, H, 1, Tk, D)
    lo = torch.where(seen, vals, torch.inf).amin(-2)
    hi = torch.where(seen, vals, -torch.inf).amax(-2)
    rows = seen.any(-2).squeeze(-1)
    tol = 1e-5
    assert (out[rows] >= lo[rows] - tol).all() and (out[rows] <= hi[rows] + tol).all()


# ---------------------------------------------------------------------------- 6. invariances

@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("mode", MASK_MODES)
@given(data=st.data(), scale=st.floats(0.05, 2.0))
def test_adding_a_constant_to_a_row_of_scores_changes_nothing(backend, mode, data, scale):
    """Scores of row i become q_i.k_j * s + c_i: append c_i / s to q_i and 1 to every k_j."""
    c = data.draw(cases(mode))
    shift = _randn(c.g, *c.q.shape[:-1], 1) * 10
    q2 = torch.cat([c.q, shift / scale], dim=-1)
    k2 = torch.cat([c.k, torch.ones(*c.k.shape[:-1], 1)], dim=-1)
    out = attend(c.q, c.k, c.v, scale=scale, backend=backend, **c.kw())
    out2 = attend(q2, k2, c.v, scale=scale, backend=backend, **c.kw())
    torch.testing.assert_close(out2, out, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("mode", MASK_MODES)
@given(data=st.data(), scale=st.floats(0.05, 2.0), factor=st.floats(0.1, 10.0))
def test_scaling_queries_and_dividing_the_scale_changes_nothing(backend, mode, data, scale, factor):
    c = data.draw(cases(mode))
    out = attend(c.q, c.k, c.v, scale=scale, backend=backend, **c.kw())
    out2 = attend(c.q * factor, c.k, c.v, scale=scale / factor, backend=backend, **c.kw())
    torch.testing.assert_close(out2, out, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------- 7. KV cache

@given(cfg=gpt_configs(), seed=st.integers(0, 2**31 - 1), prompt=st.integers(1, 6), t=st.integers(2, 16))
def test_kv_cache_decoding_equals_full_forward(cfg, seed, prompt, t):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = GPT(cfg).eval()
    prompt = min(prompt, t - 1)
    idx = _tokens(g, cfg.vocab_size, 2, t)
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache(2, t)
        steps = [model(idx[:, :prompt], cache=cache)]  # a prompt, then one token at a time
        steps += [model(idx[:, i:i + 1], cache=cache) for i in range(prompt, t)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@given(cfg=gpt_configs(), seed=st.integers(0, 2**31 - 1))
def test_cached_greedy_generation_equals_uncached(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = GPT(cfg).eval()
    prompt = _tokens(g, cfg.vocab_size, 2, 3)
    a = model.generate(prompt, 8, temperature=0, use_cache=True)
    b = model.generate(prompt, 8, temperature=0, use_cache=False)
    assert torch.equal(a, b) and a.shape == (2, 11) and torch.equal(a[:, :3], prompt)


# ---------------------------------------------------------------------------- 8. bidirectional encoders

@given(seed=st.integers(0, 2**31 - 1), t=st.integers(2, 12), backend=st.sampled_from(CPU_BACKENDS))
def test_bert_is_bidirectional(seed, t, backend):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = BertForMaskedLM(BertConfig(n_layer=2, n_head=2, d_model=16, vocab_size=20, max_positions=12,
                                       attention=backend)).eval()
    idx = _tokens(g, 20, 1, t)
    changed = idx.clone()
    changed[0, -1] = (idx[0, -1] + 1) % 20
    with torch.no_grad():
        a, b = model(idx), model(changed)
    assert (a[0, 0] - b[0, 0]).abs().max() > 1e-6  # the first position sees the last token


@given(mg=encdec_models(), s=st.integers(2, 10))
def test_encdec_encoder_is_bidirectional(mg, s):
    model, g = mg
    v = model.cfg.vocab_size
    src = _tokens(g, v, 1, s)
    changed = src.clone()
    changed[0, -1] = (src[0, -1] + 1) % v
    with torch.no_grad():
        a, b = model.encode(src, None), model.encode(changed, None)
    assert (a[0, 0] - b[0, 0]).abs().max() > 1e-6


# ---------------------------------------------------------------------------- 9. gradcheck

@pytest.mark.parametrize("mode", MASK_MODES)
@given(data=st.data())
def test_math_backend_gradcheck_float64(mode, data):
    c = data.draw(cases(mode, dtype=torch.float64, max_t=5, max_bh=2, dims=(1, 2, 4)))
    q, k, v = (x.detach().requires_grad_() for x in (c.q, c.k, c.v))

    def f(q, k, v):
        return attend(q, k, v, backend="math", **c.kw())

    assert torch.autograd.gradcheck(f, (q, k, v), eps=1e-6, atol=1e-5, fast_mode=True)
