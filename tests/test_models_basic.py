"""GPT and LSTM language models: shapes, FLOP formulas, and learning on a fixed batch."""
import pytest
import torch
import torch.nn.functional as F

from archbench import TaskSpec, build_model

SPEC = TaskSpec(kind="lm", vocab_size=256, max_seq_len=32)


@pytest.mark.parametrize("arch", ["gpt", "lstm"])
def test_output_shape_and_logprobs(arch):
    torch.manual_seed(0)
    model = build_model(arch, "tiny", "lm", SPEC)
    x = torch.randint(0, 256, (3, 32))
    logits = model(x)
    assert logits.shape == (3, 32, 256)
    lp = model.target_logprobs(x, x)
    assert lp.shape == (3, 32) and bool((lp <= 0).all())
    assert torch.allclose(lp, F.log_softmax(logits, -1).gather(-1, x[..., None]).squeeze(-1), atol=1e-5)


@pytest.mark.parametrize("arch", ["gpt", "lstm"])
def test_loss_decreases_on_a_fixed_batch(arch):
    torch.manual_seed(0)
    model = build_model(arch, "tiny", "lm", SPEC)
    x = torch.randint(0, 256, (4, 33))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(x[:, :-1]).reshape(-1, 256), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_gpt_flops_formula():
    model = build_model("gpt", "tiny", "lm", SPEC)
    c = model.cfg
    linear = 12 * c.d_model**2 * c.n_layer + c.d_model * 256  # qkv+proj+2 MLP (4d) per layer, tied head
    assert model.flops_per_token(32) == 6 * linear + 12 * c.n_layer * c.d_model * 32


def test_lstm_flops_formula():
    model = build_model("lstm", "tiny", "lm", SPEC)
    c = model.cfg
    per_layer = 4 * c.d_hidden * (c.d_embed + c.d_hidden)
    assert model.flops_per_token(32) == 6 * (per_layer + c.d_hidden * 256)


def test_gpt_is_causal():
    torch.manual_seed(0)
    model = build_model("gpt", "tiny", "lm", SPEC).eval()
    x = torch.randint(0, 256, (2, 32))
    y = x.clone()
    y[:, 20:] = torch.randint(0, 256, (2, 12))
    assert torch.allclose(model(x)[:, :20], model(y)[:, :20], atol=1e-5)
