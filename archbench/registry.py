"""One generic registry, used for architectures and tasks alike.

A registry maps names to registered objects and checks each against the registry's contract when it
is added (a base class, or a check function). Looking up a name it does not hold is a ``UserError``
that lists the valid choices. An entry may be a lazy ``"module:object"`` placeholder, imported on
first use, so a plug-in can name an object without importing heavy code at registration time (the
lm-evaluation-harness registry pattern). It is a mutable mapping so tests can swap an entry with
``monkeypatch.setitem``.
"""
from __future__ import annotations

import importlib
from collections.abc import MutableMapping
from typing import Any, Callable, Generic, Iterator, TypeVar

from archbench.errors import UserError

T = TypeVar("T")
_REQUIRED = object()


class Registry(MutableMapping, Generic[T]):
    def __init__(self, what: str, check: Callable[[str, Any], None] | None = None):
        self.what = what  # "arch", "task": used in messages ("unknown arch 'x'; valid archs: ...")
        self._check = check
        self._entries: dict[str, Any] = {}

    def register(self, name: str, obj: Any, *, replace: bool = False) -> Any:
        """Add ``obj`` under ``name``; a second registration of a name is a programming error
        unless ``replace`` (a plug-in overriding a built-in says so explicitly)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.what} name must be a non-empty string, got {name!r}")
        if name in self._entries and not replace:
            raise ValueError(f"{self.what} '{name}' registered twice")
        if not isinstance(obj, str) and self._check is not None:
            self._check(name, obj)
        self._entries[name] = obj
        return obj

    def get(self, name: str, default: Any = _REQUIRED) -> T:  # type: ignore[override]
        """The entry for ``name``; an unknown name is a UserError listing the valid ones (or
        ``default`` when one is given, as for a dict)."""
        if name not in self._entries:
            if default is not _REQUIRED:
                return default
            raise UserError(f"unknown {self.what} '{name}'; valid {self.what}s: {', '.join(sorted(self._entries))}")
        return self[name]

    def __getitem__(self, name: str) -> T:
        obj = self._entries[name]
        if isinstance(obj, str):  # lazy "module:object" placeholder
            obj = self._resolve(name, obj)
        return obj

    def _resolve(self, name: str, target: str) -> Any:
        module, _, attr = target.partition(":")
        try:
            obj = getattr(importlib.import_module(module), attr) if attr else importlib.import_module(module)
        except (ImportError, AttributeError) as e:
            raise UserError(f"{self.what} '{name}' points at '{target}', which cannot be imported ({e})") from None
        if self._check is not None:
            self._check(name, obj)
        self._entries[name] = obj
        return obj

    def __setitem__(self, name: str, obj: Any) -> None:
        if not isinstance(obj, str) and self._check is not None:
            self._check(name, obj)
        self._entries[name] = obj

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {sorted(self._entries)})"
