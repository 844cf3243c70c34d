"""Hugging Face models as compared architectures (``arch=hf size=local arch.path=<model folder>``).

Any local transformers model folder (or a folder holding only its config.json, for a model trained
from scratch) becomes an arch of the harness: a causal LM for ``lm``, an encoder-decoder for
``seq2seq``, a sequence classifier for ``classify``. It trains through the one training loop or,
with ``train.mode=eval``, is evaluated as it is. Pair it with its own tokenizer
(``task.tokenizer=pretrained task.tokenizer_path=<the same folder>``). Offline: local files only.

On the meta device (the memory planner) the model is built from its config alone, so planning
never reads the weights. FLOPs per token: 6 x non-embedding parameters + 12 x layers x width x
seq_len (the attention scores), the convention of the other archs here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from archbench import NeuralLM, NeuralModel, TaskSpec, register_arch
from archbench.errors import UserError


@dataclass(frozen=True)
class HFConfig:
    path: str | None = None  # a local model folder (config.json, with or without weights)
    from_scratch: bool = False  # build from config.json with fresh weights instead of loading them


SIZES = {"local": HFConfig()}
_AUTO = {"lm": "AutoModelForCausalLM", "seq2seq": "AutoModelForSeq2SeqLM", "classify": "AutoModelForSequenceClassification"}


def _load(kind: str, hp: HFConfig, task: TaskSpec):
    import transformers

    if not hp.path:
        raise UserError("arch=hf needs arch.path=<a local Hugging Face model folder with config.json>")
    if not (Path(hp.path) / "config.json").is_file():
        raise UserError(f"arch.path '{hp.path}' is not a Hugging Face model folder (no config.json)")
    auto = getattr(transformers, _AUTO[kind])
    config = transformers.AutoConfig.from_pretrained(hp.path, local_files_only=True)
    extra = {"num_labels": task.num_classes} if kind == "classify" else {}
    config.update(extra)
    meta = torch.get_default_device().type == "meta"
    try:
        if meta or hp.from_scratch:  # the planner, or a fresh model of this shape: no weights read
            return auto.from_config(config)
        return auto.from_pretrained(hp.path, config=config, local_files_only=True, dtype=torch.float32,
                                    ignore_mismatched_sizes=kind == "classify")
    except ValueError as e:
        if "Unrecognized configuration class" in str(e):
            raise UserError(f"arch.path '{hp.path}' holds a '{config.model_type}' model, which transformers "
                            f"cannot load as {_AUTO[kind]} (task kind '{kind}')") from None
        raise


def _shape(model) -> tuple[int, int]:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(cfg.num_hidden_layers), int(cfg.hidden_size)


def _check_vocab(model, task: TaskSpec, path: str) -> None:
    have = model.get_input_embeddings().weight.shape[0]
    if task.vocab_size > have:
        model.resize_token_embeddings(task.vocab_size)  # the task's own specials (pad, bos, eos) follow the vocab


class _HF:
    """What every wrapped model shares: counting parameters and FLOPs the same way as the other archs."""

    model: nn.Module

    def non_embedding(self) -> int:
        emb = {id(p) for m in self.model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
        return sum(p.numel() for p in self.model.parameters() if id(p) not in emb)

    def flops_per_token(self, seq_len: int) -> int:
        layers, width = _shape(self.model)
        return 6 * self.non_embedding() + 12 * layers * width * seq_len


class HFCausalLM(_HF, NeuralLM):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=idx, use_cache=False).logits


class HFSeq2Seq(_HF, NeuralModel):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def encode(self, src, src_mask):
        return self.model.get_encoder()(input_ids=src, attention_mask=src_mask).last_hidden_state

    def decode(self, memory, src_mask, tgt_in):
        return self.model(encoder_outputs=(memory,), attention_mask=src_mask, decoder_input_ids=tgt_in,
                          use_cache=False).logits

    def forward(self, src, src_mask, tgt_in):
        return self.decode(self.encode(src, src_mask), src_mask, tgt_in)


class HFClassifier(_HF, NeuralModel):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids, mask):
        return self.model(input_ids=ids, attention_mask=mask).logits


@register_arch("hf", kinds=("lm", "seq2seq", "classify"), sizes=SIZES,
               unsupported={"mlm": "masked-LM pretraining is arch=bert's; an HF masked LM is not wired in"})
def build(kind: str, hp: HFConfig, task: TaskSpec):
    model = _load(kind, hp, task)
    _check_vocab(model, task, hp.path)
    return {"lm": HFCausalLM, "seq2seq": HFSeq2Seq, "classify": HFClassifier}[kind](model)
