"""Activation checkpointing modes of the GPT (archs/layers/checkpointing.py): the config accepts
none | full | selective (true / false as full / none) and nothing else; what a training forward
holds for backward, counted exactly (harness/bench/activations.py), orders full < selective < none,
and selective holds beyond full exactly the matmul and attention outputs its policy names."""
from __future__ import annotations

import pytest
import torch

from archbench import ARCHS
from archbench.errors import UserError
from archs.gpt import GPTConfig
from archs.layers.checkpointing import saves, selective_saved_bytes
from harness.bench.activations import gpt_activation_bytes, held_for_backward

SHAPE = dict(n_layer=3, d_model=32, n_head=2, seq_len=16, batch=2, vocab=23)


@pytest.mark.parametrize("given, mode", [(True, "full"), (False, "none"), (None, "none"), ("none", "none"),
                                         ("full", "full"), ("selective", "selective")])
def test_modes_and_the_old_switch_values(given, mode):
    assert GPTConfig(activation_checkpointing=given).activation_checkpointing == mode
    assert ARCHS["gpt"].hparams("tiny", {"activation_checkpointing": given}).activation_checkpointing == mode


@pytest.mark.parametrize("bad", ["selctive", "FULL", "", 1, 0.5])
def test_anything_else_is_one_line_naming_the_choices(bad):
    with pytest.raises(UserError) as e:
        ARCHS["gpt"].hparams("tiny", {"activation_checkpointing": bad})
    msg = str(e.value)
    assert "\n" not in msg and "activation_checkpointing" in msg
    if isinstance(bad, str):
        assert "valid: none, full, selective" in msg


def test_the_policy_keeps_matmuls_and_attention_and_recomputes_pointwise_ops():
    aten = torch.ops.aten
    kept = [aten.mm.default, aten.addmm.default, aten.bmm.default,
            aten._scaled_dot_product_flash_attention_for_cpu.default,
            aten._scaled_dot_product_efficient_attention.default, aten._scaled_dot_product_flash_attention.default]
    recomputed = [aten.gelu.default, aten.silu.default, aten.native_layer_norm.default, aten.mul.Tensor,
                  aten.add.Tensor, aten._softmax.default, aten.cat.default]
    assert all(saves(f) for f in kept) and not any(saves(f) for f in recomputed)


def test_held_for_backward_counts_what_the_graph_keeps():
    w = torch.randn(8, 8, requires_grad=True)
    x = torch.randn(4, 8)
    # x @ w keeps x and w (neither made here); tanh keeps its output (4 x 8 floats); sum keeps a shape
    assert held_for_backward(lambda: torch.tanh(x @ w).sum()) == 4 * 8 * 4 + 4
    assert held_for_backward(lambda: (x @ w).sum()) == 4  # the product is freed: only the result lives


def test_full_holds_less_than_selective_which_holds_less_than_none():
    held = {m: gpt_activation_bytes(m, SHAPE) for m in ("none", "selective", "full")}
    assert held["full"] < held["selective"] < held["none"]
    # what selective keeps beyond full: each layer's matmul and attention outputs, nothing else
    from archs.gpt import GPT

    cfg = GPTConfig(n_layer=SHAPE["n_layer"], n_head=SHAPE["n_head"], d_model=SHAPE["d_model"],
                    vocab_size=SHAPE["vocab"], block_size=SHAPE["seq_len"], positions="rope")
    pb = GPT(cfg).planning_block()
    inputs = pb.make_inputs(SHAPE["batch"], SHAPE["seq_len"], torch.device("cpu"))
    per_layer = selective_saved_bytes(lambda: pb.module(**inputs))
    assert held["selective"] - held["full"] == SHAPE["n_layer"] * per_layer
