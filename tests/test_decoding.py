import itertools
import math
from dataclasses import replace

import pytest
import torch
import torch.nn as nn

from archbench import TaskSpec
from archbench.errors import UserError
from archs.gpt import GPT, SIZES
from archs.layers.prefix_lm import build_prefix_lm
from tasks.scoring.decoding import SearchConfig, beam_search, generate, greedy

PAD, BOS, EOS = 3, 4, 5  # 0..2 are ordinary tokens
V = 6


class ToySeq2Seq(nn.Module):
    """Next-token logits from the source, the last token and the position: small enough to enumerate."""

    def __init__(self, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(V, V, generator=g) * 2
        self.src_emb = torch.randn(V, V, generator=g)
        self.pos = torch.randn(16, V, generator=g)

    def encode(self, src, src_mask):
        return (self.src_emb[src] * src_mask[..., None]).sum(1)

    def decode(self, memory, src_mask, prefix):
        return self.table[prefix] + memory[:, None, :] + self.pos[: prefix.shape[1]]


def banned_logprobs(model, src, mask, prefix):
    logits = model.decode(model.encode(src, mask), mask, prefix)[:, -1]
    logits[:, [BOS, PAD]] = float("-inf")
    return torch.log_softmax(logits, -1)[0]


def brute_force_best(model, src, mask, limit, alpha):
    """The highest length-normalized score over every output of up to limit - 1 tokens then eos."""
    best, best_seq = -math.inf, None
    for n in range(limit):
        for seq in itertools.product(range(3), repeat=n):
            score, prefix = 0.0, [BOS]
            for t in seq:
                score += banned_logprobs(model, src, mask, torch.tensor([prefix]))[t].item()
                prefix.append(t)
            score += banned_logprobs(model, src, mask, torch.tensor([prefix]))[EOS].item()
            norm = score / (n + 1) ** alpha
            if norm > best:
                best, best_seq = norm, list(seq)
    return best_seq


@pytest.mark.parametrize("alpha", [0.0, 1.0])
@pytest.mark.parametrize("seed", [1, 2, 4])  # seeds where greedy and a beam of 2 miss the best
def test_wide_beam_finds_the_exact_best_output(seed, alpha):
    model = ToySeq2Seq(seed)
    src, mask = torch.tensor([[0, 2, 1]]), torch.ones(1, 3, dtype=torch.bool)
    limit = 4
    got = beam_search(model, src, mask, bos=BOS, eos=EOS, pad=PAD, limits=torch.tensor([limit]), beam=40,
                      length_penalty=alpha)
    assert got[0] == brute_force_best(model, src, mask, limit, alpha)


def test_beam_of_one_is_greedy_and_rows_do_not_interact():
    model = ToySeq2Seq(3)
    src = torch.tensor([[0, 1, 2, 1], [2, 2, PAD, PAD], [1, PAD, PAD, PAD], [0, 0, 1, PAD]])
    mask = src != PAD
    limits = torch.tensor([6, 2, 5, 8])
    g = greedy(model, src, mask, bos=BOS, eos=EOS, pad=PAD, limits=limits)
    b = beam_search(model, src, mask, bos=BOS, eos=EOS, pad=PAD, limits=limits, beam=1, length_penalty=1.0)
    assert g == b
    for i in range(4):  # each sentence alone gives the same output as in the batch
        alone = greedy(model, src[i:i + 1], mask[i:i + 1], bos=BOS, eos=EOS, pad=PAD, limits=limits[i:i + 1])
        assert alone[0] == g[i]
        assert len(g[i]) <= int(limits[i]) - 1  # the limit counts the eos
    beams = beam_search(model, src, mask, bos=BOS, eos=EOS, pad=PAD, limits=limits, beam=3, length_penalty=1.0)
    for i in range(4):
        alone = beam_search(model, src[i:i + 1], mask[i:i + 1], bos=BOS, eos=EOS, pad=PAD, limits=limits[i:i + 1],
                            beam=3, length_penalty=1.0)
        assert alone[0] == beams[i]


def test_output_limit_from_source_length():
    search = SearchConfig(beam_size=1, max_len_a=1.5, max_len_b=2)
    assert search.limits(torch.tensor([0, 2, 10]), cap=12).tolist() == [2, 5, 12]
    with pytest.raises(UserError, match="beam_size"):
        SearchConfig.from_config({"beam_size": 0, "length_penalty": 1.0, "max_len_a": 0, "max_len_b": 5})


def test_prefix_lm_gpt_decodes_the_same_alone_and_in_a_padded_batch():
    torch.manual_seed(0)
    spec = TaskSpec(kind="seq2seq", vocab_size=20, max_seq_len=24, pad_id=17, bos_id=18, eos_id=19)
    model = build_prefix_lm("seq2seq", spec, lambda s: GPT(replace(SIZES["tiny"], n_layer=1, d_model=32, n_head=2,
                                                                   vocab_size=s.vocab_size, block_size=s.max_seq_len,
                                                                   attention="math"))).eval()
    src = torch.tensor([[1, 2, 3, 4, 19], [5, 6, 19, 17, 17]])
    mask = src != 17
    search = SearchConfig(beam_size=3, max_len_a=0.0, max_len_b=8)
    both = generate(model, src, mask, bos=18, eos=19, pad=17, search=search, cap=10)
    for i in range(2):
        n = int(mask[i].sum())
        alone = generate(model, src[i:i + 1, :n], mask[i:i + 1, :n], bos=18, eos=19, pad=17, search=search, cap=10)
        assert alone[0] == both[i]
        assert all(t < 17 for t in both[i])  # never a special token in the output
