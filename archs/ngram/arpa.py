"""ARPA back-off language model files: write ours, read anyone's (KenLM, SRILM, IRSTLM).

Format (Doug Paul's ARPA, as SRILM documents it): a ``\\data\\`` header with ``ngram n=count``
lines, then one ``\\n-grams:`` section per order whose lines are
``log10 p <tab> w1 .. wn [<tab> log10 back-off]``, then ``\\end\\``. Tokens are separated by
spaces or tabs; text before ``\\data\\`` is ignored, as the usual readers do. A malformed file is a
UserError naming the line number and what was expected there.
"""
from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np

from archbench.errors import UserError
from archs.ngram.backoff import BackoffLM

LN10 = math.log(10.0)
LOG10_ZERO = -99.0  # how ARPA files write log10(0), e.g. for <s>, which is never predicted


def _log10(field: str) -> float:
    """A log10 value as written in ARPA; -99 (or less) is the format's spelling of log10(0) (SRILM),
    read back as -inf so that a model with a zero back-off weight round-trips exactly."""
    v = float(field)
    return -math.inf if v <= LOG10_ZERO else v
KENLM_UNK_LOG10 = -100.0  # KenLM's stand-in for a model that lists no <unk>


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return f"{LOG10_ZERO:g}"
    return f"{x:.7g}"


def write_arpa(model: BackoffLM, path: str | Path, chunk: int = 1 << 18) -> Path:
    """Write the model; probabilities and back-offs as log10 with 7 significant digits (float32's).

    Fast without changing a byte: an n-gram's text is its first word, a space and the text of its
    suffix, which the order below has just made (one vectorized string join per order, not a
    Python join per n-gram); lines are formatted by ``str.__mod__`` mapped over rows in chunks,
    and log10(0) becomes -99 before formatting, which ``%.7g`` writes as ``_fmt`` does."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    vocab = np.array(model.vocab, dtype=object)
    base = model.vocab_size + 1
    with open(path, "w", encoding="utf-8") as f:
        f.write("\\data\\\n")
        for n, c in enumerate(model.counts(), start=1):
            f.write(f"ngram {n}={c}\n")
        lower = None  # text of every (n-1)-gram, in table order
        for n in range(1, model.order + 1):
            f.write(f"\n\\{n}-grams:\n")
            lp = model.logp[n - 1] / LN10
            if n == 1:
                lp = lp.copy()
                lp[model.bos] = -math.inf  # written as -99: <s> is a context, never predicted
            lp = np.where(np.isfinite(lp), lp, LOG10_ZERO)
            lb = None
            if n < model.order:
                lb = model.logb[n - 1] / LN10
                lb = np.where(np.isfinite(lb), lb, LOG10_ZERO)
            keep = []
            for i in range(0, len(lp), chunk):
                if n == 1:
                    words = vocab[i:i + chunk]
                else:
                    keys = model.keys[n - 1][i:i + chunk]
                    words = vocab[keys % base] + " " + lower[keys // base]
                if n < model.order:
                    keep.append(words)
                    lines = zip(lp[i:i + chunk].tolist(), words.tolist(), lb[i:i + chunk].tolist())
                    f.writelines(map("%.7g\t%s\t%.7g\n".__mod__, lines))
                else:
                    f.writelines(map("%.7g\t%s\n".__mod__, zip(lp[i:i + chunk].tolist(), words.tolist())))
            lower = np.concatenate(keep) if keep else np.zeros(0, dtype=object)
            del keep
        f.write("\n\\end\\\n")
    return path


def read_arpa(path: str | Path, bos: str = "<s>", eos: str = "</s>", unk: str = "<unk>") -> BackoffLM:
    """Load an ARPA file (gzip-compressed if it ends in .gz) as a BackoffLM. ``<s>`` must be listed; a model without ``</s>`` is a stream
    model; a model without ``<unk>`` gets one with log10 p = -100, as KenLM does."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ARPA file '{path}' does not exist")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"ARPA file '{path}' is not UTF-8 (byte {e.start})") from None
    where = lambda i: f"{path}:{i + 1}"  # noqa: E731

    i = 0
    while i < len(lines) and lines[i].strip() != "\\data\\":
        i += 1
    if i == len(lines):
        raise UserError(f"{path}: no '\\data\\' line: not an ARPA file")
    i += 1
    declared: dict[int, int] = {}
    while i < len(lines) and lines[i].strip().startswith("ngram "):
        spec = lines[i].strip()[len("ngram "):]
        order_s, _, count_s = spec.partition("=")
        try:
            n, c = int(order_s), int(count_s)
        except ValueError:
            raise UserError(f"{where(i)}: expected 'ngram N=COUNT', got {lines[i].strip()!r}") from None
        if n != len(declared) + 1 or c < 0:
            raise UserError(f"{where(i)}: expected 'ngram {len(declared) + 1}=COUNT', got {lines[i].strip()!r}")
        declared[n] = c
        i += 1
    if not declared:
        raise UserError(f"{where(i)}: expected 'ngram 1=COUNT' after '\\data\\', got {_show(lines, i)}")
    order = len(declared)

    texts: list[list[tuple[str, ...]]] = []
    probs: list[list[float]] = []
    backs: list[list[float]] = []
    for n in range(1, order + 1):
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i == len(lines) or lines[i].strip() != f"\\{n}-grams:":
            raise UserError(f"{where(i)}: expected '\\{n}-grams:', got {_show(lines, i)}")
        i += 1
        rows, lp, lb = [], [], []
        while i < len(lines) and lines[i].strip() and not lines[i].startswith("\\"):
            parts = lines[i].split()
            if len(parts) not in (n + 1, n + 2) or (len(parts) == n + 2 and n == order):
                want = f"log10-prob, {n} token{'s' if n > 1 else ''}" + (", optional back-off" if n < order else "")
                raise UserError(f"{where(i)}: expected {want}; got {len(parts)} fields: {lines[i].strip()!r}")
            try:
                lp.append(_log10(parts[0]))
                lb.append(_log10(parts[n + 1]) if len(parts) == n + 2 else 0.0)
            except ValueError:
                raise UserError(f"{where(i)}: expected numbers for log10-prob/back-off, got {lines[i].strip()!r}") from None
            rows.append(tuple(parts[1:n + 1]))
            i += 1
        if len(rows) != declared[n]:
            raise UserError(f"{where(i)}: the header declares {declared[n]} {n}-grams, the section has {len(rows)}")
        texts.append(rows)
        probs.append(lp)
        backs.append(lb)
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i == len(lines) or lines[i].strip() != "\\end\\":
        raise UserError(f"{where(i)}: expected '\\end\\', got {_show(lines, i)}")

    words = [r[0] for r in texts[0]]
    if len(set(words)) != len(words):
        raise UserError(f"{path}: a token is listed twice among the 1-grams")
    if bos not in words:
        raise UserError(f"{path}: the 1-grams do not list {bos}")
    if unk not in words:
        words.append(unk)
        texts[0].append((unk,))
        probs[0].append(KENLM_UNK_LOG10)
        backs[0].append(0.0)
    vocab = [w for w in words if w != bos] + [bos]
    index = {w: k for k, w in enumerate(vocab)}
    rows_np, lp_np, lb_np = [], [], []
    for n in range(1, order + 1):
        try:
            ids = np.array([[index[w] for w in r] for r in texts[n - 1]], dtype=np.int64).reshape(-1, n)
        except KeyError as e:
            raise UserError(f"{path}: {n}-gram token {e.args[0]!r} is not among the 1-grams") from None
        if n > 1 and len(ids) and (ids[:, 1:] == index[bos]).any():
            raise UserError(f"{path}: a {n}-gram has {bos} after its first position")
        rows_np.append(ids)
        lp_np.append(np.array(probs[n - 1]) * LN10)
        lb_np.append(np.array(backs[n - 1]) * LN10)
    lp_np[0][rows_np[0][:, 0] == index[bos]] = -math.inf  # <s> is never predicted, whatever is written
    try:
        model = BackoffLM.from_rows(vocab, rows_np, lp_np, lb_np[:order - 1],
                                    eos=index.get(eos), unk=index[unk])
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    model.info = {"source": str(path), "ngrams": [declared[n] for n in range(1, order + 1)]}
    return model


def _show(lines: list[str], i: int) -> str:
    return "end of file" if i >= len(lines) else repr(lines[i].strip())
