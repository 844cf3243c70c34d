"""The data each task's runs saw: where it came from, how it was split, and how much of what the user
gave was kept (caps, truncation and deduplication are reported here and as warnings at run time)."""
from __future__ import annotations

from archbench.record import RunRecord
from harness.report.tables import md_table

KEPT_KEYS = ("documents_kept_of_given", "examples_kept_of_given")


def _kept(details: dict) -> str:
    for key in KEPT_KEYS:
        kept = details.get(key)
        if isinstance(kept, dict):
            return ", ".join(f"{split} {a:,}/{b:,}" for split, (a, b) in kept.items())
    return "–"


def data_section(records: list[RunRecord]) -> list[str]:
    """One row per (task, data fingerprint): source, split method, kept of given per split."""
    import pandas as pd

    rows, seen = [], set()
    for rec in records:
        d = rec.data
        if not d.fingerprint or (rec.task, d.fingerprint) in seen:
            continue
        seen.add((rec.task, d.fingerprint))
        rows.append({"task": rec.task, "data set": d.source or "–", "fingerprint": d.fingerprint[:12],
                     "splits": d.details.get("splits", "hash"), "kept of given (per split)": _kept(d.details),
                     "tokenizer": d.tokenizer or "–"})
    if not rows:
        return []
    return ["## Data", "",
            "Each data set the runs read, how its splits were made (`given`: the user's own splits, used as "
            "given; `hash`: one source split by the hash of each example) and how much of each split was kept "
            "(caps and deduplication; the run printed a warning for each cut).", "",
            md_table(pd.DataFrame(rows)), ""]
