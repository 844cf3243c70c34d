"""Each arch's FLOPs-per-token formula against torch.utils.flop_counter.FlopCounterMode (forward +
backward of one batch, the math attention backend, whose matmuls the counter sees), at two shapes."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from archbench import TaskSpec
from archs import bert, gpt, transformer

V = 300
SHAPES = [(4, 32), (2, 96)]  # (batch, seq_len)


def _counted(model, *inputs) -> int:
    with FlopCounterMode(display=False) as fc:
        model(*inputs).float().logsumexp(-1).sum().backward()
    return fc.get_total_flops()


@pytest.mark.parametrize("b, t", SHAPES)
@pytest.mark.parametrize("name, kind, module", [("gpt", "lm", gpt), ("bert", "mlm", bert)])
def test_decoder_and_encoder_formulas_match_the_counter(name, kind, module, b, t):
    model = module.build(kind, replace(module.SIZES["tiny"], attention="math"),
                         TaskSpec(kind=kind, vocab_size=V, max_seq_len=t))
    x = torch.randint(0, V, (b, t))
    assert _counted(model, x) / (b * t) == pytest.approx(model.flops_per_token(t), rel=0.02)


@pytest.mark.parametrize("b, t", SHAPES)
def test_encoder_decoder_formula_is_per_token_read(b, t):
    """Source and target of t tokens each: 2 * b * t tokens read."""
    model = transformer.build("seq2seq", replace(transformer.SIZES["tiny"], attention="math"),
                              TaskSpec(kind="seq2seq", vocab_size=V, max_seq_len=t))
    x, mask = torch.randint(0, V, (b, t)), torch.ones(b, t, dtype=torch.bool)
    assert _counted(model, x, mask, x) / (2 * b * t) == pytest.approx(model.flops_per_token(t), rel=0.02)


@pytest.mark.parametrize("b, t", SHAPES)
def test_gpt_as_prefix_lm_is_per_token_read(b, t):
    model = gpt.build("seq2seq", replace(gpt.SIZES["tiny"], attention="math"),
                      TaskSpec(kind="seq2seq", vocab_size=V, max_seq_len=2 * t, pad_id=0))
    x, mask = torch.randint(1, V, (b, t)), torch.ones(b, t, dtype=torch.bool)
    assert _counted(model, x, mask, x) / (2 * b * t) == pytest.approx(model.flops_per_token(t), rel=0.02)


@pytest.mark.parametrize("b, t", SHAPES)
@pytest.mark.parametrize("kind", ["lm", "seq2seq"])
def test_lstm_formulas_match_the_counter(kind, b, t):
    """oneDNN's fused LSTM kernel is invisible to the counter: with it off, nn.LSTM runs as the
    matmuls the formula counts. seq2seq: per token read, source and target of t tokens each."""
    from archs import lstm

    model = lstm.build(kind, lstm.SIZES["tiny"], TaskSpec(kind=kind, vocab_size=V, max_seq_len=t, pad_id=0))
    x, mask = torch.randint(1, V, (b, t)), torch.ones(b, t, dtype=torch.bool)
    with torch.backends.mkldnn.flags(enabled=False):
        counted = _counted(model, x) if kind == "lm" else _counted(model, x, mask, x)
    read = b * t if kind == "lm" else 2 * b * t
    assert counted / read == pytest.approx(model.flops_per_token(t), rel=0.02)
