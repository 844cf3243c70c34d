"""What decides a run's result, and so when a cached record may stand in for the run.

A record is reused only when three things match: the run key (the resolved config plus the arch's
hyperparameters as its size preset resolves them: archbench.record.run_key), the code version (a
hash of the Python source of archbench/, archs/, tasks/ and harness/; the git sha is stored beside
it in ``env.git`` but not compared, so a commit that touches only docs reruns nothing), and the
data fingerprint (known once the task has read its data). Anything else reruns the config, and the
old record is kept in ``runs/superseded/``.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

from archbench import get_arch
from archbench.files import atomic_target
from archbench.record import RunRecord, record_path, run_key, runs_dir

ROOT = Path(__file__).resolve().parents[1]
SOURCE_PACKAGES = ("archbench", "archs", "tasks", "harness")
# Appended to the source hash: lets a test (or a deliberate invalidation) stand for a code change.
SALT_ENV = "ARCHBENCH_CODE_SALT"


@functools.lru_cache(maxsize=None)
def _source_hash() -> str:
    h = hashlib.sha256()
    for pkg in SOURCE_PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def code_version() -> str:
    """16 hex digits naming the source that runs (and the salt, when set)."""
    salt = os.environ.get(SALT_ENV, "")
    return hashlib.sha256((_source_hash() + salt).encode()).hexdigest()[:16]


def hparams_of(conf: Mapping[str, Any]) -> dict[str, Any]:
    """The arch's hyperparameters after its size preset and the config's arch.* keys."""
    hp = get_arch(conf["arch"]["name"]).hparams(conf["size"], conf["arch"])
    return dataclasses.asdict(hp)


def key_of(conf: Mapping[str, Any]) -> str:
    """The run key of a composed config (config + resolved hyperparameters)."""
    return run_key(dict(conf), hparams_of(conf))


def stale_reason(old: RunRecord, fingerprint: str | None) -> str | None:
    """Why an ok record of the same run key cannot stand in for the run now, or None."""
    now = code_version()
    if old.code_version != now:
        return f"code changed (record {old.code_version or 'without a code version'}, now {now})"
    if fingerprint is not None and old.data.fingerprint != fingerprint:
        return f"data changed (record fingerprint {str(old.data.fingerprint)[:12]}, now {fingerprint[:12]})"
    return None


def supersede(results_dir, key: str) -> Path | None:
    """Copy the record about to be replaced to runs/superseded/<key>.<UTC time>.json."""
    src = record_path(results_dir, key)
    if not src.is_file():
        return None
    folder = runs_dir(results_dir) / "superseded"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    dst = folder / f"{key}.{stamp}.json"
    with atomic_target(dst) as tmp:  # a kill mid-copy leaves no half record here either
        shutil.copyfile(src, tmp)
    return dst


def carry_over(old: RunRecord | None, new: RunRecord) -> None:
    """Later additions (lm-eval scores) survive a forced rerun of the same run key, code and data:
    the rerun trains the same model on the same data, and the superseded copy keeps the original."""
    if old is None or not old.lmeval or new.status != "ok":
        return
    if old.run_key != new.run_key or old.code_version != new.code_version or \
            old.data.fingerprint != new.data.fingerprint:
        return
    new.lmeval = {**old.lmeval, **(new.lmeval or {})}
    info = {k: {**v, "carried_over_from": old.created_at} if isinstance(v, dict) else v
            for k, v in (old.lmeval_info or {}).items()}
    new.lmeval_info = {**info, **(new.lmeval_info or {})}
