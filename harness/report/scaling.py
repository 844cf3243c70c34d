"""The scaling section: per (task, arch) with ok runs at >= 3 distinct N, the primary metric (when
lower is better: a loss) fit as L(N) = a N^-alpha + c (harness/report/powerlaw.py), 95% bootstrap
CIs over seeds; N = ``non_embedding_params`` (params when a record lacks it). The same fit against
the training FLOPs each run consumed (``budget.consumed.flops``) gives L(C). Where records carry
``metrics.bayes_<metric>`` (synthetic data with a known process) it is drawn as the floor."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from harness.report.figures import image_links, pyplot, save
from harness.report.frame import (ARCH, BUDGET_CONSUMED, BUDGET_GIVEN, CODE_VERSION, CONFIG_TRAIN, CONSUMED_FLOPS,
                                  DATA_FINGERPRINT,
                                  NON_EMBEDDING_PARAMS, PARAMS, SEED, col, metric as metric_col, ok_runs)
from harness.report.powerlaw import bootstrap_fit
from harness.report.tables import ci_text, md_table

MIN_SIZES = 3
SETUP_IGNORED = ("progress", "eval_every", "eval_batches")
AXES = {"N": "non-embedding params", "flops": "training FLOPs"}


def scaling_points(df: pd.DataFrame, task: str, metric: str) -> pd.DataFrame:
    """One row per ok run of the task: arch, N, FLOPs consumed, loss, seed."""
    ok = ok_runs(df, task)
    n = col(ok, NON_EMBEDDING_PARAMS).astype(float)
    n = n.where(n.notna(), ok[PARAMS].astype(float))
    flops = col(ok, BUDGET_CONSUMED).map(lambda b: b.get(CONSUMED_FLOPS) if isinstance(b, dict) else None)
    bayes = col(ok, metric_col(f"bayes_{metric}"))
    pts = pd.DataFrame({"arch": ok[ARCH], "N": n, "flops": flops.astype(float),
                        "loss": ok[metric_col(metric)].astype(float), "bayes": bayes.astype(float),
                        "seed": ok[SEED], "setup": setup_of(ok)})
    return pts.dropna(subset=["N", "loss"])


def _num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else f"{v}"


def _setup_label(row: pd.Series) -> str:
    t = row.get(CONFIG_TRAIN) if isinstance(row.get(CONFIG_TRAIN), dict) else {}
    given = row.get(BUDGET_GIVEN) if isinstance(row.get(BUDGET_GIVEN), dict) else {}
    parts = [f"budget.{k}={_num(given[k])}" for k in ("tokens", "flops", "seconds", "steps")
             if given.get(k) is not None and given[k] == given[k]]
    parts += [f"{k}={t[k]}" for k in ("batch_size", "seq_len") if k in t]
    rest = {k: v for k, v in t.items() if k not in SETUP_IGNORED + ("batch_size", "seq_len", "max_steps",
                                                                    "max_tokens", "max_seconds")}
    digest = hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:6]
    # runs on other data or other code are never on one curve
    ident = [f"{name} {str(row.get(c))[:8]}" for c, name in ((DATA_FINGERPRINT, "data"), (CODE_VERSION, "code"))
             if isinstance(row.get(c), str)]
    return " ".join(parts) + (f" (other settings {digest})" if rest else "") + (f" [{', '.join(ident)}]" if ident else "")


def setup_of(ok: pd.DataFrame) -> pd.Series:
    """A label of the training setup (budget, batch, context, optimizer): only runs trained the same
    way belong on one scaling curve, e.g. not a 10-step throughput run beside a scaling ladder."""
    return ok.apply(_setup_label, axis=1) if not ok.empty else pd.Series([], dtype=object)


def _fit_row(arch: str, setup: str, x: str, fit) -> dict:
    alpha_lo, alpha_hi = fit.alpha_ci or (math.nan, math.nan)
    c_lo, c_hi = fit.c_ci or (math.nan, math.nan)
    return {"arch": arch, "setup": setup, "x": AXES[x], "a": fit.a, "alpha": fit.alpha,
            "alpha_lo": alpha_lo, "alpha_hi": alpha_hi, "c": fit.c, "c_lo": c_lo, "c_hi": c_hi,
            "points": fit.n_points, "sizes": fit.n_sizes, "bootstrap replicates": fit.n_boot}


def scaling_fits(df: pd.DataFrame, task: str, metric: str, n_boot: int = 200) -> pd.DataFrame:
    """Fitted L(N) and L(C) per arch with >= 3 distinct N (rows: arch, x, a, alpha, CI, c, CI, points)."""
    pts = scaling_points(df, task, metric)
    rows = []
    for (setup, arch), g in pts.groupby(["setup", "arch"], sort=True):
        if g["N"].nunique() < MIN_SIZES:
            continue
        for x in AXES:
            h = g.dropna(subset=[x])
            if h[x].nunique() < MIN_SIZES:
                continue
            # bootstrap within sizes: runs of one size (same N) are resampled over seeds
            fit = bootstrap_fit(h[x], h["loss"], h["N"], n_boot=n_boot)
            if fit is not None:
                rows.append(_fit_row(arch, setup, x, fit))
    return pd.DataFrame(rows)


def fits_table(fits: pd.DataFrame) -> pd.DataFrame:
    setups = sorted(fits["setup"].unique())

    def g4(v) -> str:
        return f"{v:.4g}"

    return pd.DataFrame({
        "arch": fits["arch"], "setup": fits["setup"].map(lambda u: setups.index(u) + 1), "fit against": fits["x"],
        "alpha": fits["alpha"].map(g4),
        "alpha 95% CI": [ci_text(lo, hi) for lo, hi in zip(fits["alpha_lo"], fits["alpha_hi"])],
        "c": fits["c"].map(g4), "c 95% CI": [ci_text(lo, hi) for lo, hi in zip(fits["c_lo"], fits["c_hi"])],
        "a": fits["a"].map(g4), "runs": fits["points"], "sizes": fits["sizes"],
        "bootstrap fits": fits["bootstrap replicates"]})


def _intro(metric: str, setups: list[str]) -> list[str]:
    md = [f"### Scaling: `{metric}` vs size and compute", "",
          f"Fit per arch: {metric} = a x^-alpha + c (nonlinear least squares on log loss; harness/report/powerlaw.py), "
          "x = non-embedding parameters N (params minus nn.Embedding weights; each record's "
          "`non_embedding_params`) or the training FLOPs the run consumed (`budget.consumed.flops` = "
          "tokens seen x the arch's FLOPs per token). 95% CIs: bootstrap over seeds within each size "
          "(– when a size has one seed or fewer than 20 replicates converged). Archs with fewer than "
          f"{MIN_SIZES} sizes are not fit. Only runs trained the same way (setup) share a curve:", ""]
    return md + [f"- setup {i + 1}: {u}" for i, u in enumerate(setups)]


def _bayes_note(metric: str, bayes: pd.Series) -> list[str]:
    if bayes.empty:
        return []
    return [f"Bayes-optimal {metric} (the true generating process scored on the same test windows, "
            f"`metrics.bayes_{metric}`): {bayes.mean():.4g}"
            + (f" (range {bayes.min():.4g}–{bayes.max():.4g} across runs)" if bayes.nunique() > 1 else "")
            + "; no model can go below it, so c should not either.", ""]


def scaling_plot(pts: pd.DataFrame, fits: pd.DataFrame, path: Path, task: str, metric: str, x: str) -> str | None:
    sub = fits[fits["x"] == AXES[x]]
    if sub.empty:
        return None
    bayes = pts["bayes"].dropna()
    plt, sns = pyplot()
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
                label=f"{f['arch']}{setup_tag[f['setup']]}: alpha={f['alpha']:.3g} "
                      f"{ci_text(f['alpha_lo'], f['alpha_hi'])}, c={f['c']:.3g}")
    if not bayes.empty:
        ax.axhline(bayes.mean(), color="black", ls="--", lw=1.2, label=f"Bayes-optimal {bayes.mean():.4g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(title=f"{task}: test {metric.replace('_', ' ')} vs {'parameters' if x == 'N' else 'training compute'}"
                 "\n(points: runs; lines: fitted a·x^-alpha + c, 95% CI in brackets)",
           xlabel="non-embedding parameters N (log scale)" if x == "N" else "training compute C (FLOPs, log scale)",
           ylabel=f"{metric.replace('_', ' ')} (log scale)")
    ax.legend(fontsize=8, loc="upper right")
    return save(fig, path, ax=ax)


def scaling_section(df: pd.DataFrame, out: Path, task: str, metric: str, lower: bool) -> list[str]:
    if not lower:
        return []
    fits = scaling_fits(df, task, metric)
    if fits.empty:
        return []
    pts = scaling_points(df, task, metric)
    md = _intro(metric, sorted(fits["setup"].unique())) + ["", md_table(fits_table(fits)), ""]
    md += _bayes_note(metric, pts["bayes"].dropna())
    names = [scaling_plot(pts, fits, out / f"{task}_scaling_{stem}.png", task, metric, x)
             for x, stem in (("N", "params"), ("flops", "flops"))]
    return md + image_links([n for n in names if n])
