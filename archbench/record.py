"""The run record: one typed, versioned JSON file per run, written atomically.

``RunRecord`` and its nested parts (budget, throughput, data, environment) are the schema; the
report reads records through ``RunRecord.from_dict``, which also upgrades records written by older
versions of the schema (``SCHEMA_VERSION`` history below), so old results stay readable. The run
key hashes the resolved config minus the keys that only say where or how loudly to run.

Writes go through archbench/files.py (a temporary file renamed over the target, mode 0666 minus
the umask): a reader sees either no record or a whole one, never half of one. A file in ``runs/``
that is not a readable record is moved to ``runs/quarantine/`` with one warning line when the
records are read, so one bad file never stops a report or a sweep.

Schema versions: 1 (budget limits at the top of ``budget``, no ``token_limit``);
2 (``budget.given`` / ``token_limit`` / ``consumed``; ``env.world_size``).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from archbench.files import write_atomic  # noqa: F401  (public here since schema 1)

SCHEMA_VERSION = 2
STATUSES = ("ok", "failed", "diverged", "skipped", "planned")
# Config keys that say where or how loudly to run, not what to run: not part of the run key.
KEY_EXCLUDED = ("results_dir", "force", "report", "checkpoint", "train.progress", "task.cache_dir",
                "train.checkpoint_every", "train.resume_from", "recipe_source")


def _from_dict(cls, d: dict[str, Any] | None):
    """An instance of dataclass ``cls`` from the known keys of ``d`` (unknown keys are dropped)."""
    d = d or {}
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class Consumed:
    steps: int = 0
    tokens: int = 0
    seconds: float | None = None
    flops: float | None = None  # counted per batch (seq2seq real lengths), else tokens x flops_per_token


@dataclass
class BudgetRecord:
    given: dict[str, Any] = field(default_factory=dict)  # steps, tokens, flops, seconds (null = no limit)
    token_limit: int | None = None  # the tighter of tokens and tokens_from_flops
    tokens_from_flops: int | None = None
    tokens_from_flops_formula: str | None = None
    consumed: Consumed | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "BudgetRecord":
        d = dict(d or {})
        consumed = d.pop("consumed", None)
        rec = _from_dict(cls, d)
        rec.consumed = _from_dict(Consumed, consumed) if consumed else None
        return rec


@dataclass
class Throughput:
    tokens_per_s: float | None = None  # training steps only, after the timing warm-up
    train_seconds: float | None = None
    fit_seconds: float | None = None
    eval_seconds: float | None = None
    inference_tokens_per_s: float | None = None  # the test evaluation, over the tokens it scored
    peak_flops: float | None = None
    peak_flops_source: str | None = None
    peak_flops_probes: list[float] | None = None  # CPU: the probe at the start and at the end of the run
    achieved_flops: float | None = None
    mfu: float | None = None  # achieved / peak; None when the peak is unknown
    peak_mem_bytes: int | None = None  # training (validation passes included)
    peak_mem_with_eval_bytes: int | None = None
    peak_mem_kind: str | None = None  # how memory was measured


@dataclass
class DataInfo:
    """What data a run saw. ``details`` holds the task's own keys (split sizes, reference rows);
    in JSON they sit beside the named ones."""

    source: str | None = None
    fingerprint: str | None = None  # sha256 over the exact examples of every split
    tokenizer: str | None = None
    vocab_size: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "DataInfo":
        d = dict(d or {})
        names = [f.name for f in dataclasses.fields(cls) if f.name != "details"]
        return cls(**{k: d.pop(k, None) for k in names}, details=d)

    def to_dict(self) -> dict[str, Any]:
        named = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "details"}
        return {**self.details, **named}


@dataclass
class Env:
    git: dict[str, Any] = field(default_factory=dict)  # sha, dirty
    torch: str | None = None
    python: str | None = None
    platform: str | None = None
    device: str | None = None
    device_name: str | None = None
    threads: int | None = None
    flush_denormal: bool | None = None  # CPU subnormals as zero (the flush_denormal config key)
    cuda: str | None = None
    world_size: int = 1


@dataclass
class RunRecord:
    run_key: str
    status: str = "failed"
    error: str | None = None
    arch: str | None = None
    size: str | None = None
    task: str | None = None
    kind: str | None = None
    seed: int | None = None
    params: int | None = None
    non_embedding_params: int | None = None
    non_embedding_params_formula: str | None = None
    flops_per_token: float | None = None
    tokens_seen: int = 0
    steps: int = 0
    stop_reason: str | None = None
    budget: BudgetRecord = field(default_factory=BudgetRecord)
    metrics: dict[str, Any] = field(default_factory=dict)
    primary_metric: str | None = None
    lower_is_better: bool | None = None
    throughput: Throughput = field(default_factory=Throughput)
    data: DataInfo = field(default_factory=DataInfo)
    env: Env = field(default_factory=Env)
    precision: str | None = None
    attention_backend: str | None = None
    attention_choice: dict[str, Any] | None = None  # asked, ran, and why each other backend did not
    dist: dict[str, Any] | None = None  # how training was split: mode, world size, grad_accum, sharding
    resumed_from: dict[str, Any] | None = None  # the mid-run checkpoint a resumed run continued from
    hparams: dict[str, Any] | None = None
    recipe: dict[str, Any] | None = None  # the size preset's training recipe and its provenance (archbench/recipe.py)
    recipe_source: dict[str, str] | None = None  # train.* key -> user | study | recipe | default
    plan: dict[str, Any] | None = None  # the memory plan (harness/planner.py), estimates flagged there
    fit: dict[str, Any] | None = None  # what a fitted model reported
    init_from: dict[str, Any] | None = None
    checkpoint: str | None = None
    code_version: str | None = None  # hash of the code that produced the record (harness/identity.py)
    lmeval: dict[str, Any] | None = None  # lm-evaluation-harness scores added by harness.lmeval
    lmeval_info: dict[str, Any] | None = None  # per lm-eval task: what was evaluated (data, limit, version)
    traceback: str | None = None
    wall_s: float | None = None
    overrides: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    curve: list[dict[str, Any]] = field(default_factory=list)
    created_at: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("budget", "throughput", "env"):
            out[name] = dataclasses.asdict(out[name])
        out["data"] = self.data.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunRecord":
        """A record of any schema version this code knows, upgraded to the current one."""
        d = upgrade(dict(d))
        rec = _from_dict(cls, {k: v for k, v in d.items() if k not in ("budget", "throughput", "data", "env")})
        rec.budget = BudgetRecord.from_dict(d.get("budget"))
        rec.throughput = _from_dict(Throughput, d.get("throughput"))
        rec.data = DataInfo.from_dict(d.get("data"))
        rec.env = _from_dict(Env, d.get("env"))
        rec.schema_version = SCHEMA_VERSION
        return rec

    def validate(self) -> None:
        if not self.run_key:
            raise ValueError("result record lacks a run_key")
        if self.status not in STATUSES:
            raise ValueError(f"result record status {self.status!r} not in {STATUSES}")


def upgrade(d: dict[str, Any]) -> dict[str, Any]:
    """Bring a record dict of an older schema version to the current shape."""
    version = d.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ValueError(f"record schema_version {version!r} is newer than this code ({SCHEMA_VERSION})")
    if version < 2:
        old = dict(d.get("budget") or {})
        d["budget"] = {
            "given": {k: old.get(k) for k in ("steps", "tokens", "flops", "seconds")},
            "tokens_from_flops": old.get("tokens_from_flops"),
            "tokens_from_flops_formula": old.get("tokens_from_flops_formula"),
            "token_limit": min([t for t in (old.get("tokens"), old.get("tokens_from_flops")) if t], default=None),
            "consumed": old.get("consumed"),
        }
    return d


def run_key(config: dict[str, Any], hparams: dict[str, Any] | None = None) -> str:
    """A hash of the resolved config minus the keys that say where or how loudly to run, and of the
    arch's hyperparameters as its size preset resolves them (a changed preset is another run)."""
    conf = json.loads(json.dumps(config, default=str))
    if hparams is not None:
        conf["__hparams__"] = json.loads(json.dumps(hparams, default=str))
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


def write_record(results_dir, record: RunRecord) -> Path:
    record.validate()
    path = record_path(results_dir, record.run_key)
    write_atomic(path, json.dumps(record.to_dict(), indent=2, sort_keys=True, default=str) + "\n")
    return path


NEWER = "written by a newer schema version"  # not bad: left in place, only skipped


def load_record(path: Path) -> tuple[RunRecord | None, str | None]:
    """(record, None), or (None, why the file at ``path`` is not a readable record)."""
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        return None, "missing"
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 (byte {e.start})"
    except ValueError as e:
        return None, "empty file" if Path(path).stat().st_size == 0 else f"not JSON ({e})"
    except OSError as e:
        return None, f"cannot be read ({e.strerror or e})"
    if not isinstance(d, dict):
        return None, f"a JSON {type(d).__name__}, not a record object"
    if not d.get("run_key"):
        return None, "no run_key"
    version = d.get("schema_version", 1)
    if isinstance(version, int) and version > SCHEMA_VERSION:
        return None, NEWER
    try:
        rec = RunRecord.from_dict(d)
        rec.validate()
    except (ValueError, TypeError) as e:
        return None, str(e)
    return rec, None


def read_record(path: Path) -> RunRecord | None:
    """The record at ``path``, or None when it is missing or not a readable record."""
    return load_record(path)[0]


def quarantine(path: Path, why: str) -> Path | None:
    """Move a bad file out of ``runs/`` into ``runs/quarantine/`` with one warning line."""
    folder = Path(path).parent / "quarantine"
    folder.mkdir(exist_ok=True)
    target = folder / Path(path).name
    n = 1
    while target.exists():
        target, n = folder / f"{Path(path).stem}.{n}{Path(path).suffix}", n + 1
    try:
        os.replace(path, target)
    except FileNotFoundError:  # another reader moved it first
        return None
    print(f"warning: moved {path} to {target}: not a run record ({why})", file=sys.stderr)
    return target


def iter_records(results_dir) -> Iterator[RunRecord]:
    """Every readable record in ``runs/``; a bad file is quarantined on the way."""
    folder = runs_dir(results_dir)
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.json")):
        rec, why = load_record(path)
        if rec is not None:
            yield rec
        elif why == NEWER:
            print(f"warning: skipped {path}: {why} than this code ({SCHEMA_VERSION}); update archbench to read it",
                  file=sys.stderr)
        elif why != "missing":
            quarantine(path, why)
