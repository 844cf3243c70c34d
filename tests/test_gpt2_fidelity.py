"""The GPT-2 presets compute GPT-2: with GPT-2's weights copied in, our logits equal Hugging Face's
GPT2LMHeadModel (tanh GELU, learned positions, tied head, pre-norm LayerNorm)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from archs.gpt import GPT, SIZES, GPTConfig

import transformers  # a declared dependency (GPT-2 reference)

SHAPE = dict(n_layer=2, n_head=4, d_model=64, vocab_size=97, block_size=32)


def _hf_from_ours(ours: GPT):
    c = ours.cfg
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.d_model, n_layer=c.n_layer, n_head=c.n_head,
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        layer_norm_epsilon=c.norm_eps, tie_word_embeddings=True, attn_implementation="eager")).eval()
    sd = {"transformer.wte.weight": ours.tok_emb.weight, "transformer.wpe.weight": ours.pos_emb.weight,
          "transformer.ln_f.weight": ours.ln_f.weight, "transformer.ln_f.bias": ours.ln_f.bias}
    for i, b in enumerate(ours.blocks):
        h = f"transformer.h.{i}."
        # HF's Conv1D stores (in, out): the transpose of nn.Linear's weight
        sd |= {h + "ln_1.weight": b.norm_attn.weight, h + "ln_1.bias": b.norm_attn.bias,
               h + "attn.c_attn.weight": b.attn.qkv.weight.T, h + "attn.c_attn.bias": b.attn.qkv.bias,
               h + "attn.c_proj.weight": b.attn.proj.weight.T, h + "attn.c_proj.bias": b.attn.proj.bias,
               h + "ln_2.weight": b.norm_mlp.weight, h + "ln_2.bias": b.norm_mlp.bias,
               h + "mlp.c_fc.weight": b.mlp.fc.weight.T, h + "mlp.c_fc.bias": b.mlp.fc.bias,
               h + "mlp.c_proj.weight": b.mlp.proj.weight.T, h + "mlp.c_proj.bias": b.mlp.proj.bias}
    missing, _ = hf.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=False)
    assert not [k for k in missing if k != "lm_head.weight"], missing  # lm_head is tied to wte
    hf.tie_weights()
    return hf


def test_gpt2_presets_use_the_tanh_gelu():
    assert all(SIZES[s].mlp == "gelu_tanh" for s in ("small", "medium", "large", "xl", "1b"))


@pytest.mark.parametrize("mlp, equal", [("gelu_tanh", True), ("gelu", False)])
def test_logits_equal_gpt2_with_the_same_weights(mlp, equal):
    torch.manual_seed(0)
    cfg = replace(GPTConfig(**SHAPE, mlp=mlp, attention="math"), positions="learned")
    ours = GPT(cfg).eval()
    with torch.no_grad():  # weights large enough that the MLP's inputs are O(1), where the two GELUs
        for p in ours.parameters():  # differ; biases and norms off their 0/1 init so they are checked too
            p.normal_(0.0, 0.15)
    hf = _hf_from_ours(ours)
    idx = torch.randint(0, cfg.vocab_size, (3, cfg.block_size))
    with torch.no_grad():
        diff = (ours(idx) - hf(idx).logits).abs().max().item()
    # fp32 rounding: ~3e-7 here; the erf GELU differs from GPT-2 by ~6e-5 at this shape
    assert (diff < 5e-6) == equal, diff
