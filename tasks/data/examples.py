"""Helpers the example-based tasks (MT, summarization, classification) share: padding a batch,
reading an optional positive-integer setting, cutting text to a byte budget."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from archbench.errors import UserError


def pad_batch(seqs: Sequence[np.ndarray], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) ids and the bool mask (True = real token)."""
    width = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.from_numpy(np.asarray(s, dtype=np.int64))
        mask[i, :len(s)] = True
    return ids, mask


def positive_int_or_none(cfg: Mapping[str, Any], key: str) -> int | None:
    v = cfg.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise UserError(f"task.{key} must be a positive integer or null, got {v!r}")
    return v


def cut_bytes(text: str, limit: int) -> str:
    """At most ``limit`` UTF-8 bytes, ending at a word boundary when one is in the last quarter."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    cut = raw[:limit].decode("utf-8", errors="ignore")
    space = cut.rfind(" ")
    return cut[:space] if space > limit * 3 // 4 else cut
