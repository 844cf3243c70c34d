"""A back-off n-gram language model held as sorted numpy tables: what an ARPA file describes.

Both the Kneser-Ney estimator (archs/kneser_ney.py) and the ARPA reader (archs/arpa.py) produce this
structure; everything that queries an n-gram model (perplexity, per-token log-probabilities for the
harness, full next-token distributions, sampling) goes through it.

Ids: ``0 .. V-1`` are the tokens a model predicts (words, ``</s>``, ``<unk>``, or the task's token
ids), id ``V`` is ``<s>``, which is only ever a context. An n-gram of order n >= 2 is stored under the
int64 key ``id(last n-1 tokens at order n-1) * (V + 1) + first token``: keyed by its suffix, so
extending a context one token to the left is one binary search (``np.searchsorted``) per order, and
a whole batch of queries is O(order) vectorized lookups. Order 1 is a dense table over all V + 1 ids.

Query rule (ARPA back-off semantics, equal to the interpolated model for an interpolated ARPA):
p(w | h) = p(h w) if ``h w`` is stored, else b(h) * p(w | h minus its oldest token), b(h) = 1 when
``h`` is not stored. Probabilities are kept as natural logs in float64.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NO_TOKEN = -1  # left padding of a context that is shorter than order - 1


@dataclass
class BackoffLM:
    order: int
    vocab: list[str]  # id -> token text; the last entry is "<s>"
    keys: list[np.ndarray]  # keys[n-1]: sorted int64 keys of order n; keys[0] = arange(V + 1)
    logp: list[np.ndarray]  # natural-log probability of every stored n-gram, per order
    logb: list[np.ndarray]  # natural-log back-off weight of every stored n-gram, orders 1..N-1
    eos: int | None = None  # id of "</s>" (sentence mode) or None (a token stream)
    unk: int | None = None  # id of "<unk>" or None (closed vocabulary)
    info: dict = field(default_factory=dict)

    # ----- sizes -----
    @property
    def vocab_size(self) -> int:
        """Predictable ids (V); ``<s>`` is id V and is never predicted."""
        return len(self.vocab) - 1

    @property
    def bos(self) -> int:
        return len(self.vocab) - 1

    def counts(self) -> list[int]:
        """Stored n-grams per order (the ARPA header's ``ngram n=`` numbers)."""
        return [len(k) for k in self.keys]

    def num_values(self) -> int:
        """Stored numbers: one probability per n-gram plus one back-off per n-gram below the top order."""
        return sum(len(p) for p in self.logp) + sum(len(b) for b in self.logb)

    # ----- lookups -----
    def _find(self, n: int, keys: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index of each key among order n's entries and whether it is there (only where ``valid``)."""
        table = self.keys[n - 1]
        if len(table) == 0:
            return np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=bool)
        # searching in sorted order walks the table forward (numpy narrows each search with the
        # one before): several times faster than random probes into a large table
        by_key = np.argsort(keys)
        idx = np.empty(len(keys), dtype=np.intp)
        idx[by_key] = np.searchsorted(table, keys[by_key])
        idx_c = np.minimum(idx, len(table) - 1)
        found = valid & (idx < len(table)) & (table[idx_c] == keys)
        return idx_c, found

    def logprob(self, context: np.ndarray, target: np.ndarray, max_order: int | None = None) -> np.ndarray:
        """Natural-log p(target | context) for M queries at once.

        context: (M, C) int ids, the newest token last, ``NO_TOKEN`` on the left where the context
        is shorter; only the last ``order - 1`` columns are read. target: (M,) ids in [0, V).
        ``max_order`` limits the n-gram orders consulted (used while an ARPA file is being loaded).
        """
        top = self.order if max_order is None else max_order
        built = len(self.keys)  # orders whose tables exist (all of them, except while loading)
        context = np.asarray(context, dtype=np.int64)
        target = np.asarray(target, dtype=np.int64)
        m = len(target)
        base = self.vocab_size + 1
        out = self.logp[0][target].copy()
        backoff = np.zeros(m)
        ngram = target.copy()  # id of the longest stored n-gram ending in target (order k)
        ngram_alive = np.ones(m, dtype=bool)
        ctx = np.zeros(m, dtype=np.int64)  # id of the context of length k
        ctx_alive = np.ones(m, dtype=bool)
        n_ctx = min(top - 1, built, context.shape[1] if context.ndim == 2 else 0)
        for k in range(1, n_ctx + 1):
            tok = context[:, -k]
            has = tok >= 0
            if k == 1:
                ctx, ctx_alive = np.where(has, tok, 0), has
            else:
                ctx, ctx_alive = self._find(k, ctx * base + tok, ctx_alive & has)
            if k + 1 <= min(top, built):
                idx, found = self._find(k + 1, ngram * base + tok, ngram_alive & has)
                # a longer n-gram is stored: its probability replaces the shorter one's, and only
                # back-offs of contexts longer than it apply from here on
                if found.any():
                    out = np.where(found, self.logp[k][np.where(found, idx, 0)], out)
                    backoff = np.where(found, 0.0, backoff)
            else:
                idx, found = ngram, np.zeros(m, dtype=bool)
            # not stored: the context of length k backs off (weight 1 when it is not stored)
            miss = ~found & ctx_alive
            if miss.any():
                backoff = backoff + np.where(miss, self.logb[k - 1][np.where(miss, ctx, 0)], 0.0)
            ngram, ngram_alive = idx, found
            if not (ctx_alive.any() or ngram_alive.any()):
                break  # neither a longer context nor a longer n-gram can be stored
        return out + backoff

    def log_distribution(self, context: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
        """(M, V) natural-log next-token distribution for each context row (every predictable id)."""
        context = np.atleast_2d(np.asarray(context, dtype=np.int64))
        v = self.vocab_size
        out = np.empty((len(context), v))
        rows_per_chunk = max(1, chunk // v)
        for i in range(0, len(context), rows_per_chunk):
            part = context[i:i + rows_per_chunk]
            reps = np.repeat(part, v, axis=0)
            targets = np.tile(np.arange(v), len(part))
            out[i:i + len(part)] = self.logprob(reps, targets).reshape(len(part), v)
        return out

    # ----- whole sequences -----
    def sentence_logprobs(self, sentences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Log-probabilities of every token of every sentence, each sentence starting after ``<s>``
        and (in sentence mode) ending with a predicted ``</s>``, as KenLM's ``query`` scores a line.
        Returns (flat natural-log probabilities, sentence index of each)."""
        lengths = np.array([len(s) for s in sentences], dtype=np.int64)
        flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sentences]) if len(sentences) else \
            np.zeros(0, dtype=np.int64)
        logp, _ = self.flat_logprobs(flat, lengths)
        sent = np.repeat(np.arange(len(sentences)), lengths + (1 if self.eos is not None else 0))
        return logp, sent

    def flat_logprobs(self, flat: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``sentence_logprobs`` of sentences given concatenated (``flat``) with their ``lengths``,
        with no Python step per sentence; returns (log-probabilities, the predicted ids)."""
        padded, starts = pad_sentences(flat, lengths, self.bos, self.eos)
        targets = np.ones(len(padded), dtype=bool)
        targets[starts] = False  # <s> is context only
        return self._chain_logprobs(padded, starts, targets), padded[targets]

    def _chain_logprobs(self, padded: np.ndarray, starts: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """``logprob`` of every target position of whole segments with half the table searches.

        ``ids[k-1][p]``: table index of the k-gram that ends at p (-1: not stored, or it would
        cross p's segment start). The context of length k of a target t is the k-gram that ends
        at t - 1, so the context lookups of ``logprob`` are the n-gram lookups one position back;
        each order is searched once for all positions. Then, as in ``logprob``: the longest stored
        n-gram ending at t gives the probability, and the back-offs of the stored contexts longer
        than it are added in order of length (the same additions, so the same floats)."""
        base = self.vocab_size + 1
        n = len(padded)
        seg_start = np.repeat(starts, np.diff(np.append(starts, n)))
        offset = np.arange(n) - seg_start  # tokens before p in its segment
        ids = [padded.astype(np.int64)]
        for k in range(2, self.order + 1):
            prev = ids[-1]
            first = np.full(n, -1, dtype=np.int64)
            first[k - 1:] = padded[:max(n - k + 1, 0)]  # the token k - 1 places back
            valid = (prev >= 0) & (offset >= k - 1)
            idx, found = self._find(k, np.where(valid, prev * base + first, 0), valid)
            ids.append(np.where(found, idx, -1))
        t = np.flatnonzero(targets)
        out = self.logp[0][padded[t]].copy()
        longer = np.zeros(len(t), dtype=bool)  # a longer n-gram ending at t is stored
        for k in range(self.order, 1, -1):
            at = ids[k - 1][t]
            hit = (at >= 0) & ~longer
            out[hit] = self.logp[k - 1][at[hit]]
            longer |= at >= 0
        backoff = np.zeros(len(t))
        for k in range(1, self.order):
            ctx = ids[k - 1][t - 1]
            miss = (ids[k][t] < 0) & (ctx >= 0)
            if miss.any():
                backoff = backoff + np.where(miss, self.logb[k - 1][np.where(miss, ctx, 0)], 0.0)
        return out + backoff

    def sample(self, rng: np.random.Generator, n: int, max_len: int,
               prefix: list[int] | None = None) -> list[list[int]]:
        """``n`` token sequences drawn from the model. Sentence mode starts from ``<s>`` and stops at
        ``</s>`` (not included) or ``max_len`` tokens; stream mode draws ``max_len`` tokens after
        ``prefix`` (default: empty context)."""
        start = list(prefix or ([self.bos] if self.eos is not None else []))
        width = max(1, self.order - 1)
        seqs = [list(start) for _ in range(n)]
        live = list(range(n))
        out: list[list[int]] = [[] for _ in range(n)]
        for _ in range(max_len):
            if not live:
                break
            ctx = np.full((len(live), width), NO_TOKEN, dtype=np.int64)
            for r, i in enumerate(live):
                tail = seqs[i][-width:] if self.order > 1 else []
                if tail:
                    ctx[r, width - len(tail):] = tail
            probs = np.exp(self.log_distribution(ctx))
            cum = np.cumsum(probs, axis=1)
            draws = rng.random(len(live)) * cum[:, -1]
            toks = np.minimum((cum < draws[:, None]).sum(1), self.vocab_size - 1)
            still = []
            for i, t in zip(live, toks.tolist()):
                if self.eos is not None and t == self.eos:
                    continue
                seqs[i].append(t)
                out[i].append(t)
                still.append(i)
            live = still
        return out

    # ----- export helpers -----
    def rows(self, n: int) -> np.ndarray:
        """(count, n) token ids of every stored n-gram of order n, in table order."""
        if n == 1:
            return np.arange(self.vocab_size + 1, dtype=np.int64)[:, None]
        base = self.vocab_size + 1
        keys = self.keys[n - 1]
        lower = self.rows(n - 1)
        return np.concatenate([(keys % base)[:, None], lower[keys // base]], axis=1)

    @classmethod
    def from_rows(cls, vocab: list[str], rows: list[np.ndarray], log_probs: list[np.ndarray],
                  log_backoffs: list[np.ndarray], eos: int | None, unk: int | None) -> "BackoffLM":
        """Build the tables from n-gram rows (as an ARPA file lists them, natural logs). An n-gram
        whose suffix is missing (pruned models) gets that suffix inserted as a blank entry: its
        probability is what back-off gives, its back-off weight is 1, so every query returns what
        the ARPA semantics say."""
        order = len(rows)
        v1 = len(vocab)
        rows = [np.asarray(r, dtype=np.int64) for r in rows]
        log_probs = [np.asarray(p, dtype=np.float64) for p in log_probs]
        log_backoffs = [np.asarray(b, dtype=np.float64) for b in log_backoffs]
        blank = [np.zeros(len(r), dtype=bool) for r in rows]
        # missing suffixes, from the top order down (a blank may itself need a blank below it)
        for n in range(order, 2, -1):
            need = _unique_rows(rows[n - 1][:, 1:])
            missing = need[~np.isin(_row_view(need), _row_view(rows[n - 2]))]
            if len(missing):
                rows[n - 2] = np.concatenate([rows[n - 2], missing])
                log_probs[n - 2] = np.concatenate([log_probs[n - 2], np.full(len(missing), np.nan)])
                if n - 2 < len(log_backoffs):
                    log_backoffs[n - 2] = np.concatenate([log_backoffs[n - 2], np.zeros(len(missing))])
                blank[n - 2] = np.concatenate([blank[n - 2], np.ones(len(missing), dtype=bool)])
        logp0 = np.full(v1, -np.inf)
        logb0 = np.zeros(v1)
        logp0[rows[0][:, 0]] = log_probs[0]
        if order > 1:
            logb0[rows[0][:, 0]] = log_backoffs[0]
        model = cls(order, list(vocab), [np.arange(v1, dtype=np.int64)], [logp0],
                    [logb0] if order > 1 else [], eos, unk)
        for n in range(2, order + 1):
            r = rows[n - 1]
            suffix = _ids_of(model, r[:, 1:])
            keys = suffix * v1 + r[:, 0]
            sort = np.argsort(keys, kind="stable")
            keys, lp, bl = keys[sort], log_probs[n - 1][sort], blank[n - 1][sort]
            if np.any(keys[1:] == keys[:-1]):
                raise ValueError(f"duplicate {n}-gram entries")
            if bl.any():  # blank: the back-off probability from the orders below
                ctx = np.full((int(bl.sum()), n - 1), NO_TOKEN, dtype=np.int64)
                ctx[:] = r[sort][bl][:, :-1]
                lp[bl] = model.logprob(ctx, r[sort][bl][:, -1], max_order=n)  # order n not built yet
            model.keys.append(keys)
            model.logp.append(lp)
            if n < order:
                model.logb.append(log_backoffs[n - 1][sort])
        return model


def _row_view(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.int64)
    return a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel()


def _unique_rows(a: np.ndarray) -> np.ndarray:
    if len(a) == 0:
        return a
    _, idx = np.unique(_row_view(a), return_index=True)
    return a[np.sort(idx)]


def _ids_of(model: BackoffLM, rows: np.ndarray) -> np.ndarray:
    """Table index of each row (an n-gram already stored) among its order's entries."""
    n = rows.shape[1]
    base = model.vocab_size + 1
    ids = rows[:, -1].copy()
    for k in range(2, n + 1):
        ids, found = model._find(k, ids * base + rows[:, -k], np.ones(len(rows), dtype=bool))
        if not found.all():
            raise ValueError(f"{k}-gram suffix missing")
    return ids


def pad_sentences(flat: np.ndarray, lengths: np.ndarray, bos: int, eos: int | None,
                  dtype=np.int64) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate sentences as ``<s> tokens [</s>]`` each; returns (padded ids, start of each).
    Temporaries are one boolean per position, so a 10M-token corpus pads without 80 MB index arrays."""
    lengths = np.asarray(lengths, dtype=np.int64)
    extra = 2 if eos is not None else 1
    sizes = lengths + extra
    ends = np.cumsum(sizes)
    starts = ends - sizes
    total = int(ends[-1]) if len(ends) else 0
    is_token = np.ones(total, dtype=bool)
    is_token[starts] = False
    if eos is not None:
        is_token[ends - 1] = False
    padded = np.empty(total, dtype=dtype)
    padded[is_token] = flat
    padded[starts] = bos
    if eos is not None:
        padded[ends - 1] = eos
    return padded, starts


def contexts_in_segments(tokens: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """(len(tokens), width) matrix: row p holds the ``width`` tokens before p in p's own segment
    (segments begin at ``starts``), newest last, ``NO_TOKEN`` where the segment has fewer."""
    n = len(tokens)
    if width == 0:
        return np.zeros((n, 0), dtype=np.int64)
    seg_start = np.repeat(starts, np.diff(np.append(starts, n)))
    padded = np.concatenate([np.full(width, NO_TOKEN, dtype=np.int64), tokens.astype(np.int64)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)[:n]  # tokens p-width .. p-1
    src = np.arange(n)[:, None] - width + np.arange(width)[None, :]
    return np.where(src >= seg_start[:, None], windows, NO_TOKEN)
