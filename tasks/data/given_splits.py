"""Splits the user gives (``task.splits.train|validation|test``) versus splits made by hash.

Published results are on a data set's own test split, so a split the user names is used exactly as
given: each entry is a file, a folder or a glob (``source=files``) or a split name of the data set
(``source=hf``: a hub data set or a ``save_to_disk`` folder). Only when no split is named is one
undivided source split by hash (tasks/data/splits.py). A validation split may be left out: it is
then carved from the given train split by hash (``valid_frac``), and the record says so.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable, Mapping, Sequence, TypeVar

from archbench.errors import UserError
from tasks.data.splits import hash_sample, hash_split_by, split_of

T = TypeVar("T")
SPLITS = ("train", "validation", "test")


def named_splits(cfg: Mapping[str, Any]) -> dict[str, str]:
    """The splits the config names (split -> path or split name); empty when none is named."""
    given = {k: v for k, v in (cfg.get("splits") or {}).items() if v not in (None, "")}
    unknown = sorted(set(given) - set(SPLITS))
    if unknown:
        raise UserError(f"task.splits.{unknown[0]} is not a split; valid: {', '.join(SPLITS)}")
    if given and not {"train", "test"} <= set(given):
        missing = [k for k in ("train", "test") if k not in given]
        raise UserError(f"task.splits names {', '.join(sorted(given))} but not {', '.join(missing)}: give train "
                        "and test (validation is optional), or none to split one source by hash")
    if given and cfg.get("source") not in ("files", "hf"):
        raise UserError(f"task.splits needs task.source=files or hf, not '{cfg.get('source')}'")
    return {k: str(v) for k, v in given.items()}


SETTING = "_setting"  # the config key a source came from, for messages (task.path or task.splits.<split>)


def config_for_split(cfg: Mapping[str, Any], where: str, split: str) -> dict[str, Any]:
    """The task config that reads one named split: ``path`` for files, ``hf.split`` for hf."""
    if cfg["source"] == "files":
        return {**cfg, "path": where, SETTING: f"task.splits.{split}"}
    return {**cfg, "hf": {**(cfg.get("hf") or {}), "split": where}}


def split_items(cfg: Mapping[str, Any], read: Callable[[Mapping[str, Any]], tuple[Sequence[T], str]],
                key: Callable[[T], str], valid_frac: float,
                test_frac: float) -> tuple[dict[str, list[T]], str, str]:
    """(items of each split, how they were split, where they came from). ``read(cfg)`` gives the
    items of one source and a description of it."""
    named = named_splits(cfg)
    if not named:
        items, where = read(cfg)
        splits = hash_split_by(list(items), key, valid_frac, test_frac)
        dropped = len(items) - sum(len(v) for v in splits.values())
        if dropped:
            warn(f"{dropped:,} of {len(items):,} examples from {where} repeat an earlier one and were dropped "
                 "(a hash split keeps each text once, so no text is in two splits)")
        return splits, "hash", where
    splits, wheres = {}, []
    for name, target in named.items():
        items, where = read(config_for_split(cfg, target, name))
        splits[name] = list(items)
        wheres.append(f"{name}={where}")
    if "validation" in splits:
        return splits, "given", "; ".join(wheres)
    train = splits["train"]  # no dedup here: the given train split is used whole
    splits["train"] = [x for x in train if split_of(key(x), valid_frac, 0.0) == "train"]
    splits["validation"] = [x for x in train if split_of(key(x), valid_frac, 0.0) == "validation"]
    return splits, "given (validation carved from train by hash)", "; ".join(wheres)


def cap_splits(splits: dict[str, list[T]], caps: Mapping[str, int | None], key: Callable[[T], str], method: str,
               task: str, setting: Mapping[str, str]) -> tuple[dict[str, list[T]], dict[str, list[int]]]:
    """Splits cut to their caps (a fixed hash-ordered sample), and {split: [kept, given]}. A cap that
    drops data is said in one warning line, naming the setting that lifts it. Hash splits keep their
    hash order (what training batches follow); given splits keep the user's order when not cut."""
    out, kept = {}, {}
    for name, items in splits.items():
        cap = caps.get(name)
        if method == "hash" or (cap is not None and cap < len(items)):
            out[name] = hash_sample(items, cap, key)
        else:
            out[name] = list(items)
        kept[name] = [len(out[name]), len(items)]
        if len(out[name]) < len(items):
            warn(f"task {task}: {name} split capped at {len(out[name]):,} of {len(items):,} examples "
                 f"({setting[name]}={cap}; null keeps all)")
    return out, kept


_quiet = [False]


def warn(message: str) -> None:
    """One line on stderr at the start of a run: data the user gave that the task does not use whole."""
    if not _quiet[0]:
        print(f"warning: {message}", file=sys.stderr)


@contextlib.contextmanager
def quiet_data_warnings():
    """For rebuilding a run's task after the run (lm-eval): its data warnings were said at run time."""
    _quiet[0] = True
    try:
        yield
    finally:
        _quiet[0] = False
