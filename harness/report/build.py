"""report.md, assembled: the header and status counts, the environment stamp, the capability
matrix, per task its leaderboard, scaling fits and loss by position, then throughput and memory,
planned runs, lm-eval scores and the runs that did not finish. Also writes runs.parquet/runs.csv."""
from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path

import pandas as pd

from archbench.errors import UserError
from archbench.record import write_atomic
from harness import plugins
from harness.report.capabilities import capability_section
from harness.report.context import position_section
from harness.report.data import data_section
from harness.report.environment import environment_section
from harness.report.frame import (ARCH, ERROR, LMEVAL_PREFIX, SEED, SIZE, STATUS, TASK, curves, frame,
                                  load_records, ok_runs)
from harness.report.leaderboard import leaderboard_section
from harness.report.planned import planned_section
from harness.report.scaling import scaling_section
from harness.report.tables import md_table, save_table
from harness.report.throughput import throughput_section
from harness.report.tuning import tuning_section


def lmeval_table(df: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in df.columns if c.startswith(LMEVAL_PREFIX)]
    if not cols:
        return pd.DataFrame()
    have = df[df[cols].notna().any(axis=1)]
    table = have[[ARCH, SIZE, TASK, SEED, *cols]].copy()
    return table.rename(columns={c: c[len(LMEVAL_PREFIX):] for c in cols})


def lmeval_section(df: pd.DataFrame) -> list[str]:
    table = lmeval_table(df)
    if table.empty:
        return []
    return ["## lm-eval scores", "", "Written into the run records by `python -m harness.lmeval`.", "",
            md_table(table), ""]


def unfinished_section(df: pd.DataFrame) -> list[str]:
    bad = df[df[STATUS].isin(["failed", "diverged", "skipped"])]
    if bad.empty:
        return []
    return ["## Runs that did not finish", "", md_table(bad[[ARCH, SIZE, TASK, SEED, STATUS, ERROR]]), ""]


def task_sections(df: pd.DataFrame, curve_df: pd.DataFrame, out: Path) -> list[str]:
    md = []
    for task in sorted(df[TASK].unique()):
        md += [f"## Task `{task}`", ""]
        if ok_runs(df, task).empty:
            md += ["No finished runs.", ""]
            continue
        board, metric, lower = leaderboard_section(df, curve_df, out, task)
        md += board
        md += scaling_section(df, out, task, metric, lower)
        md += position_section(df, out, task)
    return md


def _load_plugins_of(records) -> None:
    """Plug-in archs and tasks the runs used, so the capability matrix lists them like built-ins; one
    that no longer imports is a warning (the records still report)."""
    for name in sorted({p for r in records for p in (r.config.get("plugins") or [])}):
        try:
            plugins.load([name])
        except UserError as e:
            print(f"warning: {e}", file=sys.stderr)


def build_report(results_dir) -> Path:
    """Read every record under ``results_dir/runs`` and write report.md (plus runs.parquet,
    runs.csv and the PNGs it links) into ``results_dir``; returns the report's path."""
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = load_records(out)
    _load_plugins_of(records)
    df = frame(records)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    md = ["# archbench report", "", f"Generated {now} from {len(df)} records in `{out / 'runs'}`.", ""]
    if df.empty:
        md.append("No records yet: run `python -m harness.sweep ...` first.")
    else:
        save_table(df, out)
        md += ["Counts by status: " + ", ".join(f"{k} {v}" for k, v in df[STATUS].value_counts().items()), ""]
        md += environment_section(df)
        md += capability_section()
        md += data_section(records)
        md += tuning_section(df, out)
        md += task_sections(df, curves(records), out)
        md += throughput_section(df, out)
        md += planned_section(records)
        md += lmeval_section(df)
        md += unfinished_section(df)
    path = out / "report.md"
    write_atomic(path, "\n".join(md) + "\n")
    return path
