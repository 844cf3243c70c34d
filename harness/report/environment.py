"""The environment stamp at the top of the report: git, versions, device, precision, the MFU peak
and what the peak-memory numbers measured, as the records hold them."""
from __future__ import annotations

import pandas as pd

from harness.report.frame import (ARCH, ENV_DEVICE_NAME, ENV_GIT, ENV_PYTHON, ENV_THREADS, ENV_TORCH, MFU,
                                  PEAK_FLOPS, PEAK_FLOPS_PROBES, PEAK_FLOPS_SOURCE, PEAK_MEM_KIND, PRECISION, SIZE,
                                  TASK)

STAMPED = {ENV_GIT: "git", ENV_TORCH: "torch", ENV_PYTHON: "python", ENV_DEVICE_NAME: "device",
           ENV_THREADS: "threads", PRECISION: "precision", PEAK_FLOPS_SOURCE: "MFU peak from"}

MEMORY_KINDS = {
    "rss_high_water_above_run_start": "the process's resident high-water mark above its level when the model "
    "was built, reset per run after free heap pages are returned to the OS (malloc_trim); `peak_mem_bytes` is "
    "read before the test evaluation (weights, optimizer state, training activations, and the validation passes "
    "inside training, which use batches of 32 windows), `peak_mem_with_eval_bytes` after it",
    "cuda_max_allocated": "torch.cuda.max_memory_allocated",
    "process_max_rss": "the whole process's maximum resident set (includes earlier runs in the process)",
}


def _git(g: dict) -> str:
    return f"{(g.get('sha') or 'no git')[:12]}{' (dirty)' if g.get('dirty') else ''}"


def _values(df: pd.DataFrame, col: str) -> list[str]:
    vals = df[col].dropna()
    if col == ENV_GIT:  # a record that says nothing about git holds {}: not stamped
        vals = vals[vals.map(bool)].map(_git)
    return sorted(set(map(str, vals)))


UNDER_LOAD = 0.20  # probes of one run further apart than this (relative to the higher): measured under load


def probe_spread(df: pd.DataFrame) -> pd.Series:
    """Per run: 1 - lower / higher of its CPU peak probes (start and end of the run); NaN without probes."""
    if PEAK_FLOPS_PROBES not in df:
        return pd.Series(float("nan"), index=df.index)

    def spread(probes) -> float:
        vals = [float(v) for v in probes] if isinstance(probes, (list, tuple)) else []
        return 1 - min(vals) / max(vals) if len(vals) >= 2 and max(vals) > 0 else float("nan")

    return df[PEAK_FLOPS_PROBES].map(spread)


def _probe_lines(df: pd.DataFrame) -> list[str]:
    spread = probe_spread(df).dropna()
    if spread.empty:
        return []
    lines = [f"- CPU peak probes (start and end of each run; the higher is the MFU peak): spread median "
             f"{100 * spread.median():.0f}%, max {100 * spread.max():.0f}% over {len(spread)} run(s)"]
    loaded = df.loc[spread[spread > UNDER_LOAD].index]
    for _, r in loaded.iterrows():
        probes = ", ".join(f"{float(v) / 1e9:.1f}" for v in r[PEAK_FLOPS_PROBES])
        lines.append(f"  - **measured under load**: {r.get(ARCH)}/{r.get(SIZE)} {r.get(TASK)}: probes {probes} "
                     f"GFLOP/s ({100 * spread[r.name]:.0f}% apart); its tokens/s and MFU reflect other processes' load")
    return lines


def environment_stamp(df: pd.DataFrame) -> str:
    lines = [f"- {label}: {'; '.join(uniq)}" for col, label in STAMPED.items()
             if col in df and (uniq := _values(df, col))]
    if PEAK_FLOPS in df and df[PEAK_FLOPS].notna().any():
        peaks = df[PEAK_FLOPS].dropna().astype(float)
        lines.append(f"- MFU peak: {peaks.min() / 1e9:.1f}–{peaks.max() / 1e9:.1f} GFLOP/s across runs "
                     "(MFU = tokens/s x the arch's FLOPs per token / this peak)")
    lines += _probe_lines(df)
    if MFU in df:
        over = df[df[MFU].astype(float) > 1.0]
        if not over.empty:
            lines.append(f"- **{len(over)} run(s) show MFU above 100%**: when both CPU peak probes ran under "
                         "heavier load from other processes than the run did, the peak is too low. Their MFU is "
                         "unreliable; tokens/s is still measured.")
    if PEAK_MEM_KIND in df:
        kinds = sorted(set(df[PEAK_MEM_KIND].dropna()))
        lines += [f"- peak memory `{k}`: {MEMORY_KINDS.get(k, 'see the records')}" for k in kinds]
    return "\n".join(lines)


def environment_section(df: pd.DataFrame) -> list[str]:
    return ["## Environment", "", environment_stamp(df), ""]
