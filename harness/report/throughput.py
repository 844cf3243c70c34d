"""The throughput and memory section: per (arch, attention backend, batch size, sequence length),
training and inference tokens/s, MFU, measured peak memory and the planner's memory (counted on the
meta device); the exponent k of memory ~ T^k per (arch, backend, batch), least squares on log-log;
speed and memory relative to the baseline Transformer at each length (Long Range Arena style)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from harness.report.environment import probe_spread
from harness.report.figures import image_links, pyplot, save
from harness.report.frame import (ARCH, ATTENTION_BACKEND, CONFIG_TRAIN, INFERENCE_TOKENS_PER_S, MFU,
                                  PEAK_MEM_BYTES, PLAN_MEMORY, SIZE, STATUS, TASK, TOKENS_PER_S, col)
from harness.report.tables import md_table

MEASURED = "peak memory MiB (measured, training)"
PLANNED = "planned memory MiB"
KEYS = ["task", "arch", "size", "backend", "batch"]
INTRO = ("Per (arch, attention backend, batch size, sequence length), mean over repeats. Training tokens/s "
         "is over training steps after two untimed warm-up steps; inference tokens/s is the test-split "
         "evaluation (forward only) timed as a whole over the tokens it scored, in the evaluator's own batches "
         "of 32 windows (so the batch size column is the training batch only). Measured peak memory: see "
         "the environment stamp for what was measured; planned memory: weights + gradients + AdamW + "
         "activations saved for backward, **counted on the meta device** by harness/planner.py (an exact "
         "count of the tensors, not a measurement).")
PLOTS = (("train tokens/s", "training throughput (tokens/s, log scale)",
          "Training throughput vs sequence length", "throughput_train.png"),
         ("inference tokens/s", "inference throughput (tokens/s, log scale)",
          "Inference throughput (test-split evaluation) vs sequence length", "throughput_inference.png"),
         (MEASURED, "measured peak memory (MiB, log scale)",
          "Measured peak memory of a run vs sequence length", "memory_measured.png"),
         (PLANNED, "planned memory (MiB, log scale)",
          "Planned training memory (counted on the meta device) vs sequence length", "memory_planned.png"))


def throughput_frame(df: pd.DataFrame) -> pd.DataFrame:
    ok = df[df[STATUS] == "ok"]
    if ok.empty:
        return pd.DataFrame()
    # load_runs flattens one level: config.train and plan.memory are dicts
    train = col(ok, CONFIG_TRAIN).map(lambda t: t if isinstance(t, dict) else {})
    plan_mem = col(ok, PLAN_MEMORY).map(lambda m: m.get("total_bytes") if isinstance(m, dict) else None)
    plan_act = col(ok, PLAN_MEMORY).map(lambda m: m.get("activations_bytes") if isinstance(m, dict) else None)
    return pd.DataFrame({
        "task": ok[TASK], "arch": ok[ARCH], "size": ok[SIZE],
        "backend": col(ok, ATTENTION_BACKEND).fillna("none"),
        "batch": train.map(lambda t: t.get("batch_size")), "seq_len": train.map(lambda t: t.get("seq_len")),
        "train tokens/s": col(ok, TOKENS_PER_S).astype(float),
        "inference tokens/s": col(ok, INFERENCE_TOKENS_PER_S).astype(float),
        "MFU %": 100 * col(ok, MFU).astype(float),
        "peak probe spread %": 100 * probe_spread(ok),  # > 20: measured under load (environment stamp)
        MEASURED: col(ok, PEAK_MEM_BYTES).astype(float) / 2**20,
        PLANNED: plan_mem.astype(float) / 2**20,
        "planned activations MiB": plan_act.astype(float) / 2**20,
        "steps/s": col(ok, TOKENS_PER_S).astype(float)
        / (train.map(lambda t: t.get("batch_size") or math.nan) * train.map(lambda t: t.get("seq_len") or math.nan)),
    })


def exponent(x, y) -> float:
    """k of y ~ x^k: least squares slope on log-log over the positive points (nan under 2 distinct x)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = (x > 0) & (y > 0) & np.isfinite(y)
    if len(np.unique(x[keep])) < 2:
        return math.nan
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def exponents_table(tp: pd.DataFrame) -> pd.DataFrame:
    exps = []
    for (task, arch, size, backend, batch), g in tp.groupby(KEYS):
        if g["seq_len"].nunique() < 2:
            continue
        exps.append({"arch": f"{arch}/{size}", "backend": backend, "batch": batch,
                     "lengths": ", ".join(str(int(t)) for t in sorted(g["seq_len"])),
                     "k planned activations (counted on meta)": exponent(g["seq_len"], g["planned activations MiB"]),
                     "k planned total": exponent(g["seq_len"], g[PLANNED]),
                     "k measured peak": exponent(g["seq_len"], g[MEASURED]),
                     "k train time/step": exponent(g["seq_len"], 1 / g["steps/s"])})
    return pd.DataFrame(exps)


def relative_section(tp: pd.DataFrame) -> list[str]:
    """Steps/s and memory at each length, relative to the baseline Transformer (gpt with math
    attention when run) at the same batch and length."""
    base_arch = "gpt" if "gpt" in set(tp["arch"]) else sorted(tp["arch"])[0]
    base_backend = "math" if "math" in set(tp[tp["arch"] == base_arch]["backend"]) else None
    base = tp[(tp["arch"] == base_arch) & ((tp["backend"] == base_backend) if base_backend else True)]
    rel = tp.merge(base[["batch", "seq_len", "steps/s", MEASURED, PLANNED]],
                   on=["batch", "seq_len"], suffixes=("", " base"))
    rel["steps/s x baseline"] = rel["steps/s"] / rel["steps/s base"]
    rel["planned memory x baseline"] = rel[PLANNED] / rel[f"{PLANNED} base"]
    cols = ["config", "batch", "seq_len", "steps/s", "steps/s x baseline", "train tokens/s", "inference tokens/s",
            "MFU %", "peak probe spread %", MEASURED, PLANNED, "planned memory x baseline"]
    with_backend = f" with {base_backend}" if base_backend else ""
    return [f"### Speed and memory at each length (relative to {base_arch}{with_backend} "
            "attention at the same batch and length)", "",
            md_table(rel.sort_values(["batch", "seq_len", "config"])[cols]), ""]


def throughput_plots(tp: pd.DataFrame, out: Path) -> list[str]:
    written = []
    plt, sns = pyplot()
    for y, ylabel, title, name in PLOTS:
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
        written.append(save(fig, out / name, ax=ax))
    return written


def throughput_section(df: pd.DataFrame, out: Path) -> list[str]:
    tp = throughput_frame(df)
    if tp.empty:
        return []
    if tp.groupby(KEYS)["seq_len"].nunique().max() < 2:
        return []  # no run varies the sequence length: nothing to plot against it
    tp = tp.groupby([*KEYS, "seq_len"], as_index=False).mean(numeric_only=True)
    tp["config"] = tp["arch"] + "/" + tp["size"] + " " + tp["backend"]
    md = ["## Throughput and memory", "", INTRO, ""]
    md += ["### Exponent of memory vs sequence length", "",
           "Least squares of log memory on log T over the lengths run (k = 1: linear, k = 2: quadratic).", "",
           md_table(exponents_table(tp)), ""]
    md += relative_section(tp)
    return md + image_links(throughput_plots(tp, out))
