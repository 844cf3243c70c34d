"""The encoder-decoder Transformer (Vaswani et al. 2017): sinusoidal positions, embeddings scaled
by sqrt(d), a bidirectional encoder, a causal decoder with cross-attention, one vocabulary shared by
source and target with optional shared/tied embedding tables (Press & Wolf 2017).

Kinds: seq2seq (archbench/model.py: encode / decode / forward) and classify, where the encoder
alone reads the input and a linear layer scores the mean of its real (non-padding) positions.

``norm_first`` defaults to pre-norm (fairseq's ``--encoder-normalize-before``, tensor2tensor v2),
which trains at the harness's learning rates without a long warmup; ``norm_first=false`` is the
paper's post-norm. Pre-norm adds one final LayerNorm per stack (4 * d parameters). With the
paper's 37,000-token shared vocabulary the base and big presets count 63.1M and 214.2M parameters
(paper: 65M and 213M).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from archbench import Recipe, TaskSpec, register_arch
from archbench.errors import UserError
from archbench.model import NeuralModel, PlanningBlock, matmul_params
from archs.layers.attention import KVCache
from archs.layers.blocks import TransformerLayer, attention_flops_per_token, sinusoidal_positions


@dataclass(frozen=True)
class TransformerConfig:
    n_encoder_layer: int = 2
    n_decoder_layer: int = 2
    n_head: int = 4
    d_model: int = 128
    d_ff: int | None = None  # None -> 4 * d_model
    vocab_size: int | None = None  # shared source/target vocabulary; None -> the task tokenizer's
    dropout: float = 0.0
    norm_first: bool = True
    norm_eps: float = 1e-5
    share_embeddings: bool = True  # one table for source and target tokens
    tie_output: bool = True  # the decoder's output projection is its input embedding, transposed
    attention: str = "sdpa"  # set per run from the top-level `attention` key (harness/run.py)

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise UserError(f"transformer: n_head={self.n_head} does not divide d_model={self.d_model}; "
                            "pick n_head among the divisors of d_model")


SIZES = {
    "tiny": TransformerConfig(n_encoder_layer=2, n_decoder_layer=2, n_head=4, d_model=128),
    "base": TransformerConfig(n_encoder_layer=6, n_decoder_layer=6, n_head=8, d_model=512, d_ff=2048,
                              dropout=0.1),   # Vaswani base: 65M in the paper
    "big": TransformerConfig(n_encoder_layer=6, n_decoder_layer=6, n_head=16, d_model=1024, d_ff=4096,
                             dropout=0.3),    # Vaswani big: 213M in the paper
}

# Training recipes. Vaswani et al. (2017) section 5.3: Adam betas (0.9, 0.98), warmup 4,000 steps then
# lr ~ step^-0.5 (inverse_sqrt), peak d_model^-0.5 x 4000^-0.5 (7.0e-4 base, 4.9e-4 big), no weight
# decay, batches of ~25k source + ~25k target tokens (recorded, not run: no gradient accumulation
# here); they state no gradient clipping (the engine's 1.0 applies). tiny: the same schedule at a
# CPU scale (lr 3e-3, warmup 100), not tuned.
_VASWANI = dict(schedule="inverse_sqrt", warmup_steps=4000, weight_decay=0.0, betas=(0.9, 0.98),
                published_batch_tokens=50_000)
RECIPES = {
    "tiny": Recipe(source="Vaswani et al. 2017 schedule at CPU scale (lr 3e-3, warmup 100; untuned)", lr=3e-3,
                   schedule="inverse_sqrt", warmup_steps=100, weight_decay=0.0, betas=(0.9, 0.98)),
    "base": Recipe(source="Transformer base (Vaswani et al. 2017, section 5.3)", lr=7.0e-4, **_VASWANI),
    "big": Recipe(source="Transformer big (Vaswani et al. 2017, section 5.3)", lr=4.9e-4, **_VASWANI),
}


class TransformerEncoder(nn.Module):
    """Token embedding (scaled by sqrt d) + sinusoidal positions + bidirectional layers."""

    def __init__(self, cfg: TransformerConfig, embed: nn.Embedding):
        super().__init__()
        self.cfg, self.embed = cfg, embed
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(_layer(cfg, cross=False) for _ in range(cfg.n_encoder_layer))
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps) if cfg.norm_first else None

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor | None) -> torch.Tensor:
        x = _embed(self.embed, src, self.cfg.d_model, self.drop)
        for layer in self.layers:
            x = layer(x, key_padding_mask=src_mask)
        return self.norm(x) if self.norm is not None else x


def _layer(cfg: TransformerConfig, cross: bool) -> TransformerLayer:
    return TransformerLayer(cfg.d_model, cfg.n_head, cfg.d_ff or 4 * cfg.d_model, norm="layernorm", mlp="gelu",
                            bias=True, dropout=cfg.dropout, norm_eps=cfg.norm_eps, norm_first=cfg.norm_first,
                            cross_attention=cross, backend=cfg.attention)


def _embed(embed: nn.Embedding, ids: torch.Tensor, d_model: int, drop: nn.Module, start: int = 0) -> torch.Tensor:
    """Scaled embeddings plus the sinusoidal positions start .. start + T - 1."""
    x = embed(ids) * math.sqrt(d_model)
    pe = sinusoidal_positions(start + ids.shape[1], d_model, device=ids.device, dtype=x.dtype)[start:]
    return drop(x + pe)


def _init(model: nn.Module, d_model: int) -> None:
    """fairseq's Transformer init: Xavier-uniform matrices, zero biases, N(0, d^-1/2) embeddings."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=d_model ** -0.5)


class EncoderDecoderTransformer(NeuralModel):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        src_embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        tgt_embed = src_embed if cfg.share_embeddings else nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.encoder = TransformerEncoder(cfg, src_embed)
        self.tgt_embed = tgt_embed
        self.drop = nn.Dropout(cfg.dropout)
        self.decoder_layers = nn.ModuleList(_layer(cfg, cross=True) for _ in range(cfg.n_decoder_layer))
        self.decoder_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps) if cfg.norm_first else None
        self.out_proj = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        _init(self, cfg.d_model)
        if cfg.tie_output:
            self.out_proj.weight = self.tgt_embed.weight

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None) -> torch.Tensor:
        return self.encoder(src, src_mask)

    def decode(self, memory: torch.Tensor, src_mask: torch.Tensor | None, tgt_in: torch.Tensor,
               cache: KVCache | None = None) -> torch.Tensor:
        """Teacher-forced next-token logits (B, T, V); causal over ``tgt_in`` (right padding needs no
        mask). With a cache (``decode_step``), ``tgt_in`` holds the tokens after the cached ones."""
        start = cache.pos if cache is not None else 0
        x = _embed(self.tgt_embed, tgt_in, self.cfg.d_model, self.drop, start)
        for i, layer in enumerate(self.decoder_layers):
            x = layer(x, causal=True, memory=memory, memory_mask=src_mask, cache=cache, layer=i)
        if cache is not None:
            cache.advance(tgt_in.shape[1])
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        return self.out_proj(x)

    incremental = True  # decoder self-attention keys and values in a KV cache

    def start_decoding(self, memory: torch.Tensor, src_mask, max_steps: int) -> KVCache:
        c = self.cfg
        return KVCache(c.n_decoder_layer, memory.shape[0], c.n_head, max_steps, c.d_model // c.n_head,
                       dtype=memory.dtype, device=memory.device)

    def decode_step(self, memory, src_mask, cache: KVCache, tokens: torch.Tensor):
        """(next-token logits (B, V) after ``tokens`` (B, 1), the cache with them appended)."""
        return self.decode(memory, src_mask, tokens, cache)[:, -1], cache

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor | None, tgt_in: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(src, src_mask), src_mask, tgt_in)

    def pair_flops(self, src_len, tgt_len):
        """Training FLOPs of one pair of s source and t target tokens (archbench.model's seq2seq
        convention): 6 x weights per token for every matrix -- the encoder's and the decoder's
        cross-attention key/value projection per source token, the rest of the decoder and the
        output layer per target token -- plus 12 d per query-key pair: encoder s x s, decoder
        self-attention t x t and cross-attention t x s in every layer. Equal to
        torch.utils.flop_counter.FlopCounterMode's count (tests/test_flop_counter.py)."""
        c = self.cfg
        per_source = matmul_params(self.encoder) + sum(layer.cross.kv.weight.numel() for layer in self.decoder_layers)
        per_target = matmul_params(self) - per_source
        attention = 12 * c.d_model * (c.n_encoder_layer * src_len * src_len
                                      + c.n_decoder_layer * tgt_len * (tgt_len + src_len))
        return 6 * (per_source * src_len + per_target * tgt_len) + attention

    def flops_per_token(self, seq_len: int) -> int:
        """Per token read when source and target are both ``seq_len`` long (planning, before the data
        is known); a run counts its batches' real lengths with ``pair_flops``."""
        return int(self.pair_flops(seq_len, seq_len)) // (2 * seq_len)

    def planning_block(self) -> PlanningBlock:
        c, layer = self.cfg, self.decoder_layers[0]

        def make_inputs(batch: int, seq_len: int, device) -> dict:
            x = torch.randn(batch, seq_len, c.d_model, device=device, requires_grad=True)
            memory = torch.randn(batch, seq_len, c.d_model, device=device, requires_grad=True)
            return {"x": x, "causal": True, "memory": memory}

        return PlanningBlock(layer, c.n_decoder_layer, make_inputs,
                             lambda t: 6 * matmul_params(layer) + attention_flops_per_token(2, c.d_model, t))


class TransformerClassifier(NeuralModel):
    """The encoder of the encoder-decoder Transformer plus a linear layer over the mean of its real positions."""

    def __init__(self, cfg: TransformerConfig, num_classes: int):
        super().__init__()
        self.cfg = cfg
        self.encoder = TransformerEncoder(cfg, nn.Embedding(cfg.vocab_size, cfg.d_model))
        self.classifier = nn.Linear(cfg.d_model, num_classes)
        _init(self, cfg.d_model)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.encoder(ids, mask)
        if mask is None:
            return self.classifier(h.mean(dim=1))
        m = mask.to(h.dtype).unsqueeze(-1)
        return self.classifier((h * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0))

    def flops_per_token(self, seq_len: int) -> int:
        """6 * N_matmul(encoder) + 6 * N(classifier) / T + 12 * L_enc * d * T."""
        c = self.cfg
        return (6 * matmul_params(self.encoder) + (6 * matmul_params(self.classifier)) // seq_len
                + attention_flops_per_token(c.n_encoder_layer, c.d_model, seq_len))

    def planning_block(self) -> PlanningBlock:
        c, layer = self.cfg, self.encoder.layers[0]

        def make_inputs(batch: int, seq_len: int, device) -> dict:
            return {"x": torch.randn(batch, seq_len, c.d_model, device=device, requires_grad=True)}

        return PlanningBlock(layer, c.n_encoder_layer, make_inputs,
                             lambda t: 6 * matmul_params(layer) + attention_flops_per_token(1, c.d_model, t))


@register_arch("transformer", kinds=("seq2seq", "classify"), sizes=SIZES, recipes=RECIPES,
               unsupported={"lm": "encoder-decoder; use arch=gpt for language modeling",
                            "mlm": "use arch=bert for masked-LM pretraining"})
def build(kind: str, hp: TransformerConfig, task: TaskSpec) -> NeuralModel:
    hp = replace(hp, vocab_size=task.vocab_size)
    if kind == "seq2seq":
        return EncoderDecoderTransformer(hp)
    if not task.num_classes:
        raise ValueError("a classify task must give num_classes in its TaskSpec")
    return TransformerClassifier(hp, task.num_classes)
