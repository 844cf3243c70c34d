"""Runs that were planned, not run (status ``planned``): their memory plan and speed estimate,
kept apart from the measured leaderboards."""
from __future__ import annotations

from typing import Iterable

import pandas as pd

from archbench.record import RunRecord
from harness.report.tables import md_table

GIB = 2**30
INTRO = ("These configs did not fit the device: the model was built on the `meta` device, its memory "
         "planned, and one real layer timed; every number here is an **estimate** (formulas in each "
         "record's `plan`). They are kept apart from the measured leaderboards above.")


def _row(rec: RunRecord) -> dict:
    plan = rec.plan or {}
    mem, speed = plan.get("memory") or {}, plan.get("speed") or {}
    avail = plan.get("available_bytes")
    return {
        "arch": rec.arch, "size": rec.size, "task": rec.task, "params": rec.params,
        "device": plan.get("device"), "batch x seq": f"{plan.get('batch_size')} x {plan.get('seq_len')}",
        "est. memory GiB": (mem.get("total_bytes") or 0) / GIB,
        "available GiB": avail / GIB if avail else None,
        "est. s/step": speed.get("step_seconds"), "est. tokens/s": speed.get("tokens_per_s"),
        "est. MFU %": 100 * speed["mfu"] if speed.get("mfu") else None,
        "method": speed.get("method"),
    }


def planned_table(records: Iterable[RunRecord]) -> pd.DataFrame:
    return pd.DataFrame([_row(rec) for rec in records if rec.status == "planned"])


def planned_section(records: Iterable[RunRecord]) -> list[str]:
    planned = planned_table(records)
    if planned.empty:
        return []
    return ["## Planned, not run (estimates)", "", INTRO, "", md_table(planned), ""]
