"""Evaluate a trained run with lm-eval: ``python -m harness.lmeval run=<run_key> [tasks=...] [key=value ...]``.

The run's checkpoint (train with ``checkpoint=true``) is loaded through the arch registry, wrapped by
harness/lmeval/model.py and handed to ``lm_eval.simple_evaluate`` as a model instance; the scores
are merged into the run's record (written atomically), so the report shows them.

Offline by default: the default task ``archbench_lm`` is the run's own LM test split, exported at run
time as a local lm-eval task (``dataset_path: json``, one document = the test documents joined the way
our evaluator joins them) under ``<results_dir>/lmeval_tasks/``. lm-eval's bits_per_byte on it is
-sum(loglikelihood) / ln 2 / UTF-8 bytes of that text, and the adapter computes the loglikelihood with
the scoring function our LM evaluator uses (tasks/scoring/lm_scoring.py), so the two agree to the last
digit. Any other lm-eval task name works too (``include_path=`` for your own YAML tasks; ``offline=false``
lets lm-eval fetch hub datasets). lm_eval is imported only after the arguments check out: it is slow.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from archbench.errors import UserError, user_errors_exit
from harness.lmeval.evaluate import evaluate_run
from harness.lmeval.export import BUILTIN_TASK

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
    print(f"lm-eval scores of run {rec.run_key} ({rec.arch}/{rec.size}) -> {path}")
    return 0
