"""Plug-ins: architectures and tasks from outside the repository.

A plug-in is a module (``my_pkg.my_archs``) or a Python file (``/path/to/my_arch.py``) that imports
only ``archbench`` and registers with ``@register_arch`` / ``@register_task``. It is named by the
``plugins=[...]`` config key, or found automatically through the ``archbench.plugins`` entry-point
group of installed packages. Loading is idempotent and happens in every process that composes or
runs a job (the sweep before composing, each job before it looks up its arch).

A registered arch or task that has no YAML in ``sweeps/`` gets a generated config node in Hydra's
ConfigStore (the arch's hyperparameter names, all ``null`` = "from the size preset"), so
``arch=<plug-in>`` composes like a built-in.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from typing import Iterable

from archbench import ARCHS, TASKS
from archbench.errors import UserError

ENTRY_POINT_GROUP = "archbench.plugins"
_loaded: set[str] = set()


def load(names: Iterable[str] | None) -> None:
    """Import each named module or .py file once; a plug-in that fails to import is a UserError."""
    for name in names or ():
        name = str(name)
        if name in _loaded:
            continue
        try:
            if name.endswith(".py") or "/" in name:
                _import_file(Path(name))
            else:
                importlib.import_module(name)
        except UserError:
            raise
        except Exception as e:  # the plug-in's own error: name it, with the plug-in
            raise UserError(f"plug-in '{name}' failed to import ({type(e).__name__}: {e}); "
                            "plugins= takes module names or paths of .py files") from None
        _loaded.add(name)
    register_configs()


def _import_file(path: Path) -> None:
    if not path.is_file():
        raise UserError(f"plug-in file '{path}' does not exist")
    module = "archbench_plugin_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[module] = mod
    spec.loader.exec_module(mod)


def load_entry_points() -> None:
    """Import the plug-ins that installed packages declare in the ``archbench.plugins`` group."""
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = f"entry-point:{ep.value}"
        if key in _loaded:
            continue
        try:
            ep.load()
        except Exception as e:
            raise UserError(f"plug-in entry point '{ep.name} = {ep.value}' ({ENTRY_POINT_GROUP}) failed to import "
                            f"({type(e).__name__}: {e})") from None
        _loaded.add(key)
    register_configs()


def load_from_overrides(overrides: Iterable[str]) -> None:
    """Load the plug-ins a command line names (``plugins=[a,b]`` or ``+plugins=...``) and those of
    installed packages, before the config is composed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    load_entry_points()
    for ov in overrides:
        if ov.lstrip("+~").split("=", 1)[0] != "plugins":
            continue
        value = OverridesParser.create().parse_override(ov).value()
        load(value if isinstance(value, list) else [value] if value else [])


def register_configs() -> None:
    """A generated Hydra config node for each registered arch or task that has no YAML of its own."""
    from importlib import resources

    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, registry in (("arch", ARCHS), ("task", TASKS)):
        folder = resources.files("sweeps") / group
        have = {p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")}
        for name in registry:
            if name in have:
                continue
            node = {"name": name}
            if group == "arch":
                preset = next(iter(registry[name].sizes.values()))
                node.update({f.name: None for f in dataclasses.fields(preset)})
            else:
                node.update(getattr(registry[name], "config_defaults", {}) or {})
            store.store(group=group, name=name, node=node)
