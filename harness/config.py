"""Checks on a composed config that Hydra's key checks do not make: types, ranges, registry names,
a writable results folder. Each failure is one UserError naming the value and the valid choices."""
from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any, Mapping

from archbench import get_arch
from archs.layers.attention import BACKENDS, resolve_backend
from harness import checkpoints
from archbench.errors import UserError
from harness.hardware import DEVICES, compute_dtype, resolve_device
from archbench import task_kind

POSITIVE_INTS = ("batch_size", "seq_len", "warmup_steps", "eval_batches")
NON_NEGATIVE_INTS = ("eval_every",)
OPTIONAL_POSITIVE = {"max_steps": int, "max_tokens": int, "max_seconds": float}
BUDGET_KEYS = {"tokens": int, "flops": float, "seconds": float}
# train.<engine name> that mirrors budget.<user name>: both may be set only to the same value
BUDGET_MIRRORS = {"tokens": "max_tokens", "seconds": "max_seconds"}
POSITIVE_FLOATS = ("lr", "grad_clip")
UNIT_FLOATS = ("min_lr_ratio",)
PLAN_MODES = ("auto", "always")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate(conf: Mapping[str, Any], *, check_kind: bool = True) -> None:
    arch = get_arch(conf["arch"]["name"])
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
    if any(f.name == "attention" for f in dataclasses.fields(hp)):  # e.g. xformers asked for on a CPU
        device = resolve_device(conf["device"])
        resolve_backend(conf["attention"], device, compute_dtype(device))
    if conf.get("plan", "auto") not in PLAN_MODES:
        raise UserError(f"unknown plan '{conf['plan']}'; valid: {', '.join(PLAN_MODES)}")
    if not isinstance(conf.get("checkpoint", False), bool):
        raise UserError(f"checkpoint must be true or false, got {conf['checkpoint']!r}")
    if conf.get("init_from"):
        checkpoints.check(str(conf["init_from"]), conf["arch"]["name"])
    if not _is_int(conf["seed"]):
        raise UserError(f"seed must be an integer, got {conf['seed']!r}")
    _validate_budget(conf)
    _validate_train(conf["train"], has_flops=bool(conf.get("budget", {}).get("flops")))
    check_writable(conf["results_dir"])


def _validate_budget(conf: Mapping[str, Any]) -> None:
    budget = conf.get("budget") or {}
    for k, typ in BUDGET_KEYS.items():
        v = budget.get(k)
        if v is None:
            continue
        ok = _is_int(v) if typ is int else _is_number(v)
        if not ok or v <= 0:
            raise UserError(f"budget.{k} must be a positive {'integer' if typ is int else 'number'} or null, got {v!r}")
    for k, mirror in BUDGET_MIRRORS.items():
        user, engine = budget.get(k), conf["train"].get(mirror)
        if user is not None and engine is not None and user != engine:
            raise UserError(f"budget.{k}={user!r} and train.{mirror}={engine!r} disagree; set only budget.{k} "
                            f"(train.{mirror} follows it)")


def _validate_train(t: Mapping[str, Any], has_flops: bool = False) -> None:
    for k in POSITIVE_INTS:
        if not _is_int(t[k]) or t[k] <= 0:
            raise UserError(f"train.{k} must be a positive integer, got {t[k]!r}")
    for k in NON_NEGATIVE_INTS:
        if not _is_int(t[k]) or t[k] < 0:
            raise UserError(f"train.{k} must be an integer >= 0, got {t[k]!r}")
    for k, typ in OPTIONAL_POSITIVE.items():
        v = t[k]
        if v is None:
            continue
        ok = _is_int(v) if typ is int else _is_number(v)
        if not ok or v <= 0:
            kind = "a positive integer" if typ is int else "a positive number"
            raise UserError(f"train.{k} must be {kind} or null, got {v!r}")
    if all(t[k] is None for k in OPTIONAL_POSITIVE) and not has_flops:
        raise UserError("no training budget: set at least one of budget.tokens, budget.flops, budget.seconds, "
                        "train.max_steps")
    for k in POSITIVE_FLOATS:
        if not _is_number(t[k]) or t[k] <= 0:
            raise UserError(f"train.{k} must be a positive number, got {t[k]!r}")
    for k in UNIT_FLOATS:
        if not _is_number(t[k]) or not 0 <= t[k] <= 1:
            raise UserError(f"train.{k} must be a number in [0, 1], got {t[k]!r}")
    if not _is_number(t["weight_decay"]) or t["weight_decay"] < 0:
        raise UserError(f"train.weight_decay must be a number >= 0, got {t['weight_decay']!r}")
    betas = t["betas"]
    if not (isinstance(betas, (list, tuple)) and len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas)):
        raise UserError(f"train.betas must be two numbers in [0, 1), got {betas!r}")


def check_writable(results_dir: str) -> None:
    try:
        os.makedirs(results_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=results_dir, prefix=".write-check-"):
            pass
    except OSError as e:
        raise UserError(f"results_dir '{results_dir}' cannot be written ({e.strerror or e}); "
                        "point results_dir= at a writable folder") from None
