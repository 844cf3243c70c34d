"""The fast n-gram paths equal the plain definitions they replaced: the byte-level token file reader
(archs/ngram/token_ids.py) equals ``read_token_file`` + ``WordVocab``, and the hash counting of
``count_ngrams`` equals counting with ``np.unique`` over all windows."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from archs.ngram.backoff import pad_sentences
from archs.ngram.kneser_ney import KENLM_FALLBACK, count_ngrams, estimate
from archs.ngram.token_ids import ASCII_SPACE, OTHER_SPACE, read_token_ids
from archs.ngram.words import WordVocab, estimate_from_file, estimate_from_sentences, read_token_file


def test_other_space_is_every_non_ascii_separator_of_str_split():
    every = {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    assert set(ASCII_SPACE.decode()) <= every
    assert every - set(ASCII_SPACE.decode()) == set(OTHER_SPACE)


PIECES = ["a", "b", "cc", "é", "日本", "<s>", "</s>", "<unk>", " ", " ", "\t", "\n", "\n", "\r", "\x0b",
          "\x1c", "\x00", "\x08", "\x0e", "\x85", "\xa0", "\u2003", "\u3000", "x<s>"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(PIECES), max_size=60), st.sampled_from([1, 2, 7, 1 << 20]))
def test_reader_equals_read_token_file(tmp_path, pieces, chunk):
    path = tmp_path / "t.txt"
    path.write_bytes("".join(pieces).encode("utf-8"))
    try:
        sentences = read_token_file(path)
    except Exception as e:  # noqa: BLE001  the same error either way
        with pytest.raises(type(e), match="holds no tokens"):
            read_token_ids(path, chunk_bytes=chunk)
        return
    words, codes, lengths = read_token_ids(path, chunk_bytes=chunk)
    vocab = WordVocab.from_sentences(sentences)
    ids, want_lengths, _ = vocab.encode(sentences)
    assert vocab.words == ["<unk>", "</s>", *words, "<s>"]
    assert codes.tolist() == (ids - 2).tolist() and lengths.tolist() == want_lengths.tolist()


def test_reader_names_the_offset_of_bad_utf8(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"a b\n" * 5 + b"c \xff d\n")
    with pytest.raises(Exception, match="offset 22"):
        read_token_ids(path, chunk_bytes=4)


def _count_by_unique(tokens, lengths, order, v, eos):
    """The former counting: np.unique over the int64 keys of all windows that fit."""
    base = v + 1
    padded, starts = pad_sentences(np.asarray(tokens, dtype=np.int64), lengths, v, eos)
    total = len(padded)
    sizes = np.diff(np.append(starts, total))
    remaining = np.repeat(starts + sizes, sizes) - np.arange(total)
    out = []
    ids_prev = padded
    for n in range(2, order + 1):
        pos = np.flatnonzero(remaining >= n)
        keys = ids_prev[pos + 1] * base + padded[pos]
        uniq, inv, cnt = np.unique(keys, return_inverse=True, return_counts=True)
        ctx = np.empty(len(uniq), dtype=np.int64)
        ctx[inv] = ids_prev[pos]
        out.append((uniq, cnt, ctx))
        ids = np.full(total, -1, dtype=np.int64)
        ids[pos] = inv
        ids_prev = ids
    return padded, starts, out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 5), max_size=9), min_size=1, max_size=9), st.integers(1, 5),
       st.booleans())
def test_hash_counting_equals_unique_counting(sentences, order, sentence_mode):
    v = 6
    eos = 0 if sentence_mode else None
    tokens = np.array([t for s in sentences for t in s], dtype=np.int64)
    lengths = np.array([len(s) for s in sentences])
    padded, starts, want = _count_by_unique(tokens, lengths, order, v, eos)
    keys, raw, suffix, first, prefix = count_ngrams(padded.astype(np.int32), starts, order, v + 1)
    assert raw[0].tolist() == np.bincount(padded, minlength=v + 1).tolist()
    for n in range(2, order + 1):
        uniq, cnt, ctx = want[n - 2]
        assert keys[n - 1].tolist() == uniq.tolist() and keys[n - 1].dtype == np.int64
        assert raw[n - 1].tolist() == cnt.tolist() and prefix[n - 1].tolist() == ctx.tolist()
        assert suffix[n - 1].tolist() == (uniq // (v + 1)).tolist() and first[n - 1].tolist() == (uniq % (v + 1)).tolist()


def test_file_estimate_equals_sentence_estimate(tmp_path):
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(40)]
    lines = [" ".join(rng.choice(words, size=rng.integers(0, 12))) for _ in range(400)]
    path = tmp_path / "train.txt"
    path.write_text("\n".join(lines) + "\n")
    a = estimate_from_file(path, 4, KENLM_FALLBACK)
    b = estimate_from_sentences(read_token_file(path), 4, KENLM_FALLBACK)
    assert a.vocab == b.vocab and a.counts() == b.counts()
    for x, y in zip(a.keys + a.logp + a.logb, b.keys + b.logp + b.logb):
        assert np.array_equal(x, y)
    test = tmp_path / "test.txt"
    test.write_text("w1 w2 unseen w3\n\nw39 <unk> other w0\n")
    vocab = WordVocab(a.vocab)
    got, want = vocab.encode_file(test), vocab.encode(read_token_file(test))
    assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist() and got[2] == want[2] == 2
    assert estimate(np.zeros(0, dtype=np.int32), np.zeros(3, dtype=np.int64), order=2, vocab=["<unk>", "</s>", "<s>"],
                    eos=1, unk=0).counts()[0] == 3


def _arpa_text_by_lines(model) -> str:
    """The former writer: one Python join and one f-string per n-gram."""
    from archs.ngram.arpa import LN10, _fmt

    vocab = np.array(model.vocab, dtype=object)
    out = ["\\data\\\n", *(f"ngram {n}={c}\n" for n, c in enumerate(model.counts(), start=1))]
    for n in range(1, model.order + 1):
        out.append(f"\n\\{n}-grams:\n")
        words = [" ".join(r) for r in vocab[model.rows(n)].tolist()]
        lp = model.logp[n - 1] / LN10
        if n == 1:
            lp = lp.copy()
            lp[model.bos] = -np.inf
        if n < model.order:
            lb = (model.logb[n - 1] / LN10).tolist()
            out.extend(f"{_fmt(p)}\t{w}\t{_fmt(b)}\n" for p, w, b in zip(lp.tolist(), words, lb))
        else:
            out.extend(f"{_fmt(p)}\t{w}\n" for p, w in zip(lp.tolist(), words))
    out.append("\n\\end\\\n")
    return "".join(out)


@pytest.mark.parametrize("order", [1, 2, 4])
def test_arpa_writer_writes_what_the_line_by_line_writer_wrote(tmp_path, order):
    from archs.ngram.arpa import read_arpa, write_arpa

    rng = np.random.default_rng(order)
    words = [f"w{i}" for i in range(30)]
    sentences = [list(rng.choice(words, size=rng.integers(0, 10))) for _ in range(300)]
    for model in (estimate_from_sentences(sentences, order, KENLM_FALLBACK),):
        path = write_arpa(model, tmp_path / "m.arpa", chunk=7)
        assert path.read_text(encoding="utf-8") == _arpa_text_by_lines(model)
        pruned = read_arpa(path)  # a model read back, written again: same text
        assert write_arpa(pruned, tmp_path / "again.arpa").read_text() == _arpa_text_by_lines(pruned)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 7), min_size=1, max_size=12), min_size=1, max_size=30), st.integers(1, 5),
       st.lists(st.lists(st.integers(0, 8), max_size=9), min_size=1, max_size=8), st.booleans())
def test_chained_scoring_equals_logprob_of_contexts(train, order, test, sentence_mode):
    """flat_logprobs (n-gram lookups reused as the next position's contexts) gives exactly the
    floats of logprob over explicit context rows, including unseen words and <unk>."""
    from archs.ngram.backoff import contexts_in_segments

    v = 9  # ids 0..8 predictable, 9 is <s>; 8 never occurs in training
    eos = 0 if sentence_mode else None
    lm = estimate(np.array([t for s in train for t in s], dtype=np.int64), np.array([len(s) for s in train]),
                  order=order, vocab=[f"t{i}" for i in range(v)] + ["<s>"], eos=eos, unk=None)
    flat = np.array([t for s in test for t in s], dtype=np.int64)
    lengths = np.array([len(s) for s in test])
    got, predicted = lm.flat_logprobs(flat, lengths)
    padded, starts = pad_sentences(flat, lengths, v, eos)
    targets = np.ones(len(padded), dtype=bool)
    targets[starts] = False
    want = lm.logprob(contexts_in_segments(padded, starts, order - 1)[targets], padded[targets])
    assert np.array_equal(got, want) and np.array_equal(predicted, padded[targets])
