"""The tuning protocol (``study=tune``): the learning rate that gives the lowest validation loss for
each (arch, size, task), written where the next studies read it.

``study=tune`` runs every arch over a log grid of ``train.lr`` at a small token budget; this module
reads those records (the runs whose overrides say ``study=tune``), takes each run's final
validation loss (the last point of its learning curve; never the test split), picks the best lr per
(arch, size, task) and writes ``<results_dir>/tuned_recipes.json``. harness/recipes.py reads that
file: a later run of the same (arch, size, task) uses the tuned lr in place of its preset's, and
records ``recipe_source.lr = "tuned"``. A best value at either end of the grid is flagged: the
optimum was not bracketed and the grid should be widened.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from archbench.record import iter_records, write_atomic

FILE = "tuned_recipes.json"
MARK = "study=tune"


def tuning_points(results_dir) -> dict[str, list[dict[str, Any]]]:
    """"arch/size/task" -> [{lr, val_loss, seed, fingerprint}] over the ok runs of study=tune."""
    points = defaultdict(list)
    for rec in iter_records(results_dir):
        if rec.status != "ok" or MARK not in (rec.overrides or []) or not rec.curve:
            continue
        val = rec.curve[-1].get("val_loss")
        lr = (rec.config.get("train") or {}).get("lr")
        if val is None or lr is None or not math.isfinite(val):
            continue
        points[f"{rec.arch}/{rec.size}/{rec.task}"].append(
            {"lr": float(lr), "val_loss": float(val), "seed": rec.seed, "fingerprint": rec.data.fingerprint,
             "tokens": rec.tokens_seen})
    return dict(points)


def pick(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The lr with the lowest mean validation loss over seeds, and whether it sits at the grid's edge."""
    by_lr = defaultdict(list)
    for p in points:
        by_lr[p["lr"]].append(p["val_loss"])
    grid = sorted(by_lr)
    mean = {lr: sum(v) / len(v) for lr, v in by_lr.items()}
    best = min(grid, key=mean.get)
    edge = "lowest" if best == grid[0] else "highest" if best == grid[-1] else None
    return {"lr": best, "val_loss": mean[best], "grid": grid, "val_loss_by_lr": [mean[lr] for lr in grid],
            "at_edge": edge if len(grid) > 1 else "single value", "fingerprint": points[0]["fingerprint"],
            "tokens": points[0]["tokens"]}


def write_tuned(results_dir) -> Path | None:
    """Pick per (arch, size, task) and write tuned_recipes.json (None when there is nothing to tune)."""
    points = tuning_points(results_dir)
    if not points:
        return None
    chosen = {key: pick(p) for key, p in sorted(points.items())}
    path = Path(results_dir) / FILE
    write_atomic(path, json.dumps(chosen, indent=2) + "\n")
    for key, c in chosen.items():
        flag = f"  (at the {c['at_edge']} end of the grid: widen it)" if c["at_edge"] else ""
        print(f"tuned {key}: lr={c['lr']:g} (validation loss {c['val_loss']:.4f}){flag}")
    print(f"tuned recipes: {path}")
    return path


def read_tuned(results_dir, arch: str, size: str, task: str) -> dict[str, Any] | None:
    """The tuned choice for this (arch, size, task), if a study=tune wrote one."""
    try:
        data = json.loads((Path(results_dir) / FILE).read_text())
    except (OSError, ValueError):
        return None
    entry = data.get(f"{arch}/{size}/{task}") if isinstance(data, dict) else None
    return entry if isinstance(entry, dict) and isinstance(entry.get("lr"), (int, float)) else None
