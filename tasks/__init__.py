"""Task registry.

A task is one file in this package that calls ``register_task``; importing the package registers it.
A task owns its kind ("lm", "seq2seq", "classify"), its data source, tokenizer, splits and metrics,
and the three things the engine asks of it: training batches, a training loss, and ``evaluate``.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable, Mapping

from harness.errors import UserError

TASKS: dict[str, Callable[[Mapping[str, Any], int], Any]] = {}
TASK_KINDS: dict[str, str] = {}  # task name -> kind, known without building any data


def register_task(name: str, *, kind: str) -> Callable:
    """Decorator for a ``build(task_cfg, seed) -> Task`` function."""

    def deco(build: Callable) -> Callable:
        if name in TASKS:
            raise ValueError(f"task '{name}' registered twice")
        TASKS[name] = build
        TASK_KINDS[name] = kind
        return build

    return deco


def task_kind(name: str) -> str:
    if name not in TASKS:
        raise UserError(f"unknown task '{name}'; valid tasks: {', '.join(sorted(TASKS))}")
    return TASK_KINDS[name]


def build_task(cfg: Mapping[str, Any], seed: int = 0):
    task_kind(cfg["name"])
    return TASKS[cfg["name"]](cfg, seed)


def _import_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


_import_all()
