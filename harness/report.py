"""Rebuild the comparison report from whatever records exist: ``python -m harness.report``.

Reads every ``<results_dir>/runs/*.json`` into one pandas DataFrame (saved as runs.parquet and
runs.csv), then writes report.md with an environment stamp, the arch x task capability matrix, one
leaderboard per task (mean and 95% confidence interval over seeds, Student t; no-training reference
rows beside it), scaling fits (L(N) = a N^-alpha + c, bootstrap CIs, harness/scaling.py), loss by
context position, throughput and memory, planned (estimated) runs apart, the runs that did not
finish, and seaborn plots. Nothing here computes a number the records do not hold, except the
stated aggregates and fits.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
from pathlib import Path

import pandas as pd

from harness import report_studies as studies
from archbench.errors import UserError, fail
from archbench.record import iter_records, write_atomic

NESTED_AS_JSON = ("curve", "overrides", "config", "budget", "hparams", "fit", "data.documents", "data.tokens",
                  "plan", "traceback")


def load_runs(results_dir) -> pd.DataFrame:
    """All records, one row each; nested dicts flattened to dotted columns."""
    recs = list(iter_records(results_dir))
    if not recs:
        return pd.DataFrame()
    df = pd.json_normalize(recs, max_level=1)
    return df


def model_label(rec) -> str:
    """arch/size, or the named point of sweeps/model/ a run came from (an arch over its own ladder)."""
    overrides = rec.get("overrides")
    if isinstance(overrides, (list, tuple)):
        for o in overrides:
            if o.startswith("model="):
                return o.split("=", 1)[1]
    return f"{rec['arch']}/{rec['size']}"


def curves(results_dir) -> pd.DataFrame:
    """Learning curves, long form: one row per (run, validation point)."""
    rows = []
    for rec in iter_records(results_dir):
        for point in rec.get("curve") or []:
            rows.append({"run_key": rec["run_key"], "arch": rec["arch"], "size": rec["size"], "task": rec["task"],
                         "seed": rec["seed"], "model": model_label(rec), **point})
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


# Overrides that say where or how a run was launched, or that other columns already show
NOT_A_VARIANT = ("arch", "size", "task", "seed", "study", "results_dir", "report", "force", "train.progress",
                 "checkpoint", "hydra")


def variant_of(overrides) -> str:
    """What distinguishes a run beyond arch/size/task/seed: its remaining overrides, sorted."""
    if not isinstance(overrides, (list, tuple)):
        return ""
    keep = [o for o in overrides if o.split("=")[0].lstrip("+~").split("/")[0] not in NOT_A_VARIANT
            and not o.startswith("hydra")]
    return " ".join(sorted(keep))


def with_variants(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["variant"] = df["overrides"].map(variant_of) if "overrides" in df else ""
    return df


def reference_rows(df: pd.DataFrame, task: str, metric: str) -> pd.DataFrame:
    """No-training baselines a task puts in data.reference_rows (e.g. MT copy-source), one row per
    distinct value: they depend on the data only, so seeds repeat them."""
    col = "data.reference_rows"
    if col not in df:
        return pd.DataFrame()
    rows, seen = [], set()
    for refs in df.loc[(df["task"] == task) & (df["status"] == "ok"), col].dropna():
        for name, ref in (refs or {}).items():
            value = (ref.get("metrics") or {}).get(metric)
            if value is None or (name, value) in seen:
                continue
            seen.add((name, value))
            rows.append({"reference": name, metric: value, "what it is": ref.get("about", "")})
    return pd.DataFrame(rows)


def leaderboard(df: pd.DataFrame, task: str) -> tuple[pd.DataFrame, str, bool]:
    ok = with_variants(df[(df["task"] == task) & (df["status"] == "ok")])
    metric = ok["primary_metric"].dropna().iloc[0]
    lower = bool(ok["lower_is_better"].dropna().iloc[0])
    col = f"metrics.{metric}"
    rows = []
    for (arch, size, variant), g in ok.groupby(["arch", "size", "variant"], sort=False):
        mean, ci = mean_ci95(g[col])
        rows.append({
            "arch": arch, "size": size, "variant": variant or "–", "seeds": len(g),
            metric: mean, "± 95% CI": ci,
            "params": int(g["params"].iloc[0]),
            "tokens seen": int(g["tokens_seen"].mean()),
            "tokens/s": g["throughput.tokens_per_s"].mean(),
            "MFU %": 100 * g["throughput.mfu"].astype(float).mean() if g["throughput.mfu"].notna().any() else math.nan,
            "wall s": g["wall_s"].mean(),
        })
    board = pd.DataFrame(rows).sort_values(metric, ascending=lower).reset_index(drop=True)
    if (board["variant"] == "–").all():
        board = board.drop(columns="variant")
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
        lines.append(f"- MFU peak: {peaks.min() / 1e9:.1f}–{peaks.max() / 1e9:.1f} GFLOP/s across runs "
                     "(MFU = tokens/s x the arch's FLOPs per token / this peak)")
    if "throughput.mfu" in df:
        over = df[df["throughput.mfu"].astype(float) > 1.0]
        if not over.empty:
            lines.append(f"- **{len(over)} run(s) show MFU above 100%**: the CPU peak is probed once per process; "
                         "when that probe ran under heavier load from other processes than the runs did, the "
                         "peak is too low. Their MFU is unreliable; tokens/s is still measured.")
    if "throughput.peak_mem_kind" in df:
        kinds = sorted(set(df["throughput.peak_mem_kind"].dropna()))
        if kinds:
            lines += [f"- peak memory `{k}`: {MEMORY_KINDS.get(k, 'see the records')}" for k in kinds]
    return "\n".join(lines)


MEMORY_KINDS = {
    "rss_high_water_above_run_start": "the process's resident high-water mark above its level when the model "
    "was built, reset per run after free heap pages are returned to the OS (malloc_trim); `peak_mem_bytes` is "
    "read before the test evaluation (weights, optimizer state, training activations, and the validation passes "
    "inside training, which use batches of 32 windows), `peak_mem_with_eval_bytes` after it",
    "cuda_max_allocated": "torch.cuda.max_memory_allocated",
    "process_max_rss": "the whole process's maximum resident set (includes earlier runs in the process)",
}


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
        models = sorted(c["model"].unique())
        sns.lineplot(data=c, x="tokens", y="val_loss", hue="model", hue_order=models, errorbar=("ci", 95),
                     marker="o", ax=ax)
        ax.set(title=f"{task}: validation loss during training (mean, 95% CI over seeds)",
               xlabel="training tokens", ylabel="validation loss (nats / token)")
        if len(models) > 4:  # many models: the legend goes beside the plot, not over the curves
            ax.legend(title="model", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
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
    md += capability_section()
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
        refs = reference_rows(df, task, metric)
        if not refs.empty:
            md += ["Reference rows (no training; computed by the task on the same test split, from the records' "
                   "`data.reference_rows`):", "", _table(refs), ""]
        for name in _plots(df, curve_df, out, task, metric):
            md += [f"![{name}]({name})", ""]
        md += studies.scaling_section(df, out, task, metric, lower)
        md += studies.position_section(df, out, task)
    md += studies.throughput_section(df, out)
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


def capability_section() -> list[str]:
    """The arch x task matrix of the registered archs and tasks (harness/capabilities.py)."""
    from harness.capabilities import capability_matrix

    cap = capability_matrix()
    if cap.empty:
        return []
    cap["cell"] = cap["supported"].map({True: "yes", False: "no"})
    grid = cap.pivot(index="arch", columns="task", values="cell").reset_index()
    grid.columns.name = None
    kinds = dict(zip(cap["task"], cap["kind"]))
    grid = grid.rename(columns={t: f"{t} ({k})" for t, k in kinds.items()})
    reasons = cap[~cap["supported"]].drop_duplicates(["arch", "kind"])
    md = ["## Capability matrix", "", "Which arch can run which task (by the task's kind); a `no` cell is "
          "recorded as `skipped` in a multirun, and a single run of it stops with the reason.", "", _table(grid), ""]
    if not reasons.empty:
        md += ["Why not:", ""] + [f"- {r.arch} x {r.kind}: {r.reason}" for r in reasons.itertuples()] + [""]
    return md


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
