"""Language modeling: next-token prediction on held-out text, scored in bits per byte.

Bits per byte (primary) = total negative log-likelihood of the test tokens / ln 2 / the UTF-8 bytes
those tokens stand for; comparable across tokenizers. Token perplexity = exp(mean NLL per token).
The test split is scored in non-overlapping windows of the run's context length, each window
starting from an empty context (the first token of the split is not predicted).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from archs import TaskSpec
from harness.errors import UserError
from tasks import register_task
from tasks.base import Task
from tasks.python_docs import python_docs_corpus
from tasks.splits import fingerprint, hash_split
from tasks.tokenizers import TOKENIZERS

SOURCES = ("builtin", "files")
DOC_SEPARATOR = "\n\n"


def _documents(cfg: Mapping[str, Any]) -> tuple[list[str], str]:
    source = cfg["source"]
    if source == "builtin":
        return list(python_docs_corpus()), "builtin:python-docs (pydoc_data.topics + stdlib docstrings)"
    if source == "files":
        path = cfg.get("path")
        if not path:
            raise UserError("task.source=files needs task.path=/path/to/text.txt (UTF-8 text, documents split by blank lines)")
        p = Path(path)
        if not p.is_file():
            raise UserError(f"task.path '{path}' is not a file")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"task.path '{path}' is not UTF-8 text (byte {e.start})") from None
        docs = [d.strip() for d in text.split("\n\n") if d.strip()]
        if not docs:
            raise UserError(f"task.path '{path}' holds no text")
        return docs, f"files:{p.resolve()}"
    raise UserError(f"unknown task.source '{source}' for task lm; valid: {', '.join(SOURCES)}")


class LanguageModeling(Task):
    name = "lm"
    kind = "lm"
    primary_metric = "bits_per_byte"
    lower_is_better = True

    def __init__(self, cfg: Mapping[str, Any]):
        tok_name = cfg["tokenizer"]
        if tok_name not in TOKENIZERS:
            raise UserError(f"unknown tokenizer '{tok_name}' for task lm; valid: {', '.join(TOKENIZERS)}")
        self.tokenizer = TOKENIZERS[tok_name]()
        docs, self.source = _documents(cfg)
        splits = hash_split(docs, cfg["valid_frac"], cfg["test_frac"])
        cap = cfg.get("max_bytes")
        if cap:
            splits = {k: _cap_bytes(v, int(cap)) for k, v in splits.items()}
        for name, items in splits.items():
            if not items:
                raise UserError(f"task lm: the {name} split is empty ({len(docs)} documents); "
                                "give more text or change task.valid_frac/task.test_frac")
        self.fingerprint = fingerprint(splits)
        self.splits = splits
        self.streams = {k: self.tokenizer.encode(DOC_SEPARATOR.join(v)) for k, v in splits.items()}
        self.split_docs = {k: len(v) for k, v in splits.items()}

    def sequences(self, split: str) -> list:
        """Each document of a split tokenized on its own (for models fit on counts, e.g. n-grams)."""
        return [self.tokenizer.encode(d) for d in self.splits[split]]

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
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1)), y.numel()

    @torch.no_grad()
    def _nll(self, model, split: str, device, seq_len: int, max_windows: int | None, batch_size: int = 32):
        """Summed NLL (nats) and target count over non-overlapping windows of the split."""
        data = torch.from_numpy(self.streams[split])
        n_targets = len(data) - 1
        starts = list(range(0, n_targets, seq_len))
        if max_windows is not None:
            starts = starts[:max_windows]
        total, count = 0.0, 0
        for i in range(0, len(starts), batch_size):
            group = starts[i:i + batch_size]
            full = [s for s in group if s + seq_len <= n_targets]
            if full:
                idx = torch.tensor(full)[:, None] + torch.arange(seq_len + 1)
                window = data[idx].to(device)
                lp = model.target_logprobs(window[:, :-1], window[:, 1:])
                total -= lp.double().sum().item()
                count += lp.numel()
            for s in (s for s in group if s + seq_len > n_targets):  # the short last window
                window = data[s:n_targets + 1][None].to(device)
                lp = model.target_logprobs(window[:, :-1], window[:, 1:])
                total -= lp.double().sum().item()
                count += lp.numel()
        return total, count

    def validation_loss(self, model, device, seq_len: int, max_batches: int) -> float:
        was_training = getattr(model, "training", False)
        if hasattr(model, "eval"):
            model.eval()
        total, count = self._nll(model, "validation", device, seq_len, max_windows=max_batches * 32)
        if was_training:
            model.train()
        return total / count

    def evaluate(self, model, device, seq_len: int) -> dict[str, float]:
        if hasattr(model, "eval"):
            model.eval()
        nll, n_tokens = self._nll(model, "test", device, seq_len, max_windows=None)
        stream = self.streams["test"]
        n_bytes = self.tokenizer.num_bytes(stream[1:])
        return {
            "bits_per_byte": nll / math.log(2) / n_bytes,
            "token_perplexity": math.exp(nll / n_tokens),
            "test_nll_nats": nll,
            "test_tokens": n_tokens,
            "test_bytes": n_bytes,
        }

    def data_info(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "tokenizer": self.tokenizer.name,
            "fingerprint": self.fingerprint,
            "documents": self.split_docs,
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


@register_task("lm", kind="lm")
def build(cfg: Mapping[str, Any], seed: int) -> LanguageModeling:
    return LanguageModeling(cfg)
