"""One leaderboard per task: mean and 95% Student-t interval over seeds per (arch, size, variant),
the no-training reference rows a task records beside it, the learning curves and metric vs params."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from harness.report.significance import mark_board, pairwise, significance_lines
from harness.report.figures import image_links, pyplot, save
from harness.report.frame import (ARCH, DATA_SOURCE, LOWER_IS_BETTER, MFU, PARAMS, PRIMARY_METRIC, REFERENCE_ROWS, SIZE,
                                  STATUS, STOP_REASON, TASK, TOKENS_PER_S, TOKENS_SEEN, WALL_S, metric as metric_col, ok_runs,
                                  with_variants)
from harness.report.tables import md_table

INTRO = ("Leaderboard by `{metric}` ({better} is better); mean over seeds, ± half-width of the 95% Student-t "
         "interval (– with one seed). tokens/s is measured over training steps only; MFU = tokens/s x FLOPs per "
         "token (each arch's own formula) / peak.")


def mean_ci95(values: pd.Series) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t confidence interval (nan for one seed)."""
    from scipy import stats

    v = values.dropna().astype(float)
    n = len(v)
    if n == 0:
        return math.nan, math.nan
    if n == 1:
        return float(v.iloc[0]), math.nan
    return float(v.mean()), float(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n))


def leaderboard(df: pd.DataFrame, task: str) -> tuple[pd.DataFrame, str, bool]:
    """The task's board (best first), its primary metric and whether lower is better."""
    ok = with_variants(ok_runs(df, task))
    metric = ok[PRIMARY_METRIC].dropna().iloc[0]
    lower = bool(ok[LOWER_IS_BETTER].dropna().iloc[0])
    col = metric_col(metric)
    rows = []
    for (arch, size, variant), g in ok.groupby([ARCH, SIZE, "variant"], sort=False):
        mean, ci = mean_ci95(g[col])
        rows.append({
            "arch": arch, "size": size, "variant": variant or "–", "seeds": len(g),
            metric: mean, "± 95% CI": ci,
            "params": int(g[PARAMS].iloc[0]),
            "tokens seen": int(g[TOKENS_SEEN].mean()),
            "stopped by": ", ".join(sorted(g[STOP_REASON].dropna().astype(str).unique())) if STOP_REASON in g else "",
            "tokens/s": g[TOKENS_PER_S].mean(),
            "MFU %": 100 * g[MFU].astype(float).mean() if g[MFU].notna().any() else math.nan,
            "wall s": g[WALL_S].mean(),
        })
    board = pd.DataFrame(rows).sort_values(metric, ascending=lower).reset_index(drop=True)
    if (board["variant"] == "–").all():
        board = board.drop(columns="variant")
    return board, metric, lower


def reference_rows(df: pd.DataFrame, task: str, metric: str) -> pd.DataFrame:
    """No-training baselines a task puts in data.reference_rows (e.g. MT copy-source), one row per
    distinct value: they depend on the data only, so seeds repeat them."""
    if REFERENCE_ROWS not in df:
        return pd.DataFrame()
    rows, seen = [], set()
    ok = df.loc[(df[TASK] == task) & (df[STATUS] == "ok")]
    sources = ok[DATA_SOURCE] if DATA_SOURCE in ok else pd.Series([None] * len(ok), index=ok.index)
    for refs, source in zip(ok[REFERENCE_ROWS], sources):  # labelled by the data set they were computed on
        for name, ref in (refs if isinstance(refs, dict) else {}).items():
            value = (ref.get("metrics") or {}).get(metric)
            if value is None or (name, value, source) in seen:
                continue
            seen.add((name, value, source))
            rows.append({"reference": name, "data set": source, metric: value, "what it is": ref.get("about", "")})
    return pd.DataFrame(rows)


def learning_curves_plot(curve_df: pd.DataFrame, out: Path, task: str) -> list[str]:
    c = curve_df[curve_df["task"] == task] if not curve_df.empty else curve_df
    if c.empty:
        return []
    plt, sns = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    models = sorted(c["model"].unique())
    sns.lineplot(data=c, x="tokens", y="val_loss", hue="model", hue_order=models, errorbar=("ci", 95),
                 marker="o", ax=ax)
    ax.set(title=f"{task}: validation loss during training (mean, 95% CI over seeds)",
           xlabel="training tokens", ylabel="validation loss (nats / token)")
    if len(models) > 4:  # many models: the legend goes beside the plot, not over the curves
        ax.legend(title="model", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return [save(fig, out / f"{task}_learning_curves.png")]


def metric_vs_params_plot(df: pd.DataFrame, out: Path, task: str, metric: str) -> list[str]:
    ok = ok_runs(df, task).copy()
    col = metric_col(metric)
    if ok.empty or col not in ok:
        return []
    ok["model"] = ok[ARCH]
    plt, sns = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.scatterplot(data=ok, x=PARAMS, y=col, hue="model", style=SIZE, s=80, ax=ax)
    ax.set_xscale("log")
    ax.set(title=f"{task}: {metric} vs parameters (one point per run)",
           xlabel="parameters (log scale)", ylabel=metric.replace("_", " "))
    return [save(fig, out / f"{task}_{metric}_vs_params.png")]


def leaderboard_section(df: pd.DataFrame, curve_df: pd.DataFrame, out: Path, task: str) -> tuple[list[str], str, bool]:
    """The board, its reference rows and plots, as markdown lines; with the metric and its direction."""
    board, metric, lower = leaderboard(df, task)
    pairs = pairwise(df, task)  # LM tasks: per-document paired bootstrap (empty elsewhere)
    board = mark_board(board, pairs)
    md = [INTRO.format(metric=metric, better="lower" if lower else "higher"), "", md_table(board), ""]
    if "kind" in df and (ok_runs(df, task)["kind"] == "seq2seq").any():
        md += ["FLOPs convention (seq2seq): FLOPs per token *read*, source and target tokens alike, with both "
               "sides train.seq_len long in the formula (each arch's `flops_per_token`, checked against "
               "torch's FlopCounterMode in tests/test_flop_counter.py).", ""]
    protocols = ok_runs(df, task).get(metric_col("eval_protocol"), pd.Series(dtype=object)).dropna().unique()
    if len(protocols):
        md += [f"Test scoring protocol (`eval.stride`): {'; '.join(sorted(map(str, protocols)))}.", ""]
    md += significance_lines(df, task, pairs)
    refs = reference_rows(df, task, metric)
    if not refs.empty:
        md += ["Reference rows (no training; computed by the task on the same test split, from the records' "
               "`data.reference_rows`):", "", md_table(refs), ""]
    md += image_links(learning_curves_plot(curve_df, out, task) + metric_vs_params_plot(df, out, task, metric))
    return md, metric, lower
