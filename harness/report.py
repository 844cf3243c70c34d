"""Rebuild the comparison report from whatever records exist: ``python -m harness.report``.

Reads every ``<results_dir>/runs/*.json`` into one pandas DataFrame (saved as runs.parquet and
runs.csv), then writes report.md with an environment stamp, one leaderboard per task (mean and
95% confidence interval over seeds, Student t), the runs that did not finish, and seaborn plots.
Nothing here computes a number the records do not hold, except the stated aggregates.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
from pathlib import Path

import pandas as pd

from harness.errors import UserError, fail
from harness.records import iter_records, write_atomic

NESTED_AS_JSON = ("curve", "overrides", "config", "budget", "hparams", "fit", "data.documents", "data.tokens",
                  "plan", "traceback")


def load_runs(results_dir) -> pd.DataFrame:
    """All records, one row each; nested dicts flattened to dotted columns."""
    recs = list(iter_records(results_dir))
    if not recs:
        return pd.DataFrame()
    df = pd.json_normalize(recs, max_level=1)
    return df


def curves(results_dir) -> pd.DataFrame:
    """Learning curves, long form: one row per (run, validation point)."""
    rows = []
    for rec in iter_records(results_dir):
        for point in rec.get("curve") or []:
            rows.append({"run_key": rec["run_key"], "arch": rec["arch"], "size": rec["size"], "task": rec["task"],
                         "seed": rec["seed"], "model": f"{rec['arch']}/{rec['size']}", **point})
    return pd.DataFrame(rows)


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


def _fmt(x, digits=4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:,.0f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def _table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines)


def leaderboard(df: pd.DataFrame, task: str) -> tuple[pd.DataFrame, str, bool]:
    ok = df[(df["task"] == task) & (df["status"] == "ok")]
    metric = ok["primary_metric"].dropna().iloc[0]
    lower = bool(ok["lower_is_better"].dropna().iloc[0])
    col = f"metrics.{metric}"
    rows = []
    for (arch, size), g in ok.groupby(["arch", "size"], sort=False):
        mean, ci = mean_ci95(g[col])
        rows.append({
            "arch": arch, "size": size, "seeds": len(g),
            metric: mean, "± 95% CI": ci,
            "params": int(g["params"].iloc[0]),
            "tokens seen": int(g["tokens_seen"].mean()),
            "tokens/s": g["throughput.tokens_per_s"].mean(),
            "MFU %": 100 * g["throughput.mfu"].astype(float).mean() if g["throughput.mfu"].notna().any() else math.nan,
            "wall s": g["wall_s"].mean(),
        })
    board = pd.DataFrame(rows).sort_values(metric, ascending=lower).reset_index(drop=True)
    return board, metric, lower


def environment_stamp(df: pd.DataFrame) -> str:
    cols = {"env.git": "git", "env.torch": "torch", "env.python": "python", "env.device_name": "device",
            "env.threads": "threads", "precision": "precision", "throughput.peak_flops_source": "MFU peak from"}
    lines = []
    for col, label in cols.items():
        if col not in df:
            continue
        vals = df[col].dropna()
        if col == "env.git":
            vals = vals.map(lambda g: f"{(g.get('sha') or 'no git')[:12]}{' (dirty)' if g.get('dirty') else ''}")
        uniq = sorted(set(map(str, vals)))
        if uniq:
            lines.append(f"- {label}: {'; '.join(uniq)}")
    if "throughput.peak_flops" in df and df["throughput.peak_flops"].notna().any():
        peaks = df["throughput.peak_flops"].dropna().astype(float)
        lines.append(f"- MFU peak: {peaks.min() / 1e9:.1f}–{peaks.max() / 1e9:.1f} GFLOP/s across runs")
    return "\n".join(lines)


def _plots(df: pd.DataFrame, curve_df: pd.DataFrame, out: Path, task: str, metric: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    written = []
    c = curve_df[curve_df["task"] == task] if not curve_df.empty else curve_df
    if not c.empty:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        sns.lineplot(data=c, x="tokens", y="val_loss", hue="model", errorbar=("ci", 95), marker="o", ax=ax)
        ax.set(title=f"{task}: validation loss during training (mean, 95% CI over seeds)",
               xlabel="training tokens", ylabel="validation loss (nats / token)")
        fig.tight_layout()
        name = f"{task}_learning_curves.png"
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        written.append(name)
    ok = df[(df["task"] == task) & (df["status"] == "ok")].copy()
    col = f"metrics.{metric}"
    if not ok.empty and col in ok:
        ok["model"] = ok["arch"]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        sns.scatterplot(data=ok, x="params", y=col, hue="model", style="size", s=80, ax=ax)
        ax.set_xscale("log")
        ax.set(title=f"{task}: {metric} vs parameters (one point per run)",
               xlabel="parameters (log scale)", ylabel=metric.replace("_", " "))
        fig.tight_layout()
        name = f"{task}_{metric}_vs_params.png"
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        written.append(name)
    return written


def build_report(results_dir) -> Path:
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = load_runs(out)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    md = ["# archbench report", "", f"Generated {now} from {len(df)} records in `{out / 'runs'}`.", ""]
    if df.empty:
        md.append("No records yet: run `python -m harness.sweep ...` first.")
        path = out / "report.md"
        write_atomic(path, "\n".join(md) + "\n")
        return path
    _save_table(df, out)
    md += ["Counts by status: " + ", ".join(f"{k} {v}" for k, v in df["status"].value_counts().items()), ""]
    md += ["## Environment", "", environment_stamp(df), ""]
    curve_df = curves(out)
    for task in sorted(df["task"].unique()):
        ok = df[(df["task"] == task) & (df["status"] == "ok")]
        md += [f"## Task `{task}`", ""]
        if ok.empty:
            md += ["No finished runs.", ""]
            continue
        board, metric, lower = leaderboard(df, task)
        md += [f"Leaderboard by `{metric}` ({'lower' if lower else 'higher'} is better); mean over seeds, "
               "± half-width of the 95% Student-t interval (– with one seed). tokens/s is measured over "
               "training steps only; MFU = tokens/s x FLOPs per token (each arch's own formula) / peak.", ""]
        md += [_table(board), ""]
        for name in _plots(df, curve_df, out, task, metric):
            md += [f"![{name}]({name})", ""]
    planned = planned_table(out)
    if not planned.empty:
        md += ["## Planned, not run (estimates)", "",
               "These configs did not fit the device: the model was built on the `meta` device, its memory "
               "planned, and one real layer timed; every number here is an **estimate** (formulas in each "
               "record's `plan`). They are kept apart from the measured leaderboards above.", "",
               _table(planned), ""]
    lmeval = lmeval_table(df)
    if not lmeval.empty:
        md += ["## lm-eval scores", "", "Written into the run records by `python -m harness.lmeval`.", "",
               _table(lmeval), ""]
    bad = df[df["status"].isin(["failed", "diverged", "skipped"])]
    if not bad.empty:
        md += ["## Runs that did not finish", "", _table(bad[["arch", "size", "task", "seed", "status", "error"]]), ""]
    path = out / "report.md"
    write_atomic(path, "\n".join(md) + "\n")
    return path


def planned_table(results_dir) -> pd.DataFrame:
    gib = 2**30
    rows = []
    for rec in iter_records(results_dir):
        if rec.get("status") != "planned":
            continue
        plan = rec.get("plan") or {}
        mem, speed = plan.get("memory") or {}, plan.get("speed") or {}
        avail = plan.get("available_bytes")
        rows.append({
            "arch": rec["arch"], "size": rec["size"], "task": rec["task"], "params": rec.get("params"),
            "device": plan.get("device"), "batch x seq": f"{plan.get('batch_size')} x {plan.get('seq_len')}",
            "est. memory GiB": (mem.get("total_bytes") or 0) / gib,
            "available GiB": avail / gib if avail else None,
            "est. s/step": speed.get("step_seconds"), "est. tokens/s": speed.get("tokens_per_s"),
            "est. MFU %": 100 * speed["mfu"] if speed.get("mfu") else None,
            "method": speed.get("method"),
        })
    return pd.DataFrame(rows)


def lmeval_table(df: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in df.columns if c.startswith("lmeval.")]
    if not cols:
        return pd.DataFrame()
    have = df[df[cols].notna().any(axis=1)]
    table = have[["arch", "size", "task", "seed", *cols]].copy()
    return table.rename(columns={c: c[len("lmeval."):] for c in cols})


def _save_table(df: pd.DataFrame, out: Path) -> None:
    flat = df.copy()
    for col in flat.columns:
        if flat[col].map(lambda v: isinstance(v, (list, dict))).any():
            flat[col] = flat[col].map(lambda v: json.dumps(v, default=str) if isinstance(v, (list, dict)) else v)
    flat = flat.astype({c: "string" for c in flat.columns if flat[c].dtype == object})
    flat.to_parquet(out / "runs.parquet", index=False)
    flat.to_csv(out / "runs.csv", index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.report", description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", nargs="?", default=None, help="folder holding runs/ (default: results)")
    parser.add_argument("--results-dir", dest="results_dir_opt", default=None)
    args = parser.parse_args(argv)
    results_dir = args.results_dir_opt or args.results_dir or "results"
    if results_dir.startswith("results_dir="):  # Hydra-style spelling, as the sweep takes it
        results_dir = results_dir.split("=", 1)[1]
    try:
        if not Path(results_dir).is_dir():
            raise UserError(f"results_dir '{results_dir}' does not exist; run a sweep first or pass the folder "
                            "that holds runs/")
        path = build_report(results_dir)
    except UserError as e:
        fail(str(e))
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
