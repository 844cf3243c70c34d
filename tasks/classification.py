"""Text classification: one label per text, scored by accuracy and macro-F1 (scikit-learn).

Builtin data: language identification over the system's gettext catalogs, the translated messages
of ten languages (configurable, at least two) -- short UI strings, real and hard to tell apart for
closely related languages. Input layout (every classify arch sees the same): bos + text tokens +
eos, with a bool mask; labels are indices into the sorted label names. Reference row: majority, the
most frequent training label predicted for every test text.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from archbench import EVAL_BATCH, Task, TaskSpec, register_task
from archbench.errors import UserError
from tasks.data.examples import cut_bytes, pad_batch, positive_int_or_none
from tasks.data.gettext_catalogs import language_id_examples
from tasks.data.sources import read_rows
from tasks.data.given_splits import cap_splits, split_items
from tasks.data.splits import check_fractions, fingerprint, require_nonempty
from tasks.scoring.metrics import classification_scores
from tasks.text.tokenizers import SPECIALS, build_tokenizer

SOURCES = ("builtin", "hf", "files")


def _examples(cfg: Mapping[str, Any]) -> tuple[list[tuple[str, str]], str, dict]:
    source = cfg["source"]
    if source == "builtin":
        per = positive_int_or_none(cfg, "per_language")
        lo, hi = positive_int_or_none(cfg, "min_text_bytes") or 1, positive_int_or_none(cfg, "max_text_bytes")
        langs = [str(x) for x in cfg["languages"]]
        examples, info = language_id_examples(str(cfg["locale_dir"]), langs, per or 10**9, lo, hi or 10**9)
        return examples, f"builtin:gettext-language-id ({len(langs)} languages)", info
    if source in ("hf", "files"):
        rows, where = read_rows(cfg, ("text", "label"), "classification")
        return [(r["text"], r["label"]) for r in rows], where, {}
    raise UserError(f"unknown task.source '{source}' for task classification; valid: {', '.join(SOURCES)}")


@register_task("classification")
class Classification(Task):
    name = "classification"
    kind = "classify"
    primary_metric = "accuracy"
    lower_is_better = False

    def __init__(self, cfg: Mapping[str, Any]):
        check_fractions(cfg["valid_frac"], cfg["test_frac"], self.name)
        max_bytes = positive_int_or_none(cfg, "max_text_bytes")
        self.source_info = {}

        def read(c):
            examples, where, info = _examples(c)
            self.source_info.update(info)
            return [(cut_bytes(t, max_bytes) if max_bytes else t, y) for t, y in examples if t.strip()], where

        # hash split keyed by text: a text never sits in two splits (a text given two labels keeps the first)
        splits, method, self.source = split_items(cfg, read, lambda e: e[0], cfg["valid_frac"], cfg["test_frac"])
        self.source_info["splits"] = method
        total = sum(len(v) for v in splits.values())
        cap = positive_int_or_none(cfg, "max_eval_examples")
        splits, self.source_info["examples_kept_of_given"] = cap_splits(
            splits, {"validation": cap, "test": cap}, lambda e: e[0], method, self.name,
            {"validation": "task.max_eval_examples", "test": "task.max_eval_examples"})
        require_nonempty(splits, self.name, total)
        self.labels = sorted({y for v in splits.values() for _, y in v})
        if len(self.labels) < 2:
            raise UserError(f"task classification needs at least two labels, found {self.labels} in {self.source}")
        self.splits = splits
        self.fingerprint = fingerprint({k: [f"{y}\t{t}" for t, y in v] for k, v in splits.items()})
        self.tokenizer = build_tokenizer(cfg, [t for t, _ in splits["train"]], self.fingerprint, SPECIALS)
        sp = self.tokenizer.specials
        self.pad, self.bos, self.eos = sp["<pad>"], sp["<bos>"], sp["<eos>"]
        index = {y: i for i, y in enumerate(self.labels)}
        self.encoded = {}
        for name, items in splits.items():
            ids = [np.concatenate([[self.bos], t, [self.eos]]) for t in self.tokenizer.encode_batch([t for t, _ in items])]
            self.encoded[name] = (ids, torch.tensor([index[y] for _, y in items]))
        self.context = max(len(s) for ids, _ in self.encoded.values() for s in ids)
        self.majority = Counter(y for _, y in splits["train"]).most_common(1)[0][0]

    def labeled_sequences(self, split: str) -> tuple[list[np.ndarray], list[int]]:
        """Unpadded inputs (bos + text + eos, as ``forward`` sees them) and class indices of a split, in
        its fixed pseudo-random order: what models fit on counts (n-gram, HMM) read."""
        ids, labels = self.encoded[split]
        return list(ids), labels.tolist()

    def spec(self, seq_len: int) -> TaskSpec:
        return TaskSpec(kind="classify", vocab_size=self.tokenizer.vocab_size, max_seq_len=self.context,
                        num_classes=len(self.labels), pad_id=self.pad, bos_id=self.bos, eos_id=self.eos)

    def _batch(self, split: str, index):
        ids, labels = self.encoded[split]
        x, mask = pad_batch([ids[i] for i in index], self.pad)
        return x, mask, labels[list(index)]

    def train_batches(self, batch_size: int, seq_len: int, generator: torch.Generator):
        n = len(self.encoded["train"][0])
        while True:
            order = torch.randperm(n, generator=generator).tolist()
            for i in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
                yield self._batch("train", order[i:i + batch_size])

    def loss(self, model, batch, device):
        """Mean cross-entropy per text; the count is the real tokens read (what tokens/s refers to)."""
        x, mask, y = (t.to(device) for t in batch)
        return F.cross_entropy(model(x, mask).float(), y), int(mask.sum())

    @torch.no_grad()
    def _predict(self, model, split: str, device, limit: int | None = None) -> tuple[torch.Tensor, float]:
        n = len(self.encoded[split][0]) if limit is None else min(limit, len(self.encoded[split][0]))
        preds, nll = [], 0.0
        for i in range(0, n, EVAL_BATCH):
            x, mask, y = (t.to(device) for t in self._batch(split, range(i, min(n, i + EVAL_BATCH))))
            logits = model(x, mask).float()
            nll += F.cross_entropy(logits, y, reduction="sum").item()
            preds.append(logits.argmax(-1).cpu())
        return torch.cat(preds), nll / n

    def validation_loss(self, model, device, seq_len: int, max_batches: int) -> float:
        _, val = self._predict(model, "validation", device, limit=max_batches * EVAL_BATCH)
        return val

    def evaluate(self, model, device, seq_len: int) -> dict[str, float]:
        preds, nll = self._predict(model, "test", device)
        gold = self.encoded["test"][1]
        return {**classification_scores(preds.tolist(), gold.tolist()), "test_nll": nll,
                "test_examples": len(gold)}

    def data_info(self) -> dict[str, Any]:
        gold = self.encoded["test"][1].tolist()
        majority = [self.labels.index(self.majority)] * len(gold)
        return {
            "source": self.source,
            **self.source_info,
            "tokenizer": self.tokenizer.name,
            "vocab_size": self.tokenizer.vocab_size,
            "fingerprint": self.fingerprint,
            "examples": {k: len(v) for k, v in self.splits.items()},
            "labels": list(self.labels),
            "context": self.context,
            "reference_rows": {"majority": {
                "metrics": classification_scores(majority, gold),
                "about": f"always the most frequent training label ('{self.majority}'; no training)"}},
        }
