"""lm-eval over archbench: ``python -m harness.lmeval run=<run_key> [tasks=...] [key=value ...]``.

  cli.py       arguments and the entry point (its docstring is the ``--help``)
  evaluate.py  which run, lm-eval on its checkpoint, the scores merged into its record
  export.py    the run's LM test split as the local lm-eval task ``archbench_lm``
  model.py     any archbench LM as an lm-eval model (imports lm_eval: only evaluate.py loads it, lazily)
"""
from harness.lmeval.cli import DEFAULTS, USAGE, main, parse_args
from harness.lmeval.evaluate import checkpoint_of, evaluate_run, resolve_run
from harness.lmeval.export import BUILTIN_TASK, export_lm_task

__all__ = ["BUILTIN_TASK", "DEFAULTS", "USAGE", "checkpoint_of", "evaluate_run", "export_lm_task", "main",
           "parse_args", "resolve_run"]
