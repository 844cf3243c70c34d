"""The builtin English text as a word-level corpus, one sentence a line: what KenLM users feed
``lmplz``. Sentences of CPython's docs and docstrings, tokenized into words and punctuation marks,
split into train/test by sentence hash (deterministic), so the n-gram can be compared with KenLM on
real text without downloading anything.

Command line: ``python -m tasks word-corpus OUT_DIR`` writes OUT_DIR/train.txt and OUT_DIR/test.txt.
"""
from __future__ import annotations

import re
from pathlib import Path

from tasks.data.python_docs import python_docs_corpus
from tasks.data.splits import hash_split

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'`])")
_WORD = re.compile(r"[A-Za-z0-9_]+|[^\sA-Za-z0-9_]")


def builtin_sentences() -> list[list[str]]:
    """Sentences of the builtin English corpus, tokenized into words and punctuation marks."""
    out = []
    for doc in python_docs_corpus():
        for para in re.split(r"\n\s*\n", doc):
            text = " ".join(para.split())
            for sent in _SENTENCE_END.split(text):
                words = _WORD.findall(sent)
                if words:
                    out.append(words)
    return out


def write_builtin_corpus(out_dir: str | Path, test_frac: float = 0.05) -> tuple[Path, Path]:
    """train.txt and test.txt (one sentence a line), split by sentence hash; duplicates kept once."""
    lines = [" ".join(s) for s in builtin_sentences()]
    splits = hash_split(lines, 0.0, test_frac)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, test = out / "train.txt", out / "test.txt"
    train.write_text("\n".join(splits["train"]) + "\n", encoding="utf-8")
    test.write_text("\n".join(splits["test"]) + "\n", encoding="utf-8")
    return train, test
