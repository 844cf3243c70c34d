"""One leaderboard per task: mean and 95% Student-t interval over seeds per (arch, size, variant),
the no-training reference rows a task records beside it, the learning curves and metric vs params."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from archbench import SEQ2SEQ_FLOPS_CONVENTION
from harness.report.significance import mark_board, pairwise, significance_lines
from harness.report.figures import image_links, pyplot, save
from harness.report.frame import (ARCH, CODE_VERSION, CREATED_AT, DATA_FINGERPRINT, DATA_SOURCE, LOWER_IS_BETTER, MFU, PARAMS,
                                  PRIMARY_METRIC, REFERENCE_ROWS, SEED, SETUP, SIZE, STATUS, STOP_REASON, TASK, TOKENS_PER_S,
                                  TOKENS_SEEN, WALL_S, col, metric as metric_col, ok_runs, with_variants)
from harness.report.identity import IDENTITY, short, split_notes
from harness.report.tables import md_table

INTRO = ("Leaderboard by `{metric}` ({better} is better); mean over seeds, ± half-width of the 95% Student-t "
         "interval (– with one seed); seeds counts distinct seeds with the metric. A row pools only records of one data "
         "set (`data`: fingerprint), one code version and one setup. tokens/s is measured over training steps only; MFU = tokens/s x FLOPs per "
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


def data_label(g: pd.DataFrame, fingerprint) -> str:
    """The data set a row was trained on: its source (a file's name) and fingerprint."""
    source = col(g, DATA_SOURCE).dropna()
    name = Path(str(source.iloc[0]).split(" (")[0]).name if len(source) else ""
    return f"{name} {short(fingerprint)}".strip()


def _per_seed(g: pd.DataFrame, col_name: str) -> pd.DataFrame:
    """The records that have the metric, the newest one per seed."""
    have = g[g[col_name].notna()] if col_name in g else g.iloc[0:0]
    return have.sort_values(CREATED_AT).drop_duplicates(SEED, keep="last") if CREATED_AT in have else have


def leaderboard(df: pd.DataFrame, task: str) -> tuple[pd.DataFrame, str, bool, list[str]]:
    """The task's board (best first), its primary metric, whether lower is better, and a note per
    arch/size/variant whose records were split into rows (different data, code or setup)."""
    ok = with_variants(ok_runs(df, task))
    for c in IDENTITY:
        ok[c] = col(ok, c).astype(object).where(col(ok, c).notna(), "?")
    metric = ok[PRIMARY_METRIC].dropna().iloc[0]
    lower = bool(ok[LOWER_IS_BETTER].dropna().iloc[0])
    col_name = metric_col(metric)
    rows = []
    for (arch, size, variant, data, code, setup), g in ok.groupby([ARCH, SIZE, "variant", *IDENTITY], sort=False):
        seeds = _per_seed(g, col_name)
        mean, ci = mean_ci95(seeds[col_name]) if len(seeds) else (math.nan, math.nan)
        rows.append({
            "arch": arch, "size": size, "variant": variant or "–", "data": data_label(g, data), "code": short(code),
            "setup": short(setup), "seeds": int(seeds[SEED].nunique()) if len(seeds) else 0,
            metric: mean, "± 95% CI": ci,
            "params": int(g[PARAMS].iloc[0]),
            "tokens seen": int(g[TOKENS_SEEN].mean()),
            "stopped by": ", ".join(sorted(g[STOP_REASON].dropna().astype(str).unique())) if STOP_REASON in g else "",
            "tokens/s": g[TOKENS_PER_S].mean(),
            "MFU %": 100 * g[MFU].astype(float).mean() if g[MFU].notna().any() else math.nan,
            "wall s": g[WALL_S].mean(),
        })
    board = pd.DataFrame(rows).sort_values(metric, ascending=lower).reset_index(drop=True)
    for c in ("variant", "code", "setup"):  # shown only when they tell rows apart
        if board[c].nunique() < 2 and (c != "variant" or (board[c] == "–").all()):
            board = board.drop(columns=c)
    return board, metric, lower, split_notes(ok, [ARCH, SIZE, "variant"])


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
    board, metric, lower, notes = leaderboard(df, task)
    pairs = pairwise(df, task)  # LM tasks: per-document paired bootstrap (empty elsewhere)
    board = mark_board(board, pairs)
    md = [INTRO.format(metric=metric, better="lower" if lower else "higher"), "", md_table(board), ""]
    if notes:
        md += ["Rows split because their records are not comparable:", "", *notes, ""]
    if "kind" in df and (ok_runs(df, task)["kind"] == "seq2seq").any():
        md += [f"FLOPs convention: {SEQ2SEQ_FLOPS_CONVENTION} (each arch's `pair_flops`, checked against torch's "
               "FlopCounterMode in tests/test_flop_counter.py); the consumed FLOPs are summed batch by batch.", ""]
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
