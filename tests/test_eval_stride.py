"""Sliding-window evaluation (eval.stride): every target scored once, each from the window the
protocol says, and the protocol named in the record."""
from __future__ import annotations

import pytest
import torch

from archs.gpt import GPT, GPTConfig
from tasks.scoring.lm_scoring import rolling_scores
from tests.helpers import FAST, compose_conf

SEQ, STRIDE = 16, 5


def _window_end(t: int, n_context: int, n: int) -> int:
    """The exclusive end of the block holding target t: the first window covers seq_len targets."""
    first_end = min(n, n_context + SEQ)
    if t < first_end:
        return first_end
    return min(n, first_end + ((t - first_end) // STRIDE + 1) * STRIDE)


@torch.no_grad()
def test_each_target_is_scored_once_from_its_own_sliding_window():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, d_model=16, vocab_size=11, block_size=SEQ, positions="rope",
                          attention="math")).eval()
    ids, n_context = torch.randint(0, 11, (83,)), 2
    got = rolling_scores(model, ids, n_context, SEQ, "cpu", stride=STRIDE)
    assert got.count == len(ids) - n_context
    want = []
    for t in range(n_context, len(ids)):
        e = _window_end(t, n_context, len(ids))
        lo = n_context - 1 if e == min(len(ids), n_context + SEQ) else e - 1 - SEQ
        x = ids[lo:t][None]
        want.append(-torch.log_softmax(model(x)[0, -1], -1)[ids[t]].double().item())
    assert got.per_token().tolist() == pytest.approx(want, abs=1e-5)
    same = rolling_scores(model, ids, n_context, SEQ, "cpu", stride=SEQ)
    plain = rolling_scores(model, ids, n_context, SEQ, "cpu")
    assert same.total == pytest.approx(plain.total, rel=1e-12)


def test_the_record_names_the_protocol(tmp_path):
    from harness.run import run_one

    rec = run_one(compose_conf(f"results_dir={tmp_path}", *FAST, "eval.stride=8"))
    assert rec.metrics["eval_protocol"] == "sliding windows of 32 tokens, stride 8"
    plain = run_one(compose_conf(f"results_dir={tmp_path}", *FAST))
    assert plain.metrics["eval_protocol"].startswith("non-overlapping")
    assert rec.metrics["bits_per_byte"] != plain.metrics["bits_per_byte"]
