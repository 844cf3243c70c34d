"""The study sections of the report: scaling fits, loss by context position, throughput and memory.

Each function takes the records' DataFrame (harness/report.py ``load_runs``) and returns markdown
lines plus the PNG names it wrote; a section with no data for it returns nothing. Every number is a
record field or a stated aggregate / fit of record fields:

* scaling: per (task, arch) with ok runs at >= 3 distinct N, the primary metric (when lower is
  better: a loss) is fit as L(N) = a N^-alpha + c by harness/scaling.py, 95% bootstrap CIs over
  seeds; N = ``non_embedding_params`` (params when a record lacks it). The same fit against the
  training FLOPs each run consumed (``budget.consumed.flops``) gives L(C). Where records carry
  ``metrics.bayes_<metric>`` (synthetic data with a known process) it is drawn as the floor.
* position: ``metrics.loss_by_position`` (mean test nats at each window position), mean and 95%
  CI over seeds per model.
* throughput: per (arch, attention backend, batch size, sequence length), training and inference
  tokens/s, MFU, measured peak memory and the planner's memory (counted on the meta device); the
  exponent k of memory ~ T^k per (arch, backend, batch), least squares on log-log.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from harness.scaling import bootstrap_fit

MIN_SIZES = 3


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


def _save(fig, ax, path) -> None:
    """Every report figure ends the same way: readable log ticks, tight layout, a PNG, closed."""
    import matplotlib.pyplot as plt

    _tidy_log_axes(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _tidy_log_axes(ax) -> None:
    """Readable ticks on log axes: no crowded minor labels on x, plain numbers on y."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if ax.get_xscale() == "log":
        lo, hi = ax.get_xlim()
        if hi / lo < 1e3:  # a few decades: label 1, 2, 5 of each
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _si(v)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    if ax.get_yscale() == "log":
        plain = FuncFormatter(lambda v, _: f"{v:,.3g}" if v < 1e4 else _si(v))
        lo, hi = ax.get_ylim()
        ax.yaxis.set_major_formatter(plain)
        # within one decade the minor ticks are the only labels; across decades they crowd
        ax.yaxis.set_minor_formatter(plain if hi / lo < 10 else NullFormatter())


def _si(v: float) -> str:
    """1.2k, 50M, 3T: short tick labels for counts spanning decades."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df else pd.Series([None] * len(df), index=df.index, dtype=object)


def scaling_points(df: pd.DataFrame, task: str, metric: str) -> pd.DataFrame:
    """One row per ok run of the task: arch, N, FLOPs consumed, loss, seed."""
    ok = df[(df["task"] == task) & (df["status"] == "ok")]
    n = _col(ok, "non_embedding_params").astype(float)
    n = n.where(n.notna(), ok["params"].astype(float))
    flops = _col(ok, "budget.consumed").map(lambda b: b.get("flops") if isinstance(b, dict) else None)
    bayes = _col(ok, f"metrics.bayes_{metric}")
    pts = pd.DataFrame({"arch": ok["arch"], "N": n, "flops": flops.astype(float), "loss": ok[f"metrics.{metric}"].astype(float),
                        "bayes": bayes.astype(float), "seed": ok["seed"], "setup": setup_of(ok)})
    return pts.dropna(subset=["N", "loss"])


SETUP_IGNORED = ("progress", "eval_every", "eval_batches")


def setup_of(ok: pd.DataFrame) -> pd.Series:
    """A label of the training setup (budget, batch, context, optimizer): only runs trained the same
    way belong on one scaling curve, e.g. not a 10-step throughput run beside a scaling ladder."""
    def label(row) -> str:
        t = row.get("config.train") if isinstance(row.get("config.train"), dict) else {}
        given = {k: row.get(f"budget.{k}") for k in ("tokens", "flops", "seconds", "steps")}
        parts = [f"budget.{k}={v:g}" if isinstance(v, float) else f"budget.{k}={v}"
                 for k, v in given.items() if v is not None and v == v]
        parts += [f"{k}={t[k]}" for k in ("batch_size", "seq_len") if k in t]
        rest = {k: v for k, v in t.items() if k not in SETUP_IGNORED + ("batch_size", "seq_len", "max_steps",
                                                                        "max_tokens", "max_seconds")}
        digest = hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:6]
        return " ".join(parts) + (f" (other settings {digest})" if rest else "")
    return ok.apply(label, axis=1) if not ok.empty else pd.Series([], dtype=object)


def scaling_fits(df: pd.DataFrame, task: str, metric: str, n_boot: int = 200) -> pd.DataFrame:
    """Fitted L(N) and L(C) per arch with >= 3 distinct N (rows: arch, x, a, alpha, CI, c, CI, points)."""
    pts = scaling_points(df, task, metric)
    rows = []
    for (setup, arch), g in pts.groupby(["setup", "arch"], sort=True):
        if g["N"].nunique() < MIN_SIZES:
            continue
        for x, label in (("N", "non-embedding params"), ("flops", "training FLOPs")):
            h = g.dropna(subset=[x])
            if h[x].nunique() < MIN_SIZES:
                continue
            # bootstrap within sizes: runs of one size (same N) are resampled over seeds
            fit = bootstrap_fit(h[x], h["loss"], h["N"], n_boot=n_boot)
            if fit is None:
                continue
            rows.append({"arch": arch, "setup": setup, "x": label, "a": fit.a, "alpha": fit.alpha,
                         "alpha_lo": fit.alpha_ci[0] if fit.alpha_ci else math.nan,
                         "alpha_hi": fit.alpha_ci[1] if fit.alpha_ci else math.nan,
                         "c": fit.c, "c_lo": fit.c_ci[0] if fit.c_ci else math.nan,
                         "c_hi": fit.c_ci[1] if fit.c_ci else math.nan,
                         "points": fit.n_points, "sizes": fit.n_sizes, "bootstrap replicates": fit.n_boot})
    return pd.DataFrame(rows)


def _ci(lo, hi) -> str:
    return "–" if (lo is None or math.isnan(lo)) else f"[{lo:.4g}, {hi:.4g}]"


def scaling_section(df: pd.DataFrame, out: Path, task: str, metric: str, lower: bool) -> list[str]:
    if not lower:
        return []
    fits = scaling_fits(df, task, metric)
    if fits.empty:
        return []
    pts = scaling_points(df, task, metric)
    setups = sorted(fits["setup"].unique())
    table = pd.DataFrame({
        "arch": fits["arch"], "setup": fits["setup"].map(lambda u: setups.index(u) + 1), "fit against": fits["x"], "alpha": fits["alpha"].map(lambda v: f"{v:.4g}"),
        "alpha 95% CI": [_ci(lo, hi) for lo, hi in zip(fits["alpha_lo"], fits["alpha_hi"])],
        "c": fits["c"].map(lambda v: f"{v:.4g}"), "c 95% CI": [_ci(lo, hi) for lo, hi in zip(fits["c_lo"], fits["c_hi"])],
        "a": fits["a"].map(lambda v: f"{v:.4g}"), "runs": fits["points"], "sizes": fits["sizes"],
        "bootstrap fits": fits["bootstrap replicates"]})
    md = [f"### Scaling: `{metric}` vs size and compute", "",
          f"Fit per arch: {metric} = a x^-alpha + c (nonlinear least squares on log loss; harness/scaling.py), "
          "x = non-embedding parameters N (params minus nn.Embedding weights; each record's "
          "`non_embedding_params`) or the training FLOPs the run consumed (`budget.consumed.flops` = "
          "tokens seen x the arch's FLOPs per token). 95% CIs: bootstrap over seeds within each size "
          "(– when a size has one seed or fewer than 20 replicates converged). Archs with fewer than "
          f"{MIN_SIZES} sizes are not fit. Only runs trained the same way (setup) share a curve:", ""]
    md += [f"- setup {i + 1}: {u}" for i, u in enumerate(setups)] + ["", _md_table(table), ""]
    bayes = pts["bayes"].dropna()
    if not bayes.empty:
        md += [f"Bayes-optimal {metric} (the true generating process scored on the same test windows, "
               f"`metrics.bayes_{metric}`): {bayes.mean():.4g}"
               + (f" (range {bayes.min():.4g}–{bayes.max():.4g} across runs)" if bayes.nunique() > 1 else "")
               + "; no model can go below it, so c should not either.", ""]
    written = []
    for x, xlabel, name in (("N", "non-embedding parameters N (log scale)", f"{task}_scaling_params.png"),
                            ("flops", "training compute C (FLOPs, log scale)", f"{task}_scaling_flops.png")):
        label = "non-embedding params" if x == "N" else "training FLOPs"
        sub = fits[fits["x"] == label]
        if sub.empty:
            continue
        plt, sns = _plt()
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        palette = dict(zip(sorted(pts["arch"].unique()), sns.color_palette("tab10")))
        setups = sorted(sub["setup"].unique())
        styles = dict(zip(setups, ["-", "--", ":", "-."] * 10))
        setup_tag = {u: (f" [setup {i + 1}]" if len(setups) > 1 else "") for i, u in enumerate(setups)}
        for _, f in sub.iterrows():
            g = pts[(pts["arch"] == f["arch"]) & (pts["setup"] == f["setup"])].dropna(subset=[x])
            color = palette[f["arch"]]
            ax.scatter(g[x], g["loss"], color=color, alpha=0.6, s=28)
            grid = np.geomspace(g[x].min(), g[x].max(), 100)
            ax.plot(grid, f["a"] * grid ** -f["alpha"] + f["c"], color=color, ls=styles[f["setup"]],
                    label=f"{f['arch']}{setup_tag[f['setup']]}: alpha={f['alpha']:.3g} {_ci(f['alpha_lo'], f['alpha_hi'])}, c={f['c']:.3g}")
        if not bayes.empty:
            ax.axhline(bayes.mean(), color="black", ls="--", lw=1.2, label=f"Bayes-optimal {bayes.mean():.4g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set(title=f"{task}: test {metric.replace('_', ' ')} vs {'parameters' if x == 'N' else 'training compute'}"
                     "\n(points: runs; lines: fitted a·x^-alpha + c, 95% CI in brackets)",
               xlabel=xlabel, ylabel=f"{metric.replace('_', ' ')} (log scale)")
        ax.legend(fontsize=8, loc="upper right")
        _save(fig, ax, out / name)
        written.append(name)
    for name in written:
        md += [f"![{name}]({name})", ""]
    return md


def position_section(df: pd.DataFrame, out: Path, task: str) -> list[str]:
    col = "metrics.loss_by_position"
    ok = df[(df["task"] == task) & (df["status"] == "ok")]
    if col not in ok or ok[col].dropna().empty:
        return []
    rows = []
    for _, r in ok.dropna(subset=[col]).iterrows():
        n = r.get("non_embedding_params")
        model = model_label(r) + (f" (N={int(n):,})" if n == n and n is not None else "")
        seq_len = len(r[col])
        for j, v in enumerate(r[col]):
            rows.append({"model": model, "window": seq_len, "position": j + 1, "loss": v, "seed": r["seed"]})
    long = pd.DataFrame(rows)
    # only the longest window per model: shorter windows (e.g. a throughput sweep) would mix contexts
    long = long[long["window"] == long.groupby("model")["window"].transform("max")]
    # a test split holds a few hundred windows: one position is noisy, so average the positions in
    # log-spaced bins (per run, then mean and CI over seeds); bins are labeled by their geometric centre
    edges = np.unique(np.round(np.geomspace(1, long["position"].max() + 1, 25)).astype(int))
    bin_of = np.searchsorted(edges, long["position"], side="right") - 1
    centres = np.sqrt(edges[:-1] * np.maximum(edges[1:] - 1, edges[:-1]))
    long["bin position"] = centres[np.clip(bin_of, 0, len(centres) - 1)]
    binned = long.groupby(["model", "seed", "bin position"], as_index=False)["loss"].mean()
    plt, sns = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    sns.lineplot(data=binned, x="bin position", y="loss", hue="model", errorbar=("ci", 95), marker="o", ax=ax)
    ax.set_xscale("log")
    ax.set(title=f"{task}: test loss by position in the context window\n(positions averaged in log-spaced bins; "
                 "mean over seeds, 95% CI band)",
           xlabel="tokens of context seen (window position, log scale)", ylabel="test loss (nats / token)")
    ax.legend(fontsize=8, title="model")
    name = f"{task}_loss_by_position.png"
    _save(fig, ax, out / name)
    summary = []
    for model, g in long.groupby("model"):
        m = g.groupby("position")["loss"].mean()
        pick = {p: m.get(p) for p in (1, 10, 100, int(m.index.max()))}
        summary.append({"model": model, "seeds": g["seed"].nunique(),
                        **{f"loss @ {p}": v for p, v in pick.items()}})
    return ["### Loss by position in the context", "",
            "Mean test NLL (nats) at each position of the non-overlapping scoring windows, from the same "
            "windows as bits per byte (`metrics.loss_by_position`): position j predicts with j tokens of "
            "input. Kaplan et al. (2020, Fig. 7) report LSTMs flattening after ~100 tokens while "
            "Transformers keep improving; this is what our runs show.", "",
            _md_table(pd.DataFrame(summary)), "", f"![{name}]({name})", ""]


def throughput_frame(df: pd.DataFrame) -> pd.DataFrame:
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame()
    # load_runs flattens one level: config.train and plan.memory are dicts
    train = _col(ok, "config.train").map(lambda t: t if isinstance(t, dict) else {})
    plan_mem = _col(ok, "plan.memory").map(lambda m: m.get("total_bytes") if isinstance(m, dict) else None)
    plan_act = _col(ok, "plan.memory").map(lambda m: m.get("activations_bytes") if isinstance(m, dict) else None)
    tp = pd.DataFrame({
        "task": ok["task"], "arch": ok["arch"], "size": ok["size"],
        "backend": _col(ok, "attention_backend").fillna("none"),
        "batch": train.map(lambda t: t.get("batch_size")), "seq_len": train.map(lambda t: t.get("seq_len")),
        "train tokens/s": _col(ok, "throughput.tokens_per_s").astype(float),
        "inference tokens/s": _col(ok, "throughput.inference_tokens_per_s").astype(float),
        "MFU %": 100 * _col(ok, "throughput.mfu").astype(float),
        "peak memory MiB (measured, training)": _col(ok, "throughput.peak_mem_bytes").astype(float) / 2**20,
        "planned memory MiB": plan_mem.astype(float) / 2**20,
        "planned activations MiB": plan_act.astype(float) / 2**20,
        "steps/s": _col(ok, "throughput.tokens_per_s").astype(float)
        / (train.map(lambda t: t.get("batch_size") or math.nan) * train.map(lambda t: t.get("seq_len") or math.nan)),
    })
    return tp


def _exponent(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = (x > 0) & (y > 0) & np.isfinite(y)
    if len(np.unique(x[keep])) < 2:
        return math.nan
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def throughput_section(df: pd.DataFrame, out: Path) -> list[str]:
    tp = throughput_frame(df)
    if tp.empty:
        return []
    keys = ["task", "arch", "size", "backend", "batch"]
    varied = tp.groupby(keys)["seq_len"].nunique()
    if varied.max() < 2:
        return []  # no run varies the sequence length: nothing to plot against it
    tp = tp.groupby([*keys, "seq_len"], as_index=False).mean(numeric_only=True)
    tp["config"] = tp["arch"] + "/" + tp["size"] + " " + tp["backend"]
    md = ["## Throughput and memory", "",
          "Per (arch, attention backend, batch size, sequence length), mean over repeats. Training tokens/s "
          "is over training steps after two untimed warm-up steps; inference tokens/s is the test-split "
          "evaluation (forward only) timed as a whole over the tokens it scored, in the evaluator's own batches "
          "of 32 windows (so the batch size column is the training batch only). Measured peak memory: see "
          "the environment stamp for what was measured; planned memory: weights + gradients + AdamW + "
          "activations saved for backward, **counted on the meta device** by harness/planner.py (an exact "
          "count of the tensors, not a measurement).", ""]
    exps = []
    for (task, arch, size, backend, batch), g in tp.groupby(keys):
        if g["seq_len"].nunique() < 2:
            continue
        exps.append({"arch": f"{arch}/{size}", "backend": backend, "batch": batch,
                     "lengths": ", ".join(str(int(t)) for t in sorted(g["seq_len"])),
                     "k planned activations (counted on meta)": _exponent(g["seq_len"], g["planned activations MiB"]),
                     "k planned total": _exponent(g["seq_len"], g["planned memory MiB"]),
                     "k measured peak": _exponent(g["seq_len"], g["peak memory MiB (measured, training)"]),
                     "k train time/step": _exponent(g["seq_len"], 1 / g["steps/s"])})
    md += ["### Exponent of memory vs sequence length", "",
           "Least squares of log memory on log T over the lengths run (k = 1: linear, k = 2: quadratic).", "",
           _md_table(pd.DataFrame(exps)), ""]
    # Long Range Arena-style: steps/s and memory at each length, relative to the baseline Transformer
    base_arch = "gpt" if "gpt" in set(tp["arch"]) else sorted(tp["arch"])[0]
    base_backend = "math" if "math" in set(tp[tp["arch"] == base_arch]["backend"]) else None
    base = tp[(tp["arch"] == base_arch) & ((tp["backend"] == base_backend) if base_backend else True)]
    rel = tp.merge(base[["batch", "seq_len", "steps/s", "peak memory MiB (measured, training)", "planned memory MiB"]],
                   on=["batch", "seq_len"], suffixes=("", " base"))
    rel["steps/s x baseline"] = rel["steps/s"] / rel["steps/s base"]
    rel["planned memory x baseline"] = rel["planned memory MiB"] / rel["planned memory MiB base"]
    cols = ["config", "batch", "seq_len", "steps/s", "steps/s x baseline", "train tokens/s", "inference tokens/s",
            "MFU %", "peak memory MiB (measured, training)", "planned memory MiB", "planned memory x baseline"]
    md += [f"### Speed and memory at each length (relative to {base_arch}{' with ' + base_backend if base_backend else ''} "
           "attention at the same batch and length)", "",
           _md_table(rel.sort_values(["batch", "seq_len", "config"])[cols]), ""]
    written = []
    plt, sns = _plt()
    for y, ylabel, title, name in (
            ("train tokens/s", "training throughput (tokens/s, log scale)",
             "Training throughput vs sequence length", "throughput_train.png"),
            ("inference tokens/s", "inference throughput (tokens/s, log scale)",
             "Inference throughput (test-split evaluation) vs sequence length", "throughput_inference.png"),
            ("peak memory MiB (measured, training)", "measured peak memory (MiB, log scale)",
             "Measured peak memory of a run vs sequence length", "memory_measured.png"),
            ("planned memory MiB", "planned memory (MiB, log scale)",
             "Planned training memory (counted on the meta device) vs sequence length", "memory_planned.png")):
        d = tp.dropna(subset=[y])
        d = d[d[y] > 0]
        if d.empty:
            continue
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        sns.lineplot(data=d, x="seq_len", y=y, hue="config", style="batch", markers=True, dashes=True, ax=ax)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set(title=f"{title}\n(colour: arch and attention backend; marker/line style: batch size)",
               xlabel="sequence length T (tokens, log scale)", ylabel=ylabel)
        ax.legend(fontsize=8, ncol=2)
        _save(fig, ax, out / name)
        written.append(name)
    for name in written:
        md += [f"![{name}]({name})", ""]
    return md


def model_label(rec) -> str:
    from harness.report import model_label as label

    return label(rec)


def _md_table(df: pd.DataFrame) -> str:
    from harness.report import _table

    return _table(df)
