"""Architecture registry.

Every architecture family is one file in this package that calls ``register_arch``; importing the
package imports every module in it, so adding a file is all it takes to register an arch (the
fairseq pattern, without its global mutable defaults).

An arch declares the task kinds it can serve ("lm", "seq2seq", "classify", "mlm"), its size ladder (a dict
of preset name -> dataclass of hyperparameters, readable top to bottom in the arch's file) and a
``build(kind, hparams, task_spec)`` function. The engine never special-cases an arch.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from harness.errors import UserError

KINDS = ("lm", "seq2seq", "classify", "mlm")  # mlm: masked-LM pretraining (BERT), see interface.py


@dataclass(frozen=True)
class TaskSpec:
    """What a model needs to know about the task it is built for."""

    kind: str
    vocab_size: int
    max_seq_len: int
    num_classes: int | None = None
    pad_id: int | None = None
    bos_id: int | None = None
    eos_id: int | None = None


@dataclass(frozen=True)
class ArchSpec:
    name: str
    kinds: tuple[str, ...]
    sizes: Mapping[str, Any]  # preset name -> hyperparameter dataclass instance
    build: Callable[[str, Any, TaskSpec], Any]
    fitted: bool = False  # fit by counting / EM (the loop calls model.fit) instead of gradient steps
    unsupported: Mapping[str, str] = field(default_factory=dict)  # kind -> why not

    def check_kind(self, kind: str) -> None:
        if kind not in self.kinds:
            why = self.unsupported.get(kind, "")
            raise UserError(
                f"arch '{self.name}' cannot do task kind '{kind}'"
                + (f" ({why})" if why else "")
                + f"; it supports: {', '.join(self.kinds)}"
            )

    def hparams(self, size: str, overrides: Mapping[str, Any] | None = None) -> Any:
        """The size preset with the non-null overrides from the arch config applied."""
        if size not in self.sizes:
            raise UserError(
                f"arch '{self.name}' has no size '{size}'; valid sizes: {', '.join(self.sizes)}"
            )
        preset = self.sizes[size]
        given = {k: v for k, v in (overrides or {}).items() if v is not None and k != "name"}
        names = {f.name for f in dataclasses.fields(preset)}
        unknown = sorted(set(given) - names)
        if unknown:
            raise UserError(
                f"arch '{self.name}' has no hyperparameter {', '.join(map(repr, unknown))}; "
                f"valid: {', '.join(sorted(names))}"
            )
        return dataclasses.replace(preset, **given)


ARCHS: dict[str, ArchSpec] = {}


def register_arch(
    name: str,
    *,
    kinds: tuple[str, ...],
    sizes: Mapping[str, Any],
    fitted: bool = False,
    unsupported: Mapping[str, str] | None = None,
) -> Callable:
    """Decorator for an arch's ``build(kind, hparams, task_spec) -> model`` function."""
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"arch {name}: unknown kinds {bad}; valid: {KINDS}")

    def deco(build: Callable) -> Callable:
        if name in ARCHS:
            raise ValueError(f"arch '{name}' registered twice")
        ARCHS[name] = ArchSpec(name, tuple(kinds), dict(sizes), build, fitted, dict(unsupported or {}))
        return build

    return deco


def get_arch(name: str) -> ArchSpec:
    if name not in ARCHS:
        raise UserError(f"unknown arch '{name}'; valid archs: {', '.join(sorted(ARCHS))}")
    return ARCHS[name]


def build_model(name: str, size: str, kind: str, task_spec: TaskSpec, overrides=None):
    arch = get_arch(name)
    arch.check_kind(kind)
    return arch.build(kind, arch.hparams(size, overrides), task_spec)


def _import_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


_import_all()
