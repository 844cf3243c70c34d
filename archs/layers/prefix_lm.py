"""Any causal language model as a seq2seq model or a classifier: the prefix-LM adapter.

seq2seq: each row is packed as its source's real tokens (source + eos, as the task gives them)
followed at once by the decoder input (bos + target), so one causal pass reads
source -> separator (bos) -> target. ``decode`` returns only the target positions' logits, so the
task's loss covers target tokens only; the source is context, never a prediction target. The
"memory" is the source itself. An LM with a KV cache and per-row positions (``new_cache`` and
``forward_rows``, as GPT) also decodes incrementally (``start_decoding`` / ``decode_step``): the
batch's right-padded sources fill the cache once, padding slots masked, and each step feeds one
token at its own row's position, so the result equals ``decode`` on the packed rows.

classify: the LM's vocabulary gets one extra token per class; the class logits are its next-token
logits after the input's last real token (the task's eos), read at the class tokens only -- the LM
"says" the label. Nothing but a causal ``forward(idx) -> (B, T, V)`` is asked of the wrapped model.

To give an lm-kind arch these kinds, its registration calls ``build_prefix_lm`` (see there).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from archbench import TaskSpec
from archbench.model import NeuralModel


class PrefixLMSeq2Seq(NeuralModel):
    def __init__(self, lm: torch.nn.Module, pad_id: int):
        super().__init__()
        self.lm, self.pad_id = lm, pad_id

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        return src

    def decode(self, memory: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        lengths = src_mask.sum(1)  # real source tokens per row (right padding)
        batch, width = tgt_in.shape
        longest = int(lengths.max())
        packed = memory[:, :longest].masked_fill(~src_mask[:, :longest], self.pad_id)
        packed = torch.cat([packed, packed.new_full((batch, width), self.pad_id)], 1)
        positions = lengths[:, None] + torch.arange(width, device=tgt_in.device)  # where the target sits
        packed = packed.scatter(1, positions, tgt_in)
        logits = self.lm(packed)
        return logits.gather(1, positions[..., None].expand(-1, -1, logits.shape[-1]))

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(src, src_mask), src_mask, tgt_in)

    @property
    def incremental(self) -> bool:
        """Whether the wrapped LM can decode from a KV cache (start_decoding / decode_step)."""
        return callable(getattr(self.lm, "new_cache", None)) and callable(getattr(self.lm, "forward_rows", None))

    def start_decoding(self, memory: torch.Tensor, src_mask: torch.Tensor, max_steps: int) -> "PrefixState":
        """The sources in the LM's KV cache (room for ``max_steps`` target tokens after them)."""
        lengths = src_mask.sum(1)
        longest = int(lengths.max())
        real = src_mask[:, :longest].to(torch.bool)
        packed = memory[:, :longest].masked_fill(~real, self.pad_id)
        cache = self.lm.new_cache(memory.shape[0], longest + max_steps)
        positions = torch.arange(longest, device=memory.device).expand(memory.shape[0], -1)
        self.lm.forward_rows(packed, cache, positions, real, logits=False)
        return PrefixState(cache, real, lengths, 0)

    def decode_step(self, memory, src_mask, state: "PrefixState", tokens: torch.Tensor):
        """(next-token logits (B, V) after ``tokens`` (B, 1), the state with them appended)."""
        key_mask = torch.cat([state.key_mask, state.key_mask.new_ones(tokens.shape[0], 1)], 1)
        positions = (state.lengths + state.step)[:, None]
        logits = self.lm.forward_rows(tokens, state.cache, positions, key_mask)[:, -1]
        return logits, PrefixState(state.cache, key_mask, state.lengths, state.step + 1)

    def pair_flops(self, src_len, tgt_len):
        """One pair's training FLOPs: the LM over its s + t packed real tokens, each at the LM's
        FLOPs per token for a context that long."""
        n = src_len + tgt_len
        per_token = self.lm.flops_per_token(n)
        return None if per_token is None else per_token * n

    def flops_per_token(self, seq_len: int) -> int | None:
        """Per token read with source and target each ``seq_len`` long: the LM's FLOPs per token
        over the packed 2 x seq_len tokens."""
        return self.lm.flops_per_token(2 * seq_len)


class PrefixState:
    """Incremental decoding state of the prefix LM: the KV cache, which slots are real, the source
    lengths, and how many target tokens were fed."""

    def __init__(self, cache, key_mask: torch.Tensor, lengths: torch.Tensor, step: int):
        self.cache, self.key_mask, self.lengths, self.step = cache, key_mask, lengths, step

    def select(self, index: torch.Tensor) -> "PrefixState":
        i = index.to(self.key_mask.device)
        return PrefixState(self.cache.select(i), self.key_mask[i], self.lengths[i], self.step)


class PrefixLMClassifier(NeuralModel):
    def __init__(self, lm: torch.nn.Module, first_class_id: int, num_classes: int):
        super().__init__()
        self.lm, self.first_class_id, self.num_classes = lm, first_class_id, num_classes

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.lm(ids)  # causal: the right padding cannot reach the last real position
        last = mask.sum(1) - 1
        at_last = logits[torch.arange(ids.shape[0], device=ids.device), last]
        return at_last[:, self.first_class_id:self.first_class_id + self.num_classes]

    def flops_per_token(self, seq_len: int) -> int | None:
        return self.lm.flops_per_token(seq_len)


def build_prefix_lm(kind: str, task: TaskSpec, make_lm: Callable[[TaskSpec], torch.nn.Module]):
    """An lm-kind arch's model for any kind: ``make_lm(spec)`` builds the plain LM for a TaskSpec.

    Registration of an LM arch that should serve all three kinds, e.g. GPT::

        @register_arch("gpt", kinds=("lm", "seq2seq", "classify"), sizes=SIZES)
        def build(kind, hp, task):
            return build_prefix_lm(kind, task, lambda spec: GPT(
                replace(hp, vocab_size=spec.vocab_size, block_size=spec.max_seq_len)))
    """
    if kind == "lm":
        return make_lm(task)
    if kind == "seq2seq":
        return PrefixLMSeq2Seq(make_lm(replace(task, kind="lm")), task.pad_id)
    if kind == "classify":
        lm = make_lm(replace(task, kind="lm", vocab_size=task.vocab_size + task.num_classes))
        return PrefixLMClassifier(lm, task.vocab_size, task.num_classes)
    raise ValueError(f"prefix-LM adapter: unknown task kind '{kind}'")
