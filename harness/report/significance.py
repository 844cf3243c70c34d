"""Is an ordering on the leaderboard real? Paired differences of bits per byte between two models,
with a bootstrap over seeds and test documents.

Each LM record keeps its per-document test NLL (``metrics.doc_nll_nats``) and bytes
(``metrics.doc_bytes``). Two models are comparable when they were scored on the same documents
(the same data fingerprint) under the same budget. A bootstrap replicate resamples the documents
once for both models (the pairing: a hard document is hard for both) and each model's seeds on
their own; the model's bits per byte is then sum over documents of its seed-mean NLL / ln 2 / bytes.
The 95% interval is the percentile interval of the difference; the two-sided p-value is
2 x min(P*(diff <= 0), P*(diff >= 0)) under the bootstrap distribution (at least 1 / replicates).
With one or two seeds the seed part of the variance is barely estimated: the table says how many.
"""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd

from harness.report.frame import ARCH, BUDGET_GIVEN, SEED, SIZE, column, metric, ok_runs, with_variants

DOC_NLL, DOC_BYTES = metric("doc_nll_nats"), metric("doc_bytes")
FINGERPRINT = column("data.fingerprint")
N_BOOT = 2000
ALPHA = 0.05


def paired_bootstrap(a: np.ndarray, b: np.ndarray, doc_bytes: np.ndarray, n_boot: int = N_BOOT,
                     seed: int = 0) -> dict[str, float]:
    """a: (seeds_a, docs) and b: (seeds_b, docs) NLL in nats; the difference of bits per byte a - b,
    its 95% bootstrap interval and two-sided p-value."""
    a, b, w = np.asarray(a, float), np.asarray(b, float), np.asarray(doc_bytes, float)
    if a.shape[1] != b.shape[1] or a.shape[1] != len(w):
        raise ValueError("the two models were not scored on the same documents")
    rng = np.random.default_rng(seed)
    docs = rng.integers(0, len(w), size=(n_boot, len(w)))
    sa = rng.integers(0, len(a), size=(n_boot, len(a)))
    sb = rng.integers(0, len(b), size=(n_boot, len(b)))
    diffs = np.empty(n_boot)
    for i in range(n_boot):  # per replicate: one document resample, each model's own seed resample
        d = docs[i]
        num_a = a[sa[i]][:, d].mean(0).sum()
        num_b = b[sb[i]][:, d].mean(0).sum()
        diffs[i] = (num_a - num_b) / math.log(2) / w[d].sum()
    point = (a.mean(0).sum() - b.mean(0).sum()) / math.log(2) / w.sum()
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    p = max(2 * min((diffs <= 0).mean(), (diffs >= 0).mean()), 1 / n_boot)
    return {"diff": float(point), "lo": float(lo), "hi": float(hi), "p": float(min(1.0, p))}


def _comparable_groups(ok: pd.DataFrame):
    """Runs that share the scored documents and the budget: (fingerprint, budget) -> runs."""
    if DOC_NLL not in ok or FINGERPRINT not in ok or BUDGET_GIVEN not in ok:
        return
    ok = ok.dropna(subset=[DOC_NLL])
    if ok.empty:
        return
    budget = ok[BUDGET_GIVEN].map(lambda g: json.dumps(g, sort_keys=True, default=str))
    for _, g in ok.groupby([ok[FINGERPRINT], budget], sort=False):
        yield g


def _model(row) -> str:
    return f"{row[ARCH]}/{row[SIZE]}" + (f" {row['variant']}" if row.get("variant") else "")


def pairwise(df: pd.DataFrame, task: str, n_boot: int = N_BOOT) -> pd.DataFrame:
    """One row per pair of models scored on the same documents under the same budget."""
    rows = []
    ok = with_variants(ok_runs(df, task))
    for g in _comparable_groups(ok):
        g = g.assign(model=g.apply(_model, axis=1))
        by_model = {m: r for m, r in g.groupby("model", sort=False)}
        for (ma, ra), (mb, rb) in itertools.combinations(by_model.items(), 2):
            a, b = np.array(ra[DOC_NLL].tolist()), np.array(rb[DOC_NLL].tolist())
            if a.shape[1:] != b.shape[1:]:
                continue
            r = paired_bootstrap(a, b, np.array(ra[DOC_BYTES].iloc[0]), n_boot)
            if r["diff"] > 0:  # state every pair as "better - worse"
                (ma, ra), (mb, rb) = (mb, rb), (ma, ra)
                r = {"diff": -r["diff"], "lo": -r["hi"], "hi": -r["lo"], "p": r["p"]}
            rows.append({"lower (better)": ma, "higher": mb, "Δ bits/byte": r["diff"],
                         "95% CI": f"[{r['lo']:+.4f}, {r['hi']:+.4f}]", "p": r["p"],
                         "seeds": f"{ra[SEED].nunique()} vs {rb[SEED].nunique()}", "documents": a.shape[1],
                         "significant (5%)": "yes" if r["p"] < ALPHA and r["hi"] < 0 else "no"})
    return pd.DataFrame(rows)


def mark_board(board: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The board with a "vs next row" column: the p-value of each row's lead over the row below it,
    "n.s." where that ordering is not significant, "–" where the two cannot be paired."""
    if table.empty or len(board) < 2:
        return board
    def name(r):
        v = r.get("variant")
        return f"{r['arch']}/{r['size']}" + (f" {v}" if v and v != "–" else "")
    pairs = {frozenset((r["lower (better)"], r["higher"])): r for _, r in table.iterrows()}
    marks = []
    for i in range(len(board)):
        r = pairs.get(frozenset((name(board.iloc[i]), name(board.iloc[i + 1])))) if i + 1 < len(board) else None
        marks.append("–" if r is None else (f"p={r['p']:.2g}" if r["significant (5%)"] == "yes"
                                            else f"n.s. (p={r['p']:.2g})"))
    return board.assign(**{"vs next row": marks})


def significance_lines(df: pd.DataFrame, task: str, table: pd.DataFrame | None = None) -> list[str]:
    """Markdown: the pairwise table and one sentence per pair whose ordering is not significant."""
    from harness.report.tables import md_table

    table = pairwise(df, task) if table is None else table
    if table.empty:
        return []
    md = ["Paired differences (bits/byte, lower model minus higher model; bootstrap over seeds and test "
          f"documents, {N_BOOT} replicates; only models scored on the same documents under the same budget):",
          "", md_table(table), ""]
    for _, r in table[table["significant (5%)"] == "no"].iterrows():
        md.append(f"- {r['lower (better)']} vs {r['higher']}: the ordering is not significant "
                  f"(Δ {r['Δ bits/byte']:+.4f} bits/byte, 95% CI {r['95% CI']}, p = {r['p']:.3g}).")
    return md + [""]
