"""Deterministic, hash-based splits and data fingerprints.

An example's split depends only on its own text (sha256), so adding or removing other examples
never moves it, and every machine with the same data gets the same split.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Iterable, Sequence, TypeVar

T = TypeVar("T")

SPLITS = ("train", "validation", "test")


def split_of(text: str, valid_frac: float, test_frac: float) -> str:
    h = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2**64
    if h < test_frac:
        return "test"
    if h < test_frac + valid_frac:
        return "validation"
    return "train"


def hash_split(items: Sequence[str], valid_frac: float, test_frac: float) -> dict[str, list[str]]:
    """Unique items, first occurrence order kept, assigned to train/validation/test by hash."""
    return hash_split_by(items, lambda text: text, valid_frac, test_frac)


def hash_split_by(items: Iterable[T], key: Callable[[T], str], valid_frac: float,
                  test_frac: float) -> dict[str, list[T]]:
    """Items with distinct keys (the first of each key kept, in order), split by the key's hash.

    Keying a translation pair by its source sentence puts every pair with that source in one split,
    so a test source is never seen in training with another translation.
    """
    out: dict[str, list[T]] = {s: [] for s in SPLITS}
    seen: set[str] = set()
    for item in items:
        k = key(item)
        if k in seen:
            continue
        seen.add(k)
        out[split_of(k, valid_frac, test_frac)].append(item)
    return out


def fingerprint(splits: dict[str, Iterable[str]]) -> str:
    """sha256 over every split's name and examples, in order."""
    h = hashlib.sha256()
    for name in SPLITS:
        h.update(name.encode() + b"\x00")
        for text in splits.get(name, ()):
            h.update(text.encode("utf-8") + b"\x00")
    return h.hexdigest()


def check_fractions(valid_frac, test_frac, task: str) -> None:
    """Both fractions in [0, 1) and leaving some data for training."""
    from archbench.errors import UserError

    for name, v in (("valid_frac", valid_frac), ("test_frac", test_frac)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
            raise UserError(f"task.{name} must be a number in [0, 1) for task {task}, got {v!r}")
    if valid_frac + test_frac >= 1:
        raise UserError(f"task.valid_frac + task.test_frac must be below 1 for task {task} "
                        f"(got {valid_frac} + {test_frac}); nothing would be left to train on")


def require_nonempty(splits: dict[str, list], task: str, total: int) -> None:
    """One clear line when a split has no examples (a model cannot be trained or scored on nothing)."""
    from archbench.errors import UserError

    for name in SPLITS:
        if not splits.get(name):
            sizes = ", ".join(f"{s}={len(splits.get(s, ()))}" for s in SPLITS)
            raise UserError(f"task {task}: the {name} split is empty ({total} examples: {sizes}); "
                            "give more data or change task.valid_frac / task.test_frac")


def hash_sample(items: Sequence[T], n: int | None, key: Callable[[T], str]) -> list[T]:
    """The items in a fixed pseudo-random order (by salted sha256 of their key), at most ``n`` of them.

    So a capped split, or the first examples a budget lets a model read, is a sample of the whole
    rather than the first few sources of a grouped list (one program's messages, one language);
    salted so that the order is independent of ``split_of``.
    """
    ranked = sorted(items, key=lambda it: hashlib.sha256(b"sample\x00" + key(it).encode("utf-8")).digest())
    return ranked if n is None else ranked[:n]
