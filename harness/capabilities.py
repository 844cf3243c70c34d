"""The arch x task capability matrix: every registered arch against every registered task.

A cell either runs (the arch supports the task's kind) or is declared unsupported with the arch's
reason. The report renders this table; ``python -m harness.sweep arch=A task=T`` on an unsupported
cell stops with the same reason (ArchSpec.check_kind), and a multirun records it as ``skipped``.
"""
from __future__ import annotations

import pandas as pd

from archbench import ARCHS
from archbench import TASK_KINDS


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
        for arch in sorted(ARCHS) for task, kind in sorted(TASK_KINDS.items())
    ]
    return pd.DataFrame(rows, columns=["arch", "task", "kind", "supported", "reason"])
