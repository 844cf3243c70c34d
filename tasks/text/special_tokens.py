"""A tokenizer's vocabulary extended with BERT's special tokens, appended after the base ids so
every base token keeps its id (a model pretrained on the extension reads the base text unchanged)."""
from __future__ import annotations

SPECIALS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]")


class WithSpecialTokens:
    def __init__(self, base, specials: tuple[str, ...] = SPECIALS):
        self.base = base
        self.name = f"{base.name}+{'+'.join(s.strip('[]').lower() for s in specials)}"
        self.base_vocab_size = base.vocab_size
        self.ids = {s: base.vocab_size + i for i, s in enumerate(specials)}
        self.vocab_size = base.vocab_size + len(specials)

    @property
    def pad_id(self) -> int:
        return self.ids["[PAD]"]

    @property
    def cls_id(self) -> int:
        return self.ids["[CLS]"]

    @property
    def sep_id(self) -> int:
        return self.ids["[SEP]"]

    @property
    def mask_id(self) -> int:
        return self.ids["[MASK]"]

    def encode(self, text: str):
        return self.base.encode(text)

    def decode(self, ids) -> str:
        return self.base.decode([int(i) for i in ids if int(i) < self.base_vocab_size])

    def num_bytes(self, ids) -> int:
        return self.base.num_bytes([int(i) for i in ids if int(i) < self.base_vocab_size])
