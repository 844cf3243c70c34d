"""Records -> one pandas DataFrame, and the names of the columns the report reads.

``load_runs`` reads every record through archbench.record (older schema versions are upgraded on
read) and flattens each one level with ``pd.json_normalize``: ``throughput.tokens_per_s`` is a
column, ``budget.consumed`` is a column holding a dict. The column names the sections read are the
constants below, checked against the dataclasses of archbench.record when this module is imported:
a renamed record field fails here, at import, instead of leaving a report section silently empty.
Dict-valued fields (metrics, config, plan, lmeval, the task's own data keys) are free-form below
their name.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Iterable

import pandas as pd

from archbench.record import RunRecord, iter_records, run_key

FLATTEN_LEVELS = 1  # json_normalize(max_level=...): a column name has at most two dotted parts


def _dataclass_in(tp) -> type | None:
    """The dataclass a field's type names (``Consumed | None`` -> Consumed), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    return next((a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)), None)


def schema_path(path: str) -> str:
    """``path`` when it names a field of the run record (archbench.record), else LookupError."""
    cls: type | None = RunRecord
    for part in path.split("."):
        if cls is None:  # below a free-form dict field: its keys are the writer's
            return path
        names = {f.name for f in dataclasses.fields(cls)}
        if part not in names:
            if "details" in names:  # DataInfo: the task's own keys sit beside the named ones
                return path
            raise LookupError(f"the report reads '{path}', but '{part}' is not a field of "
                              f"archbench.record.{cls.__name__} ({', '.join(sorted(names))})")
        cls = _dataclass_in(typing.get_type_hints(cls)[part])
    return path


def column(path: str) -> str:
    """A DataFrame column name, checked against the record schema and the flattening depth."""
    if path.count(".") > FLATTEN_LEVELS:
        raise LookupError(f"'{path}' is nested deeper than load_runs flattens ({FLATTEN_LEVELS} level)")
    return schema_path(path)


def key_in(col: str, key: str) -> str:
    """A key read from the dicts a column holds (``budget.consumed`` -> ``flops``), checked."""
    schema_path(f"{col}.{key}")
    return key


def metric(name: str) -> str:
    return column(f"metrics.{name}")


RUN_KEY, STATUS, ERROR = column("run_key"), column("status"), column("error")
ARCH, SIZE, TASK, SEED = column("arch"), column("size"), column("task"), column("seed")
PARAMS, NON_EMBEDDING_PARAMS = column("params"), column("non_embedding_params")
TOKENS_SEEN, WALL_S, OVERRIDES = column("tokens_seen"), column("wall_s"), column("overrides")
STOP_REASON = column("stop_reason")
PRIMARY_METRIC, LOWER_IS_BETTER = column("primary_metric"), column("lower_is_better")
PRECISION, ATTENTION_BACKEND = column("precision"), column("attention_backend")
BUDGET_GIVEN = column("budget.given")  # dict: steps, tokens, flops, seconds (None = no limit)
BUDGET_CONSUMED = column("budget.consumed")  # dict: archbench.record.Consumed
CONSUMED_FLOPS = key_in(BUDGET_CONSUMED, "flops")
TOKENS_PER_S = column("throughput.tokens_per_s")
INFERENCE_TOKENS_PER_S = column("throughput.inference_tokens_per_s")
MFU = column("throughput.mfu")
PEAK_FLOPS, PEAK_FLOPS_SOURCE = column("throughput.peak_flops"), column("throughput.peak_flops_source")
PEAK_FLOPS_PROBES = column("throughput.peak_flops_probes")
PEAK_MEM_BYTES, PEAK_MEM_KIND = column("throughput.peak_mem_bytes"), column("throughput.peak_mem_kind")
ENV_GIT, ENV_TORCH, ENV_PYTHON = column("env.git"), column("env.torch"), column("env.python")
ENV_DEVICE_NAME, ENV_THREADS = column("env.device_name"), column("env.threads")
DATA_SOURCE = column("data.source")
REFERENCE_ROWS = column("data.reference_rows")  # a task's own key: {name: {metrics, about}}
CONFIG_TRAIN = column("config.train")  # dict: the resolved train config
PLAN_MEMORY = column("plan.memory")  # dict: the planner's byte counts
LOSS_BY_POSITION = metric("loss_by_position")
LMEVAL_PREFIX = column("lmeval") + "."
DATA_FINGERPRINT, CODE_VERSION = column("data.fingerprint"), column("code_version")
DATA_SOURCE = column("data.source")
CREATED_AT = column("created_at")
SETUP = "setup"  # derived in frame(): setup_key below


def setup_key(rec: RunRecord) -> str:
    """A hash of everything that decides the run but the seed: config (minus where/how loudly) and
    the resolved hyperparameters. Records that differ here are never pooled into one row."""
    return run_key({**(rec.config or {}), "seed": None}, rec.hparams)


def load_records(results_dir) -> list[RunRecord]:
    return list(iter_records(results_dir))


def frame(records: Iterable[RunRecord]) -> pd.DataFrame:
    """One row per record; nested parts flattened one level to dotted columns. Keys are sorted as
    the records are on disk, so the column order is the one the JSON files have."""
    dicts = [{**json.loads(json.dumps(r.to_dict(), sort_keys=True, default=str)), SETUP: setup_key(r)}
             for r in records]
    if not dicts:
        return pd.DataFrame()
    return pd.json_normalize(dicts, max_level=FLATTEN_LEVELS)


def load_runs(results_dir) -> pd.DataFrame:
    """All records under ``results_dir/runs``, one row each; nested dicts flattened to dotted columns."""
    return frame(load_records(results_dir))


def col(df: pd.DataFrame, name: str) -> pd.Series:
    """A column, or all-None when no record has it (e.g. no run carries a plan)."""
    return df[name] if name in df else pd.Series([None] * len(df), index=df.index, dtype=object)


def ok_runs(df: pd.DataFrame, task: str) -> pd.DataFrame:
    return df[(df[TASK] == task) & (df[STATUS] == "ok")]


def model_label(overrides: Any, arch: str, size: str) -> str:
    """arch/size, or the named point of sweeps/model/ a run came from (an arch over its own ladder)."""
    if isinstance(overrides, (list, tuple)):
        for o in overrides:
            if o.startswith("model="):
                return o.split("=", 1)[1]
    return f"{arch}/{size}"


def curves(records: Iterable[RunRecord]) -> pd.DataFrame:
    """Learning curves, long form: one row per (run, validation point)."""
    rows = []
    for rec in records:
        for point in rec.curve or []:
            rows.append({"run_key": rec.run_key, "arch": rec.arch, "size": rec.size, "task": rec.task,
                         "seed": rec.seed, "model": model_label(rec.overrides, rec.arch, rec.size), **point})
    return pd.DataFrame(rows)


# Overrides that say where or how a run was launched, or that other columns already show
NOT_A_VARIANT = ("arch", "size", "task", "seed", "study", "results_dir", "report", "force", "train.progress",
                 "checkpoint", "hydra")


def variant_of(overrides) -> str:
    """What distinguishes a run beyond arch/size/task/seed: its remaining overrides, sorted."""
    if not isinstance(overrides, (list, tuple)):
        return ""
    keep = [o for o in overrides if o.split("=")[0].lstrip("+~").split("/")[0] not in NOT_A_VARIANT
            and not o.startswith("hydra")]
    return " ".join(sorted(keep))


def with_variants(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["variant"] = df[OVERRIDES].map(variant_of) if OVERRIDES in df else ""
    return df
