"""The LSTM family: the AWD regularizers do what they claim, FLOP formulas match parameter counts,
seq2seq follows the contract (padding never read, causal decoder, batch-first memory), the
classifier ignores padding, bad config, and an LM run through the harness."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from archbench import TaskSpec, build_model
from archbench.errors import UserError
from archs.lstm import LSTMLM, SIZES, LSTMConfig, embedding_dropout, locked_dropout

LM_SPEC = TaskSpec("lm", vocab_size=50, max_seq_len=16)
S2S_SPEC = TaskSpec("seq2seq", vocab_size=40, max_seq_len=16, pad_id=0, bos_id=1, eos_id=2)
CLS_SPEC = TaskSpec("classify", vocab_size=40, max_seq_len=16, num_classes=3, pad_id=0)


@pytest.fixture(autouse=True)
def one_thread():
    """Loops of tiny ops: on a shared 2-core machine a second intra-op thread waits for a descheduled
    peer at every op (ms instead of us). One thread, then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small(**kw) -> LSTMConfig:
    return dataclasses.replace(LSTMConfig(n_layer=2, d_embed=16, d_hidden=24), **kw)


def test_large_is_awd_lstm_and_flops_match_parameter_count():
    c = SIZES["large"]
    assert (c.n_layer, c.d_embed, c.d_hidden, c.tie_embeddings) == (3, 400, 1150, True)
    assert c.dropout_embed > 0 and c.weight_drop > 0 and c.dropout_hidden > 0
    m = build_model("lstm", "large", "lm", LM_SPEC)
    assert [layer.hidden_size for layer in m.layers] == [1150, 1150, 400]  # last layer tied to the embedding
    assert m.head.weight is m.embed.weight
    gate_weights = sum(p.numel() for n, p in m.named_parameters() if "weight_ih" in n or "weight_hh" in n)
    assert gate_weights == 4 * 1150 * 1550 + 4 * 1150 * 2300 + 4 * 400 * 1550
    assert m.flops_per_token(64) == 6 * (gate_weights + 400 * 50)


def test_locked_dropout_shares_one_mask_over_time():
    torch.manual_seed(0)
    x = torch.ones(3, 20, 8)
    y = locked_dropout(x, 0.5, training=True)
    assert torch.equal(y, y[:, :1].expand_as(y))  # the same mask at every step
    assert set(y.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(locked_dropout(x, 0.5, training=False), x)


def test_embedding_dropout_drops_whole_words():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(10, 6)
    idx = torch.tensor([[1, 2, 1, 3, 2, 1]])
    out = embedding_dropout(emb, idx, 0.5, training=True)
    zero = (out == 0).all(-1)[0]
    for word in (1, 2, 3):  # a word is dropped everywhere it occurs, or nowhere
        assert len(set(zero[idx[0] == word].tolist())) == 1
    kept = ~zero
    torch.testing.assert_close(out[0, kept], emb(idx)[0, kept] * 2)


def test_weight_drop_resamples_and_trains_the_raw_weights():
    torch.manual_seed(0)
    m = LSTMLM(dataclasses.replace(small(weight_drop=0.5), vocab_size=50))
    x = torch.randint(0, 50, (2, 7))
    m.train()
    a, b = m(x), m(x)
    assert not torch.allclose(a, b)  # a new DropConnect mask each forward
    a.sum().backward()
    assert m.layers[0].weight_hh_l0.grad is not None and m.layers[0].weight_hh_l0.grad.abs().sum() > 0
    m.eval()
    torch.testing.assert_close(m(x), m(x))  # no dropout of any kind in eval mode


def test_seq2seq_contract_padding_causality_and_memory():
    torch.manual_seed(0)
    m = build_model("lstm", "tiny", "seq2seq", S2S_SPEC)
    m.eval()
    src = torch.randint(3, 40, (2, 9))
    mask = torch.ones_like(src, dtype=torch.bool)
    mask[1, 5:] = False
    tgt = torch.randint(3, 40, (2, 6))
    logits = m(src, mask, tgt)
    assert logits.shape == (2, 6, 40)
    memory = m.encode(src, mask)
    assert all(t.shape[0] == 2 for t in memory)  # batch first: a beam search can index_select it
    other = src.clone()
    other[1, 5:] = torch.randint(3, 40, (4,))
    torch.testing.assert_close(m(other, mask, tgt), logits)  # padding is never read
    changed = tgt.clone()
    changed[:, 4] = (changed[:, 4] + 1) % 40
    torch.testing.assert_close(m.decode(memory, mask, changed)[:, :4], logits[:, :4])  # causal decoder
    reordered = tuple(t.index_select(0, torch.tensor([1, 0])) for t in memory)
    torch.testing.assert_close(m.decode(reordered, mask[[1, 0]], tgt[[1, 0]]), logits[[1, 0]])


def test_seq2seq_learns_to_copy():
    """Copying fresh random sequences needs the attention to align target step t with source token t."""
    torch.manual_seed(0)
    spec = TaskSpec("seq2seq", vocab_size=10, max_seq_len=16, pad_id=0, bos_id=1, eos_id=2)
    m = build_model("lstm", "tiny", "seq2seq", spec, overrides={"d_embed": 16, "d_hidden": 32})
    opt = torch.optim.Adam(m.parameters(), lr=2e-2)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(150):
        src = torch.randint(3, 10, (32, 4), generator=g)
        mask = torch.ones_like(src, dtype=torch.bool)
        tgt_in = torch.cat([torch.ones(32, 1, dtype=torch.long), src], 1)
        tgt_out = torch.cat([src, torch.full((32, 1), 2)], 1)
        loss = torch.nn.functional.cross_entropy(m(src, mask, tgt_in).reshape(-1, 10), tgt_out.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.1 * losses[0]


def test_classifier_ignores_padding():
    torch.manual_seed(0)
    for pool in ("max", "mean"):
        m = build_model("lstm", "tiny", "classify", CLS_SPEC, overrides={"pool": pool})
        m.eval()
        ids = torch.randint(1, 40, (2, 8))
        mask = torch.ones_like(ids, dtype=torch.bool)
        mask[0, 5:] = False
        logits = m(ids, mask)
        assert logits.shape == (2, 3)
        alone = m(ids[:1, :5], mask[:1, :5])
        torch.testing.assert_close(logits[:1], alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("field,value,match", [("dropout", 1.0, "arch.dropout"), ("weight_drop", -0.1, "weight_drop"),
                                               ("attn_score", "mlp", "attn_score"), ("pool", "last", "arch.pool"),
                                               ("n_layer", 0, "n_layer")])
def test_bad_config_is_a_user_error(field, value, match):
    with pytest.raises(UserError, match=match):
        LSTMConfig(**{field: value})


def test_odd_width_bidirectional_is_a_user_error():
    with pytest.raises(UserError, match="even"):
        build_model("lstm", "tiny", "classify", CLS_SPEC, overrides={"d_hidden": 25})


def test_lm_runs_through_the_harness(tmp_path):
    from harness.run import run_one
    from tests.baseline_helpers import tiny_text_file
    from tests.helpers import compose_conf

    text = tiny_text_file(tmp_path / "docs.txt")
    conf = compose_conf(*["arch=lstm", "size=large", "arch.d_hidden=32", "arch.d_embed=16", "task.source=files",
                    f"task.path={text}", f"results_dir={tmp_path / 'results'}", "report=false",
                    "train.progress=false", "train.max_steps=3", "train.eval_every=0", "train.seq_len=32"])
    rec = run_one(conf).to_dict()
    assert rec["status"] == "ok", rec.get("error")
    assert rec["steps"] == 3 and rec["hparams"]["weight_drop"] == 0.5
    assert rec["flops_per_token"] > 0 and 0 < rec["metrics"]["bits_per_byte"] < 12


@pytest.mark.parametrize("layers, bidirectional", [(1, True), (2, True), (1, False), (2, False)])
def test_real_token_lstm_equals_the_packed_run(layers, bidirectional):
    """The fused-kernel run over each row's real tokens gives the packed LSTM's outputs, final states
    and gradients (rows of length 1, equal lengths and the full width included)."""
    from archs.layers.real_token_lstm import packed_run, run_real_tokens

    torch.manual_seed(0)
    rnn = torch.nn.LSTM(16, 12, num_layers=layers, batch_first=True, bidirectional=bidirectional)
    lengths = torch.tensor([7, 1, 23, 7, 15, 23, 2, 9])
    mask = torch.arange(23)[None] < lengths[:, None]
    x = torch.randn(len(lengths), 23, 16, requires_grad=True)

    results = []
    for run in (packed_run, run_real_tokens):
        out, h, c = run(rnn, x, mask)
        weights = [torch.randn(t.shape, generator=torch.Generator().manual_seed(i)) for i, t in enumerate((out, h, c))]
        loss = sum((w * t).sum() for w, t in zip(weights, (out, h, c)))
        results.append((out, h, c, *torch.autograd.grad(loss, [x, *rnn.parameters()])))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_lstm_step_bench_trains_the_same_model_under_every_setting():
    """harness.bench's LSTM step: packed and real-token encoders, subnormals kept or flushed, train
    the same function from the same start (losses agree), and the process's flush setting is restored."""
    from harness.bench import lstm_step
    from harness.hardware import flushes_denormals

    before = flushes_denormals()
    best = lstm_step.lstm_step_bench(steps=3, timed=1, tasks=("mt",))["mt"]
    assert len(best) == 4 and flushes_denormals() == before
    losses = [r["final_loss"] for r in best.values()]
    assert max(losses) - min(losses) < 1e-3 and all(r["s_per_step"] > 0 for r in best.values())


@pytest.mark.parametrize("flush", [True, False])
def test_a_cpu_run_flushes_subnormals_as_configured_and_records_it(flush, tmp_path):
    import torch

    from harness.hardware import flushes_denormals
    from harness.run import run_one
    from tests.helpers import FAST, compose_conf

    before = flushes_denormals()
    try:
        rec = run_one(compose_conf("arch=lstm", *FAST, f"results_dir={tmp_path}", f"flush_denormal={str(flush).lower()}"))
        assert rec.status == "ok" and rec.env.flush_denormal is flush
        assert flushes_denormals() is before  # the run's setting ends with it: the caller's process is as it was
    finally:
        torch.set_flush_denormal(before)
