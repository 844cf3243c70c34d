"""One training step of a GPT size (7b by default) against HF transformers' LlamaForCausalLM at the
same shape and settings: ``python -m harness.bench.vs_hf --impl ours|hf [--size 7b] [--batch 4]
[--seq-len 2048] [--activation-checkpointing full|selective|none]``. Prints one JSON line: tokens/s, MFU
and peak memory.

Both sides run the step the engine runs: fp32 master weights, bf16 autocast on CUDA, activation
checkpointing of every layer (ours: ``--activation-checkpointing`` picks the mode; HF has full only),
cross-entropy on fp32 logits, gradient clipping and the engine's fused
AdamW, on random tokens of the preset's vocabulary. Both are counted with the same FLOPs per token
(our model's 6N + attention, torchtitan's formula), so MFU compares time alone. Run each side in its
own process: a 7B model and its optimizer leave no room for a second one on the device.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from harness import hardware


def _ours(cfg, device, ac: str = "full"):
    from archs.gpt import GPT

    with torch.device(device):
        return GPT(replace(cfg, activation_checkpointing=ac, attention="sdpa"))


def _hf(cfg, device, ac: str = "full"):
    from transformers import LlamaConfig, LlamaForCausalLM

    hf_cfg = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
                         num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
                         num_key_value_heads=cfg.n_head, max_position_embeddings=cfg.block_size,
                         rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
                         attn_implementation="sdpa", use_cache=False)
    with torch.device(device):
        model = LlamaForCausalLM(hf_cfg)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def bench(impl: str, size: str, batch: int, seq_len: int, steps: int, warmup: int, ac: str = "full") -> dict:
    from archs.gpt import GPT, SIZES
    from harness.config import compose_dict
    from harness.train import make_optimizer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = hardware.compute_dtype(device)
    base = SIZES[size]  # HF's Llama is RMSNorm + SwiGLU + RoPE: the same shape only for Llama-shaped presets (7b)
    cfg = replace(base, block_size=seq_len, vocab_size=base.vocab_size or 32000, d_ff=base.d_ff or 4 * base.d_model)
    with torch.device("meta"):
        fpt = GPT(cfg).flops_per_token(seq_len)  # the same count for both sides
    torch.manual_seed(0)
    model = (_ours if impl == "ours" else _hf)(cfg, device, ac).train()
    tcfg = compose_dict([])["train"]
    opt = make_optimizer(model, tcfg)
    x = torch.randint(0, cfg.vocab_size, (batch, seq_len), device=device)
    y = torch.randint(0, cfg.vocab_size, (batch, seq_len), device=device)
    autocast = hardware.autocast(device, dtype)

    def step():
        with autocast:
            out = model(x)
            logits = out if torch.is_tensor(out) else out.logits
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(tcfg["grad_clip"]))
        opt.step()
        return loss.item()

    for _ in range(warmup):
        step()
    hardware.reset_peak_memory(device)
    hardware.sync(device)
    t0 = time.perf_counter()
    losses = [step() for _ in range(steps)]
    hardware.sync(device)
    dt = (time.perf_counter() - t0) / steps
    peak, peak_source = hardware.peak_flops(device, dtype)
    tps = batch * seq_len / dt
    mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"impl": impl, "size": size, "batch": batch, "seq_len": seq_len, "vocab": cfg.vocab_size,
            "params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
            "flops_per_token": fpt, "step_s": dt, "tokens_per_s": tps, "mfu": tps * fpt / peak if peak else None,
            "peak_flops_source": peak_source, "peak_mem_gib": mem / 2**30 if mem else None,
            "losses": losses, "device": hardware.device_name(device), "torch": torch.__version__,
            "activation_checkpointing": ac,
            "settings": f"fp32 master weights, bf16 autocast, {ac} activation checkpointing, sdpa, fused AdamW"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", choices=("ours", "hf"), required=True)
    ap.add_argument("--size", default="7b")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--activation-checkpointing", dest="ac", default="full", choices=("full", "selective", "none"),
                    help="ours only (HF's Llama has full checkpointing only)")
    a = ap.parse_args(argv)
    if a.impl == "hf" and a.ac != "full":
        ap.error("--activation-checkpointing: HF's LlamaForCausalLM has full checkpointing only")
    print(json.dumps(bench(a.impl, a.size, a.batch, a.seq_len, a.steps, a.warmup, a.ac)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
