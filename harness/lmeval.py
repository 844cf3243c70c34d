"""Evaluate a trained run with lm-eval: ``python -m harness.lmeval run=<run_key> [tasks=...] [key=value ...]``.

The run's checkpoint (train with ``checkpoint=true``) is loaded through the arch registry, wrapped by
harness/lmeval_adapter.py and handed to ``lm_eval.simple_evaluate`` as a model instance; the scores
are merged into the run's record (written atomically), so the report shows them.

Offline by default: the default task ``archbench_lm`` is the run's own LM test split, exported at run
time as a local lm-eval task (``dataset_path: json``, one document = the test documents joined the way
our evaluator joins them) under ``<results_dir>/lmeval_tasks/``. lm-eval's bits_per_byte on it is
-sum(loglikelihood) / ln 2 / UTF-8 bytes of that text, and the adapter computes the loglikelihood with
the scoring function our LM evaluator uses (tasks/lm_scoring.py), so the two agree to the last digit.
Any other lm-eval task name works too (``include_path=`` for your own YAML tasks; ``offline=false``
lets lm-eval fetch hub datasets). lm_eval is imported only after the arguments check out: it is slow.
"""
from __future__ import annotations

import datetime as _dt
import difflib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from harness import records
from archbench.errors import UserError, user_errors_exit

BUILTIN_TASK = "archbench_lm"
DEFAULTS: dict[str, Any] = {
    "run": None,  # run key (or a unique prefix), a record file runs/<key>.json, or a Hydra job folder
    "tasks": BUILTIN_TASK,  # comma-separated lm-eval task / group / tag names
    "include_path": None,  # comma-separated folders of your own lm-eval task YAMLs
    "results_dir": "results",
    "limit": None,  # lm-eval's limit: documents per task (an integer) or a fraction (< 1); for quick checks
    "batch_size": 32,
    "device": "auto",
    "offline": True,  # no Hugging Face hub access: only local data (the exported task, include_path, caches)
    "bootstrap_iters": 100000,  # lm-eval's stderr bootstrap draws (0 = no stderr)
}
USAGE = ("python -m harness.lmeval run=<run_key|runs/<key>.json|hydra job dir> [tasks=archbench_lm,...] "
         "[include_path=DIR] [results_dir=results] [limit=N] [batch_size=32] [device=auto] [offline=true] "
         "[bootstrap_iters=100000]")


# ---- arguments -----------------------------------------------------------------------------------------

def parse_args(argv: list[str]) -> dict[str, Any]:
    args = dict(DEFAULTS)
    for a in argv:
        key, eq, value = a.partition("=")
        if not eq:
            raise UserError(f"argument '{a}' is not key=value; usage: {USAGE}")
        if key not in DEFAULTS:
            raise UserError(f"unknown argument '{key}'; valid: {', '.join(DEFAULTS)}")
        args[key] = value
    if not args["run"]:
        raise UserError(f"missing run=<run_key>; usage: {USAGE}")
    args["tasks"] = _names(args["tasks"])
    if not args["tasks"]:
        raise UserError("tasks= is empty; give lm-eval task names, e.g. tasks=archbench_lm")
    args["include_path"] = _names(args["include_path"]) if args["include_path"] else []
    for folder in args["include_path"]:
        if not Path(folder).is_dir():
            raise UserError(f"include_path '{folder}' is not a folder (it should hold lm-eval task YAML files)")
    args["batch_size"] = _positive_int("batch_size", args["batch_size"])
    args["bootstrap_iters"] = _non_negative_int("bootstrap_iters", args["bootstrap_iters"])
    args["limit"] = _limit(args["limit"])
    args["offline"] = _bool("offline", args["offline"])
    return args


def _names(value: str) -> list[str]:
    return [n.strip() for n in str(value).strip("[]").split(",") if n.strip()]


def _positive_int(key: str, value) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        v = 0
    if v <= 0 or str(value).strip() != str(v):
        raise UserError(f"{key} must be a positive integer, got {value!r}")
    return v


def _non_negative_int(key: str, value) -> int:
    return 0 if str(value).strip() == "0" else _positive_int(key, value)


def _limit(value) -> int | float | None:
    if value is None or str(value).lower() in ("null", "none", ""):
        return None
    try:
        v = float(value)
    except ValueError:
        v = -1.0
    if v <= 0 or (v >= 1 and v != int(v)):
        raise UserError(f"limit must be a positive integer (documents per task) or a fraction in (0, 1), got {value!r}")
    return int(v) if v >= 1 else v


def _bool(key: str, value) -> bool:
    v = str(value).lower()
    if v not in ("true", "false"):
        raise UserError(f"{key} must be true or false, got {value!r}")
    return v == "true"


# ---- which run -------------------------------------------------------------------------------------------

def resolve_run(value: str, results_dir: str) -> tuple[Path, Path]:
    """(results_dir, record path) for a run key or unique key prefix, a record file, or a Hydra job folder."""
    p = Path(value)
    if p.is_file():
        if p.suffix != ".json" or p.parent.name != "runs":
            raise UserError(f"run '{value}' is a file but not a run record (<results_dir>/runs/<run_key>.json)")
        return p.parent.parent, p
    if p.is_dir():
        hydra_cfg = p / ".hydra" / "config.yaml"
        if not hydra_cfg.is_file():
            raise UserError(f"run '{value}' is a folder without .hydra/config.yaml; "
                            "pass a run key, a record file or a Hydra job folder")
        from omegaconf import OmegaConf

        conf = OmegaConf.to_container(OmegaConf.load(hydra_cfg), resolve=True)
        path = records.record_path(conf["results_dir"], records.run_key(conf))
        if not path.is_file():
            raise UserError(f"the run of Hydra job folder '{value}' has no record ({path}); did it finish?")
        return Path(conf["results_dir"]), path
    folder = records.runs_dir(results_dir)
    matches = sorted(folder.glob(f"{value}*.json")) if folder.is_dir() and "/" not in value else []
    if len(matches) == 1:
        return Path(results_dir), matches[0]
    if len(matches) > 1:
        raise UserError(f"run '{value}' matches {len(matches)} runs in {folder} "
                        f"({', '.join(m.stem for m in matches[:5])}...); give more of the run key")
    n = len(list(folder.glob("*.json"))) if folder.is_dir() else 0
    raise UserError(f"no run '{value}' in {folder} ({n} records); pass a run key (the run_key column of the report), "
                    "a record file or a Hydra job folder, and results_dir= if the runs are elsewhere")


def checkpoint_of(rec: dict[str, Any], record_path: Path) -> str:
    """The checkpoint of an ok run, or one line saying why there is none."""
    key = rec.get("run_key", record_path.stem)
    if rec.get("status") != "ok":
        raise UserError(f"run {key} has status '{rec.get('status')}', not ok: it has no trained model to evaluate")
    ckpt = rec.get("checkpoint")
    if not ckpt:
        raise UserError(f"run {key} ({rec.get('arch')}/{rec.get('size')}) has no checkpoint; rerun it with "
                        "checkpoint=true force=true")
    if not Path(ckpt).is_file():
        raise UserError(f"checkpoint '{ckpt}' of run {key} does not exist (moved or deleted?); rerun the run with "
                        "checkpoint=true force=true")
    return ckpt


# ---- the builtin LM test split as a local lm-eval task ----------------------------------------------------

def export_lm_task(task, results_dir: Path, name: str = BUILTIN_TASK) -> tuple[Path, dict[str, Any]]:
    """Write the run's LM test split as an lm-eval task folder; returns (folder, facts for the record).

    One document: the test documents joined with the LM task's separator, exactly the text our
    evaluator scores, so lm-eval's per-document byte count and loglikelihood are ours (see the
    module docstring). Rewritten on every call (a few files), never committed (results_dir).
    """
    import yaml

    from tasks.lm import DOC_SEPARATOR

    splits = getattr(task, "splits", None)
    if getattr(task, "kind", None) != "lm" or not splits or "test" not in splits:
        raise UserError(f"task '{BUILTIN_TASK}' exports an LM test split, but this run's task "
                        f"'{getattr(task, 'name', '?')}' has none; name lm-eval tasks with tasks=")
    text = DOC_SEPARATOR.join(splits["test"])
    folder = Path(results_dir) / "lmeval_tasks" / f"{name}-{task.fingerprint[:16]}"
    data = folder / "test.jsonl"
    records.write_atomic(data, json.dumps({"text": text}, ensure_ascii=False) + "\n")
    metric = lambda m, agg: {"metric": m, "aggregation": agg, "higher_is_better": False}  # noqa: E731
    config = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())},
                           "cache_dir": str((Path(results_dir) / ".cache" / "hf_datasets").resolve())},
        "output_type": "loglikelihood_rolling",
        "test_split": "test",
        "doc_to_text": "",
        "doc_to_target": "text",
        "metric_list": [metric("word_perplexity", "weighted_perplexity"),
                        metric("byte_perplexity", "weighted_perplexity"),
                        metric("bits_per_byte", "bits_per_byte")],
        "metadata": {"version": 1.0},
    }
    records.write_atomic(folder / f"{name}.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    facts = {"source": f"this run's LM test split ({task.data_info()['source']}), exported to {folder}",
             "data_fingerprint": task.fingerprint, "joined_test_documents": len(splits["test"]),
             "bytes": len(text.encode("utf-8"))}
    return folder, facts


# ---- lm-eval ---------------------------------------------------------------------------------------------

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


def evaluate_run(args: dict[str, Any]) -> tuple[dict[str, Any], Path, dict[str, float]]:
    """Evaluate the run with lm-eval and merge the scores into its record.

    Returns (the updated record, its path, this evaluation's scores as {'task/metric': value}).
    """
    t0 = time.perf_counter()
    results_dir, path = resolve_run(args["run"], args["results_dir"])
    rec = records.read_record(path)
    if rec is None:
        raise UserError(f"run record '{path}' cannot be read (not JSON?)")
    ckpt = checkpoint_of(rec, path)
    from harness.hardware import resolve_device

    device = resolve_device(args["device"])
    if args["offline"]:  # before datasets / huggingface_hub are imported: they read these once
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    from harness.lmeval_adapter import ArchbenchLM, load_lm_checkpoint

    model, payload, task = load_lm_checkpoint(ckpt, device)
    include, exported = list(args["include_path"]), {}
    if BUILTIN_TASK in args["tasks"]:
        folder, exported = export_lm_task(task, results_dir)
        include.insert(0, str(folder))
    tm = _task_manager(args["tasks"], include)

    import lm_eval

    lm = ArchbenchLM(model, task.tokenizer, payload["task_spec"]["max_seq_len"], device, args["batch_size"],
                     name=f"arch '{payload['arch']}'",
                     info={"arch": payload["arch"], "size": payload["size"], "run_key": payload["run_key"]})
    try:
        out = lm_eval.simple_evaluate(model=lm, tasks=args["tasks"], task_manager=tm, limit=args["limit"],
                                      batch_size=args["batch_size"], bootstrap_iters=args["bootstrap_iters"],
                                      log_samples=False, device=str(device))
    except (ConnectionError, FileNotFoundError) as e:  # a task whose data cannot be fetched or found
        how = ("this evaluation is offline (offline=true, the default): pass offline=false where the Hugging Face "
               "hub is reachable, or" if args["offline"] else "check the network or the task's data_files, or")
        raise UserError(f"lm-eval could not load the data of {', '.join(args['tasks'])} "
                        f"({' '.join(str(e).split())[:160]}); {how} use a local task via include_path=") from None
    flat, facts = _metrics(out)
    when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    common = {"lm_eval_version": getattr(lm_eval, "__version__", None), "evaluated_at": when, "limit": args["limit"],
              "batch_size": args["batch_size"], "device": str(device), "seq_len": lm.seq_len,
              "checkpoint": ckpt, "wall_s": time.perf_counter() - t0}
    for name in facts:
        facts[name].update(common, **(exported if name == BUILTIN_TASK else {"source": "lm-eval task"}))

    rec = records.read_record(path)  # fresh: merge into what is on disk now
    rec.setdefault("lmeval", {}).update(flat)
    rec.setdefault("lmeval_info", {}).update(facts)
    records.write_record(results_dir, rec)
    return rec, path, flat


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip() + "\n\nusage: " + USAGE)
        return 0
    with user_errors_exit():
        args = parse_args(argv)
        rec, path, scores = evaluate_run(args)
    width = max(map(len, scores), default=0)
    for k, v in sorted(scores.items()):
        print(f"{k:<{width}}  {v:.6g}")
    print(f"lm-eval scores of run {rec['run_key']} ({rec['arch']}/{rec['size']}) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
