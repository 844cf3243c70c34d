"""GPT, BERT and the encoder-decoder Transformer: exact parameter counts, FLOP formulas, options,
heads, the MLM task, pretrain -> finetune through the engine, and bad input.

Large presets are only ever built on the ``meta`` device (shapes, no memory).
"""
from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

from archbench import ARCHS, TaskSpec
from archbench.errors import UserError
from archs.bert import SIZES as BERT_SIZES, BertBackbone, BertClassifier, BertConfig, BertForMaskedLM
from archs.gpt import GPT, SIZES as GPT_SIZES, GPTConfig
from archs.transformer import SIZES as TF_SIZES, EncoderDecoderTransformer, TransformerClassifier, TransformerConfig
from harness import checkpoints
from harness.run import run_one
from harness.sweep import main
from tasks.mlm import IGNORE, MaskedLM
from tests.helpers import compose_conf


def on_meta(cls, *args):
    with torch.device("meta"):
        return cls(*args)


def unique_numel(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


# ---------------------------------------------------------------------------- analytic counts

def gpt_formula(c: GPTConfig) -> tuple[int, int]:
    """(parameters, matmul parameters) of a GPT config, in closed form."""
    d, ff, v, b = c.d_model, c.d_ff or 4 * c.d_model, c.vocab_size, int(c.bias)
    norm = d * (2 if c.norm == "layernorm" and c.bias else 1)
    attn = 4 * d * d + b * 4 * d
    mlp = (3 * d * ff + b * (2 * ff + d)) if c.mlp == "swiglu" else (2 * d * ff + b * (ff + d))
    mm_mlp = 3 * d * ff if c.mlp == "swiglu" else 2 * d * ff
    params = v * d + (c.block_size * d if c.positions == "learned" else 0) + c.n_layer * (attn + mlp + 2 * norm) \
        + norm + (0 if c.tie_embeddings else v * d)
    return params, c.n_layer * (4 * d * d + mm_mlp) + v * d


def bert_backbone_formula(c: BertConfig) -> int:
    d, ff = c.d_model, c.d_ff or 4 * c.d_model
    emb = (c.vocab_size + c.max_positions + c.type_vocab_size) * d + 2 * d
    layer = 4 * d * d + 4 * d + 2 * d * ff + ff + d + 4 * d
    return emb + c.n_layer * layer + d * d + d


def encdec_formula(c: TransformerConfig) -> tuple[int, int]:
    d, ff, v = c.d_model, c.d_ff or 4 * c.d_model, c.vocab_size
    enc = 4 * d * d + 4 * d + 2 * d * ff + ff + d + 4 * d
    dec = 8 * d * d + 8 * d + 2 * d * ff + ff + d + 6 * d
    emb = v * d * (1 if c.share_embeddings else 2) + (0 if c.tie_output else v * d)
    params = emb + c.n_encoder_layer * enc + c.n_decoder_layer * dec + (4 * d if c.norm_first else 0)
    matmul = c.n_encoder_layer * (4 * d * d + 2 * d * ff) + c.n_decoder_layer * (8 * d * d + 2 * d * ff) + v * d
    return params, matmul


# ---------------------------------------------------------------------------- published counts

def test_gpt2_small_has_exactly_124439808_params():
    model = on_meta(GPT, GPT_SIZES["small"])
    assert model.num_params() == unique_numel(model) == 124_439_808


def test_llama2_7b_shape_has_exactly_6738415616_params_on_meta():
    model = on_meta(GPT, GPT_SIZES["7b"])
    assert all(p.device.type == "meta" for p in model.parameters())
    assert model.num_params() == unique_numel(model) == 6_738_415_616


def test_gpt2_ladder_matches_published_sizes():
    published = {"medium": 354_823_168, "large": 774_030_080, "xl": 1_557_611_200}  # nanoGPT's counts
    for size, n in published.items():
        assert on_meta(GPT, GPT_SIZES[size]).num_params() == n


@pytest.mark.parametrize("size,count", [("base", 109_482_240), ("large", 335_141_888)])
def test_bert_backbone_counts_are_exact(size, count):
    backbone = on_meta(BertBackbone, BERT_SIZES[size])
    assert unique_numel(backbone) == bert_backbone_formula(BERT_SIZES[size]) == count


@pytest.mark.parametrize("size,paper", [("base", 65e6), ("big", 213e6)])
def test_vaswani_counts_within_5_percent_of_the_paper(size, paper):
    model = on_meta(EncoderDecoderTransformer, replace(TF_SIZES[size], vocab_size=37000))
    assert abs(model.num_params() - paper) / paper < 0.05


# ---------------------------------------------------------------------------- formulas vs the built models

GPT_VARIANTS = [
    dict(),
    dict(norm="rmsnorm", mlp="swiglu", positions="rope", bias=False, tie_embeddings=False),
    dict(mlp="swiglu", bias=True, d_ff=40),
    dict(norm="rmsnorm", positions="rope", tie_embeddings=True),
]


@pytest.mark.parametrize("variant", GPT_VARIANTS)
@pytest.mark.parametrize("size", list(GPT_SIZES))
def test_gpt_params_and_flops_match_the_formula(size, variant):
    cfg = replace(GPT_SIZES[size], **variant)
    cfg = replace(cfg, vocab_size=cfg.vocab_size or 97, block_size=cfg.block_size or 64)
    model = on_meta(GPT, cfg)
    params, matmul = gpt_formula(cfg)
    assert model.num_params() == unique_numel(model) == params
    for t in (1, 128, 1024):
        assert model.flops_per_token(t) == 6 * matmul + 12 * cfg.n_layer * cfg.d_model * t


@pytest.mark.parametrize("size", list(BERT_SIZES))
@pytest.mark.parametrize("nsp", [False, True])
def test_bert_params_and_flops_match_the_formula(size, nsp):
    cfg = replace(BERT_SIZES[size], vocab_size=BERT_SIZES[size].vocab_size or 260,
                  max_positions=BERT_SIZES[size].max_positions or 128)
    d, v, t = cfg.d_model, cfg.vocab_size, 128
    model = on_meta(BertForMaskedLM, cfg, nsp)
    head = d * d + d + 2 * d + v + (2 * d + 2 if nsp else 0)  # transform + LayerNorm + decoder bias (+ NSP)
    pooler = d * d + d  # only with next-sentence prediction: MLM alone reads no pooled vector
    assert model.num_params() == unique_numel(model) == bert_backbone_formula(cfg) + head - (0 if nsp else pooler)
    per_token = cfg.n_layer * (4 * d * d + 2 * d * 4 * d) + d * d + v * d
    per_seq = d * d + 2 * d if nsp else 0
    assert model.flops_per_token(t) == 6 * per_token + 6 * per_seq // t + 12 * cfg.n_layer * d * t
    clf = on_meta(BertClassifier, cfg, 3)
    assert clf.num_params() == unique_numel(clf) == bert_backbone_formula(cfg) + 3 * d + 3


@pytest.mark.parametrize("size", list(TF_SIZES))
@pytest.mark.parametrize("variant", [dict(), dict(norm_first=False, share_embeddings=False, tie_output=False)])
def test_encdec_params_and_flops_match_the_formula(size, variant):
    cfg = replace(TF_SIZES[size], vocab_size=37000, **variant)
    model = on_meta(EncoderDecoderTransformer, cfg)
    params, matmul = encdec_formula(cfg)
    assert model.num_params() == unique_numel(model) == params
    t = 256
    # per token read (source + target): half of what one source token and one target token cost
    assert model.flops_per_token(t) == \
        (6 * matmul + 12 * cfg.d_model * t * (cfg.n_encoder_layer + 2 * cfg.n_decoder_layer)) // 2


# ---------------------------------------------------------------------------- options and heads

def _tiny_gpt(**kw):
    return GPTConfig(n_layer=2, n_head=2, d_model=16, vocab_size=23, block_size=12, **kw)


def test_backends_give_the_same_gpt():
    torch.manual_seed(0)
    idx = torch.randint(0, 23, (3, 12))
    ref = GPT(_tiny_gpt(attention="math", positions="rope", mlp="swiglu")).eval()
    other = GPT(_tiny_gpt(attention="sdpa", positions="rope", mlp="swiglu")).eval()
    other.load_state_dict(ref.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(other(idx), ref(idx), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_attention_dropout_is_unbiased_and_off_in_eval(backend):
    from archs.layers.attention import attend

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 4) for _ in range(3))
    ref = attend(q, k, v, causal=True, backend=backend)
    draws = torch.stack([attend(q, k, v, causal=True, dropout_p=0.3, backend=backend) for _ in range(2000)])
    assert not torch.allclose(draws[0], ref)
    torch.testing.assert_close(draws.mean(0), ref, atol=0.06, rtol=0)  # E[dropout(w)] = w
    model = GPT(_tiny_gpt(dropout=0.5, attention=backend)).eval()
    idx = torch.randint(0, 23, (1, 12))
    assert torch.equal(model(idx), model(idx))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpt_bf16_on_cuda_with_xformers_matches_math():
    torch.manual_seed(0)
    idx = torch.randint(0, 23, (2, 12), device="cuda")
    ref = GPT(_tiny_gpt(attention="math", positions="rope")).cuda().eval()
    fast = GPT(_tiny_gpt(attention="xformers", positions="rope")).cuda().eval()
    fast.load_state_dict(ref.state_dict())
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        torch.testing.assert_close(fast(idx).float(), ref(idx).float(), atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("mode", [True, "full", "selective"])
@pytest.mark.parametrize("attention", ["sdpa", "math"])
def test_activation_checkpointing_gives_the_same_gradients(mode, attention):
    """Recomputing in backward (every op, or only the cheap ones) changes no gradient; dropout too,
    since the recompute replays the forward's random state."""
    torch.manual_seed(0)
    idx = torch.randint(0, 23, (2, 12))
    grads = []
    for ckpt in (False, mode):
        torch.manual_seed(1)
        model = GPT(_tiny_gpt(activation_checkpointing=ckpt, attention=attention, dropout=0.1,
                              positions="rope", mlp="swiglu")).train()
        assert model.checkpointing == ("none" if ckpt is False else "full" if ckpt is True else ckpt)
        model(idx).logsumexp(-1).mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_rope_scores_depend_only_on_relative_position():
    from archs.layers.attention import RotaryEmbedding, apply_rotary

    rope = RotaryEmbedding(8, 32)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(i, j):
        qi = apply_rotary(q, *rope(i, 1))
        kj = apply_rotary(k, *rope(j, 1))
        return (qi * kj).sum()

    torch.testing.assert_close(score(5, 2), score(13, 10), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(score(5, 2), score(5, 4))


def test_generation_samples_in_vocab_and_respects_block_size():
    torch.manual_seed(0)
    model = GPT(_tiny_gpt()).eval()
    out = model.generate(torch.zeros(2, 2, dtype=torch.long), 6, temperature=1.0, top_k=5,
                         generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 8) and int(out.max()) < 23
    with pytest.raises(ValueError, match="block_size"):
        model.generate(torch.zeros(1, 10, dtype=torch.long), 5)


@pytest.mark.parametrize("cls", ["bert", "transformer"])
def test_classifier_ignores_padding_tokens(cls):
    torch.manual_seed(0)
    if cls == "bert":
        model = BertClassifier(BertConfig(n_layer=2, n_head=2, d_model=16, vocab_size=30, max_positions=10), 3)
    else:
        model = TransformerClassifier(TransformerConfig(n_encoder_layer=2, n_head=2, d_model=16, vocab_size=30), 3)
    model.eval()
    ids = torch.randint(0, 29, (1, 6))
    padded = torch.cat([ids, torch.randint(0, 30, (1, 4))], dim=1)  # garbage after the real tokens
    mask = torch.tensor([[True] * 6 + [False] * 4])
    with torch.no_grad():
        alone = model(ids, torch.ones(1, 6, dtype=torch.bool))
        with_pad = model(padded, mask)
    assert alone.shape == (1, 3)
    torch.testing.assert_close(with_pad, alone, atol=1e-5, rtol=1e-5)


def test_encdec_seq2seq_contract_and_it_learns_to_copy():
    torch.manual_seed(0)
    v, pad = 12, 0
    model = EncoderDecoderTransformer(TransformerConfig(n_encoder_layer=1, n_decoder_layer=1, n_head=2, d_model=32,
                                                        vocab_size=v))
    src = torch.randint(2, v, (16, 7))
    src_mask = torch.ones_like(src, dtype=torch.bool)
    src_mask[8:, 5:] = False
    src = src.masked_fill(~src_mask, pad)
    tgt = torch.cat([torch.ones(16, 1, dtype=torch.long), src], 1)  # bos=1 then the source
    memory = model.encode(src, src_mask)
    assert memory.shape == (16, 7, 32)
    assert model.decode(memory, src_mask, tgt[:, :-1]).shape == (16, 7, v)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        logits = model(src, src_mask, tgt[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, v), tgt[:, 1:].reshape(-1), ignore_index=pad)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_bert_mlm_head_is_tied_and_nsp_is_optional():
    cfg = BertConfig(n_layer=1, n_head=2, d_model=16, vocab_size=30, max_positions=8)
    model = BertForMaskedLM(cfg, next_sentence=True)
    assert model.mlm_decoder.weight is model.bert.word_emb.weight
    ids = torch.randint(0, 30, (2, 8))
    logits, nsp = model(ids, None, torch.zeros_like(ids), next_sentence=True)
    assert logits.shape == (2, 8, 30) and nsp.shape == (2, 2)
    with pytest.raises(ValueError, match="next-sentence"):
        BertForMaskedLM(cfg)(ids, None, None, next_sentence=True)


# ---------------------------------------------------------------------------- the MLM task

WORDS = ("the model reads every token and predicts masked words from both sides of the sentence while "
         "attention mixes positions across layers of a deep network trained with gradient descent").split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))) + "." for _ in range(400)]
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("\n\n".join(docs), encoding="utf-8")
    return str(path)


def mlm_cfg(corpus, **kw):
    cfg = compose_conf("task=mlm")["task"]  # every declared key, as a run gets them
    cfg.update({"source": "files", "path": corpus, "cache_dir": None}, **kw)
    return cfg


def test_mlm_masking_is_15_percent_split_80_10_10(corpus):
    task = MaskedLM(mlm_cfg(corpus))
    tok = task.tokenizer
    batch = next(task.train_batches(256, 64, torch.Generator().manual_seed(0)))
    ids, labels = batch["ids"], batch["labels"]
    chosen = labels != IGNORE
    assert (ids[:, 0] == tok.cls_id).all() and (ids[:, -1] == tok.sep_id).all()
    assert not chosen[:, 0].any() and not chosen[:, -1].any()  # specials are never chosen
    share = chosen.float().mean().item() * 64 / 62
    assert 0.13 < share < 0.17
    n = chosen.sum().item()
    masked = ((ids == tok.mask_id) & chosen).sum().item() / n
    kept = ((ids == labels) & chosen).sum().item() / n  # kept, or replaced by the same token at random
    assert 0.77 < masked < 0.83 and 0.09 < kept < 0.13
    assert (ids[~chosen] < tok.base_vocab_size + 4).all() and not (ids[~chosen] == tok.mask_id).any()


def test_mlm_next_sentence_pairs(corpus):
    task = MaskedLM(mlm_cfg(corpus, next_sentence=True))
    assert task.spec(64).num_classes == 2
    batch = next(task.train_batches(512, 64, torch.Generator().manual_seed(0)))
    seps = (batch["ids"] == task.tokenizer.sep_id).sum(1)
    assert (seps == 2).all()
    assert (batch["types"][:, 0] == 0).all() and (batch["types"][:, -1] == 1).all()
    assert 0.4 < batch["nsp"].float().mean().item() < 0.6


def test_mlm_evaluation_is_fixed_and_validation_matches_the_training_objective(corpus):
    task = MaskedLM(mlm_cfg(corpus, next_sentence=True))
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(n_layer=1, n_head=2, d_model=16, vocab_size=task.tokenizer.vocab_size,
                                       max_positions=24), next_sentence=True)
    cpu = torch.device("cpu")
    a, b = task.evaluate(model, cpu, 24), task.evaluate(model, cpu, 24)
    assert a == b and {"mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy"} <= set(a)
    val = task.validation_loss(model, cpu, 24, max_batches=1000)
    r = task._score(model, "validation", cpu, 24, max_examples=32000)
    assert r["nsp_count"] > 0 and val == pytest.approx(r["nll"] / r["count"] + r["nsp_nll"] / r["nsp_count"])
    loss, n = task.loss(model, next(task.train_batches(4, 24, torch.Generator().manual_seed(0))), cpu)
    assert n == 4 * 24 and torch.isfinite(loss)


def test_mlm_pretrain_then_classification_finetune_from_its_checkpoint(corpus, tmp_path, synthetic_classify):
    common = ["arch=bert", "size=tiny", "train.max_steps=6", "train.batch_size=4", "train.seq_len=32",
              "train.eval_every=0", "train.eval_batches=1", "train.progress=false", "report=false",
              f"results_dir={tmp_path}"]
    conf = compose_conf(*common, "task=mlm", "task.source=files", f"task.path={corpus}", "task.next_sentence=true",
                   "checkpoint=true")
    rec = run_one(conf).to_dict()
    assert rec["status"] == "ok" and rec["kind"] == "mlm" and rec["attention_backend"] == "sdpa"  # auto on a CPU
    assert {"mlm_loss", "mlm_accuracy", "nsp_accuracy"} <= set(rec["metrics"])
    path = checkpoints.checkpoint_path(tmp_path, rec["run_key"])
    assert rec["checkpoint"] == str(path) and path.is_file()

    conf = compose_conf(*common, f"init_from={path}")
    conf["task"] = {"name": synthetic_classify.name, "vocab_size": 260}  # the MLM tokenizer's vocabulary
    rec2 = run_one(conf).to_dict()
    assert rec2["status"] == "ok" and rec2["kind"] == "classify"
    info = rec2["init_from"]
    model = BertClassifier(BertConfig(n_layer=2, n_head=2, d_model=128, vocab_size=260, max_positions=512), 2)
    backbone = [n for n in model.state_dict() if n.startswith("bert.")]
    assert info["from_run"] == rec["run_key"] and info["loaded"] == len(backbone)
    assert info["not_in_checkpoint"] == ["classifier.bias", "classifier.weight"]
    assert any(n.startswith("mlm_") for n in info["not_used"]) and "nsp_head.weight" in info["not_used"]
    # the backbone really starts from the checkpoint
    checkpoints.load_into(model, str(path), "bert")
    saved = torch.load(path, weights_only=True)["state_dict"]
    torch.testing.assert_close(model.bert.word_emb.weight, saved["bert.word_emb.weight"])

    with pytest.raises(UserError, match="holds a 'bert' model"):
        checkpoints.check(str(path), "gpt")
    small = BertClassifier(BertConfig(n_layer=2, n_head=2, d_model=64, vocab_size=260, max_positions=32), 2)
    with pytest.raises(UserError, match="shape"):
        checkpoints.load_into(small, str(path), "bert")


# ---------------------------------------------------------------------------- bad input: one line, exit 2

@pytest.mark.parametrize("args,needle", [
    (["attention=flash"], "unknown attention backend 'flash'"),
    (["attention=xformers", "device=cpu"], "attention=xformers cannot run"),
    (["arch.n_head=3"], "n_head=3 does not divide d_model=128"),
    (["arch.norm=batchnorm"], "unknown norm 'batchnorm'"),
    (["init_from=/nonexistent/ckpt.pt"], "does not exist"),
    (["plan=sometimes"], "unknown plan 'sometimes'"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["report=false", f"results_dir={tmp_path}", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_checkpoint_of_another_arch_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "ckpt.pt"
    torch.save({"format": checkpoints.FORMAT, "arch": "gpt", "size": "tiny", "kind": "lm", "task": "lm",
                "run_key": "x", "hparams": {}, "state_dict": {}}, path)
    with pytest.raises(SystemExit) as e:
        main(["report=false", f"results_dir={tmp_path}", "arch=bert", "task=mlm", f"init_from={path}"])
    assert e.value.code == 2 and "holds a 'gpt' model" in capsys.readouterr().err


def test_every_transformer_arch_is_registered_with_its_kinds():
    assert ARCHS["gpt"].kinds == ("lm", "seq2seq", "classify")  # seq2seq/classify as a prefix LM
    assert set(ARCHS["bert"].kinds) == {"mlm", "classify"}
    assert set(ARCHS["transformer"].kinds) == {"seq2seq", "classify"}
    spec = TaskSpec(kind="classify", vocab_size=50, max_seq_len=16, num_classes=4)
    for name in ("bert", "transformer"):
        model = ARCHS[name].build("classify", ARCHS[name].sizes["tiny"], spec)
        assert model(torch.randint(0, 50, (2, 16)), torch.ones(2, 16, dtype=torch.bool)).shape == (2, 4)
