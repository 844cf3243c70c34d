"""Deterministic, hash-based splits and data fingerprints.

An example's split depends only on its own text (sha256), so adding or removing other examples
never moves it, and every machine with the same data gets the same split.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

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
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    seen: set[str] = set()
    for text in items:
        if text in seen:
            continue
        seen.add(text)
        out[split_of(text, valid_frac, test_frac)].append(text)
    return out


def fingerprint(splits: dict[str, Iterable[str]]) -> str:
    """sha256 over every split's name and examples, in order."""
    h = hashlib.sha256()
    for name in SPLITS:
        h.update(name.encode() + b"\x00")
        for text in splits.get(name, ()):
            h.update(text.encode("utf-8") + b"\x00")
    return h.hexdigest()
