"""The loss-by-position text is computed from the records: opposite trends, opposite sentences."""
from __future__ import annotations

import numpy as np

from archbench.record import RunRecord
from harness.report.context import positions, trend_sentences
from harness.report.frame import frame


def _rec(arch, seed, curve):
    return RunRecord(run_key=f"{arch}{seed}", status="ok", arch=arch, size="tiny", task="lm", kind="lm", seed=seed,
                     non_embedding_params=1000, metrics={"loss_by_position": list(curve)})


def test_opposite_positional_trends_write_opposite_sentences():
    pos = np.arange(1, 129)
    falling = 3.0 - 0.5 * np.log(pos) / np.log(128)  # 3.0 -> 2.5
    rising = 2.0 + 0.4 * np.log(pos) / np.log(128)
    df = frame([_rec("gpt", s, falling) for s in (0, 1)] + [_rec("lstm", s, rising) for s in (0, 1)])
    lines = trend_sentences(positions(df))
    gpt = next(l for l in lines if "gpt/tiny" in l)
    lstm = next(l for l in lines if "lstm/tiny" in l)
    assert "falls" in gpt and "rises" in lstm
    assert f"{np.mean(falling[7:12]):.3f}" in gpt  # the stated number is the measured one (positions 8..12)
    flat = frame([_rec("gpt", 0, np.full(128, 2.0))])
    assert "is flat" in trend_sentences(positions(flat))[0]
