"""A pretrained tokenizer from local files (``task.tokenizer=pretrained task.tokenizer_path=...``).

Reads a ``tokenizer.json`` (HF ``tokenizers``: GPT-2, Llama, BERT and most hub tokenizers ship one),
or a tokenizer folder through ``transformers.AutoTokenizer`` when the folder has no tokenizer.json
(e.g. a SentencePiece model). Offline: only local files. The task's own special tokens (pad, bos,
eos) are appended after the tokenizer's vocabulary, as for every other tokenizer here; text is
encoded without the tokenizer's own specials. Bits per byte stays comparable across tokenizers
because it divides by the bytes of the text, not by tokens.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from archbench.errors import UserError
from tasks.text.tokenizers import Tokenizer, _gpt2_unicode_to_byte


class PretrainedTokenizer(Tokenizer):
    name = "pretrained"

    def __init__(self, path: str, specials: Sequence[str] = ()):
        self.path = str(path)
        self.hf = _load(self.path)
        vocab = self.hf.get_vocab(with_added_tokens=True)
        n = max(vocab.values()) + 1 if vocab else 0
        to_byte = _gpt2_unicode_to_byte()
        by_id = {i: tok for tok, i in vocab.items()}
        # byte-level BPE (GPT-2, Llama-3, ...) writes each token's bytes in a printable alphabet: exact;
        # other models (WordPiece, SentencePiece) get the bytes of the token decoded alone
        byte_level = all(c in to_byte for tok in list(vocab)[:2000] for c in tok)
        token_bytes = []
        for i in range(n):
            tok = by_id.get(i, "")
            if byte_level and all(c in to_byte for c in tok):
                token_bytes.append(bytes(to_byte[c] for c in tok))
            else:
                token_bytes.append(self.hf.decode([i], skip_special_tokens=False).encode("utf-8"))
        self.byte_level = byte_level
        super().__init__(token_bytes, specials)

    def encode(self, text: str) -> np.ndarray:
        return np.array(self.hf.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def encode_batch(self, texts: Iterable[str]) -> list[np.ndarray]:
        return [np.array(e.ids, dtype=np.int64) for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids) -> str:
        ordinary = [int(i) for i in ids if int(i) < self.vocab_size - len(self.specials)]
        return self.hf.decode(ordinary, skip_special_tokens=True)

    def describe(self) -> dict:
        return {**super().describe(), "path": self.path, "byte_level": self.byte_level}


def _load(path: str):
    """A ``tokenizers.Tokenizer`` from a tokenizer.json file or a folder holding one, or, failing that,
    the fast tokenizer transformers builds from the folder."""
    from tokenizers import Tokenizer as HFTokenizer

    p = Path(path)
    if not p.exists():
        raise UserError(f"task.tokenizer_path '{path}' does not exist; give a tokenizer.json or a tokenizer folder")
    file = p / "tokenizer.json" if p.is_dir() else p
    if file.is_file():
        try:
            return HFTokenizer.from_file(str(file))
        except Exception as e:
            raise UserError(f"task.tokenizer_path '{path}' is not a tokenizer ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); give a tokenizer.json saved by "
                            "HF tokenizers or a tokenizer folder saved by save_pretrained") from None
    try:
        from transformers import AutoTokenizer

        fast = AutoTokenizer.from_pretrained(str(p), local_files_only=True, use_fast=True)
        return fast.backend_tokenizer
    except Exception as e:
        raise UserError(f"task.tokenizer_path '{path}' is not a tokenizer folder ({type(e).__name__}); give a "
                        "tokenizer.json or a folder saved by save_pretrained") from None
