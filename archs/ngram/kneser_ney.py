"""Interpolated modified Kneser-Ney estimation (Chen & Goodman 1998), as KenLM's ``lmplz`` builds it.

Written by hand because no Python library estimates this model (KenLM's Python module only queries;
``lmplz`` is a C++ program); every rule below follows lmplz's defaults (no pruning, interpolated
unigrams), so its ARPA files and ours agree (tests/test_ngram.py checks the definitions on corpora
small enough to count by hand).

Definitions, for a model of order N over sentences padded as ``<s> w1 .. wm </s>``:

- n-grams of order n are all length-n windows of the padded sentences (at most one leading ``<s>``:
  lmplz pads with N-1 ``<s>`` and folds ``<s> <s> x`` into ``<s> x``, which is the same set).
- adjusted count a(x): the raw count at order N and for n-grams that begin with ``<s>`` (they cannot
  be extended to the left); otherwise the number of distinct tokens v with ``v x`` an (n+1)-gram
  (continuation count). ``<s>`` as a unigram has count 0; so does every vocabulary id never seen.
- discounts per order from counts-of-counts t_k of adjusted counts (k = 1..4):
  Y = t1 / (t1 + 2 t2), D_k = k - (k + 1) Y t_{k+1} / t_k for k = 1, 2, 3 (D3 serves counts >= 3).
  lmplz refuses (and ``--discount_fallback`` substitutes 0.5, 1, 1.5) when t1, t2 or t3 is 0 or a D_k
  falls outside [0, k]; ``discount_fallback`` does the same here (None = refuse, like lmplz).
- for context h with continuations: u(h w) = (a(h w) - D(a(h w))) / sum_x a(h x),
  gamma(h) = (D1 N1(h) + D2 N2(h) + D3 N3+(h)) / sum_x a(h x), N_k(h) = #{w: a(h w) = k (3: >= 3)},
  p(w | h) = u(h w) + gamma(h) p(w | h minus its oldest token), down to
  p(w) = u(w) + gamma() / V with V = every predictable id (words, ``</s>``, ``<unk>``; not ``<s>``).
- the ARPA back-off weight of h is gamma(h) when h has continuations, else 1.

Counting is vectorized: every order is one hash pass (``pandas.factorize``) over int64 keys (suffix
id x (V + 1) + first token) and a sort of the distinct keys only, with continuation counts from
``np.bincount``; no Python loop runs per token (``count_ngrams``; the former ``np.unique`` counting
is the oracle in tests/test_ngram_fast_paths.py).
"""
from __future__ import annotations

import numpy as np

from archbench.errors import UserError
from archs.ngram.backoff import BackoffLM, pad_sentences

KENLM_FALLBACK = (0.5, 1.0, 1.5)
MAX_ORDER = 6


def discounts_from_counts_of_counts(t: list[int], order: int,
                                    fallback: tuple[float, float, float] | None) -> tuple[np.ndarray, bool]:
    """(D0..D3 with D0 = 0, whether the fallback was used) from t = [t1, t2, t3, t4]."""
    t1, t2, t3, t4 = (int(x) for x in t)
    why = None
    if min(t1, t2, t3) == 0:
        k = 1 + [t1, t2, t3].index(0)
        why = f"no {order}-grams with adjusted count {k}"
    else:
        y = t1 / (t1 + 2.0 * t2)
        d = np.array([0.0, 1 - 2 * y * t2 / t1, 2 - 3 * y * t3 / t2, 3 - 4 * y * t4 / t3])
        bad = [k for k in (1, 2, 3) if not 0.0 <= d[k] <= k]
        if not bad:
            return d, False
        why = f"{order}-gram discount D{bad[0]}={d[bad[0]]:.4f} is outside [0, {bad[0]}]"
    if fallback is None:
        raise UserError(f"cannot estimate Kneser-Ney discounts: {why} (small or artificial data); "
                        "set arch.discount_fallback=[0.5,1.0,1.5] to use fallback discounts as lmplz --discount_fallback does")
    return np.array([0.0, *fallback], dtype=np.float64), True


def _sorted_factorize(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(sorted distinct keys, int32 index of each key among them, count of each distinct key,
    position of its first occurrence): what ``np.unique(keys, return_inverse=True,
    return_counts=True, return_index=True)`` gives, by hashing (pandas.factorize) and sorting only
    the distinct keys, several times faster than np.unique's argsort of all the keys."""
    import pandas as pd

    codes, uniq = pd.factorize(keys, sort=False)  # codes number the keys in order of first appearance
    counts = np.bincount(codes, minlength=len(uniq))
    order = np.argsort(uniq)
    rank = np.empty(len(uniq), dtype=np.int32 if len(uniq) < 2**31 else np.int64)
    rank[order] = np.arange(len(uniq), dtype=rank.dtype)
    inv = rank[codes]
    running = np.maximum.accumulate(codes, out=codes)  # codes are not needed any more
    new = np.empty(len(running), dtype=bool)
    new[:1] = True
    np.greater(running[1:], running[:-1], out=new[1:])  # the running maximum grows: a new code
    del running, codes
    first_at = np.flatnonzero(new)
    return uniq[order], inv, counts[order], first_at[order]


def count_ngrams(padded: np.ndarray, starts: np.ndarray, order: int, base: int):
    """Per order n: (sorted keys, raw counts, suffix id, first token, context id) of every n-gram
    of the padded sentences (``padded`` int32, sentences beginning at ``starts``); order 1 is dense.

    ``ids[p]`` is the id of the (n-1)-gram that starts at p, -1 where none fits in p's sentence.
    The n-gram at p is its first token ``padded[p]`` and the (n-1)-gram at p + 1, and it fits when
    that one does and p + 1 starts no sentence. Positions where it does not fit get key -1, which
    sorts first among the distinct keys: shifting all indices down by one makes it the next -1.
    Only contiguous array passes and one hash per position: no gather of valid positions.
    """
    total = len(padded)
    cut = np.zeros(total, dtype=bool)  # cut[p]: no n-gram (n >= 2) at p-1 can reach p
    cut[starts] = True
    cut = cut[1:]
    raw = [np.bincount(padded, minlength=base).astype(np.int64)]
    suffix: list[np.ndarray | None] = [None]  # id at order n-1 of the last n-1 tokens of each n-gram
    prefix: list[np.ndarray | None] = [None]  # id at order n-1 of the first n-1 tokens (its context)
    first: list[np.ndarray | None] = [None]
    keys_by_order: list[np.ndarray] = [np.arange(base, dtype=np.int64)]
    ids_prev = padded
    for n in range(2, order + 1):
        keys = ids_prev[1:].astype(np.int64)
        gap = cut | (keys < 0)
        keys *= base
        keys += padded[:-1]
        keys[gap] = -1
        del gap
        uniq, inv, counts, first_at = _sorted_factorize(keys)
        del keys
        lead = int(len(uniq) > 0 and uniq[0] < 0)  # 1 when some position has no n-gram
        uniq, counts, first_at = uniq[lead:], counts[lead:], first_at[lead:]
        if lead:
            inv -= 1
        keys_by_order.append(uniq)
        raw.append(counts.astype(np.int64))
        prefix.append(ids_prev[first_at])  # ids and tokens as narrow as padded's: only indices
        suffix.append((uniq // base).astype(padded.dtype))
        first.append((uniq % base).astype(padded.dtype))
        if n < order:
            ids_prev = np.append(inv, -1).astype(padded.dtype, copy=False)  # the last position starts no n-gram
        del inv
    return keys_by_order, raw, suffix, first, prefix


def estimate(tokens: np.ndarray, lengths: np.ndarray, *, order: int, vocab: list[str], eos: int | None,
             unk: int | None = None, discount_fallback: tuple[float, float, float] | None = KENLM_FALLBACK
             ) -> BackoffLM:
    """Estimate an interpolated modified Kneser-Ney model.

    tokens: all sentences' ids concatenated (each in [0, V), V = len(vocab) - 1; id V is ``<s>``);
    lengths: tokens per sentence. With ``eos`` set, each sentence ends with a predicted ``</s>``
    (sentence mode); with ``eos=None`` a sequence is a stream with no end symbol.
    """
    if not 1 <= order <= MAX_ORDER:
        raise UserError(f"n-gram order must be an integer from 1 to {MAX_ORDER}, got {order}")
    v = len(vocab) - 1
    base = v + 1
    bos = v
    tokens = np.asarray(tokens)
    if tokens.dtype.kind not in "iu":
        tokens = tokens.astype(np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(tokens) == 0 and eos is None:
        raise UserError("cannot estimate an n-gram model from no tokens")
    if len(tokens) and (tokens.min() < 0 or tokens.max() >= v):
        raise ValueError(f"token ids must be in [0, {v}), got {tokens.min()}..{tokens.max()}")
    # ids and n-gram indices in int32 where they fit: fewer bytes to move
    narrow = len(tokens) + 2 * len(lengths) < 2**31 - 1 and base < 2**31
    padded, starts = pad_sentences(tokens, lengths, bos, eos, dtype=np.int32 if narrow else np.int64)
    n_tokens = len(tokens)
    del tokens
    keys_by_order, raw, suffix, first, prefix = count_ngrams(padded, starts, order, base)
    del padded

    # ---- adjusted counts ----
    adjusted: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * order
    adjusted[order - 1] = raw[order - 1].copy()
    for n in range(order - 1, 0, -1):
        cont = np.bincount(suffix[n], minlength=len(keys_by_order[n - 1])).astype(np.int64)
        if n > 1:
            starts_bos = first[n - 1] == bos
            cont[starts_bos] = raw[n - 1][starts_bos]
        adjusted[n - 1] = cont
    adjusted[0][bos] = 0

    # ---- discounts ----
    discounts, fallback_orders, coc = [], [], []
    for n in range(1, order + 1):
        a = adjusted[n - 1]
        t = [int(np.count_nonzero(a == k)) for k in (1, 2, 3, 4)]
        d, fell_back = discounts_from_counts_of_counts(t, n, discount_fallback)
        discounts.append(d)
        coc.append(t)
        if fell_back:
            fallback_orders.append(n)

    # ---- probabilities, low order first ----
    def discount_of(a: np.ndarray, d: np.ndarray) -> np.ndarray:
        return d[np.minimum(a, 3)]

    a1 = adjusted[0]
    d1 = discounts[0]
    denom = float(a1.sum())
    if denom <= 0:
        raise UserError("cannot estimate an n-gram model: the training data has no countable tokens")
    gamma0 = float(sum(d1[k] * np.count_nonzero(a1 == k) for k in (1, 2)) + d1[3] * np.count_nonzero(a1 >= 3)) / denom
    p = (a1 - discount_of(a1, d1)) / denom + gamma0 / v
    p[bos] = 0.0
    with np.errstate(divide="ignore"):
        logp = [np.log(p)]
    logb: list[np.ndarray] = []
    p_lower = p
    for n in range(2, order + 1):
        a = adjusted[n - 1]
        d = discounts[n - 1]
        ctx = prefix[n - 1]
        n_ctx = len(keys_by_order[n - 2])
        denom = np.bincount(ctx, weights=a, minlength=n_ctx)
        mass = (d[1] * np.bincount(ctx, weights=(a == 1), minlength=n_ctx)
                + d[2] * np.bincount(ctx, weights=(a == 2), minlength=n_ctx)
                + d[3] * np.bincount(ctx, weights=(a >= 3), minlength=n_ctx))
        has = denom > 0
        gamma = np.where(has, mass / np.where(has, denom, 1.0), 0.0)
        p = (a - discount_of(a, d)) / denom[ctx] + gamma[ctx] * p_lower[suffix[n - 1]]
        with np.errstate(divide="ignore"):
            logb.append(np.where(has, np.log(np.where(has, gamma, 1.0)), 0.0))
            logp.append(np.log(p))
        p_lower = p
    info = {
        "ngrams": [int(len(k)) for k in keys_by_order],
        "discounts": {str(n + 1): [float(x) for x in discounts[n][1:]] for n in range(order)},
        "counts_of_counts": {str(n + 1): coc[n] for n in range(order)},
        "discount_fallback_orders": fallback_orders,
        "sentences": int(len(lengths)),
        "tokens": int(n_tokens),
    }
    return BackoffLM(order, list(vocab), keys_by_order, logp, logb, eos=eos, unk=unk, info=info)
