"""Where each training setting of a run comes from: user > study > tuned > the preset's recipe > default.

sweeps/config.yaml declares the recipe keys of ``train.*`` as null ("from the recipe"). A value
given on the command line is the user's; a non-null value in the composed config that the command
line did not set came from a study (or model) file; the lr a ``study=tune`` chose for this (arch,
size, task) in the same results folder comes next (harness/tune.py); every key still null is filled
from the arch's recipe for this size (archs/<arch>.py, archbench/recipe.py), and what the recipe does not state
from ``DEFAULTS``. ``train.max_steps`` left null caps a run at ``DEFAULT_MAX_STEPS`` only when no
``budget.*`` limit is set, so a budget is never stopped early by a limit nobody asked for.
"""
from __future__ import annotations

from typing import Any, Mapping

from archbench import get_arch
from archbench.recipe import RECIPE_KEYS
from harness.tune import read_tuned

# the engine's values for what neither the user, the study nor the recipe sets
DEFAULTS: dict[str, Any] = {"lr": 3.0e-3, "schedule": "cosine", "warmup_steps": 30, "min_lr_ratio": 0.1,
                            "batch_size": 16, "seq_len": 128, "weight_decay": 0.1, "betas": [0.9, 0.95],
                            "grad_clip": 1.0}
DEFAULT_MAX_STEPS = 300  # the step cap of a run given no budget at all
BUDGET_KEYS = ("tokens", "flops", "seconds")
SOURCE_KEY = "recipe_source"  # where resolve() leaves its answer in the config (archbench.record.KEY_EXCLUDED)


def user_keys(overrides) -> set[str]:
    """The train.* keys the command line sets (``train.lr=1e-3``, ``+train.lr=..``, ``++train.lr=..``)."""
    out = set()
    for ov in overrides or ():
        key = ov.lstrip("+~").split("=", 1)[0]
        if key.startswith("train."):
            out.add(key[len("train."):])
    return out


def resolve(conf: dict[str, Any], overrides=None) -> dict[str, str]:
    """Fill the null recipe keys of ``conf['train']`` in place; returns key -> where its value came
    from ("user", "study", "recipe", "default"), also kept in ``conf['recipe_source']`` (not part of
    the run key), which makes a second call a no-op."""
    if isinstance(conf.get(SOURCE_KEY), dict):
        return conf[SOURCE_KEY]
    train = conf["train"]
    recipe = get_arch(conf["arch"]["name"]).recipe(conf["size"])
    from_recipe = recipe.values() if recipe is not None else {}
    tuned = read_tuned(conf.get("results_dir", "results"), conf["arch"]["name"], conf["size"], conf["task"]["name"])
    given = user_keys(overrides)
    sources = {}
    for key in RECIPE_KEYS:
        if train.get(key) is not None:
            sources[key] = "user" if key in given else "study"
        elif tuned and key == "lr":  # study=tune chose it on this results folder (harness/tune.py)
            train[key], sources[key] = float(tuned["lr"]), "tuned"
        elif key in from_recipe:
            train[key], sources[key] = from_recipe[key], "recipe"
        else:
            train[key], sources[key] = DEFAULTS[key], "default"
    if train.get("max_steps") is None:
        budgeted = any((conf.get("budget") or {}).get(k) is not None for k in BUDGET_KEYS) or \
            train.get("max_tokens") is not None or train.get("max_seconds") is not None
        if not budgeted:
            train["max_steps"], sources["max_steps"] = DEFAULT_MAX_STEPS, "default (no budget.* set)"
    else:
        sources["max_steps"] = "user" if "max_steps" in given else "study"
    conf[SOURCE_KEY] = sources
    return sources


def recipe_record(conf: Mapping[str, Any]) -> dict[str, Any] | None:
    """The preset's recipe as the record keeps it (its values and provenance), None when it has none."""
    recipe = get_arch(conf["arch"]["name"]).recipe(conf["size"])
    return {"arch": conf["arch"]["name"], "size": conf["size"], **recipe.to_dict()} if recipe else None
