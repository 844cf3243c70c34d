"""The run's LM test split as a local lm-eval task (``archbench_lm``).

One document: the test documents joined with the LM task's separator, exactly the text our
evaluator scores, so lm-eval's per-document byte count and loglikelihood are ours (bits_per_byte =
-sum(loglikelihood) / ln 2 / UTF-8 bytes). Written under ``<results_dir>/lmeval_tasks/``, rewritten
on every call (a few files), never committed (results_dir).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from archbench.errors import UserError
from archbench.record import write_atomic

BUILTIN_TASK = "archbench_lm"


def export_lm_task(task, results_dir: Path, name: str = BUILTIN_TASK) -> tuple[Path, dict[str, Any]]:
    """Write the run's LM test split as an lm-eval task folder; returns (folder, facts for the record)."""
    import yaml

    from tasks.lm import DOC_SEPARATOR

    splits = getattr(task, "splits", None)
    if getattr(task, "kind", None) != "lm" or not splits or "test" not in splits:
        raise UserError(f"task '{BUILTIN_TASK}' exports an LM test split, but this run's task "
                        f"'{getattr(task, 'name', '?')}' has none; name lm-eval tasks with tasks=")
    text = DOC_SEPARATOR.join(splits["test"])
    folder = Path(results_dir) / "lmeval_tasks" / f"{name}-{task.fingerprint[:16]}"
    data = folder / "test.jsonl"
    write_atomic(data, json.dumps({"text": text}, ensure_ascii=False) + "\n")
    write_atomic(folder / f"{name}.yaml", yaml.safe_dump(_task_config(name, data, results_dir), sort_keys=False,
                                                          allow_unicode=True))
    facts = {"source": f"this run's LM test split ({task.data_info()['source']}), exported to {folder}",
             "data_fingerprint": task.fingerprint, "joined_test_documents": len(splits["test"]),
             "bytes": len(text.encode("utf-8"))}
    return folder, facts


def _task_config(name: str, data: Path, results_dir: Path) -> dict[str, Any]:
    """lm-eval's YAML task config: one rolling-loglikelihood document per line of ``data``."""
    metric = lambda m, agg: {"metric": m, "aggregation": agg, "higher_is_better": False}  # noqa: E731
    return {
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
