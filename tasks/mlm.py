"""Masked-language-model pretraining (BERT, Devlin et al. 2019) on the LM task's text.

Data: the same documents, splits and byte tokenizer as task=lm, with [PAD] [CLS] [SEP] [MASK]
appended to the vocabulary. An example is ``[CLS] window [SEP]`` of exactly train.seq_len tokens;
with ``next_sentence=true`` it is ``[CLS] A [SEP] B [SEP]`` (token types 0 then 1) where B follows
A in the text half of the time and is a random window otherwise (next-sentence prediction).

Masking: each non-special token is chosen with probability ``mask_prob`` (at least one per
example); a chosen token becomes [MASK] 80% of the time, a random base token 10%, itself 10%. The
loss is the cross-entropy at the chosen positions (+ the next-sentence cross-entropy). Masks are
drawn in the batch stream with the run's generator, so a seed fixes them; evaluation uses one fixed
masking of the test split (seed ``EVAL_SEED``) so every run is scored on the same positions.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from archbench import EVAL_BATCH, Task, TaskSpec, register_task
from archbench.errors import UserError
from tasks.lm import LanguageModeling
from tasks.text.special_tokens import WithSpecialTokens

IGNORE = -100  # label of a position that is not scored
EVAL_SEED = 1234
MASK_SHARE, RANDOM_SHARE = 0.8, 0.1  # of the chosen tokens; the rest stay as they are


@register_task("mlm")
class MaskedLM(Task):
    name = "mlm"
    kind = "mlm"
    primary_metric = "mlm_loss"
    lower_is_better = True

    def __init__(self, cfg: Mapping[str, Any]):
        self.mask_prob = float(cfg["mask_prob"])
        if not 0.0 < self.mask_prob <= 1.0:
            raise UserError(f"task.mask_prob must be in (0, 1], got {cfg['mask_prob']!r}")
        self.next_sentence = bool(cfg["next_sentence"])
        self.text = LanguageModeling(cfg)  # documents, hash splits, fingerprint, byte streams
        self.tokenizer = WithSpecialTokens(self.text.tokenizer)
        self.fingerprint = self.text.fingerprint
        self.streams = {k: torch.from_numpy(v) for k, v in self.text.streams.items()}

    def spec(self, seq_len: int) -> TaskSpec:
        tok = self.tokenizer
        return TaskSpec(kind="mlm", vocab_size=tok.vocab_size, max_seq_len=seq_len,
                        num_classes=2 if self.next_sentence else None, pad_id=tok.pad_id)

    # ------------------------------------------------------------------ examples

    def _min_len(self) -> int:
        return 5 if self.next_sentence else 3

    def _examples(self, stream: torch.Tensor, starts: torch.Tensor, seq_len: int, g: torch.Generator) -> dict:
        """Unmasked examples (ids, token types, next-sentence labels) for windows starting at ``starts``."""
        tok, n = self.tokenizer, len(starts)
        cls = torch.full((n, 1), tok.cls_id)
        sep = torch.full((n, 1), tok.sep_id)
        if not self.next_sentence:
            window = stream[starts[:, None] + torch.arange(seq_len - 2)]
            return {"ids": torch.cat([cls, window, sep], 1), "types": torch.zeros(n, seq_len, dtype=torch.long),
                    "nsp": None}
        len_a = (seq_len - 3) // 2
        len_b = seq_len - 3 - len_a
        a = stream[starts[:, None] + torch.arange(len_a)]
        is_next = torch.rand(n, generator=g) < 0.5
        random_starts = torch.randint(0, len(stream) - len_b, (n,), generator=g)
        b_starts = torch.where(is_next, starts + len_a, random_starts)
        b = stream[b_starts[:, None] + torch.arange(len_b)]
        ids = torch.cat([cls, a, sep, b, sep], 1)
        types = torch.cat([torch.zeros(n, len_a + 2, dtype=torch.long), torch.ones(n, len_b + 1, dtype=torch.long)], 1)
        return {"ids": ids, "types": types, "nsp": (~is_next).long()}  # label 0 = B follows A

    def _mask(self, ex: dict, g: torch.Generator) -> dict:
        ids = ex["ids"]
        tok = self.tokenizer
        candidate = ids < tok.base_vocab_size
        chosen = (torch.rand(ids.shape, generator=g) < self.mask_prob) & candidate
        # every example scores at least one token: pick a random candidate where none was chosen
        empty = ~chosen.any(dim=1)
        if empty.any():
            pick = torch.multinomial(candidate[empty].float(), 1, generator=g)
            chosen[empty.nonzero().squeeze(1), pick.squeeze(1)] = True
        labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
        roll = torch.rand(ids.shape, generator=g)
        to_mask = chosen & (roll < MASK_SHARE)
        to_random = chosen & (roll >= MASK_SHARE) & (roll < MASK_SHARE + RANDOM_SHARE)
        masked = ids.masked_fill(to_mask, tok.mask_id)
        masked = torch.where(to_random, torch.randint(0, tok.base_vocab_size, ids.shape, generator=g), masked)
        return {"ids": masked, "mask": torch.ones_like(ids, dtype=torch.bool), "types": ex["types"],
                "labels": labels, "nsp": ex["nsp"]}

    def _check_len(self, split: str, seq_len: int) -> None:
        if seq_len < self._min_len():
            raise UserError(f"task mlm needs train.seq_len >= {self._min_len()} "
                            f"({'[CLS] A [SEP] B [SEP]' if self.next_sentence else '[CLS] text [SEP]'}), got {seq_len}")
        if len(self.streams[split]) <= seq_len:
            raise UserError(f"task mlm: the {split} split has {len(self.streams[split])} tokens, "
                            f"fewer than train.seq_len={seq_len}")

    def train_batches(self, batch_size: int, seq_len: int, generator: torch.Generator):
        self._check_len("train", seq_len)
        stream = self.streams["train"]
        while True:
            starts = torch.randint(0, len(stream) - seq_len, (batch_size,), generator=generator)
            yield self._mask(self._examples(stream, starts, seq_len, generator), generator)

    # ------------------------------------------------------------------ loss and metrics

    def _forward(self, model, batch, device):
        b = {k: (v.to(device, non_blocking=True) if v is not None else None) for k, v in batch.items()}
        if self.next_sentence:
            logits, nsp_logits = model(b["ids"], b["mask"], b["types"], next_sentence=True)
        else:
            logits, nsp_logits = model(b["ids"], b["mask"], b["types"]), None
        return b, logits, nsp_logits

    def loss(self, model, batch, device):
        b, logits, nsp_logits = self._forward(model, batch, device)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), b["labels"].reshape(-1),
                               ignore_index=IGNORE)
        if nsp_logits is not None:
            loss = loss + F.cross_entropy(nsp_logits.float(), b["nsp"])
        return loss, b["ids"].numel()  # every input token is read: the unit of throughput

    @torch.no_grad()
    def _score(self, model, split: str, device, seq_len: int, max_examples: int | None,
               batch_size: int = EVAL_BATCH):
        self._check_len(split, seq_len)
        stream = self.streams[split]
        step = seq_len - 2 if not self.next_sentence else seq_len - 3
        last = len(stream) - seq_len
        starts = torch.arange(0, last + 1, step)
        if max_examples is not None:
            starts = starts[:max_examples]
        g = torch.Generator().manual_seed(EVAL_SEED)
        nll = correct = count = nsp_nll = nsp_correct = nsp_count = 0.0
        for i in range(0, len(starts), batch_size):
            batch = self._mask(self._examples(stream, starts[i:i + batch_size], seq_len, g), g)
            b, logits, nsp_logits = self._forward(model, batch, device)
            scored = b["labels"] != IGNORE
            lp = F.log_softmax(logits.float(), dim=-1)
            target = b["labels"].clamp_min(0)
            nll -= lp.gather(-1, target.unsqueeze(-1)).squeeze(-1)[scored].double().sum().item()
            correct += (logits.argmax(-1) == b["labels"])[scored].sum().item()
            count += scored.sum().item()
            if nsp_logits is not None:
                nsp_nll += F.cross_entropy(nsp_logits.float(), b["nsp"], reduction="sum").item()
                nsp_correct += (nsp_logits.argmax(-1) == b["nsp"]).sum().item()
                nsp_count += len(b["nsp"])
        return {"nll": nll, "correct": correct, "count": count, "nsp_nll": nsp_nll, "nsp_correct": nsp_correct,
                "nsp_count": nsp_count}

    def validation_loss(self, model, device, seq_len: int, max_batches: int) -> float:
        r = self._score(model, "validation", device, seq_len, max_examples=max_batches * EVAL_BATCH)
        # the training objective: masked-token cross-entropy (+ next-sentence cross-entropy)
        return r["nll"] / r["count"] + (r["nsp_nll"] / r["nsp_count"] if r["nsp_count"] else 0.0)

    def evaluate(self, model, device, seq_len: int) -> dict[str, float]:
        r = self._score(model, "test", device, seq_len, max_examples=None)
        out = {"mlm_loss": r["nll"] / r["count"], "mlm_perplexity": math.exp(r["nll"] / r["count"]),
               "mlm_accuracy": r["correct"] / r["count"], "masked_tokens": int(r["count"])}
        if r["nsp_count"]:
            out["nsp_loss"] = r["nsp_nll"] / r["nsp_count"]
            out["nsp_accuracy"] = r["nsp_correct"] / r["nsp_count"]
        return out

    def data_info(self) -> dict[str, Any]:
        info = self.text.data_info()
        info.update(tokenizer=self.tokenizer.name, vocab_size=self.tokenizer.vocab_size,
                    mask_prob=self.mask_prob, next_sentence=self.next_sentence, eval_seed=EVAL_SEED)
        return info
