"""Loss by position in the context window: ``metrics.loss_by_position`` (mean test nats at each
window position), averaged in log-spaced bins, mean and 95% CI over seeds per model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.report.figures import pyplot, save
from harness.report.frame import (
    ARCH, CODE_VERSION, DATA_FINGERPRINT, LOSS_BY_POSITION, NON_EMBEDDING_PARAMS, OVERRIDES, SEED, SIZE, model_label,
    ok_runs)
from harness.report.identity import short
from harness.report.tables import md_table

INTRO = ("Mean test NLL (nats) at each position of the scoring windows, from the same windows as bits per "
         "byte (`metrics.loss_by_position`): position j predicts with j tokens of input. For reference, "
         "Kaplan et al. (2020, Fig. 7) report LSTMs flattening after ~100 tokens while Transformers keep "
         "improving; what these runs show is stated below from their own numbers.")
FLAT_NATS = 0.01  # a change smaller than this between the two positions is called flat
NEAR = 0.2  # a position's loss is the mean over positions within +-20% of it (one position is noisy)


def positions(ok: pd.DataFrame) -> pd.DataFrame:
    """Long form: one row per (run, position) of the longest window each model was scored with."""
    rows = []
    scored = ok.dropna(subset=[LOSS_BY_POSITION])
    identity = [c for c in (DATA_FINGERPRINT, CODE_VERSION) if c in scored]
    # runs on other data or other code are never pooled into one curve: their labels say which
    several = bool(identity) and len(scored[identity].astype(str).drop_duplicates()) > 1
    for _, r in scored.iterrows():
        n = r.get(NON_EMBEDDING_PARAMS)
        model = model_label(r.get(OVERRIDES), r[ARCH], r[SIZE])
        model += f" (N={int(n):,})" if n == n and n is not None else ""
        if several:
            model += f" [data {short(r.get(DATA_FINGERPRINT))}, code {short(r.get(CODE_VERSION))}]"
        seq_len = len(r[LOSS_BY_POSITION])
        for j, v in enumerate(r[LOSS_BY_POSITION]):
            rows.append({"model": model, "window": seq_len, "position": j + 1, "loss": v, "seed": r[SEED]})
    long = pd.DataFrame(rows)
    # only the longest window per model: shorter windows (e.g. a throughput sweep) would mix contexts
    return long[long["window"] == long.groupby("model")["window"].transform("max")]


def binned(long: pd.DataFrame) -> pd.DataFrame:
    """A test split holds a few hundred windows: one position is noisy, so average the positions in
    log-spaced bins (per run, then mean and CI over seeds); bins are labeled by their geometric centre."""
    long = long.copy()
    edges = np.unique(np.round(np.geomspace(1, long["position"].max() + 1, 25)).astype(int))
    bin_of = np.searchsorted(edges, long["position"], side="right") - 1
    centres = np.sqrt(edges[:-1] * np.maximum(edges[1:] - 1, edges[:-1]))
    long["bin position"] = centres[np.clip(bin_of, 0, len(centres) - 1)]
    return long.groupby(["model", "seed", "bin position"], as_index=False)["loss"].mean()


def position_plot(long: pd.DataFrame, path: Path, task: str) -> str:
    plt, sns = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    sns.lineplot(data=binned(long), x="bin position", y="loss", hue="model", errorbar=("ci", 95), marker="o", ax=ax)
    ax.set_xscale("log")
    ax.set(title=f"{task}: test loss by position in the context window\n(positions averaged in log-spaced bins; "
                 "mean over seeds, 95% CI band)",
           xlabel="tokens of context seen (window position, log scale)", ylabel="test loss (nats / token)")
    ax.legend(fontsize=8, title="model")
    return save(fig, path, ax=ax)


def _loss_near(m: pd.Series, p: int) -> float:
    lo, hi = max(1, int(p * (1 - NEAR))), max(p, int(p * (1 + NEAR)))
    return float(m[(m.index >= lo) & (m.index <= hi)].mean())


def position_summary(long: pd.DataFrame) -> pd.DataFrame:
    """Loss at position 1, and near 10, 100 and the window's end, averaged as the sentences average."""
    summary = []
    for model, g in long.groupby("model"):
        m = g.groupby("position")["loss"].mean()
        last = int(m.index.max())
        pick = {"1": m.get(1), "~10": _loss_near(m, 10),
                "~100": _loss_near(m, 100) if last >= 100 else None, f"~{last} (end)": _loss_near(m, last)}
        summary.append({"model": model, "seeds": g["seed"].nunique(), **{f"loss @ {p}": v for p, v in pick.items()}})
    return pd.DataFrame(summary)


def trend_sentences(long: pd.DataFrame, early: int = 10, late: int = 100) -> list[str]:
    """One sentence per model, from its measured losses: how much the loss changes from position
    ``early`` to position ``late`` (or the window's last position when the window is shorter)."""
    out = []
    for model, g in long.groupby("model"):
        m = g.groupby("position")["loss"].mean()
        end = min(late, int(m.index.max()))
        if end <= early:
            continue
        a, b = _loss_near(m, early), _loss_near(m, end)
        change = b - a
        verb = "is flat" if abs(change) < FLAT_NATS else ("falls" if change < 0 else "rises")
        out.append(f"- {model}: {a:.3f} nats at position ~{early}, {b:.3f} at ~{end}: the loss {verb} "
                   f"({change:+.3f} nats; positions within ±{int(100 * NEAR)}% averaged, "
                   f"{g['seed'].nunique()} seed(s)).")
    return out


def position_section(df: pd.DataFrame, out: Path, task: str) -> list[str]:
    ok = ok_runs(df, task)
    if LOSS_BY_POSITION not in ok or ok[LOSS_BY_POSITION].dropna().empty:
        return []
    long = positions(ok)
    name = position_plot(long, out / f"{task}_loss_by_position.png", task)
    return ["### Loss by position in the context", "", INTRO, "", *trend_sentences(long), "",
            md_table(position_summary(long)), "", f"![{name}]({name})", ""]
