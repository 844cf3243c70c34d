"""Markdown tables for report.md, and the DataFrame written as runs.parquet and runs.csv."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from archbench.files import atomic_target


def fmt(x, digits=4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:,.0f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines)


def ci_text(lo, hi) -> str:
    """A confidence interval as ``[lo, hi]``, or – when unknown."""
    return "–" if (lo is None or math.isnan(lo)) else f"[{lo:.4g}, {hi:.4g}]"


def save_table(df: pd.DataFrame, out: Path) -> None:
    """runs.parquet and runs.csv: the DataFrame with list/dict cells as JSON text."""
    flat = df.copy()
    for c in flat.columns:
        if flat[c].map(lambda v: isinstance(v, (list, dict))).any():
            flat[c] = flat[c].map(lambda v: json.dumps(v, default=str) if isinstance(v, (list, dict)) else v)
    flat = flat.astype({c: "string" for c in flat.columns if flat[c].dtype == object})
    with atomic_target(out / "runs.parquet") as tmp:  # readers never see half a table
        flat.to_parquet(tmp, index=False)
    with atomic_target(out / "runs.csv") as tmp:
        flat.to_csv(tmp, index=False)
