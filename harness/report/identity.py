"""What makes two records comparable: the same data, the same code and the same setup.

A leaderboard row pools only records that agree on the data fingerprint, the code version and the
setup (the resolved config and hyperparameters minus the seed). When records of one arch/size/variant
disagree they become separate rows, and ``split_notes`` says which of the three differ and, for the
setup, which keys.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from archbench.record import KEY_EXCLUDED
from harness.report.frame import CODE_VERSION, DATA_FINGERPRINT, SETUP, col, setup_key  # noqa: F401

IDENTITY = [DATA_FINGERPRINT, CODE_VERSION, SETUP]
MAX_KEYS_NAMED = 6


def short(value: Any) -> str:
    return str(value)[:8] if isinstance(value, str) and value else "?"


def _flat(row: pd.Series) -> dict[str, Any]:
    """The row's config.* and hparams.* cells, dict cells opened one more level."""
    out = {}
    for c, v in row.items():
        if not (str(c).startswith("config.") or str(c).startswith("hparams.")):
            continue
        if c in ("config.seed",) or c.partition(".")[2] in KEY_EXCLUDED:
            continue
        if isinstance(v, dict):
            out.update({f"{c}.{k}": w for k, w in v.items() if f"{c}.{k}".partition(".")[2] not in KEY_EXCLUDED})
        else:
            out[c] = v
    return out


def _differing_keys(rows: list[pd.Series]) -> list[str]:
    flats = [_flat(r) for r in rows]
    keys = sorted(set().union(*flats))
    return [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]


def split_notes(ok: pd.DataFrame, group_cols: list[str]) -> list[str]:
    """One line per arch/size/variant whose records split into several rows, saying why."""
    notes = []
    for (arch, size, variant), g in ok.groupby(group_cols, sort=False):
        parts = g.groupby(IDENTITY, dropna=False, sort=False)
        if parts.ngroups < 2:
            continue
        why = []
        for column, name in ((DATA_FINGERPRINT, "data fingerprint"), (CODE_VERSION, "code version")):
            values = col(g, column).map(short).unique()
            if len(values) > 1:
                why.append(f"{name} ({', '.join(values)})")
        if col(g, SETUP).nunique(dropna=False) > 1:
            keys = _differing_keys([sub.iloc[0] for _, sub in g.groupby(SETUP, sort=False)])
            named = ", ".join(keys[:MAX_KEYS_NAMED]) + (" ..." if len(keys) > MAX_KEYS_NAMED else "")
            why.append(f"config ({named or 'keys not in the frame'})")
        label = f"{arch}/{size}" + (f" {variant}" if variant else "")
        notes.append(f"- `{label}`: {parts.ngroups} rows, not pooled: the records differ in {'; '.join(why)}.")
    return notes
