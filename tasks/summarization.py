"""Summarization: a document in, a one-line summary out, scored with ROUGE-1/2/L F1 (rouge-score).

Builtin data: standard-library docstrings written the PEP 257 way; the document is the docstring's
body and the reference is the summary line its author wrote above it. Documents longer than
task.max_document_bytes are cut at a word boundary (as news summarization cuts articles); summaries
longer than task.max_summary_bytes are left out. Reference row: lead, the document's first sentence.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from archbench import register_task
from archbench.errors import UserError
from tasks.data.examples import cut_bytes, positive_int_or_none
from tasks.data.given_splits import warn
from tasks.data.python_docs import docstring_summaries
from tasks.data.sources import read_rows
from tasks.scoring.metrics import rouge_scores
from tasks.seq2seq import Seq2SeqTask

SOURCES = ("builtin", "hf", "files")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def first_sentence(text: str) -> str:
    """Up to the first . ! or ? followed by whitespace (or all of it), on one line."""
    return " ".join(_SENTENCE_END.split(text.strip(), maxsplit=1)[0].split())


def _pairs(cfg: Mapping[str, Any]) -> tuple[list[tuple[str, str]], str]:
    source = cfg["source"]
    if source == "builtin":
        return docstring_summaries(), "builtin:stdlib-docstrings (body -> summary line)"
    if source in ("hf", "files"):
        rows, where = read_rows(cfg, ("document", "summary"), "summarization")
        return [(r["document"], r["summary"]) for r in rows], where
    raise UserError(f"unknown task.source '{source}' for task summarization; valid: {', '.join(SOURCES)}")


@register_task("summarization")
class Summarization(Seq2SeqTask):
    name = "summarization"
    primary_metric = "rougeL_f1"
    lower_is_better = False

    def __init__(self, cfg: Mapping[str, Any]):
        max_doc = positive_int_or_none(cfg, "max_document_bytes")
        max_sum = positive_int_or_none(cfg, "max_summary_bytes")
        info = {"pairs_read": 0, "pairs_kept": 0}

        def read(c):
            pairs, source = _pairs(c)
            kept = [(cut_bytes(d, max_doc) if max_doc else d, s) for d, s in pairs
                    if d.strip() and s.strip() and (max_sum is None or len(s.encode("utf-8")) <= max_sum)]
            if not kept:
                raise UserError(f"task summarization: none of the {len(pairs)} pairs from {source} has a summary "
                                f"within task.max_summary_bytes={max_sum}")
            cut = sum(1 for d, _ in pairs if max_doc and len(d.encode("utf-8")) > max_doc)
            if len(kept) < len(pairs) or cut:
                warn(f"task summarization: of {len(pairs):,} pairs from {source}, {len(pairs) - len(kept):,} are empty "
                     f"or have a summary over task.max_summary_bytes={max_sum} (dropped) and {cut:,} documents were "
                     f"cut to task.max_document_bytes={max_doc}")
            info["pairs_read"] += len(pairs)
            info["pairs_kept"] += len(kept)
            return kept, source

        super().__init__(cfg, read, info)

    def score(self, hypotheses, references, sources):
        return rouge_scores(hypotheses, references)

    def reference_rows(self):
        documents = [d for d, _ in self.splits["test"]]
        references = [s for _, s in self.splits["test"]]
        return {"lead": {"metrics": rouge_scores([first_sentence(d) for d in documents], references),
                         "about": "the document's first sentence as its summary (no training)"}}
