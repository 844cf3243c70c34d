"""The one result writer: one JSON object per run, keyed by a hash of its resolved config.

Writes go to a temporary file in the same folder and are renamed over the target with
``os.replace``, so a reader sees either no record or a whole one, never half of one.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "diverged", "skipped", "planned")
# Config keys that say where or how loudly to run, not what to run: not part of the run key.
KEY_EXCLUDED = ("results_dir", "force", "report", "checkpoint", "train.progress", "task.cache_dir")
REQUIRED_FIELDS = (
    "schema_version", "run_key", "status", "error", "arch", "size", "task", "params", "flops_per_token",
    "tokens_seen", "budget", "metrics", "throughput", "data", "seed", "env", "wall_s", "overrides", "config",
)


def run_key(config: dict[str, Any]) -> str:
    conf = json.loads(json.dumps(config, default=str))
    for dotted in KEY_EXCLUDED:
        node, *rest = dotted.split(".")
        if rest:
            conf.get(node, {}).pop(rest[0], None)
        else:
            conf.pop(node, None)
    return hashlib.sha256(json.dumps(conf, sort_keys=True).encode()).hexdigest()[:16]


def runs_dir(results_dir: str | os.PathLike) -> Path:
    return Path(results_dir) / "runs"


def record_path(results_dir, key: str) -> Path:
    return runs_dir(results_dir) / f"{key}.json"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_record(results_dir, record: dict[str, Any]) -> Path:
    missing = [f for f in REQUIRED_FIELDS if f not in record]
    if missing:
        raise ValueError(f"result record lacks fields {missing}")
    if record["status"] not in STATUSES:
        raise ValueError(f"result record status {record['status']!r} not in {STATUSES}")
    path = record_path(results_dir, record["run_key"])
    write_atomic(path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return path


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def iter_records(results_dir) -> Iterable[dict[str, Any]]:
    folder = runs_dir(results_dir)
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.json")):
        rec = read_record(path)
        if rec is not None:
            yield rec
