"""Tokenizers: byte-level (the default for comparisons), whitespace words, byte-level BPE trained
with HF ``tokenizers`` on the train split, and a pretrained tokenizer from local files
(``tokenizer=pretrained tokenizer_path=<tokenizer.json or folder>``: GPT-2, Llama, BERT... through HF
``tokenizers``, or ``transformers.AutoTokenizer`` for a folder without tokenizer.json; the task's
specials follow its vocabulary and text is encoded without the tokenizer's own specials).

The first three are lossless and know the UTF-8 bytes every token stands for, so bits per byte is exact
whatever the tokenizer. Special tokens (pad, bos, eos) are added only when a task asks for them,
after the ordinary vocabulary; no text ever encodes to them, and decoding drops them.
"""
from __future__ import annotations

import abc
import functools
import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from archbench.errors import UserError

TOKENIZER_NAMES = ("byte", "word", "bpe", "pretrained")
# The special-token layout every example task shares, after the ordinary vocabulary: the same ids as
# masked-LM pretraining's [PAD] [CLS] [SEP] [MASK] (tasks/text/special_tokens.py), so a BERT pretrained
# on task=mlm is fine-tuned on classification with the same vocabulary (<mask> is unused there).
SPECIALS = ("<pad>", "<bos>", "<eos>", "<mask>")


class Tokenizer(abc.ABC):
    """Ids 0..n-1 are ordinary tokens with known bytes, the specials follow."""

    name: str

    def __init__(self, token_bytes: Sequence[bytes], specials: Sequence[str] = ()):
        self._bytes = list(token_bytes) + [b""] * len(specials)
        self.specials = {s: len(token_bytes) + i for i, s in enumerate(specials)}
        self.vocab_size = len(self._bytes)
        self._lengths = np.array([len(b) for b in self._bytes], dtype=np.int64)

    @abc.abstractmethod
    def encode(self, text: str) -> np.ndarray:
        """int64 ids of the text, never a special token."""

    def encode_batch(self, texts: Iterable[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[int(token_id)]

    def decode(self, ids) -> str:
        """Text of the ordinary tokens; special tokens decode to nothing."""
        return b"".join(self._bytes[int(i)] for i in ids).decode("utf-8", errors="replace")

    def num_bytes(self, ids) -> int:
        """UTF-8 bytes these tokens stand for (what bits-per-byte divides by)."""
        ids = np.asarray(ids, dtype=np.int64)
        return int(self._lengths[ids].sum()) if ids.size else 0

    def describe(self) -> dict:
        return {"name": self.name, "vocab_size": self.vocab_size, "specials": dict(self.specials)}


class ByteTokenizer(Tokenizer):
    name = "byte"

    def __init__(self, specials: Sequence[str] = ()):
        super().__init__([bytes([i]) for i in range(256)], specials)

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)


# A word keeps at most one leading space (" the"); other whitespace runs are tokens of their own.
_WORD_PIECES = re.compile(r" ?\S+|\s+")


class WordTokenizer(Tokenizer):
    """The most frequent whitespace-delimited words of the train split, with byte fallback.

    Written by hand because HF's ``WordLevel`` maps unseen words to one [UNK] id: that loses text
    and lets a model score every rare word as one cheap token, flattering bits per byte. Here an
    unseen word is spelled out in its UTF-8 bytes (ids 0..255), so the tokenizer is lossless.
    """

    name = "word"

    def __init__(self, words: Sequence[str], specials: Sequence[str] = ()):
        self.words = list(words)
        super().__init__([bytes([i]) for i in range(256)] + [w.encode("utf-8") for w in self.words], specials)
        self._ids = {w: 256 + i for i, w in enumerate(self.words)}

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, specials: Sequence[str] = ()) -> "WordTokenizer":
        n_words = vocab_size - 256 - len(specials)
        counts = Counter(p for t in texts for p in _WORD_PIECES.findall(t))
        # most frequent first; ties by the word itself so the vocabulary is deterministic
        ranked = sorted((w for w, c in counts.items() if c >= 2 and len(w.encode("utf-8")) > 1),
                        key=lambda w: (-counts[w], w))
        return cls(ranked[:n_words], specials)

    def encode(self, text: str) -> np.ndarray:
        out: list[int] = []
        for piece in _WORD_PIECES.findall(text):
            i = self._ids.get(piece)
            if i is None:
                out.extend(piece.encode("utf-8"))
            else:
                out.append(i)
        return np.array(out, dtype=np.int64)


@functools.lru_cache(maxsize=1)
def _gpt2_unicode_to_byte() -> dict[str, int]:
    """Inverse of the byte -> printable-character table that byte-level BPE (GPT-2, HF ``ByteLevel``)
    writes tokens in; needed to know each token's exact bytes (HF only decodes whole strings)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


class BPETokenizer(Tokenizer):
    name = "bpe"

    def __init__(self, hf_tokenizer, specials: Sequence[str] = ()):
        self.hf = hf_tokenizer
        to_byte = _gpt2_unicode_to_byte()
        vocab = sorted(hf_tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        if [i for _, i in vocab] != list(range(len(vocab))):
            raise ValueError("BPE vocabulary ids are not contiguous")
        super().__init__([bytes(to_byte[c] for c in tok) for tok, _ in vocab], specials)

    @classmethod
    def train(cls, texts: Sequence[str], vocab_size: int, specials: Sequence[str], cache_key: str,
              cache_dir: str | None) -> "BPETokenizer":
        """Train on ``texts`` (or load the cached result for the same key and vocabulary size)."""
        import tokenizers
        from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

        n_merge_vocab = vocab_size - len(specials)
        key = hashlib.sha256(f"{cache_key}|{n_merge_vocab}|{tokenizers.__version__}".encode()).hexdigest()[:20]
        path = Path(cache_dir) / "tokenizers" / f"bpe-{n_merge_vocab}-{key}.json" if cache_dir else None
        if path is not None and path.is_file():
            return cls(HFTokenizer.from_file(str(path)), specials)
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=n_merge_vocab, min_frequency=2, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
        tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
        if path is not None:
            from archbench.record import write_atomic

            write_atomic(path, tok.to_str())
        return cls(tok, specials)

    def encode(self, text: str) -> np.ndarray:
        return np.array(self.hf.encode(text).ids, dtype=np.int64)

    def encode_batch(self, texts: Iterable[str]) -> list[np.ndarray]:
        return [np.array(e.ids, dtype=np.int64) for e in self.hf.encode_batch(list(texts))]


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


def build_tokenizer(cfg, train_texts: Sequence[str], data_fingerprint: str,
                    specials: Sequence[str] = ()) -> Tokenizer:
    """The task's tokenizer from its config (``tokenizer``, ``vocab_size``, ``cache_dir``); word and BPE
    vocabularies come from ``train_texts`` only, so nothing of the test split leaks into them."""
    name = cfg["tokenizer"]
    if name not in TOKENIZER_NAMES:
        raise UserError(f"unknown task.tokenizer '{name}'; valid: {', '.join(TOKENIZER_NAMES)}")
    if name == "byte":
        return ByteTokenizer(specials)
    if name == "pretrained":
        if not cfg.get("tokenizer_path"):
            raise UserError("task.tokenizer=pretrained needs task.tokenizer_path=<tokenizer.json or tokenizer folder>")
        return PretrainedTokenizer(str(cfg["tokenizer_path"]), specials)
    vocab_size = cfg.get("vocab_size")
    smallest = 256 + len(specials) + 1
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < smallest:
        raise UserError(f"task.vocab_size must be an integer >= {smallest} for tokenizer={name} "
                        f"(256 bytes + {len(specials)} special tokens + at least one more), got {vocab_size!r}")
    if name == "word":
        return WordTokenizer.train(train_texts, vocab_size, specials)
    what = json.dumps({"data": data_fingerprint, "specials": list(specials)})
    return BPETokenizer.train(list(train_texts), vocab_size, specials, what, cfg.get("cache_dir"))
