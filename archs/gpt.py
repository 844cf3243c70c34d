"""GPT: a decoder-only Transformer, read top to bottom (nanoGPT's shape), from GPT-2 small to the
Llama-2-7B shape on one set of switches: norm (LayerNorm / RMSNorm), MLP (GELU / SwiGLU), positions
(learned / RoPE), tied or untied embeddings. Attention goes through archs/attention.py, so every
backend (math / sdpa / xformers) serves the same model; a KV cache serves generation.

The vocabulary and context length of a run come from its task (the tokenizer and train.seq_len);
the presets' own values describe the published model and are what the parameter-count tests build.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from archbench import Recipe, TaskSpec, register_arch
from archbench.recipe import tuned
from archbench.errors import UserError
from archbench.model import NeuralLM, PlanningBlock, matmul_params
from archs.layers.attention import KVCache, RotaryEmbedding
from archs.layers.checkpointing import mode_of, run_layer
from archs.layers.fused_ce import linear_cross_entropy
from archs.layers.blocks import MLPS, NORMS, TransformerLayer, attention_flops_per_token, init_gpt2_style, make_norm
from archs.layers.prefix_lm import build_prefix_lm

POSITIONS = ("learned", "rope")


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 128
    d_ff: int | None = None  # None -> 4 * d_model
    vocab_size: int | None = None  # None -> the task tokenizer's vocabulary
    block_size: int | None = None  # None -> the task's context length
    dropout: float = 0.0
    bias: bool = True
    norm: str = "layernorm"  # layernorm | rmsnorm
    norm_eps: float = 1e-5
    mlp: str = "gelu"  # gelu | gelu_tanh | swiglu
    positions: str = "learned"  # learned | rope
    rope_base: float = 10000.0
    tie_embeddings: bool = True
    # none | full | selective (archs/layers/checkpointing.py); true / false mean full / none
    activation_checkpointing: bool | str = "none"
    attention: str = "sdpa"  # set per run from the top-level `attention` key (harness/run.py)

    def __post_init__(self):
        object.__setattr__(self, "activation_checkpointing", mode_of(self.activation_checkpointing, "gpt"))
        if self.d_model % self.n_head:
            raise UserError(f"gpt: n_head={self.n_head} does not divide d_model={self.d_model}; "
                            "pick n_head among the divisors of d_model")
        for key, value, valid in (("norm", self.norm, NORMS), ("mlp", self.mlp, MLPS),
                                  ("positions", self.positions, POSITIONS)):
            if value not in valid:
                raise UserError(f"gpt: unknown {key} '{value}'; valid: {', '.join(valid)}")
        if self.positions == "rope" and (self.d_model // self.n_head) % 2:
            raise UserError(f"gpt: positions=rope needs an even head dim, got d_model/n_head = "
                            f"{self.d_model // self.n_head}")


# GPT-2 (Radford et al. 2019): LayerNorm, GELU in its tanh approximation (as GPT-2's code), learned
# positions, tied embeddings; GPT-3 uses the same block
_GPT2 = dict(vocab_size=50257, block_size=1024, mlp="gelu_tanh")
_LLAMA = dict(norm="rmsnorm", mlp="swiglu", positions="rope", bias=False, tie_embeddings=False)

# The CPU ladder (tiny, s1..s5) uses rotary positions: with learned absolute positions every position
# embedding is trained only by the tokens at that position (batch_size samples a step, whatever the
# context length), and a previous-token pattern has to be learned for each absolute position apart.
# Measured on the builtin corpus (GPT s3, lr 6e-3, 600 steps): learned positions gave 2.79 bits/byte
# at 32 x 64 and 3.84 at 8 x 256 (the same tokens); RoPE gave 2.49 and 2.60, its loss still falling
# with position up to 256. The published presets keep their published positions.
_CPU = dict(positions="rope")

SIZES = {
    "tiny": GPTConfig(n_layer=2, n_head=4, d_model=128, **_CPU),
    # a CPU-scale ladder for scaling studies (study=scaling): ~12k .. ~790k non-embedding parameters
    "s1": GPTConfig(n_layer=1, n_head=2, d_model=32, **_CPU),
    "s2": GPTConfig(n_layer=2, n_head=2, d_model=48, **_CPU),
    "s3": GPTConfig(n_layer=2, n_head=4, d_model=64, **_CPU),
    "s4": GPTConfig(n_layer=3, n_head=4, d_model=96, **_CPU),
    "s5": GPTConfig(n_layer=4, n_head=4, d_model=128, **_CPU),
    "small": GPTConfig(n_layer=12, n_head=12, d_model=768, **_GPT2),    # GPT-2 124M: 124,439,808 params
    "medium": GPTConfig(n_layer=24, n_head=16, d_model=1024, **_GPT2),  # GPT-2 350M
    "large": GPTConfig(n_layer=36, n_head=20, d_model=1280, **_GPT2),   # GPT-2 774M
    "xl": GPTConfig(n_layer=48, n_head=25, d_model=1600, **_GPT2),      # GPT-2 1.5B
    "1b": GPTConfig(n_layer=24, n_head=16, d_model=2048, vocab_size=50257, block_size=2048, mlp="gelu_tanh"),  # GPT-3 XL 1.3B
    "7b": GPTConfig(n_layer=32, n_head=32, d_model=4096, d_ff=11008, vocab_size=32000, block_size=4096,
                    **_LLAMA),                                           # Llama-2-7B: 6,738,415,616 params
}

# Training recipes, one per size. GPT-3 (Brown et al. 2020, Table 2.1 and appendix B): Adam betas
# (0.9, 0.95), grad clip 1.0, weight decay 0.1, cosine decay to 10%, linear warmup over the first 375M
# tokens (750 steps at 0.5M-token batches, 375 at 1M); the learning rate by size. Llama-2 (Touvron
# et al. 2023, section 2.2): lr 3e-4, the same betas, clip and decay, 2,000 warmup steps, 4M-token
# batches. The published batches (0.5M-4M tokens) need gradient accumulation this engine does not do;
# the recipe keeps the engine's batch and records the published one.
_GPT3 = dict(schedule="cosine", min_lr_ratio=0.1, weight_decay=0.1, betas=(0.9, 0.95), grad_clip=1.0)
# The CPU ladder: each size tuned by the harness itself, `study=tune` on the builtin corpus (byte tokens,
# 32 x 64-token batches, 200 steps = 409,600 tokens, warmup 100, cosine; lr grid 3e-3 .. 4.8e-2 in x2
# steps; picked by final validation loss, never at the grid's edge). Validation loss by lr (3e-3, 6e-3,
# 1.2e-2, 2.4e-2, 4.8e-2):  s1 2.768 2.632 2.585 2.563 2.608 | s2 2.551 2.427 2.352 2.366 2.355 |
# s3 2.451 2.359 2.263 2.295 2.635 | s4 2.285 2.233 2.164 2.316 2.833 | s5 2.204 2.160 2.219 2.419 2.847 |
# tiny 2.211 2.170 2.186 2.342 2.598 -- the smaller the model, the larger its best lr. tiny's 6e-3 also won
# a longer check by hand (700 steps: test bits/byte 2.257 at 6e-3, 2.283 at 1e-2).
_CPU_TUNED = {"tiny": (6e-3, 2.1697), "s1": (2.4e-2, 2.5632), "s2": (1.2e-2, 2.3517), "s3": (1.2e-2, 2.2629),
              "s4": (1.2e-2, 2.1643), "s5": (6e-3, 2.1596)}

RECIPES = {
    **{size: tuned("builtin lm (200 steps of 32 x 64 tokens, lr grid 3e-3..4.8e-2)", lr, val, warmup_steps=100,
                   batch_size=32, seq_len=64, **_GPT3) for size, (lr, val) in _CPU_TUNED.items()},
    "small": Recipe(source="GPT-3 Small (Brown et al. 2020, Table 2.1)", lr=6.0e-4, warmup_steps=750,
                    published_batch_tokens=524_288, **_GPT3),
    "medium": Recipe(source="GPT-3 Medium (Brown et al. 2020, Table 2.1)", lr=3.0e-4, warmup_steps=750,
                     published_batch_tokens=524_288, **_GPT3),
    "large": Recipe(source="GPT-3 Large (Brown et al. 2020, Table 2.1)", lr=2.5e-4, warmup_steps=750,
                    published_batch_tokens=524_288, **_GPT3),
    "xl": Recipe(source="GPT-3 XL (Brown et al. 2020, Table 2.1)", lr=2.0e-4, warmup_steps=375,
                 published_batch_tokens=1_048_576, **_GPT3),
    "1b": Recipe(source="GPT-3 XL (Brown et al. 2020, Table 2.1)", lr=2.0e-4, warmup_steps=375,
                 published_batch_tokens=1_048_576, **_GPT3),
    "7b": Recipe(source="Llama-2-7B (Touvron et al. 2023, section 2.2)", lr=3.0e-4, warmup_steps=2000,
                 published_batch_tokens=4_194_304, **_GPT3),
}


class GPT(NeuralLM):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        d_ff = cfg.d_ff or 4 * cfg.d_model
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.d_model) if cfg.positions == "learned" else None
        self.rope = (RotaryEmbedding(cfg.d_model // cfg.n_head, cfg.block_size, cfg.rope_base)
                     if cfg.positions == "rope" else None)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            TransformerLayer(cfg.d_model, cfg.n_head, d_ff, norm=cfg.norm, mlp=cfg.mlp, bias=cfg.bias,
                             dropout=cfg.dropout, norm_eps=cfg.norm_eps, norm_first=True, backend=cfg.attention)
            for _ in range(cfg.n_layer))
        self.ln_f = make_norm(cfg.norm, cfg.d_model, bias=cfg.bias, eps=cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        init_gpt2_style(self, cfg.n_layer)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight

    fused_lm_loss = True  # forward(idx, targets=y) is the training loss, head and cross-entropy fused

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None,
                targets: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits (B, T, V). With a cache, ``idx`` holds the T tokens after the cached ones.
        With ``targets`` (B, T): the mean next-token cross-entropy instead, the LM head fused with it
        and taken in row chunks (archs/layers/fused_ce.py) so the logits are never formed. Inside
        forward, so a sharded (FSDP) model has its head gathered while the loss uses it."""
        hidden = self._hidden(idx, cache)
        if targets is not None:
            return linear_cross_entropy(hidden, self.lm_head.weight, targets)
        return self.lm_head(hidden)

    def forward_rows(self, idx: torch.Tensor, cache: KVCache, positions: torch.Tensor,
                     key_mask: torch.Tensor, logits: bool = True) -> torch.Tensor | None:
        """Logits (B, T, V) of ``idx`` written at the cache's next T slots, where rows differ in
        length: ``positions`` (B, T) are each token's position in its own row, ``key_mask`` (B,
        cache.pos + T) says which slots hold real tokens (a batch of right-padded prompts in one
        cache: their padding slots are never attended to). ``logits=False`` only fills the cache."""
        h = self._hidden(idx, cache, positions, key_mask)
        return self.lm_head(h) if logits else None

    def _hidden(self, idx: torch.Tensor, cache: KVCache | None, positions: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        t = idx.shape[1]
        start = cache.pos if cache is not None else 0
        if start + t > self.cfg.block_size:
            raise ValueError(f"{start + t} positions exceed block_size {self.cfg.block_size}")
        x = self.tok_emb(idx)
        if positions is None:
            positions = torch.arange(start, start + t, device=idx.device)
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions)
        rope = None
        if self.rope is not None:  # per-row positions: (B, 1, T, D) tables broadcast over heads
            rope = (self.rope(start, t) if positions.dim() == 1 else
                    (self.rope.cos[positions][:, None], self.rope.sin[positions][:, None]))
        x = self.drop(x)
        recompute = self.cfg.activation_checkpointing if self.training and cache is None else "none"
        for i, block in enumerate(self.blocks):
            if recompute != "none":
                x = run_layer(recompute, block, x, causal=True, rope=rope)
            else:
                x = block(x, causal=True, key_padding_mask=key_mask, rope=rope, cache=cache, layer=i)
        if cache is not None:
            cache.advance(t)
        return self.ln_f(x)

    @property
    def checkpointing(self) -> str:
        """none | full | selective: what harness/planner.py counts as kept for backward."""
        return self.cfg.activation_checkpointing

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        c = self.cfg
        p = self.tok_emb.weight
        return KVCache(c.n_layer, batch, c.n_head, max_len or c.block_size, c.d_model // c.n_head,
                       dtype=p.dtype, device=p.device)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None,
                 use_cache: bool = True) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens (greedy when temperature == 0) to ``idx`` (B, T)."""
        total = idx.shape[1] + max_new_tokens
        if total > self.cfg.block_size:
            raise ValueError(f"prompt + new tokens = {total} exceed block_size {self.cfg.block_size}")
        cache = self.new_cache(idx.shape[0], total) if use_cache else None
        out, step_in = idx, idx
        for _ in range(max_new_tokens):
            logits = self(step_in if use_cache else out, cache=cache)[:, -1, :].float()
            if temperature == 0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
            out = torch.cat([out, nxt], dim=1)
            step_in = nxt
        return out

    def flops_per_token(self, seq_len: int) -> int:
        """6 * N_matmul + 12 * L * d * T (PaLM appendix B; torchtitan): N_matmul counts every Linear
        weight once, the LM head included (tied or not); embedding lookups are not matmuls."""
        c = self.cfg
        return 6 * matmul_params(self) + attention_flops_per_token(c.n_layer, c.d_model, seq_len)

    def planning_block(self) -> PlanningBlock:
        c = self.cfg
        block = self.blocks[0]

        def make_inputs(batch: int, seq_len: int, device) -> dict:
            x = torch.randn(batch, seq_len, c.d_model, device=device, requires_grad=True)
            rope = (RotaryEmbedding(c.d_model // c.n_head, seq_len, c.rope_base).to(device)(0, seq_len)
                    if c.positions == "rope" else None)
            return {"x": x, "causal": True, "rope": rope}

        return PlanningBlock(block, c.n_layer, make_inputs,
                             lambda t: 6 * matmul_params(block) + attention_flops_per_token(1, c.d_model, t))


@register_arch("gpt", kinds=("lm", "seq2seq", "classify"), sizes=SIZES, recipes=RECIPES,
               unsupported={"mlm": "causal; masked-LM pretraining needs a bidirectional encoder (arch=bert)"})
def build(kind: str, hp: GPTConfig, task: TaskSpec):
    """lm: the GPT itself; seq2seq and classify: the same GPT as a prefix LM (archs/prefix_lm.py)."""
    def make(spec: TaskSpec) -> GPT:
        return GPT(replace(hp, vocab_size=spec.vocab_size, block_size=spec.max_seq_len))

    return make(task) if kind == "lm" else build_prefix_lm(kind, task, make)
