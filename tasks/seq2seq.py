"""What every sequence-to-sequence task shares: pairs split by source, tokenized with pad/bos/eos,
teacher-forced training, decoding with the shared search, and scoring of the detokenized outputs.

Token layout (every seq2seq arch sees the same): source = its tokens + eos; decoder input =
bos + target tokens; decoder output = target tokens + eos. The model's context is sized from the
data (longest source + longest target + 1, which also bounds decoding), not from train.seq_len.
A subclass (MT, summarization) supplies the pairs, its metrics and its no-training reference rows.
"""
from __future__ import annotations

import abc
import dataclasses
import functools
import json
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from archbench import EVAL_BATCH, Task, TaskSpec, seq2seq_flops
from tasks.data.examples import pad_batch, positive_int_or_none
from tasks.data.given_splits import cap_splits, split_items
from tasks.data.splits import check_fractions, fingerprint, require_nonempty
from tasks.scoring.decoding import SearchConfig, generate
from tasks.text.tokenizers import SPECIALS, build_tokenizer


class Seq2SeqTask(Task, abc.ABC):
    kind = "seq2seq"

    def __init__(self, cfg: Mapping[str, Any], read: Callable[[Mapping[str, Any]], tuple[list[tuple[str, str]], str]],
                 info: dict):
        """``read(cfg)`` gives the (source, target) pairs of one source and where they came from;
        it is called once, or once per split the user names (tasks/data/given_splits.py)."""
        check_fractions(cfg["valid_frac"], cfg["test_frac"], self.name)
        splits, method, self.source = split_items(cfg, read, lambda p: p[0], cfg["valid_frac"], cfg["test_frac"])
        self.source_info = info
        info["splits"] = method
        total = sum(len(v) for v in splits.values())
        caps = {"train": positive_int_or_none(cfg, "max_train_examples"),
                "validation": positive_int_or_none(cfg, "max_eval_examples"),
                "test": positive_int_or_none(cfg, "max_eval_examples")}
        splits, info["examples_kept_of_given"] = cap_splits(
            splits, caps, lambda p: p[0], method, self.name,
            {"train": "task.max_train_examples", "validation": "task.max_eval_examples", "test": "task.max_eval_examples"})
        require_nonempty(splits, self.name, total)
        self.splits = splits
        self.fingerprint = fingerprint({k: [json.dumps(p, ensure_ascii=False) for p in v] for k, v in splits.items()})
        self.tokenizer = build_tokenizer(cfg, [t for p in splits["train"] for t in p], self.fingerprint, SPECIALS)
        sp = self.tokenizer.specials
        self.pad, self.bos, self.eos = sp["<pad>"], sp["<bos>"], sp["<eos>"]
        self.search = SearchConfig.from_config(dict(cfg["decode"]))
        self.encoded = {}
        for name, items in splits.items():
            src = self.tokenizer.encode_batch([s for s, _ in items])
            tgt = self.tokenizer.encode_batch([t for _, t in items])
            self.encoded[name] = ([np.append(s, self.eos) for s in src], tgt)
        longest_src = max(len(s) for src, _ in self.encoded.values() for s in src)
        self.longest_target = max(len(t) for _, tgt in self.encoded.values() for t in tgt)
        self.context = longest_src + self.longest_target + 1

    # ---- what a subclass says
    @abc.abstractmethod
    def score(self, hypotheses: list[str], references: list[str], sources: list[str]) -> dict[str, float]:
        """The task's metrics for detokenized outputs."""

    @abc.abstractmethod
    def reference_rows(self) -> dict[str, dict[str, Any]]:
        """No-training baselines on the test split: {name: {"metrics": {...}, "about": "..."}}."""

    @functools.cached_property
    def _reference_rows(self) -> dict[str, dict[str, Any]]:
        return self.reference_rows()

    # ---- the engine's contract
    def spec(self, seq_len: int) -> TaskSpec:
        return TaskSpec(kind="seq2seq", vocab_size=self.tokenizer.vocab_size, max_seq_len=self.context,
                        pad_id=self.pad, bos_id=self.bos, eos_id=self.eos)

    def _batch(self, split: str, index: Sequence[int]):
        src, tgt = self.encoded[split]
        src_ids, src_mask = pad_batch([src[i] for i in index], self.pad)
        tgt_in, _ = pad_batch([np.insert(tgt[i], 0, self.bos) for i in index], self.pad)
        tgt_out, tgt_mask = pad_batch([np.append(tgt[i], self.eos) for i in index], self.pad)
        return src_ids, src_mask, tgt_in, tgt_out, tgt_mask

    def train_batches(self, batch_size: int, seq_len: int, generator: torch.Generator):
        n = len(self.encoded["train"][0])
        while True:  # epochs of a seeded shuffle
            order = torch.randperm(n, generator=generator).tolist()
            for i in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
                yield self._batch("train", order[i:i + batch_size])

    def _token_nll(self, model, batch, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src, src_mask, tgt_in, tgt_out, tgt_mask = (t.to(device) for t in batch)
        logits = model(src, src_mask, tgt_in).float()
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1), reduction="none")
        return nll.view(tgt_out.shape) * tgt_mask, tgt_mask, src_mask

    def loss(self, model, batch, device):
        """Mean NLL per target token; the count is every real token the model read (source + target),
        which is what tokens/s and FLOPs refer to."""
        nll, tgt_mask, src_mask = self._token_nll(model, batch, device)
        return nll.sum() / tgt_mask.sum(), int(src_mask.sum() + tgt_mask.sum())

    def flops_per_token(self, model, seq_len: int) -> float | None:
        """The model's training FLOPs per token read, averaged over the training pairs at their real
        lengths (archbench.model.SEQ2SEQ_FLOPS_CONVENTION): what an epoch costs per token. A model
        without ``pair_flops`` gives its own figure at ``seq_len``."""
        src, tgt = self.encoded["train"]
        s = np.array([len(x) for x in src], dtype=np.float64)  # source + eos
        t = np.array([len(y) + 1 for y in tgt], dtype=np.float64)  # bos + target, scored target + eos
        total = seq2seq_flops(model, s, t)
        return model.flops_per_token(seq_len) if total is None else total / float(s.sum() + t.sum())

    def batch_flops(self, model, batch) -> float | None:
        """This batch's training FLOPs from each pair's real source and target lengths."""
        _, src_mask, _, _, tgt_mask = batch
        return seq2seq_flops(model, src_mask.sum(1).cpu().numpy(), tgt_mask.sum(1).cpu().numpy())

    @torch.no_grad()
    def _mean_nll(self, model, split: str, device, limit: int | None = None) -> float:
        n = len(self.encoded[split][0]) if limit is None else min(limit, len(self.encoded[split][0]))
        total, count = 0.0, 0
        for i in range(0, n, EVAL_BATCH):
            nll, tgt_mask, _ = self._token_nll(model, self._batch(split, range(i, min(n, i + EVAL_BATCH))), device)
            total += nll.double().sum().item()
            count += int(tgt_mask.sum())
        return total / count

    def validation_loss(self, model, device, seq_len: int, max_batches: int) -> float:
        return self._mean_nll(model, "validation", device, limit=max_batches * EVAL_BATCH)

    @torch.no_grad()
    def decode_split(self, model, split: str, device, use_cache: bool = True) -> list[str]:
        """Detokenized outputs of the shared search for every example of the split, in order
        (incremental decoding where the model can; ``use_cache=False`` rereads the prefix)."""
        return [self.tokenizer.decode(toks) for toks in self.decode_ids(model, split, device, use_cache)]

    @torch.no_grad()
    def decode_ids(self, model, split: str, device, use_cache: bool = True) -> list[list[int]]:
        """Output token ids of the shared search (without bos and eos) per example of the split, in order."""
        src = self.encoded[split][0]
        order = sorted(range(len(src)), key=lambda i: len(src[i]))  # similar lengths batch together
        rows = max(1, EVAL_BATCH // self.search.beam_size)
        out: list[list[int]] = [[] for _ in src]
        for i in range(0, len(order), rows):
            index = order[i:i + rows]
            ids, mask = pad_batch([src[j] for j in index], self.pad)
            tokens = generate(model, ids.to(device), mask.to(device), bos=self.bos, eos=self.eos, pad=self.pad,
                              search=self.search, cap=self.longest_target + 1, use_cache=use_cache)
            for j, toks in zip(index, tokens):
                out[j] = toks
        return out

    def evaluate(self, model, device, seq_len: int) -> dict[str, float]:
        sources = [s for s, _ in self.splits["test"]]
        references = [t for _, t in self.splits["test"]]
        outputs = self.decode_ids(model, "test", device)
        hypotheses = [self.tokenizer.decode(toks) for toks in outputs]
        metrics = self.score(hypotheses, references, sources)
        metrics["test_token_nll"] = self._mean_nll(model, "test", device)
        metrics["test_examples"] = len(references)
        metrics["test_generated_tokens"] = sum(len(toks) + 1 for toks in outputs)  # eos included
        metrics["mean_output_bytes"] = float(np.mean([len(h.encode("utf-8")) for h in hypotheses]))
        return metrics

    def data_info(self) -> dict[str, Any]:
        return {
            "source": self.source,
            **self.source_info,
            "tokenizer": self.tokenizer.name,
            "vocab_size": self.tokenizer.vocab_size,
            "fingerprint": self.fingerprint,
            "examples": {k: len(v) for k, v in self.splits.items()},
            "context": self.context,
            "decode": dataclasses.asdict(self.search),
            "reference_rows": self._reference_rows,
        }
