"""The arch x task capability matrix: every registered arch against every registered task, and its
report section.

A cell either runs (the arch supports the task's kind) or is declared unsupported with the arch's
reason. The report renders this table; ``python -m harness.sweep arch=A task=T`` on an unsupported
cell stops with the same reason (ArchSpec.check_kind), and a multirun records it as ``skipped``.
"""
from __future__ import annotations

import pandas as pd

from archbench import ARCHS, TASKS
from harness.report.tables import md_table


def task_kinds() -> dict[str, str]:
    """Registered task name -> its kind."""
    return {name: TASKS[name].kind for name in TASKS}


def unsupported_reason(arch: str, kind: str) -> str:
    spec = ARCHS[arch]
    if kind in spec.kinds:
        return ""
    return spec.unsupported.get(kind) or f"no reason declared; it supports {', '.join(spec.kinds)}"


def capability_matrix() -> pd.DataFrame:
    """One row per (arch, task): arch, task, kind, supported (bool), reason ("" when supported)."""
    rows = [
        {"arch": arch, "task": task, "kind": kind, "supported": kind in ARCHS[arch].kinds,
         "reason": unsupported_reason(arch, kind)}
        for arch in sorted(ARCHS) for task, kind in sorted(task_kinds().items())
    ]
    return pd.DataFrame(rows, columns=["arch", "task", "kind", "supported", "reason"])


def capability_section() -> list[str]:
    """The matrix as a yes/no grid (columns: task (kind)), then why each `no` is one."""
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
          "recorded as `skipped` in a multirun, and a single run of it stops with the reason.", "", md_table(grid), ""]
    if not reasons.empty:
        md += ["Why not:", ""] + [f"- {r.arch} x {r.kind}: {r.reason}" for r in reasons.itertuples()] + [""]
    return md
