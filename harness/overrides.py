"""Overrides that would change the config's shape are refused before anything runs.

Hydra lets ``+key=value`` add a key the config does not declare and ``~key`` delete one. In a
sweep both are mistakes: a typo'd ``+train.max_stepz=5`` would run with the default, store the
bogus key and make a new run key; ``~train.lr`` leaves the run without a value it reads. Config
groups (``+model=...``, ``~study``) are choices, not keys, and stay allowed.
"""
from __future__ import annotations

import difflib

from omegaconf import DictConfig

from archbench.errors import UserError


def declared_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Every dotted key of the composed config, inner nodes included."""
    out = []
    for k in node.keys():
        path = f"{prefix}{k}"
        out.append(path)
        child = node._get_node(k)
        if isinstance(child, DictConfig):
            out += declared_keys(child, f"{path}.")
    return out


def _closest(key: str, keys: list[str]) -> str:
    near = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    return f"; did you mean '{near[0]}'?" if near else ""


def check_override_keys(args: list[str]) -> None:
    """UserError for ``+key`` of an undeclared key (naming the closest declared one), ``+key`` of a
    declared key, and ``~key`` of a declared key."""
    from harness.config import compose, group_options

    shaped = [a for a in args if a.startswith(("+", "~")) and not a.lstrip("+~").startswith("hydra")]
    if not shaped:
        return
    plain = [a for a in args if not a.startswith(("+", "~")) and not a.startswith("hydra")]
    keys = None
    for a in shaped:
        key = a.lstrip("+~").partition("=")[0].split("@")[0]
        if "/" in key or group_options(key):
            continue  # a config group: adding or removing a choice
        if keys is None:
            keys = declared_keys(compose(plain))
        if a.startswith("~"):
            if key in keys:
                raise UserError(f"cannot delete config key '{key}' ({a}): every declared key is read by the run; "
                                f"set it instead ({key}=VALUE)")
            raise UserError(f"unknown config key '{key}' in {a}{_closest(key, keys)}")
        if key not in keys:
            raise UserError(f"unknown config key '{key}' in {a}: '+' adds keys the config does not declare, which "
                            f"a run would never read{_closest(key, keys)}")
        if not a.startswith("++"):
            raise UserError(f"config key '{key}' is declared already; set it without '+': {a.lstrip('+')}")
