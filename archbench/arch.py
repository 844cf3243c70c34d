"""The architecture contract: a name, the task kinds it serves, its size ladder and a builder.

An arch registers a ``build(kind, hparams, task_spec) -> model`` function with
``@register_arch(name, kinds=..., sizes=...)``. Its size ladder is a dict of preset name ->
hyperparameter dataclass, readable top to bottom in the arch's own file; ``recipes=`` attaches each
size's training recipe (archbench/recipe.py) beside it. Asking for a kind an arch
cannot do is one clear error naming the arch, the kind and what it supports.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from archbench.errors import UserError
from archbench.recipe import Recipe
from archbench.registry import Registry
from archbench.spec import KINDS, TaskSpec


@dataclass(frozen=True)
class ArchSpec:
    name: str
    kinds: tuple[str, ...]
    sizes: Mapping[str, Any]  # preset name -> hyperparameter dataclass instance
    build: Callable[[str, Any, TaskSpec], Any]
    fitted: bool = False  # fit by counting / EM (the engine calls model.fit) instead of gradient steps
    unsupported: Mapping[str, str] = field(default_factory=dict)  # kind -> why not
    recipes: Mapping[str, Recipe] = field(default_factory=dict)  # size -> its training recipe (archbench/recipe.py)

    def recipe(self, size: str) -> Recipe | None:
        """The training recipe attached to this size preset (None: fitted archs, or none given)."""
        return self.recipes.get(size)

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
            raise UserError(f"arch '{self.name}' has no size '{size}'; valid sizes: {', '.join(self.sizes)}")
        preset = self.sizes[size]
        given = {k: v for k, v in (overrides or {}).items() if v is not None and k != "name"}
        names = {f.name for f in dataclasses.fields(preset)}
        unknown = sorted(set(given) - names)
        if unknown:
            raise UserError(
                f"arch '{self.name}' has no hyperparameter {', '.join(map(repr, unknown))}; "
                f"valid: {', '.join(sorted(names))}"
            )
        hints = typing.get_type_hints(type(preset))
        for k, v in given.items():
            _check_hparam(self.name, k, v, hints.get(k))
        return dataclasses.replace(preset, **given)

    def build_model(self, kind: str, size: str, task_spec: TaskSpec, overrides: Mapping[str, Any] | None = None):
        self.check_kind(kind)
        return self.build(kind, self.hparams(size, overrides), task_spec)


def _check_hparam(arch: str, key: str, value: Any, hint: Any) -> None:
    """A given hyperparameter has its field's type: counts are positive integers, rates and scales
    finite numbers >= 0, switches booleans (a negative width would fail deep in torch, a nan silently)."""
    kinds = set(typing.get_args(hint)) - {type(None)} if typing.get_args(hint) else {hint}
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kinds == {bool, str}:  # a switch that also takes named modes (the arch checks which)
        if not isinstance(value, (bool, str)):
            raise UserError(f"arch.{key} of '{arch}' must be true, false or a mode name, got {value!r}")
        return
    if bool in kinds and not isinstance(value, bool):
        raise UserError(f"arch.{key} must be true or false, got {value!r}")
    if int in kinds and float not in kinds and (not is_int or value < 1):
        raise UserError(f"arch.{key} of '{arch}' must be a positive integer, got {value!r}")
    if float in kinds and (not (is_int or isinstance(value, float)) or not math.isfinite(value) or value < 0):
        raise UserError(f"arch.{key} of '{arch}' must be a finite number >= 0, got {value!r}")
    if str in kinds and not isinstance(value, str):
        raise UserError(f"arch.{key} of '{arch}' must be a string, got {value!r}")


def _check_arch(name: str, obj: Any) -> None:
    if not isinstance(obj, ArchSpec):
        raise TypeError(f"arch '{name}' must be registered as an ArchSpec (use @register_arch), got {type(obj).__name__}")
    bad = [k for k in obj.kinds if k not in KINDS]
    if bad:
        raise ValueError(f"arch '{name}': unknown task kinds {bad}; valid: {', '.join(KINDS)}")
    sizes = list(obj.sizes.values())
    if not sizes or not all(dataclasses.is_dataclass(s) for s in sizes):
        raise TypeError(f"arch '{name}': sizes must be a non-empty dict of hyperparameter dataclass instances")
    extra = sorted(set(obj.recipes) - set(obj.sizes))
    if extra or not all(isinstance(r, Recipe) for r in obj.recipes.values()):
        raise TypeError(f"arch '{name}': recipes must map its sizes to archbench.Recipe (unknown sizes: {extra})")


ARCHS: Registry[ArchSpec] = Registry("arch", _check_arch)


def register_arch(
    name: str,
    *,
    kinds: tuple[str, ...],
    sizes: Mapping[str, Any],
    fitted: bool = False,
    unsupported: Mapping[str, str] | None = None,
    recipes: Mapping[str, Recipe] | None = None,
    replace: bool = False,
) -> Callable:
    """Decorator for an arch's ``build(kind, hparams, task_spec) -> model`` function."""

    def deco(build: Callable) -> Callable:
        ARCHS.register(name, ArchSpec(name, tuple(kinds), dict(sizes), build, fitted, dict(unsupported or {}),
                                          dict(recipes or {})),
                       replace=replace)
        return build

    return deco


def get_arch(name: str) -> ArchSpec:
    return ARCHS.get(name)


def build_model(name: str, size: str, kind: str, task_spec: TaskSpec, overrides=None):
    return get_arch(name).build_model(kind, size, task_spec, overrides)
