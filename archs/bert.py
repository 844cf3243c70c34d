"""BERT (Devlin et al. 2019): a bidirectional post-norm Transformer encoder with word, position and
token-type embeddings and a tanh pooler over the first ([CLS]) position.

Two heads on one backbone (``self.bert``), so a classifier can start from the weights a masked-LM
run saved (the engine's ``init_from`` loads every tensor whose name and shape match):
  mlm       tied-decoder masked-LM head (dense + GELU + LayerNorm, then the word embeddings
            transposed plus a bias) and, when the task trains sentence pairs, a next-sentence head.
  classify  dropout + linear over the pooled [CLS] vector.

The vocabulary and position count of a run come from its task; the presets' values describe the
published models (base: 109,482,240 backbone parameters, large: 335,141,888).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from archbench import Recipe, TaskSpec, register_arch
from archbench.errors import UserError
from archbench.model import NeuralModel, PlanningBlock, matmul_params
from archs.layers.blocks import TransformerLayer, attention_flops_per_token


@dataclass(frozen=True)
class BertConfig:
    n_layer: int = 2
    n_head: int = 2
    d_model: int = 128
    d_ff: int | None = None  # None -> 4 * d_model
    vocab_size: int | None = None  # None -> the task tokenizer's vocabulary
    max_positions: int | None = None  # learned positions; None -> the task's context length (fixed
    # per preset, 512 as published, so a pretrained model fine-tunes on a task of another length)
    type_vocab_size: int = 2
    dropout: float = 0.0  # hidden and attention-probability dropout
    norm_eps: float = 1e-12
    attention: str = "sdpa"  # set per run from the top-level `attention` key (harness/run.py)

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise UserError(f"bert: n_head={self.n_head} does not divide d_model={self.d_model}; "
                            "pick n_head among the divisors of d_model")


_PUBLISHED = dict(vocab_size=30522, max_positions=512, dropout=0.1)

SIZES = {
    "tiny": BertConfig(n_layer=2, n_head=2, d_model=128, max_positions=512),  # BERT-Tiny (Turc et al. 2019)
    "base": BertConfig(n_layer=12, n_head=12, d_model=768, **_PUBLISHED),     # 109,482,240 (no MLM head)
    "large": BertConfig(n_layer=24, n_head=16, d_model=1024, **_PUBLISHED),   # 335,141,888 (no MLM head)
}

# Training recipes. BERT (Devlin et al. 2019, appendix A.2): Adam lr 1e-4, betas (0.9, 0.999), weight
# decay 0.01, 10,000 warmup steps then linear decay (cosine here, to 0), 256 sequences of 512 tokens
# (128 for 90% of the steps); clip 1.0 as in the released code. tiny: CPU scale, not tuned.
_BERT = dict(lr=1e-4, schedule="cosine", min_lr_ratio=0.0, warmup_steps=10_000, weight_decay=0.01,
             betas=(0.9, 0.999), grad_clip=1.0, published_batch_tokens=131_072)
RECIPES = {
    "tiny": Recipe(source="BERT's optimizer at CPU scale (lr 1e-3, warmup 100; untuned)", lr=1e-3,
                   schedule="cosine", warmup_steps=100, weight_decay=0.01, betas=(0.9, 0.999), grad_clip=1.0),
    "base": Recipe(source="BERT-base (Devlin et al. 2019, appendix A.2)", **_BERT),
    "large": Recipe(source="BERT-large (Devlin et al. 2019, appendix A.2)", **_BERT),
}


class BertBackbone(nn.Module):
    """Embeddings + post-norm encoder layers + pooler; exactly the parameters of the published counts.
    ``pooler=False`` (MLM without next-sentence prediction) leaves out the pooler nothing would read,
    so it is neither counted in params nor in FLOPs."""

    def __init__(self, cfg: BertConfig, pooler: bool = True):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.word_emb = nn.Embedding(cfg.vocab_size, d)
        self.pos_emb = nn.Embedding(cfg.max_positions, d)
        self.type_emb = nn.Embedding(cfg.type_vocab_size, d)
        self.emb_norm = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(d, cfg.n_head, cfg.d_ff or 4 * d, norm="layernorm", mlp="gelu", bias=True,
                             dropout=cfg.dropout, norm_eps=cfg.norm_eps, norm_first=False, backend=cfg.attention)
            for _ in range(cfg.n_layer))
        self.pooler = nn.Linear(d, d) if pooler else None

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden states (B, T, d), pooled [CLS] vector (B, d), or None without a pooler)."""
        t = ids.shape[1]
        if t > self.cfg.max_positions:
            raise ValueError(f"sequence of {t} tokens exceeds max_positions {self.cfg.max_positions}")
        types = token_type_ids if token_type_ids is not None else torch.zeros_like(ids)
        x = self.word_emb(ids) + self.pos_emb(torch.arange(t, device=ids.device)) + self.type_emb(types)
        x = self.drop(self.emb_norm(x))
        for layer in self.layers:
            x = layer(x, key_padding_mask=mask)
        return x, (torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None)


class _Bert(NeuralModel):
    def _init(self):
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def _per_sequence_modules(self) -> list[nn.Module]:
        """Heads applied once per sequence (pooler, classifier, NSP), not once per token."""
        return [self.bert.pooler]

    def flops_per_token(self, seq_len: int) -> int:
        """6 * N_matmul(per token) + 6 * N_matmul(per sequence) / T + 12 * L * d * T."""
        per_seq = sum(matmul_params(m) for m in self._per_sequence_modules())
        per_token = matmul_params(self) - per_seq
        c = self.bert.cfg
        return 6 * per_token + (6 * per_seq) // seq_len + attention_flops_per_token(c.n_layer, c.d_model, seq_len)

    def planning_block(self) -> PlanningBlock:
        c, layer = self.bert.cfg, self.bert.layers[0]

        def make_inputs(batch: int, seq_len: int, device) -> dict:
            return {"x": torch.randn(batch, seq_len, c.d_model, device=device, requires_grad=True)}

        return PlanningBlock(layer, c.n_layer, make_inputs,
                             lambda t: 6 * matmul_params(layer) + attention_flops_per_token(1, c.d_model, t))


class BertForMaskedLM(_Bert):
    def __init__(self, cfg: BertConfig, next_sentence: bool = False):
        super().__init__()
        d = cfg.d_model
        self.bert = BertBackbone(cfg, pooler=next_sentence)
        self.mlm_transform = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d, eps=cfg.norm_eps))
        self.mlm_decoder = nn.Linear(d, cfg.vocab_size)
        self.nsp_head = nn.Linear(d, 2) if next_sentence else None
        self._init()
        self.mlm_decoder.weight = self.bert.word_emb.weight

    def _per_sequence_modules(self):
        return [self.bert.pooler, self.nsp_head] if self.nsp_head is not None else []

    def forward(self, ids, mask=None, token_type_ids=None, next_sentence: bool = False):
        hidden, pooled = self.bert(ids, mask, token_type_ids)
        logits = self.mlm_decoder(self.mlm_transform(hidden))
        if not next_sentence:
            return logits
        if self.nsp_head is None:
            raise ValueError("this model was built without a next-sentence head (TaskSpec.num_classes != 2)")
        return logits, self.nsp_head(pooled)


class BertClassifier(_Bert):
    def __init__(self, cfg: BertConfig, num_classes: int):
        super().__init__()
        self.bert = BertBackbone(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.d_model, num_classes)
        self._init()

    def _per_sequence_modules(self):
        return [self.bert.pooler, self.classifier]

    def forward(self, ids, mask=None, token_type_ids=None):
        _, pooled = self.bert(ids, mask, token_type_ids)
        return self.classifier(self.drop(pooled))


@register_arch("bert", kinds=("mlm", "classify"), sizes=SIZES, recipes=RECIPES,
               unsupported={"lm": "bidirectional: it would see the next token; use arch=gpt",
                            "seq2seq": "encoder-only; use arch=transformer"})
def build(kind: str, hp: BertConfig, task: TaskSpec) -> _Bert:
    if hp.max_positions is not None and task.max_seq_len > hp.max_positions:
        raise UserError(f"bert: the task's examples are up to {task.max_seq_len} tokens but arch.max_positions is "
                        f"{hp.max_positions}; raise arch.max_positions or shorten train.seq_len / the task's texts")
    hp = replace(hp, vocab_size=task.vocab_size, max_positions=hp.max_positions or task.max_seq_len)
    if kind == "mlm":
        return BertForMaskedLM(hp, next_sentence=task.num_classes == 2)
    if not task.num_classes:
        raise ValueError("a classify task must give num_classes in its TaskSpec")
    return BertClassifier(hp, task.num_classes)

