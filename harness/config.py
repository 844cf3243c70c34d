"""Composing a run's config and checking it: the one place that turns overrides into a config.

``compose(overrides)`` is what the sweep, the benchmarks and the tests use to get exactly the
config a job would get. ``validate(conf)`` makes the checks Hydra's key checks do not: types,
ranges, registry names, the budget (archbench.Budget), a writable results folder. Each failure is
one UserError naming the value and the valid choices.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tempfile
from importlib import resources
from typing import Any, Mapping

from hydra import compose as hydra_compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf

from archbench import ARCHS, TASKS, Budget, get_arch, task_kind
from archbench.errors import UserError
from archbench.recipe import SCHEDULES
from archs.layers.attention import BACKENDS, resolve_backend
from harness import checkpoints, distributed, plugins, recipes, resume
from harness.identity import key_of
from harness.hardware import DEVICES, compute_dtype, resolve_device

CONFIG_MODULE = "sweeps"
POSITIVE_INTS = ("batch_size", "seq_len", "warmup_steps", "eval_batches", "grad_accum")
NON_NEGATIVE_INTS = ("eval_every", "checkpoint_every")
POSITIVE_FLOATS = ("lr", "grad_clip")
UNIT_FLOATS = ("min_lr_ratio",)
PLAN_MODES = ("auto", "always")
# Flags: Hydra reads `force=no` or `force='false'` as a string, which would be truthy; only a YAML
# boolean is accepted.
BOOL_FLAGS = ("force", "report", "checkpoint", "train.progress", "flush_denormal")


def group_options(group: str) -> list[str]:
    """The choices of a config group: its YAML files, and the registered plug-ins it generates."""
    from hydra.core.config_store import ConfigStore

    folder = resources.files(CONFIG_MODULE) / group
    names = {p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")} if folder.is_dir() else set()
    registry = {"arch": ARCHS, "task": TASKS}.get(group)
    stored = {n[:-5] for n in ConfigStore.instance().repo.get(group, {}) if n.endswith(".yaml")}
    return sorted(names | {n for n in stored if registry is None or n in registry})


def compose(overrides: list[str] | tuple[str, ...] = (), hydra_cfg: bool = False) -> DictConfig:
    """The config Hydra composes for these overrides (what a job would get); a bad key, group
    choice or value is a UserError naming it and the valid choices."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    plugins.load_entry_points()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return hydra_compose("config", overrides=list(overrides), return_hydra_config=hydra_cfg)
    except MissingConfigException as e:
        raise UserError(_missing_option_message(overrides, e)) from None
    except (ConfigCompositionException, OverrideParseException, OmegaConfBaseException) as e:
        raise UserError(_composition_message(e)) from None


def _missing_option_message(overrides, e: Exception) -> str:
    for ov in overrides:
        key, _, value = ov.lstrip("+~").partition("=")
        options = group_options(key)
        if options and value not in options:
            return f"unknown {key} '{value}'; valid: {', '.join(options)}"
    return str(e).splitlines()[0]


def _composition_message(e: Exception) -> str:
    msg = " ".join(str(e).split())
    m = re.search(r"Could not override '([^']+)'", msg)
    if m and "+" in msg:  # Hydra's struct check: the key is not declared anywhere in the config
        key = m.group(1)
        parent, _, _ = key.rpartition(".")
        keys = _keys_at(parent)
        near = difflib.get_close_matches(key.rpartition(".")[2], keys, n=1, cutoff=0.5)
        hint = f"did you mean '{parent + '.' if parent else ''}{near[0]}'? " if near else ""
        return f"unknown config key '{key}'; {hint}valid keys{f' under {parent}' if parent else ''}: {', '.join(keys)}"
    return msg


def _keys_at(parent: str) -> list[str]:
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        base = hydra_compose("config")
    node = OmegaConf.select(base, parent) if parent else base
    return sorted(node.keys()) if isinstance(node, DictConfig) else []


def compose_dict(overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """``compose`` resolved to plain Python containers: the ``conf`` a run receives."""
    try:
        conf = OmegaConf.to_container(compose(overrides), resolve=True)
    except UserError:
        raise
    except Exception as e:  # interpolation errors
        raise UserError(" ".join(str(e).split())) from None
    if conf["arch"]["name"] in ARCHS:
        recipes.resolve(conf, overrides)  # null train.* keys from the preset's recipe, sources recorded
    return conf


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_flags(conf: Mapping[str, Any]) -> None:
    for dotted in BOOL_FLAGS:
        node, _, leaf = dotted.rpartition(".")
        value = (conf[node] if node else conf).get(leaf, False)
        if not isinstance(value, bool):
            raise UserError(f"{dotted} must be true or false, got {value!r}")


def validate(conf: Mapping[str, Any], *, check_kind: bool = True, local: bool = True) -> Budget:
    """Check a composed config (its null train.* keys filled from the recipe first); returns its
    Budget. ``local=False`` (a job that runs elsewhere, e.g.
    on Slurm) skips what only the job's own machine can check: the device and its attention kernels."""
    arch = get_arch(conf["arch"]["name"])
    recipes.resolve(conf)
    hp = arch.hparams(conf["size"], conf["arch"])
    kind = task_kind(conf["task"]["name"])
    if check_kind:
        arch.check_kind(kind)
    if conf["device"] not in DEVICES:
        raise UserError(f"unknown device '{conf['device']}'; valid: {', '.join(DEVICES)}")
    if conf["threads"] is not None and (not _is_int(conf["threads"]) or conf["threads"] < 1):
        raise UserError(f"threads must be a positive integer or null, got {conf['threads']!r}")
    if conf["attention"] not in BACKENDS:
        raise UserError(f"unknown attention backend '{conf['attention']}'; valid: {', '.join(BACKENDS)}")
    if local and any(f.name == "attention" for f in dataclasses.fields(hp)):  # e.g. xformers asked for on a CPU
        device = resolve_device(conf["device"])
        resolve_backend(conf["attention"], device, compute_dtype(device))
    if conf.get("plan", "auto") not in PLAN_MODES:
        raise UserError(f"unknown plan '{conf['plan']}'; valid: {', '.join(PLAN_MODES)}")
    _check_flags(conf)
    if conf.get("init_from"):
        checkpoints.check(str(conf["init_from"]), conf["arch"]["name"])
    if not _is_int(conf["seed"]):
        raise UserError(f"seed must be an integer, got {conf['seed']!r}")
    budget = Budget.from_config(conf)
    _validate_train(conf["train"])
    distributed.check_batch(conf.get("dist", "none"), conf["train"]["batch_size"], conf["train"].get("grad_accum", 1))
    if conf["train"].get("resume_from"):
        resume.check_resume_from(str(conf["train"]["resume_from"]), key_of(conf), dict(conf))
    check_writable(conf["results_dir"], report=conf["report"])
    return budget


TRAIN_MODES = ("train", "eval")


def _validate_train(t: Mapping[str, Any]) -> None:
    if t.get("mode", "train") not in TRAIN_MODES:
        raise UserError(f"unknown train.mode '{t['mode']}'; valid: {', '.join(TRAIN_MODES)}")
    for k in POSITIVE_INTS:
        if not _is_int(t.get(k, 1)) or t.get(k, 1) <= 0:
            raise UserError(f"train.{k} must be a positive integer, got {t[k]!r}")
    for k in NON_NEGATIVE_INTS:
        if not _is_int(t.get(k, 0)) or t.get(k, 0) < 0:
            raise UserError(f"train.{k} must be an integer >= 0, got {t[k]!r}")
    for k in POSITIVE_FLOATS:
        if not _is_number(t[k]) or t[k] <= 0:
            raise UserError(f"train.{k} must be a positive number, got {t[k]!r}")
    for k in UNIT_FLOATS:
        if not _is_number(t[k]) or not 0 <= t[k] <= 1:
            raise UserError(f"train.{k} must be a number in [0, 1], got {t[k]!r}")
    if t["schedule"] not in SCHEDULES:
        raise UserError(f"unknown train.schedule {t['schedule']!r}; valid: {', '.join(SCHEDULES)}")
    for k in ("diverge_factor", "diverge_patience"):
        if not _is_number(t.get(k)) or t[k] < 0 or (k == "diverge_factor" and 0 < t[k] <= 1):
            raise UserError(f"train.{k} must be a number >= 0{' (and > 1 unless 0)' if k == 'diverge_factor' else ''}, "
                            f"got {t.get(k)!r}")
    if not _is_number(t["weight_decay"]) or t["weight_decay"] < 0:
        raise UserError(f"train.weight_decay must be a number >= 0, got {t['weight_decay']!r}")
    if not isinstance(t.get("compile", False), bool):
        raise UserError(f"train.compile must be true or false, got {t['compile']!r}")
    betas = t["betas"]
    if not (isinstance(betas, (list, tuple)) and len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas)):
        raise UserError(f"train.betas must be two numbers in [0, 1), got {betas!r}")


def check_writable(results_dir: str, *, report: bool = False) -> None:
    """results_dir and its runs/ folder can take files (and report.md, when a report is wanted).
    Creates nothing: a folder that does not exist yet is checked through its nearest ancestor."""
    runs = os.path.join(results_dir, "runs")
    probe = os.path.abspath(runs)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UserError(f"results cannot be written under '{probe}': it is a file, not a folder; point results_dir= at a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".write-check-", suffix=".tmp"):
            pass
    except OSError as e:
        raise UserError(f"'{probe}' cannot be written ({e.strerror or e}); "
                        "point results_dir= at a writable folder") from None
    if report:
        check_report_target(results_dir)


def check_report_target(results_dir: str) -> None:
    """report.md, runs.csv and runs.parquet can be (re)placed: none of them is a folder."""
    for name in ("report.md", "runs.csv", "runs.parquet"):
        path = os.path.join(results_dir, name)
        if os.path.isdir(path):
            raise UserError(f"'{path}' is a folder; the report writes a file there: move the folder away")
