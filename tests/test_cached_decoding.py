"""Incremental decoding (KV cache, RNN state) gives the same outputs as rereading the prefix at every
step, greedy and beam, for every seq2seq arch that can decode incrementally."""
import pytest
import torch

import archs  # noqa: F401  (registers the archs)
from archbench import TaskSpec
from archbench.arch import get_arch
from tasks.scoring.decoding import SearchConfig, generate

PAD, BOS, EOS, VOCAB = 0, 1, 2, 23
SPEC = TaskSpec(kind="seq2seq", vocab_size=VOCAB, max_seq_len=64, pad_id=PAD, bos_id=BOS, eos_id=EOS)


def _model(arch: str, overrides: dict):
    torch.manual_seed(0)
    model = get_arch(arch).build_model("seq2seq", "tiny", SPEC, overrides).eval()
    with torch.no_grad():  # sharper distributions than the init's: no near-ties for argmax to flip on
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(8.0 if arch != "lstm" else 20.0)
    return model


def _batch():
    g = torch.Generator().manual_seed(1)
    lengths = [3, 9, 5, 1, 7]
    ids = torch.full((len(lengths), max(lengths) + 1), PAD)
    for i, n in enumerate(lengths):  # source tokens + eos, right padded
        ids[i, :n] = torch.randint(3, VOCAB, (n,), generator=g)
        ids[i, n] = EOS
    return ids, ids != PAD


CASES = [("gpt", {"positions": "learned"}), ("gpt", {"positions": "rope", "norm": "rmsnorm", "mlp": "swiglu"}),
         ("transformer", {}), ("lstm", {})]


@pytest.mark.parametrize("arch,overrides", CASES, ids=["gpt", "gpt-rope", "transformer", "lstm"])
@pytest.mark.parametrize("beam", [1, 3])
def test_cached_decoding_equals_uncached(arch, overrides, beam):
    model = _model(arch, overrides)
    assert model.incremental
    src, mask = _batch()
    search = SearchConfig(beam_size=beam, max_len_a=1.0, max_len_b=4)
    run = lambda cache: generate(model, src, mask, bos=BOS, eos=EOS, pad=PAD, search=search, cap=20,  # noqa: E731
                                 use_cache=cache)
    cached, plain = run(True), run(False)
    assert cached == plain
    assert sum(len(o) for o in cached) > 5  # the search produced tokens, not only eos


@pytest.mark.parametrize("arch,overrides", CASES, ids=["gpt", "gpt-rope", "transformer", "lstm"])
def test_decode_step_logits_equal_teacher_forced(arch, overrides):
    model = _model(arch, overrides)
    src, mask = _batch()
    tgt = torch.cat([torch.full((src.shape[0], 1), BOS), torch.randint(3, VOCAB, (src.shape[0], 5))], 1)
    with torch.no_grad():
        memory = model.encode(src, mask)
        full = model.decode(memory, mask, tgt)
        state = model.start_decoding(memory, mask, tgt.shape[1])
        for j in range(tgt.shape[1]):
            logits, state = model.decode_step(memory, mask, state, tgt[:, j:j + 1])
            assert torch.allclose(logits, full[:, j], atol=1e-3, rtol=1e-4), (j, (logits - full[:, j]).abs().max())
