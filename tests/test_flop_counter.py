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
    matmuls the formula counts. seq2seq: per token read, source and target of t tokens each. The
    encoder runs packed, the reference path: the CPU path's recomputed gates are not model FLOPs."""
    from archs import lstm
    from archs.layers.real_token_lstm import packed_reference

    model = lstm.build(kind, lstm.SIZES["tiny"], TaskSpec(kind=kind, vocab_size=V, max_seq_len=t, pad_id=0))
    x, mask = torch.randint(1, V, (b, t)), torch.ones(b, t, dtype=torch.bool)
    with torch.backends.mkldnn.flags(enabled=False), packed_reference():
        counted = _counted(model, x) if kind == "lm" else _counted(model, x, mask, x)
    read = b * t if kind == "lm" else 2 * b * t
    assert counted / read == pytest.approx(model.flops_per_token(t), rel=0.02)


PAIRS = [(4, 20, 36), (2, 64, 24)]  # (batch, source length, target length): real lengths differ


def _seq2seq(name: str):
    from archs import lstm

    spec = TaskSpec(kind="seq2seq", vocab_size=V, max_seq_len=128, pad_id=0)
    if name == "transformer":
        return transformer.build("seq2seq", replace(transformer.SIZES["tiny"], attention="math"), spec)
    if name == "gpt":
        return gpt.build("seq2seq", replace(gpt.SIZES["tiny"], attention="math"), spec)
    return lstm.build("seq2seq", lstm.SIZES["tiny"], spec)


@pytest.mark.parametrize("b, s, t", PAIRS)
@pytest.mark.parametrize("name", ["transformer", "gpt", "lstm"])
def test_seq2seq_pair_flops_match_the_counter_at_unequal_lengths(name, b, s, t):
    """A batch of b pairs with s source and t target tokens (no padding): the FLOPs counted by
    FlopCounterMode equal the sum of the model's pair_flops(s, t), within 2% (the LSTM encoder on
    its packed reference path, as above)."""
    from archbench import seq2seq_flops
    from archs.layers.real_token_lstm import packed_reference

    model = _seq2seq(name)
    src, tgt = torch.randint(1, V, (b, s)), torch.randint(1, V, (b, t))
    with torch.backends.mkldnn.flags(enabled=False), packed_reference():  # the LSTM as the matmuls it is (see above)
        counted = _counted(model, src, torch.ones(b, s, dtype=torch.bool), tgt)
    assert counted == pytest.approx(seq2seq_flops(model, [s] * b, [t] * b), rel=0.02)


def test_seq2seq_batch_flops_use_each_pairs_real_lengths(tmp_path):
    """Padding is not counted: a padded batch's FLOPs are the sum over its rows at their real lengths,
    and the task's FLOPs per token average the training pairs' real lengths, not train.seq_len."""
    import numpy as np

    import harness  # noqa: F401  (registers the built-in tasks)
    from archbench import build_task, seq2seq_flops
    from tests.taskcfg import task_config

    task = build_task(task_config("mt", tmp_path, max_train_examples=64, max_eval_examples=4))
    model = _seq2seq("transformer")
    batch = next(task.train_batches(8, 64, torch.Generator().manual_seed(0)))
    _, src_mask, _, _, tgt_mask = batch
    s, t = src_mask.sum(1).numpy(), tgt_mask.sum(1).numpy()
    assert len(set(s.tolist())) > 1, "the batch should mix lengths"
    assert task.batch_flops(model, batch) == pytest.approx(float(sum(model.pair_flops(a, b) for a, b in zip(s, t))))
    assert task.batch_flops(model, batch) < seq2seq_flops(model, [src_mask.shape[1]] * 8, [tgt_mask.shape[1]] * 8)
    src, tgt = task.encoded["train"]
    ls, lt = np.array([len(x) for x in src]), np.array([len(y) + 1 for y in tgt])
    expected = sum(model.pair_flops(int(a), int(b)) for a, b in zip(ls, lt)) / (ls.sum() + lt.sum())
    assert task.flops_per_token(model, 64) == pytest.approx(expected)
    assert task.flops_per_token(model, 64) != pytest.approx(model.flops_per_token(64), rel=0.01)
