"""The paired bootstrap over seeds and documents: it recovers a planted difference, finds none
between two seeds of one config, and the leaderboard marks an ordering that is not significant."""
from __future__ import annotations

import math

import numpy as np
import pytest

from harness.report import significance
from harness.report.frame import frame
from archbench.record import RunRecord

DOCS = 300


def _docs(rng):
    doc_bytes = rng.integers(50, 2000, DOCS)
    hardness = rng.uniform(0.8, 2.0, DOCS)  # nats per byte: documents differ a lot, which pairing removes
    return doc_bytes, hardness


def _model(rng, doc_bytes, hardness, shift_bits, seeds):
    """(seeds, docs) nats: the documents' own hardness + a per-seed offset + per-document noise."""
    out = []
    for _ in range(seeds):
        per_byte = hardness + shift_bits * math.log(2) + rng.normal(0, 0.003) + rng.normal(0, 0.05, DOCS)
        out.append(per_byte * doc_bytes)
    return np.array(out)


def test_recovers_a_planted_difference():
    rng = np.random.default_rng(1)
    b, h = _docs(rng)
    r = significance.paired_bootstrap(_model(rng, b, h, 0.0, 2), _model(rng, b, h, 0.03, 2), b, n_boot=500)
    assert r["diff"] == pytest.approx(-0.03, abs=0.01) and r["hi"] < 0 and r["p"] < 0.05


def test_finds_no_difference_between_seeds_of_one_config():
    rng = np.random.default_rng(2)
    b, h = _docs(rng)
    seeds = _model(rng, b, h, 0.0, 4)  # four seeds of one config, split in two "models"
    r = significance.paired_bootstrap(seeds[:2], seeds[2:], b, n_boot=500)
    assert r["lo"] < 0 < r["hi"] and r["p"] > 0.05


def _record(arch, seed, nll, doc_bytes):
    return RunRecord(run_key=f"{arch}{seed}", status="ok", arch=arch, size="tiny", task="lm", kind="lm", seed=seed,
                     params=1, primary_metric="bits_per_byte", lower_is_better=True,
                     metrics={"bits_per_byte": float(nll.sum() / math.log(2) / doc_bytes.sum()),
                              "doc_nll_nats": nll.tolist(), "doc_bytes": doc_bytes.tolist()})


def test_leaderboard_marks_a_non_significant_ordering():
    from harness.report.leaderboard import leaderboard

    rng = np.random.default_rng(3)
    b, h = _docs(rng)
    same = _model(rng, b, h, 0.0, 4)
    worse = _model(rng, b, h, 0.05, 2)
    recs = [_record("gpt", s, same[s], b) for s in (0, 1)] + [_record("lstm", s, same[2 + s], b) for s in (0, 1)] + \
        [_record("hmm", s, worse[s], b) for s in (0, 1)]
    for r in recs:
        r.data.fingerprint = "f"
    df = frame(recs)
    table = significance.pairwise(df, "lm", n_boot=300)
    board = significance.mark_board(leaderboard(df, "lm")[0], table)
    assert board["arch"].iloc[-1] == "hmm"
    assert board["vs next row"].iloc[0].startswith("n.s.")  # gpt vs lstm: one config in disguise
    assert board["vs next row"].iloc[1].startswith("p=")  # the better of them vs hmm: real
    assert any("not significant" in line for line in significance.significance_lines(df, "lm", table))
