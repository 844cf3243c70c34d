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

Counting is vectorized: every order is one ``np.unique`` over int64 keys (suffix id x (V + 1) + first
token), with continuation counts from ``np.bincount``; no Python loop runs per token.
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
    tokens = np.asarray(tokens, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(tokens) == 0 and eos is None:
        raise UserError("cannot estimate an n-gram model from no tokens")
    if len(tokens) and (tokens.min() < 0 or tokens.max() >= v):
        raise ValueError(f"token ids must be in [0, {v}), got {tokens.min()}..{tokens.max()}")
    padded, starts = pad_sentences(tokens, lengths, bos, eos)
    total = len(padded)
    sizes = np.diff(np.append(starts, total))
    remaining = np.repeat(starts + sizes, sizes) - np.arange(total)  # tokens from p to its sentence end

    # ---- counting: order n ids at every position where a window of n tokens fits ----
    raw = [np.bincount(padded, minlength=base).astype(np.int64)]
    suffix: list[np.ndarray | None] = [None]  # id at order n-1 of the last n-1 tokens of each n-gram
    prefix: list[np.ndarray | None] = [None]  # id at order n-1 of the first n-1 tokens (its context)
    first: list[np.ndarray | None] = [None]
    keys_by_order: list[np.ndarray] = [np.arange(base, dtype=np.int64)]
    ids_prev = padded
    for n in range(2, order + 1):
        pos = np.flatnonzero(remaining >= n)
        keys = ids_prev[pos + 1] * base + padded[pos]
        uniq, inv, cnt = np.unique(keys, return_inverse=True, return_counts=True)
        ctx = np.empty(len(uniq), dtype=np.int64)
        ctx[inv] = ids_prev[pos]
        keys_by_order.append(uniq)
        raw.append(cnt.astype(np.int64))
        suffix.append(uniq // base)
        first.append(uniq % base)
        prefix.append(ctx)
        if n < order:
            ids = np.full(total, -1, dtype=np.int64)
            ids[pos] = inv
            ids_prev = ids
        del pos, keys, inv
    del ids_prev, remaining

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
        "tokens": int(len(tokens)),
    }
    return BackoffLM(order, list(vocab), keys_by_order, logp, logb, eos=eos, unk=unk, info=info)
