"""Language modeling: next-token prediction on held-out text, scored in bits per byte.

Bits per byte (primary) = total negative log-likelihood of the test tokens / ln 2 / the UTF-8 bytes
those tokens stand for; comparable across tokenizers. Token perplexity = exp(mean NLL per token);
word perplexity = exp(total NLL / the number of whitespace-separated words in the test text).
The test split (its documents joined by the document separator) is scored as a document that starts
after a document boundary: the separator's tokens are context, every token of the text is predicted,
in non-overlapping windows of the run's context length (tasks/lm_scoring.py, the definition the
lm-eval adapter shares, so lm-eval's bits_per_byte on the exported split equals ours), or with
``eval.stride`` in sliding windows, so runs with different context lengths score comparably;
``metrics.eval_protocol`` names the one used.

Sources: builtin (CPython docs + stdlib docstrings), synthetic-hmm (text from a random HMM, with the
Bayes-optimal bits per byte computed exactly under the same windows), hf, files (.txt documents
separated by blank lines, or .jsonl/.tsv with task.columns.text).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from archbench import EVAL_BATCH, Task, TaskSpec, register_task
from archbench.errors import UserError
from tasks.data.python_docs import python_docs_corpus
from tasks.data.sources import read_rows
from tasks.data.given_splits import named_splits, split_items, warn
from tasks.data.splits import check_fractions, fingerprint, hash_split, hash_split_by, require_nonempty
from tasks.data.synthetic_hmm import SEPARATOR, StreamOracle, hmm_documents
from tasks.scoring.lm_scoring import boundary_ids, rolling_nll, rolling_scores
from tasks.text.tokenizers import build_tokenizer

SOURCES = ("builtin", "synthetic-hmm", "hf", "files")
DOC_SEPARATOR = SEPARATOR


def _split_documents(cfg: Mapping[str, Any]) -> tuple[dict[str, list[str]], str, Any, str]:
    """The documents of each split, a description of the source, the true HMM (synthetic only), and
    how the splits were made ("hash" or "given": tasks/data/given_splits.py)."""
    source = cfg["source"]
    valid, test = cfg["valid_frac"], cfg["test_frac"]
    if source == "synthetic-hmm":
        docs, hmm = hmm_documents(cfg["hmm"])
        # i.i.d. samples: keyed by position too, so two equal short documents are both kept and the
        # stream stays an exact sample of the process the oracle describes
        keyed = hash_split_by(enumerate(docs), lambda item: f"{item[0]}\x00{item[1]}", valid, test)
        splits = {k: [d for _, d in v] for k, v in keyed.items()}
        h = cfg["hmm"]
        return splits, (f"synthetic-hmm:states={h['states']},alphabet={len(h['alphabet'])},"
                        f"seed={h['seed']}"), hmm, "hash"
    if source == "builtin":
        named_splits(cfg)  # task.splits with a builtin source is an error
        docs, where = list(python_docs_corpus()), "builtin:python-docs (pydoc_data.topics + stdlib docstrings)"
        return hash_split(docs, valid, test), where, None, "hash"
    if source not in ("hf", "files"):
        raise UserError(f"unknown task.source '{source}' for task lm; valid: {', '.join(SOURCES)}")

    def read(c):
        rows, where = read_rows(c, ("text",), "lm")
        return [r["text"].strip() for r in rows if r["text"].strip()], where

    splits, method, where = split_items(cfg, read, lambda doc: doc, valid, test)
    return splits, where, None, method


def lm_loss(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy. A model with ``fused_lm_loss`` computes it in its forward with
    the LM head fused and chunked (archbench.model), so the (B, T, V) logits are never formed: 1.4x
    a nanoGPT step on a CPU (README Benchmarks); on an H200 30% less loss memory, 3-12% slower than
    plain. One path on every device, so the planner's count on the meta device is the run's."""
    if getattr(model, "fused_lm_loss", False):
        return model(x, targets=y)
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))


@register_task("lm")
class LanguageModeling(Task):
    name = "lm"
    kind = "lm"
    primary_metric = "bits_per_byte"
    lower_is_better = True

    def __init__(self, cfg: Mapping[str, Any]):
        check_fractions(cfg["valid_frac"], cfg["test_frac"], "lm")
        splits, self.source, hmm, self.split_method = _split_documents(cfg)
        cap = cfg.get("max_bytes")
        given = {k: len(v) for k, v in splits.items()}
        if cap:
            capped = {k: _cap_bytes(v, int(cap)) for k, v in splits.items()}
            cut = {k: (len(capped[k]), len(v)) for k, v in splits.items() if len(capped[k]) < len(v)}
            if cut:
                warn("task lm: task.max_bytes=" + str(cap) + " keeps " + ", ".join(
                    f"{k} {a:,} of {b:,} documents" for k, (a, b) in cut.items()))
            splits = capped
        require_nonempty(splits, "lm", sum(len(v) for v in splits.values()))
        self.fingerprint = fingerprint(splits)
        self.splits = splits
        self.tokenizer = build_tokenizer(cfg, splits["train"], self.fingerprint)
        self.streams = {k: self.tokenizer.encode(DOC_SEPARATOR.join(v)) for k, v in splits.items()}
        self.split_docs = {k: len(v) for k, v in splits.items()}
        self.docs_kept_of_given = {k: [len(v), given[k]] for k, v in splits.items()}
        self.test_words = len(DOC_SEPARATOR.join(splits["test"]).split())
        self.scored = {k: boundary_ids(self.tokenizer, DOC_SEPARATOR.join(splits[k]), DOC_SEPARATOR)
                       for k in ("validation", "test")}
        self.test_bytes = len(DOC_SEPARATOR.join(splits["test"]).encode("utf-8"))  # what lm-eval counts
        self.oracle = StreamOracle(hmm, self.tokenizer) if hmm is not None else None
        stride = cfg.get("eval_stride")  # the top-level eval.stride, passed in by the engine (harness/run.py)
        if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int) or stride < 1):
            raise UserError(f"eval.stride must be a positive integer or null, got {stride!r}")
        self.eval_stride = stride

    def sequences(self, split: str) -> list:
        """Each document of a split tokenized on its own (for models fit on counts, e.g. n-grams)."""
        return self.tokenizer.encode_batch(self.splits[split])

    def spec(self, seq_len: int) -> TaskSpec:
        return TaskSpec(kind="lm", vocab_size=self.tokenizer.vocab_size, max_seq_len=seq_len)

    def train_batches(self, batch_size: int, seq_len: int, generator: torch.Generator):
        data = torch.from_numpy(self.streams["train"])
        if len(data) <= seq_len + 1:
            raise UserError(f"train split has {len(data)} tokens, fewer than train.seq_len+1={seq_len + 1}")
        offsets = torch.arange(seq_len + 1)
        while True:
            starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=generator)
            window = data[starts[:, None] + offsets]
            yield window[:, :-1], window[:, 1:]

    def loss(self, model, batch, device):
        x, y = (t.to(device, non_blocking=True) for t in batch)
        return lm_loss(model, x, y), y.numel()

    def _nll(self, model, split: str, device, seq_len: int, max_windows: int | None,
             batch_size: int = EVAL_BATCH):
        """Summed NLL (nats) and target count of the split, scored after a document boundary."""
        ids, n_context = self.scored[split]
        if max_windows is not None:
            ids = ids[:n_context + max_windows * seq_len]
        return rolling_nll(model, ids, n_context, seq_len, device, batch_size)

    def validation_loss(self, model, device, seq_len: int, max_batches: int) -> float:
        total, count = self._nll(model, "validation", device, seq_len, max_windows=max_batches * EVAL_BATCH)
        return total / count

    def evaluate(self, model, device, seq_len: int) -> dict[str, float]:
        ids, n_context = self.scored["test"]
        stride = self.eval_stride if self.eval_stride and self.eval_stride < seq_len else None
        scores = rolling_scores(model, ids, n_context, seq_len, device, stride=stride)
        nll, n_tokens = scores.total, scores.count
        n_bytes = self.test_bytes
        metrics = {
            "bits_per_byte": nll / math.log(2) / n_bytes,
            "token_perplexity": math.exp(nll / n_tokens),
            "word_perplexity": math.exp(nll / self.test_words),
            "test_nll_nats": nll,
            "test_tokens": n_tokens,
            "test_bytes": n_bytes,
            "test_words": self.test_words,
            # mean nats of the test targets at each position j of the scoring window (j + 1 tokens of input)
            "loss_by_position": scores.mean_by_position(),
            "eval_protocol": (f"sliding windows of {seq_len} tokens, stride {stride}" if stride else
                              f"non-overlapping windows of {seq_len} tokens"),
        }
        # per test document: summed nats and UTF-8 bytes (paired significance tests, harness/report)
        metrics["doc_nll_nats"], metrics["doc_bytes"] = self.per_document(ids[n_context:], scores.per_token())
        if self.oracle is not None:  # the true process scored on the very same windows
            bayes_nll = rolling_scores(self.oracle, ids, n_context, seq_len, device, stride=stride).total
            metrics["bayes_bits_per_byte"] = bayes_nll / math.log(2) / n_bytes
            metrics["excess_bits_per_byte"] = metrics["bits_per_byte"] - metrics["bayes_bits_per_byte"]
        return metrics

    def per_document(self, targets, token_nll) -> tuple[list[float], list[int]]:
        """Each test document's summed NLL (nats) and its bytes. A token belongs to the document its
        first byte falls in (by the tokens' byte lengths, exact for every tokenizer here); a separator's
        tokens and bytes count toward the document they follow."""
        docs = self.splits["test"]
        lengths = np.array([len(d.encode("utf-8")) for d in docs], dtype=np.int64)
        sep = len(DOC_SEPARATOR.encode("utf-8"))
        starts = np.concatenate([[0], np.cumsum(lengths + sep)[:-1]])
        tok_bytes = np.array([len(self.tokenizer.token_bytes(t)) for t in np.asarray(targets)], dtype=np.int64)
        offset = np.concatenate([[0], np.cumsum(tok_bytes)[:-1]])
        doc_of = np.searchsorted(starts, offset, side="right") - 1
        nll = np.bincount(doc_of, weights=np.asarray(token_nll, dtype=np.float64), minlength=len(docs))
        owned = lengths + sep
        owned[-1] -= sep  # bytes a document owns, its following separator included: they sum to test_bytes
        return [float(x) for x in nll], [int(b) for b in owned]

    def data_info(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "splits": self.split_method,
            "tokenizer": self.tokenizer.name,
            "vocab_size": self.tokenizer.vocab_size,
            "fingerprint": self.fingerprint,
            "documents": self.split_docs,
            "documents_kept_of_given": self.docs_kept_of_given,
            "tokens": {k: int(len(v)) for k, v in self.streams.items()},
        }


def _cap_bytes(docs: list[str], cap: int) -> list[str]:
    out, used = [], 0
    for d in docs:
        n = len(d.encode("utf-8"))
        if used + n > cap and out:
            break
        out.append(d)
        used += n
    return out
