"""Tokenizers. Byte-level is the default for comparisons: every arch sees the same units, and
bits per byte needs no conversion."""
from __future__ import annotations

import numpy as np


class ByteTokenizer:
    name = "byte"
    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def num_bytes(self, ids) -> int:
        """UTF-8 bytes these tokens stand for (what bits-per-byte divides by)."""
        return len(ids)


TOKENIZERS = {"byte": ByteTokenizer}
