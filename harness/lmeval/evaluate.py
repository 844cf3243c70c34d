"""Evaluate one run with lm-eval and merge the scores into its record.

Which run: a run key or a unique prefix of one, a record file, or a Hydra job folder. Its
checkpoint is loaded through harness/lmeval/model.py, the builtin task is exported by
harness/lmeval/export.py, and lm-eval's results become flat record fields: ``rec.lmeval`` holds
``{'task/metric': value}`` and ``rec.lmeval_info`` per task what was evaluated (data, documents,
limit, lm-eval version, when). lm_eval is imported inside the functions: it is slow to import.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import os
import time
from pathlib import Path
from typing import Any

from archbench.errors import UserError
from archbench.record import RunRecord, load_record, record_path, runs_dir, write_record
from harness.identity import key_of
from harness.locks import run_lock
from harness.lmeval.export import BUILTIN_TASK, export_lm_task


def resolve_run(value: str, results_dir: str) -> tuple[Path, Path]:
    """(results_dir, record path) for a run key or unique key prefix, a record file, or a Hydra job folder."""
    p = Path(value)
    if p.is_file():
        if p.suffix != ".json" or p.parent.name != "runs":
            raise UserError(f"run '{value}' is a file but not a run record (<results_dir>/runs/<run_key>.json)")
        return p.parent.parent, p
    if p.is_dir():
        return _hydra_job_run(p, value)
    folder = runs_dir(results_dir)
    matches = sorted(folder.glob(f"{value}*.json")) if folder.is_dir() and "/" not in value else []
    if len(matches) == 1:
        return Path(results_dir), matches[0]
    if len(matches) > 1:
        raise UserError(f"run '{value}' matches {len(matches)} runs in {folder} "
                        f"({', '.join(m.stem for m in matches[:5])}...); give more of the run key")
    n = len(list(folder.glob("*.json"))) if folder.is_dir() else 0
    raise UserError(f"no run '{value}' in {folder} ({n} records); pass a run key (the run_key column of the report), "
                    "a record file or a Hydra job folder, and results_dir= if the runs are elsewhere")


def _hydra_job_run(folder: Path, value: str) -> tuple[Path, Path]:
    hydra_cfg = folder / ".hydra" / "config.yaml"
    if not hydra_cfg.is_file():
        raise UserError(f"run '{value}' is a folder without .hydra/config.yaml; "
                        "pass a run key, a record file or a Hydra job folder")
    from omegaconf import OmegaConf

    conf = OmegaConf.to_container(OmegaConf.load(hydra_cfg), resolve=True)
    try:
        path = record_path(conf["results_dir"], key_of(conf))
    except (KeyError, TypeError) as e:
        raise UserError(f"Hydra job folder '{value}' holds no archbench config ({e})") from None
    if not path.is_file():
        raise UserError(f"the run of Hydra job folder '{value}' has no record ({path}); did it finish?")
    return Path(conf["results_dir"]), path


def checkpoint_of(rec: RunRecord) -> str:
    """The checkpoint of an ok run, or one line saying why there is none."""
    key = rec.run_key
    if rec.status != "ok":
        raise UserError(f"run {key} has status '{rec.status}', not ok: it has no trained model to evaluate")
    if not rec.checkpoint:
        raise UserError(f"run {key} ({rec.arch}/{rec.size}) has no checkpoint; rerun it with "
                        "checkpoint=true force=true")
    if not Path(rec.checkpoint).is_file():
        raise UserError(f"checkpoint '{rec.checkpoint}' of run {key} does not exist (moved or deleted?); rerun the "
                        "run with checkpoint=true force=true")
    return rec.checkpoint


def _read(path: Path) -> RunRecord:
    rec, why = load_record(path)
    if rec is None:
        raise UserError(f"run record '{path}' cannot be read: {why}")
    return rec


def _task_manager(names: list[str], include: list[str]):
    """lm-eval's task index: only our folders when they hold every name asked for (fast), else all of lm-eval's."""
    from lm_eval.tasks import TaskManager

    if include:
        local = TaskManager(include_defaults=False, include_path=include)
        if all(n in local.all_tasks for n in names):
            return local
    tm = TaskManager(include_path=include or None)
    unknown = [n for n in names if n not in tm.all_tasks]
    if unknown:
        hints = sorted({c for n in unknown for c in difflib.get_close_matches(n, tm.all_tasks, n=3, cutoff=0.6)})
        raise UserError(f"lm-eval knows no task {', '.join(map(repr, unknown))}"
                        + (f" (close: {', '.join(hints)})" if hints else "")
                        + f"; {BUILTIN_TASK} is this run's own test split, `lm-eval ls tasks` lists lm-eval's, "
                        "include_path= adds your own YAML tasks")
    return tm


def _metrics(results: dict[str, Any]) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """lm-eval's results as flat record fields: {'task/metric': value} and per-task facts."""
    flat, facts = {}, {}
    for task, res in results["results"].items():
        for key, value in res.items():
            metric, _, filt = key.partition(",")
            if not filt or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue  # alias, name, sample_len, 'N/A' stderrs
            flat[f"{task}/{metric}" + ("" if filt == "none" else f"[{filt}]")] = float(value)
        n = (results.get("n-samples") or {}).get(task) or {}
        facts[task] = {"docs_evaluated": n.get("effective"), "docs_total": n.get("original"),
                       "num_fewshot": (results.get("n-shot") or {}).get(task),
                       "task_version": (results.get("versions") or {}).get(task)}
    return flat, facts


def _simple_evaluate(lm, tm, args: dict[str, Any], device) -> dict[str, Any]:
    """lm_eval.simple_evaluate on our model instance; data that cannot be had is one line."""
    import lm_eval

    try:
        return lm_eval.simple_evaluate(model=lm, tasks=args["tasks"], task_manager=tm, limit=args["limit"],
                                       batch_size=args["batch_size"], bootstrap_iters=args["bootstrap_iters"],
                                       log_samples=False, device=str(device))
    except (ConnectionError, FileNotFoundError) as e:  # a task whose data cannot be fetched or found
        how = ("this evaluation is offline (offline=true, the default): pass offline=false where the Hugging Face "
               "hub is reachable, or" if args["offline"] else "check the network or the task's data_files, or")
        raise UserError(f"lm-eval could not load the data of {', '.join(args['tasks'])} "
                        f"({' '.join(str(e).split())[:160]}); {how} use a local task via include_path=") from None


def evaluate_run(args: dict[str, Any]) -> tuple[RunRecord, Path, dict[str, float]]:
    """Evaluate the run with lm-eval and merge the scores into its record.

    Returns (the updated record, its path, this evaluation's scores as {'task/metric': value}).
    """
    t0 = time.perf_counter()
    results_dir, path = resolve_run(args["run"], args["results_dir"])
    ckpt = checkpoint_of(_read(path))
    from harness.hardware import resolve_device

    device = resolve_device(args["device"])
    if args["offline"]:  # before datasets / huggingface_hub are imported: they read these once
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    from harness.lmeval.model import ArchbenchLM

    lm, task = ArchbenchLM.from_checkpoint_with_task(ckpt, device, args["batch_size"])
    include, exported = list(args["include_path"]), {}
    if BUILTIN_TASK in args["tasks"]:
        folder, exported = export_lm_task(task, results_dir)
        include.insert(0, str(folder))
    out = _simple_evaluate(lm, _task_manager(args["tasks"], include), args, device)
    flat, facts = _metrics(out)
    common = {"lm_eval_version": _lm_eval_version(),
              "evaluated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "limit": args["limit"], "batch_size": args["batch_size"], "device": str(device), "seq_len": lm.seq_len,
              "checkpoint": ckpt, "wall_s": time.perf_counter() - t0}
    for name in facts:
        facts[name].update(common, **(exported if name == BUILTIN_TASK else {"source": "lm-eval task"}))
    rec = _merge(path, results_dir, flat, facts)
    return rec, path, flat


def _lm_eval_version() -> str | None:
    import lm_eval

    return getattr(lm_eval, "__version__", None)


def _merge(path: Path, results_dir: Path, scores: dict[str, float], facts: dict[str, Any]) -> RunRecord:
    """Merge into the record as it is on disk now (read fresh) and write it back atomically."""
    with run_lock(results_dir, path.stem):  # not while a rerun of the same config writes its record
        rec = _read(path)
        rec = dataclasses.replace(rec, lmeval={**(rec.lmeval or {}), **scores},
                                  lmeval_info={**(rec.lmeval_info or {}), **facts})
        write_record(results_dir, rec)
    return rec
