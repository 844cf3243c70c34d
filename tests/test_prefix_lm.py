from dataclasses import replace

import torch

from archbench import TaskSpec
from archs.gpt import GPT, SIZES
from archs.layers.prefix_lm import PrefixLMClassifier, PrefixLMSeq2Seq, build_prefix_lm

PAD, BOS, EOS = 13, 14, 15


def tiny_gpt(spec):
    return GPT(replace(SIZES["tiny"], n_layer=2, d_model=32, n_head=4, vocab_size=spec.vocab_size,
                       block_size=spec.max_seq_len, attention="math"))


def seq2seq_model():
    torch.manual_seed(0)
    spec = TaskSpec(kind="seq2seq", vocab_size=16, max_seq_len=20, pad_id=PAD, bos_id=BOS, eos_id=EOS)
    return build_prefix_lm("seq2seq", spec, tiny_gpt).eval()


def test_seq2seq_logits_are_the_lm_reading_source_then_target():
    model = seq2seq_model()
    assert isinstance(model, PrefixLMSeq2Seq)
    src = torch.tensor([[1, 2, 3, EOS], [4, EOS, PAD, PAD]])
    tgt_in = torch.tensor([[BOS, 5, 6], [BOS, 7, PAD]])
    out = model(src, src != PAD, tgt_in)
    assert out.shape == (2, 3, 16)
    for row, n_src, n_tgt in ((0, 4, 3), (1, 2, 2)):
        seq = torch.cat([src[row, :n_src], tgt_in[row, :n_tgt]])[None]
        expected = model.lm(seq)[0, n_src:]
        torch.testing.assert_close(out[row, :n_tgt], expected)


def test_seq2seq_target_positions_see_the_source_and_only_earlier_targets():
    model = seq2seq_model()
    src, tgt_in = torch.tensor([[1, 2, 3, EOS]]), torch.tensor([[BOS, 5, 6, 7]])
    mask = torch.ones_like(src, dtype=torch.bool)
    base = model(src, mask, tgt_in)
    changed_target = model(src, mask, torch.tensor([[BOS, 5, 9, 7]]))
    torch.testing.assert_close(changed_target[:, :2], base[:, :2])  # causal: position 2 changed, 0..1 not
    assert not torch.allclose(changed_target[:, 2:], base[:, 2:])
    changed_source = model(torch.tensor([[1, 8, 3, EOS]]), mask, tgt_in)
    assert not torch.allclose(changed_source[:, 0], base[:, 0])  # the first target prediction reads the source


def test_seq2seq_padding_changes_nothing():
    model = seq2seq_model()
    src, tgt_in = torch.tensor([[1, 2, EOS]]), torch.tensor([[BOS, 5]])
    base = model(src, src != PAD, tgt_in)
    padded_src = torch.tensor([[1, 2, EOS, PAD, PAD]])
    padded = model(padded_src, padded_src != PAD, torch.tensor([[BOS, 5, PAD]]))
    torch.testing.assert_close(padded[:, :2], base)


def test_classifier_reads_class_tokens_after_the_last_real_token():
    torch.manual_seed(0)
    spec = TaskSpec(kind="classify", vocab_size=16, max_seq_len=12, num_classes=3, pad_id=PAD, bos_id=BOS,
                    eos_id=EOS)
    model = build_prefix_lm("classify", spec, tiny_gpt).eval()
    assert isinstance(model, PrefixLMClassifier)
    assert model.lm.tok_emb.num_embeddings == 16 + 3
    ids = torch.tensor([[BOS, 1, 2, EOS, PAD], [BOS, 3, 4, 5, EOS]])
    mask = ids != PAD
    logits = model(ids, mask)
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits[0], model.lm(ids[:1, :4])[0, -1, 16:19])
    torch.testing.assert_close(logits[1], model.lm(ids[1:])[0, -1, 16:19])
    assert model.num_params() == model.lm.num_params()
    assert model.flops_per_token(12) == model.lm.flops_per_token(12)
