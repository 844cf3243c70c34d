"""Word-level n-gram modeling on text files, the way KenLM users work: whitespace tokens, one
sentence a line, ``</s>`` predicted at each line end, unseen test words scored as ``<unk>``.

Command line (estimate, score, ARPA in and out)::

    python -m archs ngram --train train.txt --test test.txt --order 5 --write-arpa model.arpa
    python -m archs ngram --read-arpa kenlm.arpa --test test.txt

The builtin English corpus as such files: ``python -m tasks word-corpus out_dir/`` (tasks/data/word_corpus.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from archbench.errors import ArgumentParser, UserError, check_output_file, user_errors_exit
from archs.ngram.backoff import BackoffLM
from archs.ngram.token_ids import BOS, EOS, SPECIAL, UNK, file_bytes, read_token_ids


def read_token_file(path: str | Path) -> list[list[str]]:
    """Sentences of whitespace-separated tokens, one a line (empty lines are empty sentences, as
    lmplz counts them). ``<s>``, ``</s>`` and ``<unk>`` in the text are dropped, as lmplz does."""
    data = file_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"token file '{path}' is not UTF-8 text (invalid byte at offset {e.start})") from None
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()  # the newline that ends the last line does not start another sentence
    sentences = [[w for w in line.split() if w not in SPECIAL] for line in lines]
    if not any(sentences):
        raise UserError(f"token file '{path}' holds no tokens")
    return sentences


@dataclass
class WordVocab:
    """id -> word: 0 is ``<unk>``, 1 is ``</s>``, then the training words, and ``<s>`` last."""

    words: list[str]

    @classmethod
    def from_sentences(cls, sentences: list[list[str]]) -> "WordVocab":
        flat = [w for s in sentences for w in s]
        _, uniques = pd.factorize(pd.Series(flat, dtype=object), sort=False) if flat else (None, [])
        return cls([UNK, EOS, *list(uniques), BOS])

    @property
    def unk(self) -> int:
        return self.words.index(UNK)

    @property
    def eos(self) -> int:
        return self.words.index(EOS)

    def encode(self, sentences: list[list[str]]) -> tuple[np.ndarray, np.ndarray, int]:
        """(flat ids with unseen words as ``<unk>``, tokens per sentence, number of OOV tokens)."""
        flat = [w for s in sentences for w in s]
        lengths = np.array([len(s) for s in sentences], dtype=np.int64)
        if not flat:
            return np.zeros(0, dtype=np.int64), lengths, 0
        index = pd.Index(self.words[:-1])  # <s> is not a word of the text
        ids = index.get_indexer(pd.Series(flat, dtype=object)).astype(np.int64)
        oov = ids < 0
        ids[oov] = self.unk
        return ids, lengths, int(oov.sum())

    def encode_file(self, path) -> tuple[np.ndarray, np.ndarray, int]:
        """``encode`` of a token file's sentences, read without a Python object per token."""
        words, codes, lengths = read_token_ids(path)
        lut = pd.Index(self.words[:-1]).get_indexer(pd.Index(words, dtype=object)).astype(np.int64)
        ids = lut[codes]
        oov = ids < 0
        ids[oov] = self.unk
        return ids, lengths, int(oov.sum())


def estimate_from_file(path, order: int, discount_fallback=None) -> BackoffLM:
    """``estimate_from_sentences(read_token_file(path), ...)``, without the lists: the same model,
    several times faster and a fraction of the memory on large files (archs/ngram/token_ids.py)."""
    from archs.ngram.kneser_ney import estimate

    words, codes, lengths = read_token_ids(path)
    vocab = WordVocab([UNK, EOS, *words, BOS])
    codes += 2  # ids 0 and 1 are <unk> and </s>
    return estimate(codes, lengths, order=order, vocab=vocab.words, eos=vocab.eos, unk=vocab.unk,
                    discount_fallback=discount_fallback)


def estimate_from_sentences(sentences: list[list[str]], order: int, discount_fallback=None) -> BackoffLM:
    """Kneser-Ney model of word sentences, with lmplz's defaults (no fallback discounts unless asked)."""
    from archs.ngram.kneser_ney import estimate

    vocab = WordVocab.from_sentences(sentences)
    ids, lengths, _ = vocab.encode(sentences)
    return estimate(ids, lengths, order=order, vocab=vocab.words, eos=vocab.eos, unk=vocab.unk,
                    discount_fallback=discount_fallback)


def perplexity(model: BackoffLM, sentences: list[list[str]]) -> dict:
    """Perplexity as KenLM's ``query`` reports it: over every word and ``</s>``, including OOVs
    (scored as ``<unk>``), and excluding the OOV tokens from both the sum and the count."""
    if model.eos is None or model.unk is None:
        raise UserError("word-level perplexity needs a sentence model with </s> and <unk>")
    return perplexity_of_ids(model, *WordVocab(model.vocab).encode(sentences))


def perplexity_of_ids(model: BackoffLM, ids: np.ndarray, lengths: np.ndarray, n_oov: int) -> dict:
    """``perplexity`` of sentences given as the model's ids (``WordVocab.encode`` or ``encode_file``)."""
    if model.eos is None or model.unk is None:
        raise UserError("word-level perplexity needs a sentence model with </s> and <unk>")
    logp, targets = model.flat_logprobs(np.asarray(ids, dtype=np.int64), np.asarray(lengths, dtype=np.int64))
    is_oov = np.zeros(len(targets), dtype=bool)
    # OOV positions: the words that were unseen (an in-vocabulary <unk> cannot occur: it is dropped)
    is_oov[targets == model.unk] = True
    total = float(logp.sum())
    kept = float(logp[~is_oov].sum())
    n = len(targets)
    return {
        "tokens": int(n),
        "oovs": int(n_oov),
        "log10_prob": total / math.log(10),
        "perplexity": math.exp(-total / n),
        "perplexity_excluding_oovs": math.exp(-kept / max(1, n - int(is_oov.sum()))),
    }


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m archs ngram", description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", help="training text: whitespace tokens, one sentence a line")
    ap.add_argument("--order", type=int, default=5, help="n-gram order, 1..6 (default 5)")
    ap.add_argument("--discount-fallback", action="store_true",
                    help="use D = 0.5, 1, 1.5 where counts-of-counts give no valid discounts (lmplz --discount_fallback)")
    ap.add_argument("--read-arpa", help="score with this ARPA model instead of estimating one")
    ap.add_argument("--write-arpa", help="write the estimated model here")
    ap.add_argument("--test", help="text to score (perplexity with and without OOVs)")
    args = ap.parse_args(argv)
    with user_errors_exit():
        if bool(args.train) == bool(args.read_arpa):
            raise UserError("give exactly one of --train FILE (estimate) or --read-arpa FILE (load)")
        if args.write_arpa:  # before the estimate: a bad path costs nothing
            check_output_file(args.write_arpa, "--write-arpa")
        if args.read_arpa:
            from archs.ngram.arpa import read_arpa

            model = read_arpa(args.read_arpa)
        else:
            from archs.ngram.kneser_ney import KENLM_FALLBACK

            try:
                model = estimate_from_file(args.train, args.order, KENLM_FALLBACK if args.discount_fallback else None)
            except UserError as e:  # the estimator names the sweep's key; here the flag is the way
                raise UserError(str(e).replace("set arch.discount_fallback=[0.5,1.0,1.5]", "pass --discount-fallback")
                                .replace("arch.discount_fallback", "--discount-fallback")) from None
            print(f"estimated order-{model.order} model: n-grams per order {model.counts()}")
        if args.write_arpa:
            from archs.ngram.arpa import write_arpa

            try:
                print(f"wrote {write_arpa(model, args.write_arpa)}")
            except OSError as e:
                raise UserError(f"--write-arpa '{args.write_arpa}' cannot be written ({e.strerror or e})") from None
        if args.test:
            r = perplexity_of_ids(model, *WordVocab(model.vocab).encode_file(args.test))
            print(f"tokens={r['tokens']} oovs={r['oovs']} log10_prob={r['log10_prob']:.4f} "
                  f"perplexity={r['perplexity']:.4f} perplexity_excluding_oovs={r['perplexity_excluding_oovs']:.4f}")
    return 0

