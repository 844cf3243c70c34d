"""Built-in tasks: one module per task, each a ``archbench.Task`` subclass registered with
``@archbench.register_task``; importing this package registers them all.

Shared pieces live in subpackages that register nothing: ``data`` (sources, builtin corpora,
deterministic splits), ``text`` (tokenizers, special tokens), ``scoring`` (LM scoring, decoding,
metrics). Tasks import only ``archbench`` and modules of this package.
"""
from __future__ import annotations

import importlib
import pkgutil

SHARED = {"data", "text", "scoring"}  # subpackages of shared pieces, not tasks


def _import_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_") and mod.name not in SHARED:
            importlib.import_module(f"{__name__}.{mod.name}")


_import_all()
