"""Built-in architectures: one module (or one folder, like ngram/ and hmm/) per family.

Importing this package imports every family in it, and each registers itself with
``archbench.register_arch``: adding a file is all it takes (the fairseq pattern, without its
global mutable defaults). ``archs/layers`` holds pieces shared by several families and registers
nothing. Architectures import only ``archbench`` and modules of this package.
"""
from __future__ import annotations

import importlib
import pkgutil

SHARED = {"layers"}  # subpackages of shared pieces, not architectures


def _import_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_") and mod.name not in SHARED:
            importlib.import_module(f"{__name__}.{mod.name}")


_import_all()
