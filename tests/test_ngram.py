"""The Kneser-Ney n-gram: hand-computed probabilities, a literal re-implementation of the definitions
as an oracle, real KenLM lmplz/query outputs (tests/data/kenlm), ARPA in/out, sums to 1, sampling,
the classifier, bad input, and one run through the harness."""
from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from archbench import Budget
from archbench.errors import UserError
from archs.ngram import NGramClassifier, NGramConfig
from archs.ngram.arpa import read_arpa, write_arpa
from archs.ngram.backoff import NO_TOKEN
from archs.ngram.kneser_ney import KENLM_FALLBACK, discounts_from_counts_of_counts, estimate
from archs.ngram.words import WordVocab, estimate_from_sentences, perplexity, read_token_file
from tests.baseline_helpers import LabeledTask, tiny_text_file
from tests.helpers import compose_conf

DATA = Path(__file__).parent / "data" / "kenlm"
LN10 = math.log(10)


# ---------------------------------------------------------------- a literal oracle
def reference_model(sentences, order, v, eos, fallback=KENLM_FALLBACK):
    """p(w | h) straight from the definitions in archs/kneser_ney.py, with dicts and recursion."""
    bos = v
    padded = [[bos, *s] + ([eos] if eos is not None else []) for s in sentences]
    grams = {n: Counter(tuple(p[i:i + n]) for p in padded for i in range(len(p) - n + 1)) for n in range(1, order + 1)}
    adjusted = {}
    for n in range(1, order + 1):
        for g, c in grams[n].items():
            if n == order or g[0] == bos:
                adjusted[g] = c
            else:
                adjusted[g] = len({x[0] for x in grams[n + 1] if x[1:] == g})
    adjusted[(bos,)] = 0
    discounts = {}
    for n in range(1, order + 1):
        t = [sum(1 for g, a in adjusted.items() if len(g) == n and a == k) for k in (1, 2, 3, 4)]
        ok = min(t[:3]) > 0
        if ok:
            y = t[0] / (t[0] + 2 * t[1])
            d = [0.0] + [k - (k + 1) * y * t[k] / t[k - 1] for k in (1, 2, 3)]
            ok = all(0 <= d[k] <= k for k in (1, 2, 3))
        discounts[n] = d if ok else [0.0, *fallback]

    def disc(n, a):
        return discounts[n][min(a, 3)]

    def prob(w, h):
        h = tuple(h)[max(0, len(h) - (order - 1)):] if order > 1 else ()
        n = len(h) + 1
        cont = {g: a for g, a in adjusted.items() if len(g) == n and g[:-1] == h and a > 0}
        lower = (1.0 / v) if n == 1 else prob(w, h[1:])
        if not cont:
            return lower if n > 1 else 1.0 / v
        denom = sum(cont.values())
        a = cont.get(h + (w,), 0)
        u = (a - disc(n, a)) / denom if a else 0.0
        gamma = sum(disc(n, x) for x in cont.values()) / denom
        return u + gamma * lower

    return prob


def sentences_strategy(v_words):
    return st.lists(st.lists(st.integers(0, v_words - 1), max_size=7), min_size=1, max_size=7)


# ---------------------------------------------------------------- by hand
def test_discounts_from_counts_of_counts_by_hand():
    d, fell_back = discounts_from_counts_of_counts([10, 5, 3, 2], 2, KENLM_FALLBACK)
    # Y = 10 / (10 + 2*5) = 0.5; D1 = 1 - 2*.5*5/10; D2 = 2 - 3*.5*3/5; D3 = 3 - 4*.5*2/3
    assert not fell_back
    np.testing.assert_allclose(d, [0.0, 0.5, 1.1, 3 - 4 / 3])
    assert discounts_from_counts_of_counts([3, 0, 1, 1], 2, KENLM_FALLBACK)[1]
    with pytest.raises(UserError, match="discount_fallback"):
        discounts_from_counts_of_counts([3, 0, 1, 1], 2, None)


def test_bigram_probabilities_by_hand():
    """Corpus "a b" / "b", order 2, fallback discounts D = .5, 1, 1.5 (counts-of-counts have t3 = 0).
    Continuation counts: a 1 ({<s>}), b 2 ({a, <s>}), </s> 1 ({b}); sum 4; gamma() = (.5*2 + 1)/4 = .5;
    V = {<unk>, </s>, a, b}: p(a) = .5/4 + .5/4 = .25, p(b) = 1/4 + .125 = .375, p(</s>) = .25,
    p(<unk>) = .125. Context <s> (a 1, b 1): gamma = .5, p(a|<s>) = .25 + .5*.25 = .375,
    p(b|<s>) = .25 + .5*.375 = .4375. Context a (b 1): p(b|a) = .5 + .5*.375 = .6875.
    Context b (</s> 2): u = (2 - 1)/2, gamma = 1/2, p(</s>|b) = .5 + .5*.25 = .625."""
    words = ["<unk>", "</s>", "a", "b", "<s>"]
    lm = estimate(np.array([2, 3, 3]), np.array([2, 1]), order=2, vocab=words, eos=1, unk=0)
    unk, eos, a, b, bos = range(5)

    def p(w, *ctx):
        c = np.full((1, 1), NO_TOKEN)
        if ctx:
            c[0, -1] = ctx[-1]
        return float(np.exp(lm.logprob(c, np.array([w]))[0]))

    assert p(a) == pytest.approx(0.25) and p(b) == pytest.approx(0.375)
    assert p(eos) == pytest.approx(0.25) and p(unk) == pytest.approx(0.125)
    assert p(a, bos) == pytest.approx(0.375) and p(b, bos) == pytest.approx(0.4375)
    assert p(eos, bos) == pytest.approx(0.125) and p(unk, bos) == pytest.approx(0.0625)
    assert p(b, a) == pytest.approx(0.6875) and p(a, a) == pytest.approx(0.125)
    assert p(eos, b) == pytest.approx(0.625)
    np.testing.assert_allclose(np.exp(lm.logb[0][[bos, a, b, eos]]), [0.5, 0.5, 0.5, 1.0])
    lp, _ = lm.sentence_logprobs([np.array([a, b])])
    assert lp.sum() == pytest.approx(math.log(0.375 * 0.6875 * 0.625))


def test_sentence_start_ngrams_keep_raw_counts():
    """"<s> a" cannot be extended to the left: its adjusted count is its raw count (2 here), while
    "a b" in a trigram model gets its continuation count (1: only "<s> a b")."""
    words = ["<unk>", "</s>", "a", "b", "<s>"]
    lm = estimate(np.array([2, 3, 2, 3]), np.array([2, 2]), order=3, vocab=words, eos=1, unk=0)
    ref = reference_model([[2, 3], [2, 3]], 3, 4, 1)
    ctx = np.array([[NO_TOKEN, 4], [4, 2]])
    got = np.exp(lm.logprob(ctx, np.array([2, 3])))
    np.testing.assert_allclose(got, [ref(2, (4,)), ref(3, (4, 2))])
    assert lm.info["counts_of_counts"]["2"][1] == 1  # "<s> a": 2 (raw); "a b", "b </s>": 1


# ---------------------------------------------------------------- the definitions, on random corpora
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sentences=sentences_strategy(3), order=st.integers(1, 6), sentence_mode=st.booleans(), data=st.data())
def test_matches_reference_definition_and_sums_to_one(sentences, order, sentence_mode, data):
    v_words = 3
    if sentence_mode:
        v, eos = v_words + 2, v_words + 1  # ids: words, <unk> (never seen), </s>
    else:
        sentences = [s for s in sentences if s] or [[0]]
        v, eos = v_words, None
    vocab = [f"t{i}" for i in range(v)] + ["<s>"]
    flat = np.concatenate([np.array(s, dtype=np.int64) for s in sentences])
    lm = estimate(flat, np.array([len(s) for s in sentences]), order=order, vocab=vocab, eos=eos)
    ref = reference_model(sentences, order, v, eos)
    # contexts: seen prefixes plus random ones (unseen tokens and <s> at the start included)
    width = max(1, order - 1)
    contexts = []
    for _ in range(6):
        length = data.draw(st.integers(0, width))
        body = data.draw(st.lists(st.integers(0, v - 1), min_size=length, max_size=length))
        if sentence_mode and data.draw(st.booleans()):
            body = ([v] + body)[-width:] if body or length else [v]
        contexts.append(body[-width:] if order > 1 else [])
    ctx = np.full((len(contexts), width), NO_TOKEN)
    for i, c in enumerate(contexts):
        if c:
            ctx[i, width - len(c):] = c
    dist = np.exp(lm.log_distribution(ctx))
    np.testing.assert_allclose(dist.sum(1), 1.0, rtol=0, atol=1e-9)
    expected = np.array([[ref(w, tuple(c)) for w in range(v)] for c in contexts])
    np.testing.assert_allclose(dist, expected, rtol=1e-9, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(sentences=sentences_strategy(4), order=st.integers(1, 5))
def test_arpa_round_trip(sentences, order, tmp_path_factory):
    words = [["abc", "d", "é", "x"][i] for s in sentences for i in s]
    text = [[["abc", "d", "é", "x"][i] for i in s] for s in sentences]
    assert len(words) == sum(len(s) for s in text)
    lm = estimate_from_sentences(text, order, discount_fallback=KENLM_FALLBACK)
    path = write_arpa(lm, tmp_path_factory.mktemp("arpa") / "m.arpa")
    back = read_arpa(path)
    assert back.counts() == lm.counts()
    test = [s + ["unseen"] for s in text[:3]]
    a, b = perplexity(lm, test), perplexity(back, test)
    assert a["perplexity"] == pytest.approx(b["perplexity"], rel=1e-5)
    # and the loaded model is still a distribution
    width = max(1, order - 1)
    ctx = np.full((1, width), NO_TOKEN)
    ctx[0, -1] = back.bos if order > 1 else NO_TOKEN
    assert np.exp(back.log_distribution(ctx)).sum() == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------- KenLM's own outputs
def _arpa_table(path: Path) -> dict:
    table, n = {}, None
    for line in gzip.open(path, "rt", encoding="utf-8"):
        line = line.rstrip("\n")
        if line.startswith("\\") and line.endswith("-grams:"):
            n = int(line[1:line.index("-")])
        elif n and line and not line.startswith("\\"):
            parts = line.split("\t")
            table[parts[1]] = (float(parts[0]), float(parts[2]) if len(parts) > 2 else 0.0)
    return table


def _our_table(lm) -> dict:
    vocab = np.array(lm.vocab, dtype=object)
    table = {}
    for n in range(1, lm.order + 1):
        names = [" ".join(r) for r in vocab[lm.rows(n)].tolist()]
        lb = lm.logb[n - 1] if n < lm.order else np.zeros(len(names))
        table.update(zip(names, zip((lm.logp[n - 1] / LN10).tolist(), (lb / LN10).tolist())))
    return table


@pytest.mark.parametrize("name,order,train,fallback", [
    ("lmplz_o3", 3, "train.txt", None),
    ("lmplz_o5", 5, "train.txt", None),
    ("lmplz_tiny_fallback_o3", 3, "tiny_train.txt", KENLM_FALLBACK),
])
def test_agrees_with_kenlm_lmplz(name, order, train, fallback):
    """Every n-gram's probability and back-off within float32 rounding of lmplz's ARPA, and the
    test perplexity (with and without OOVs) equal to KenLM query's well inside 1%."""
    kenlm = json.loads((DATA / "kenlm_query.json").read_text())["models"][name]
    lm = estimate_from_sentences(read_token_file(DATA / train), order, discount_fallback=fallback)
    theirs, ours = _arpa_table(DATA / f"{name}.arpa.gz"), _our_table(lm)
    assert set(theirs) == set(ours)
    keys = [k for k in theirs if k != "<s>"]  # lmplz writes p(<s>) = 1, we write 0: never predicted
    np.testing.assert_allclose([ours[k][0] for k in keys], [theirs[k][0] for k in keys], atol=2e-6, rtol=0)
    np.testing.assert_allclose([ours[k][1] for k in keys], [theirs[k][1] for k in keys], atol=2e-6, rtol=0)
    test = read_token_file(DATA / "test.txt") if (DATA / "test.txt").read_text().strip() else []
    for model in (lm, read_arpa(DATA / f"{name}.arpa.gz")):  # our estimate, and lmplz's file scored by us
        r = perplexity(model, test)
        assert (r["tokens"], r["oovs"]) == (kenlm["tokens"], kenlm["oovs"])
        assert r["perplexity"] == pytest.approx(kenlm["perplexity"], rel=1e-5)
        assert r["perplexity_excluding_oovs"] == pytest.approx(kenlm["perplexity_excluding_oovs"], rel=1e-5)


def test_refuses_data_lmplz_refuses():
    with pytest.raises(UserError, match="discount"):
        estimate_from_sentences(read_token_file(DATA / "tiny_train.txt"), 3, discount_fallback=None)


def _lmplz() -> str | None:
    found = os.environ.get("KENLM_BIN")
    return str(Path(found) / "lmplz") if found else shutil.which("lmplz")


@pytest.mark.skipif(_lmplz() is None, reason="needs KenLM's lmplz on PATH or in $KENLM_BIN")
def test_agrees_with_installed_lmplz(tmp_path):
    rng = np.random.default_rng(3)
    zipf = 1 / np.arange(1, 301) ** 1.2
    zipf /= zipf.sum()
    lines = [" ".join(f"v{i}" for i in rng.choice(300, size=rng.integers(1, 15), p=zipf)) for _ in range(3000)]
    (tmp_path / "t.txt").write_text("\n".join(lines) + "\n")
    subprocess.run([_lmplz(), "-o", "4", "-S", "200M", "--text", str(tmp_path / "t.txt"), "--arpa", str(tmp_path / "k.arpa")],
                   check=True, capture_output=True)
    with open(tmp_path / "k.arpa", "rb") as f, gzip.open(tmp_path / "k.arpa.gz", "wb") as g:
        g.write(f.read())
    theirs = _arpa_table(tmp_path / "k.arpa.gz")
    ours = _our_table(estimate_from_sentences(read_token_file(tmp_path / "t.txt"), 4))
    keys = [k for k in theirs if k != "<s>"]
    assert set(theirs) == set(ours)
    np.testing.assert_allclose([ours[k][0] for k in keys], [theirs[k][0] for k in keys], atol=2e-6, rtol=0)


# ---------------------------------------------------------------- ARPA reading
ARPA_PRUNED = """\\data\\
ngram 1=4
ngram 2=2
ngram 3=1

\\1-grams:
-1.0\t<s>\t-0.5
-0.5\ta\t-0.3
-0.7\tb\t-0.2
-0.9\t</s>

\\2-grams:
-0.2\t<s> a\t-0.1
-0.3\ta b

\\3-grams:
-0.1\t<s> a </s>

\\end\\
"""


def test_reads_a_pruned_arpa_with_missing_suffix(tmp_path):
    """"<s> a </s>" is listed but its suffix "a </s>" is not: the query still follows the ARPA rule."""
    path = tmp_path / "p.arpa"
    path.write_text(ARPA_PRUNED)
    lm = read_arpa(path)
    idx = {w: i for i, w in enumerate(lm.vocab)}

    def log10p(w, *ctx):
        c = np.full((1, 2), NO_TOKEN)
        for k, t in enumerate(reversed(ctx)):
            c[0, -1 - k] = idx[t]
        return float(lm.logprob(c, np.array([idx[w]]))[0]) / LN10

    assert log10p("</s>", "<s>", "a") == pytest.approx(-0.1)
    assert log10p("</s>", "a") == pytest.approx(-0.3 - 0.9)
    assert log10p("</s>", "b", "a") == pytest.approx(-0.3 - 0.9)  # context "b a" not listed: weight 1
    assert log10p("b", "<s>", "a") == pytest.approx(-0.1 + -0.3)
    assert log10p("<unk>") == pytest.approx(-100.0)  # no <unk> listed: KenLM's stand-in


@pytest.mark.parametrize("text,match", [
    ("hello\n", "no '\\\\data\\\\' line"),
    ("\\data\\\nngram 1=x\n", ":2: expected 'ngram N=COUNT'"),
    ("\\data\\\nngram 1=1\n\n\\2-grams:\n", ":4: expected '\\\\1-grams:'"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\n-1.0\t<s>\textra\tfields\n", ":5: expected log10-prob, 1 token"),
    ("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\t<s>\n", "declares 2 1-grams, the section has 1"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\n-1.0\t<s>\n", ":6: expected '\\\\end\\\\'"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\nabc\t<s>\n\n\\end\\\n", ":5: expected numbers"),
    ("\\data\\\nngram 1=2\nngram 2=1\n\n\\1-grams:\n-1\t<s>\t0\n-1\ta\t0\n\n\\2-grams:\n-1\t<s> zz\n\n\\end\\\n",
     "'zz' is not among the 1-grams"),
])
def test_malformed_arpa_is_a_user_error(tmp_path, text, match):
    path = tmp_path / "bad.arpa"
    path.write_text(text)
    with pytest.raises(UserError, match=match):
        read_arpa(path)


# ---------------------------------------------------------------- token files, sampling, classifier
def test_token_file_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(UserError, match="holds no tokens"):
        read_token_file(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        read_token_file(tmp_path / "latin1.txt")
    with pytest.raises(UserError, match="does not exist"):
        read_token_file(tmp_path / "nope.txt")
    (tmp_path / "ok.txt").write_text("a b\n\n<s> c </s>\n")
    assert read_token_file(tmp_path / "ok.txt") == [["a", "b"], [], ["c"]]  # empty line = empty sentence


@pytest.mark.parametrize("order", [0, 7, 2.5, True])
def test_bad_order_is_a_user_error(order):
    with pytest.raises(UserError, match="arch.order"):
        NGramConfig(order=order)


def test_sampling_follows_the_model():
    sents = [["a", "b"], ["a", "c"], ["b"], ["a", "b", "c"]] * 5
    lm = estimate_from_sentences(sents, 2, discount_fallback=KENLM_FALLBACK)
    samples = lm.sample(np.random.default_rng(0), 4000, max_len=30)
    assert all(len(s) <= 30 and lm.eos not in s for s in samples)
    first = Counter(s[0] if s else lm.eos for s in samples)
    ctx = np.array([[lm.bos]])
    expected = np.exp(lm.log_distribution(ctx))[0]
    for tok, p in enumerate(expected):
        assert first.get(tok, 0) / 4000 == pytest.approx(p, abs=0.03)


def test_classifier_is_bayes_rule_over_class_lms():
    rng = np.random.default_rng(0)
    a = [rng.choice([0, 1], size=8) for _ in range(30)]  # class 0 uses tokens 0/1
    b = [rng.choice([2, 3], size=8) for _ in range(10)]  # class 1 uses tokens 2/3, rarer
    model = NGramClassifier(NGramConfig(order=2), vocab_size=4, num_classes=2)
    info = model.fit(LabeledTask(a + b, [0] * 30 + [1] * 10), Budget(), {"batch_size": 1, "seq_len": 1},
                     torch.device("cpu"), None)
    assert info["examples"] == 40 and info["tokens"] == 320
    x = torch.tensor(np.stack([a[0], b[0], np.array([0, 1, 0, 2, 3, 2, 0, 0])]))
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[2, 6:] = False
    logits = model(x, mask)
    assert logits.argmax(1)[:2].tolist() == [0, 1]
    # logit = log p(x | c) + log prior, with p(x | c) the class LM's sentence probability
    lp, _ = model.lms[1].sentence_logprobs([x[2, :6].numpy()])
    assert float(logits[2, 1]) == pytest.approx(lp.sum() + math.log(10 / 40), rel=1e-6)


def test_word_vocab_maps_unseen_words_to_unk():
    vocab = WordVocab.from_sentences([["x", "y"], ["y"]])
    ids, lengths, oov = vocab.encode([["y", "zz"], []])
    assert vocab.words[0] == "<unk>" and vocab.words[-1] == "<s>"
    assert ids.tolist() == [vocab.words.index("y"), vocab.unk] and lengths.tolist() == [2, 0] and oov == 1


# ---------------------------------------------------------------- through the harness
def test_runs_through_the_harness(tmp_path):
    from harness.run import run_one

    text = tiny_text_file(tmp_path / "docs.txt")
    conf = compose_conf(*["arch=ngram", "size=4gram", "task.source=files", f"task.path={text}",
                    f"results_dir={tmp_path / 'results'}", "report=false", "train.progress=false"])
    rec = run_one(conf).to_dict()
    assert rec["status"] == "ok", rec.get("error")
    assert rec["flops_per_token"] is None and rec["throughput"]["mfu"] is None
    assert rec["params"] > 0 and rec["fit"]["tokens"] == rec["tokens_seen"] > 0
    assert 0 < rec["metrics"]["bits_per_byte"] < 8
