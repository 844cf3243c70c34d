import itertools
import math

import numpy as np
import pytest
import torch

from tasks.data.synthetic_hmm import StreamOracle, random_hmm, sample_documents
from tasks.text.tokenizers import BPETokenizer, ByteTokenizer

HMM_CFG = {"states": 2, "alphabet": "ab", "concentration": 0.5, "mean_doc_bytes": 3, "seed": 1}


def path_sum_probability(oracle, data: bytes) -> float:
    """P(data) under the stream chain from its stationary distribution, summing over every state path."""
    n_states = len(oracle.prior)
    total = 0.0
    for path in itertools.product(range(n_states), repeat=len(data)):
        p = oracle.prior[path[0]] * oracle.emission[path[0], data[0]]
        for t in range(1, len(data)):
            p *= oracle.transition[path[t - 1], path[t]] * oracle.emission[path[t], data[t]]
        total += p
    return total


def test_oracle_is_the_exact_conditional_probability_by_enumeration():
    oracle = StreamOracle(random_hmm(HMM_CFG), ByteTokenizer())
    for text in (b"ab\n\nba", b"aab\n\nb", b"b\n\nab"):
        x = torch.tensor([list(text[:-1])])
        y = torch.tensor([list(text[1:])])
        got = oracle.target_logprobs(x, y).sum().item()
        expected = math.log(path_sum_probability(oracle, text) / path_sum_probability(oracle, text[:1]))
        assert got == pytest.approx(expected, rel=1e-10)


def test_oracle_next_byte_distribution_sums_to_one():
    oracle = StreamOracle(random_hmm(HMM_CFG), ByteTokenizer())
    context = list(b"ab\n")
    x = torch.tensor([context] * 256)
    y = torch.cat([x[:, 1:], torch.arange(256)[:, None]], 1)
    p_next = oracle.target_logprobs(x, y)[:, -1].exp()
    assert p_next.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert p_next[ord("\n")].item() == pytest.approx(1.0)  # a first newline is always followed by a second


def test_token_level_scores_are_the_byte_level_scores_of_the_same_bytes():
    cfg = {**HMM_CFG, "states": 4, "alphabet": "abc ", "mean_doc_bytes": 20}
    hmm = random_hmm(cfg)
    docs = sample_documents(hmm, 3000, seed=2)
    text = "\n\n".join(docs)
    bpe = BPETokenizer.train(docs, 300, (), "k", None)
    ids = torch.from_numpy(bpe.encode(text[:400]))
    by_token = StreamOracle(hmm, bpe).target_logprobs(ids[None, :-1], ids[None, 1:]).sum().item()
    raw = torch.from_numpy(ByteTokenizer().encode(text[:400]))
    first = len(bpe.token_bytes(int(ids[0])))  # bytes of the first token: context, not scored
    by_byte = StreamOracle(hmm, ByteTokenizer()).target_logprobs(raw[None, :-1], raw[None, 1:])[0, first - 1:].sum()
    assert by_token == pytest.approx(by_byte.item(), rel=1e-9)


def test_documents_follow_the_configured_process():
    hmm = random_hmm({**HMM_CFG, "states": 3, "alphabet": "xyz", "mean_doc_bytes": 10})
    docs = sample_documents(hmm, 40_000, seed=0)
    assert sum(map(len, docs)) >= 40_000
    assert set("".join(docs)) <= set("xyz")
    assert np.mean([len(d) for d in docs]) == pytest.approx(10, rel=0.1)  # geometric lengths, mean 1/end_prob
    assert docs == sample_documents(hmm, 40_000, seed=0)
