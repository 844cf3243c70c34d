"""Greedy and beam search over the seq2seq contract: one implementation for every arch.

A model is asked only for ``encode(src, src_mask)`` once and ``decode(memory, src_mask, prefix)`` per
step (the last position's logits are read), so an encoder-decoder, an LSTM and a decoder-only LM
behind the prefix-LM adapter all decode the same way. A model that can decode incrementally
(``incremental`` true, with ``start_decoding(memory, src_mask, max_steps) -> state`` and
``decode_step(memory, src_mask, state, tokens (B, 1)) -> (logits (B, V), state)``: a KV cache, an
RNN state) is fed one token per step instead; its state is reordered with the beams. Without it the
prefix is recomputed each step: exact and simple, quadratic in the output length. Both give the
same outputs (tests/test_cached_decoding.py). Finished sentences leave the batch, so their rows
cost nothing afterwards.

Beam search follows fairseq's rules: 2 x beam candidates per step; a candidate ranked within the
first ``beam`` that ends in eos is finished with score sum(log p) / length ** length_penalty (the
length counts the eos); the best non-eos candidates refill the beam; a sentence is done once it has
``beam`` finished hypotheses, and at its length limit every live beam is closed with eos.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from archbench.errors import UserError


@dataclass(frozen=True)
class SearchConfig:
    beam_size: int = 1  # 1 = greedy
    length_penalty: float = 1.0  # exponent of the length normalization (0 = raw log-probability)
    max_len_a: float = 0.0  # output limit = max_len_a * source length + max_len_b tokens (eos included)
    max_len_b: int = 200

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "SearchConfig":
        d = cls(**{k: cfg[k] for k in ("beam_size", "length_penalty", "max_len_a", "max_len_b")})
        if not isinstance(d.beam_size, int) or isinstance(d.beam_size, bool) or d.beam_size < 1:
            raise UserError(f"task.decode.beam_size must be an integer >= 1, got {d.beam_size!r}")
        if not isinstance(d.max_len_b, int) or isinstance(d.max_len_b, bool) or d.max_len_b < 0:
            raise UserError(f"task.decode.max_len_b must be an integer >= 0, got {d.max_len_b!r}")
        for k in ("length_penalty", "max_len_a"):
            v = getattr(d, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise UserError(f"task.decode.{k} must be a number >= 0, got {v!r}")
        return d

    def limits(self, src_lengths: torch.Tensor, cap: int) -> torch.Tensor:
        """Per-sentence output limit in tokens (eos included), at least 1 and at most ``cap``."""
        raw = torch.floor(self.max_len_a * src_lengths.double() + self.max_len_b).long()
        return raw.clamp(1, cap)


def reorder(memory, index: torch.Tensor):
    """Rows ``index`` of a tensor, of every tensor in a (nested) tuple/list, or of a decoding state
    (its ``select(index)``)."""
    if memory is None:
        return None
    if isinstance(memory, torch.Tensor):
        return memory.index_select(0, index.to(memory.device))
    if callable(getattr(memory, "select", None)):
        return memory.select(index)
    if isinstance(memory, (tuple, list)):
        return type(memory)(reorder(m, index) for m in memory)
    raise TypeError(f"encoder memory must be a tensor or a tuple of tensors, got {type(memory).__name__}")


def _start(model, memory, src_mask, limits: torch.Tensor, use_cache: bool):
    """The model's incremental decoding state, or None (then each step rereads the prefix)."""
    if not (use_cache and getattr(model, "incremental", False)):
        return None
    return model.start_decoding(memory, src_mask, int(limits.max()))


def _next_logprobs(model, memory, src_mask, prefix, banned: list[int], state=None):
    """(log-probabilities (B, V) of the token after ``prefix``, the advanced state)."""
    if state is None:
        logits = model.decode(memory, src_mask, prefix)[:, -1]
    else:
        logits, state = model.decode_step(memory, src_mask, state, prefix[:, -1:])
    logits = logits.float()
    logits[:, banned] = float("-inf")
    return torch.log_softmax(logits, dim=-1), state


@torch.no_grad()
def generate(model, src: torch.Tensor, src_mask: torch.Tensor, *, bos: int, eos: int, pad: int,
             search: SearchConfig, cap: int, use_cache: bool = True) -> list[list[int]]:
    """Output token ids per sentence (without bos and eos); ``use_cache=False`` rereads the prefix
    at every step even where the model could decode incrementally."""
    limits = search.limits(src_mask.sum(1).cpu(), cap)
    if search.beam_size == 1:
        return greedy(model, src, src_mask, bos=bos, eos=eos, pad=pad, limits=limits, use_cache=use_cache)
    return beam_search(model, src, src_mask, bos=bos, eos=eos, pad=pad, limits=limits,
                       beam=search.beam_size, length_penalty=search.length_penalty, use_cache=use_cache)


@torch.no_grad()
def greedy(model, src, src_mask, *, bos: int, eos: int, pad: int, limits: torch.Tensor,
           use_cache: bool = True) -> list[list[int]]:
    device = src.device
    n = src.shape[0]
    memory, mask = model.encode(src, src_mask), src_mask
    state = _start(model, memory, mask, limits, use_cache)
    alive = torch.arange(n)  # original sentence of each row still decoding
    prefix = torch.full((n, 1), bos, dtype=torch.long, device=device)
    outputs: list[list[int]] = [[] for _ in range(n)]
    step = 0
    while len(alive):
        lp, state = _next_logprobs(model, memory, mask, prefix, [bos, pad], state)
        at_limit = (step + 1 >= limits[alive]).to(device)
        token = torch.where(at_limit, torch.full_like(at_limit, eos, dtype=torch.long), lp.argmax(-1))
        prefix = torch.cat([prefix, token[:, None]], 1)
        finished = (token == eos).cpu()
        for row in torch.nonzero(finished).flatten().tolist():
            outputs[int(alive[row])] = prefix[row, 1:-1].tolist()
        if finished.any():
            keep = torch.nonzero(~finished).flatten()
            alive, prefix, mask = alive[keep], prefix[keep.to(device)], mask[keep.to(device)]
            memory, state = reorder(memory, keep), reorder(state, keep)
        step += 1
    return outputs


@torch.no_grad()
def beam_search(model, src, src_mask, *, bos: int, eos: int, pad: int, limits: torch.Tensor, beam: int,
                length_penalty: float, use_cache: bool = True) -> list[list[int]]:
    device = src.device
    n, k = src.shape[0], beam
    expand = torch.arange(n).repeat_interleave(k)
    memory = model.encode(src, src_mask)
    state = reorder(_start(model, memory, src_mask, limits, use_cache), expand)  # the source once per sentence
    memory = reorder(memory, expand)
    mask = src_mask[expand.to(device)]
    alive = torch.arange(n)
    prefix = torch.full((n * k, 1), bos, dtype=torch.long, device=device)
    scores = torch.full((n, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start equal: keep one so the first step has k distinct candidates
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
    step = 0
    while len(alive):
        m = len(alive)
        lp, state = _next_logprobs(model, memory, mask, prefix, [bos, pad], state)  # (m*k, V)
        vocab = lp.shape[-1]
        at_limit = (step + 1 >= limits[alive]).to(device).repeat_interleave(k)
        if at_limit.any():  # only eos may follow, with its own probability
            forced = torch.full_like(lp[at_limit], float("-inf"))
            forced[:, eos] = lp[at_limit][:, eos]
            lp[at_limit] = forced
        cand = (scores.reshape(-1, 1) + lp).reshape(m, k * vocab)
        top_scores, top_index = cand.topk(min(2 * k, k * vocab), dim=1)
        top_beam, top_token = top_index // vocab, top_index % vocab
        is_eos = top_token == eos
        done = torch.zeros(m, dtype=torch.bool)
        for b, j in torch.nonzero(is_eos[:, :k] & torch.isfinite(top_scores[:, :k])).tolist():
            sent = int(alive[b])
            if len(finished[sent]) < k:
                row = b * k + int(top_beam[b, j])
                norm = float(top_scores[b, j]) / (step + 1) ** length_penalty
                finished[sent].append((norm, prefix[row, 1:].tolist()))
        for b in range(m):
            sent = int(alive[b])
            done[b] = len(finished[sent]) >= k or step + 1 >= int(limits[sent])
        cont = top_scores.masked_fill(is_eos, float("-inf"))
        scores, pos = cont.topk(k, dim=1)
        rows = (torch.arange(m, device=device)[:, None] * k + top_beam.gather(1, pos)).reshape(-1)
        prefix = torch.cat([prefix[rows], top_token.gather(1, pos).reshape(-1, 1)], 1)
        memory, mask, state = reorder(memory, rows.cpu()), mask[rows], reorder(state, rows.cpu())
        if done.any():
            keep = torch.nonzero(~done).flatten()
            keep_rows = (keep[:, None] * k + torch.arange(k)).reshape(-1)
            alive, scores = alive[keep], scores[keep.to(device)]
            prefix, mask = prefix[keep_rows.to(device)], mask[keep_rows.to(device)]
            memory, state = reorder(memory, keep_rows), reorder(state, keep_rows)
        step += 1
    return [max(hyps, key=lambda h: h[0])[1] if hyps else [] for hyps in finished]
