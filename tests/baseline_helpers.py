"""Helpers shared by the baseline tests (n-gram, HMM, LSTM): a labeled task and a small text file
for one run through the harness."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def tiny_text_file(path: Path, n_docs: int = 120) -> Path:
    rng = np.random.default_rng(0)
    words = "the a model token count state word text data run file line of and to is in".split()
    docs = [" ".join(rng.choice(words, size=rng.integers(8, 30))) + "." for _ in range(n_docs)]
    path.write_text("\n\n".join(docs) + "\n")
    return path


class LabeledTask:
    """The slice of a classify task that count/EM classifiers read: labeled token sequences."""

    name = "fake-classify"

    def __init__(self, seqs, labels):
        self.seqs, self.labels = seqs, labels

    def labeled_sequences(self, split):
        return self.seqs, self.labels
