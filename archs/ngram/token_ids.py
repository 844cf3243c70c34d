"""A whitespace-token text file read straight into integer ids, without a Python object per token.

Why: ``read_token_file`` builds a list of lists of str, which for a 10M-word corpus costs seconds
and about a gigabyte; KenLM's ``lmplz`` streams the bytes. Here the file is read in chunks of whole
lines; in each chunk numpy finds the token boundaries, the tokens are laid end to end into one
Arrow binary array (offsets into the bytes with the whitespace squeezed out), and Arrow's hash
``dictionary_encode`` gives each a code. Chunk dictionaries are merged in order of first appearance.

The tokens are exactly those of ``read_token_file``: lines split on ``\\n``, tokens split by
``str.split()``, which breaks on Unicode whitespace too; a file holding such characters beyond the
ASCII six has them turned into spaces first (they are never part of a token).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from archbench.errors import UserError

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
SPECIAL = (BOS, EOS, UNK)  # dropped from the text, as lmplz drops them
ASCII_SPACE = b" \t\n\r\x0b\x0c"  # what bytes.split() breaks on
# every other character that str.split() breaks on (tests/test_ngram_fast_paths.py checks the list)
OTHER_SPACE = "\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
              "\u2028\u2029\u202f\u205f\u3000"
_OTHER_SPACE_RE = re.compile(f"[{OTHER_SPACE}]")
CHUNK_BYTES = 1 << 23


def file_bytes(path: str | Path) -> bytes:
    """The file's bytes; a missing path or a folder is one line."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"token file '{path}' " + ("is a folder, not a file" if p.is_dir() else "does not exist"))
    return p.read_bytes()


def _checked(chunk: bytes, offset: int, path) -> bytes:
    """The chunk, checked to be UTF-8, with non-ASCII whitespace turned into spaces. Chunks end at
    newlines, so no UTF-8 sequence is cut; decoding a chunk at a time keeps the str small."""
    if chunk.isascii():
        return re.sub(rb"[\x1c-\x1f]", b" ", chunk) if re.search(rb"[\x1c-\x1f]", chunk) else chunk
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"token file '{path}' is not UTF-8 text (invalid byte at offset {offset + e.start})") from None
    return _OTHER_SPACE_RE.sub(" ", text).encode("utf-8") if _OTHER_SPACE_RE.search(text) else chunk


def _chunk_codes(chunk: bytes) -> tuple[np.ndarray, list[bytes], np.ndarray]:
    """(code of each token, the distinct tokens in order of first appearance, tokens per line) of
    whole lines of text; the last line may lack its newline."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = np.frombuffer(chunk, dtype=np.uint8)
    space = arr == 32
    space |= (arr - np.uint8(9)) < 5  # \t \n \v \f \r (bytes below 9 wrap around to 247 and up)
    word = ~space
    start = word.copy()
    start[1:] &= space[:-1]
    end = word.copy()  # last byte of a token
    end[:-1] &= space[1:]
    starts = np.flatnonzero(start)
    del start
    lengths = (np.flatnonzero(end) + 1 - starts).astype(np.int64)
    del end, space
    squeezed = arr[word]
    del word
    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    del lengths
    tokens = pa.Array.from_buffers(pa.large_binary(), len(starts),
                                   [None, pa.py_buffer(offsets), pa.py_buffer(squeezed)])
    enc = pc.dictionary_encode(tokens)
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    uniques = enc.dictionary.to_pylist()
    del tokens, enc, offsets, squeezed
    line_ends = np.flatnonzero(arr == 10)
    if len(chunk) and chunk[-1:] != b"\n":
        line_ends = np.append(line_ends, len(chunk))
    per_line = np.diff(np.searchsorted(starts, line_ends), prepend=0)
    return codes, uniques, per_line


def read_token_ids(path: str | Path, chunk_bytes: int = CHUNK_BYTES) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(words in order of first appearance, int32 code of each token into them, tokens per line).

    Lines and tokens as ``read_token_file`` makes them (an empty line is an empty sentence; the
    newline that ends the file starts no further line); ``<s>``, ``</s>``, ``<unk>`` are dropped.
    """
    data = file_bytes(path)
    index: dict[bytes, int] = {}
    codes_parts, lines_parts = [], []
    pos = 0
    while pos < len(data):
        cut = data.find(b"\n", min(pos + chunk_bytes, len(data)) - 1)
        cut = len(data) if cut < 0 else cut + 1
        codes, uniques, per_line = _chunk_codes(_checked(data[pos:cut], pos, path))
        lut = np.array([index.setdefault(u, len(index)) for u in uniques], dtype=np.int32)
        codes_parts.append(lut[codes])
        lines_parts.append(per_line)
        pos = cut
    del data
    if not lines_parts:  # an empty file is one empty line
        lines_parts.append(np.zeros(1, dtype=np.int64))
    codes = np.concatenate(codes_parts) if codes_parts else np.zeros(0, dtype=np.int32)
    per_line = np.concatenate(lines_parts).astype(np.int64)
    del codes_parts, lines_parts
    words = [w.decode("utf-8") for w in index]
    drop = [index[s.encode()] for s in SPECIAL if s.encode() in index]
    if drop:
        codes, per_line, words = _drop_special(codes, per_line, words, drop)
    if len(codes) == 0:
        raise UserError(f"token file '{path}' holds no tokens")
    return words, codes, per_line


def _drop_special(codes: np.ndarray, per_line: np.ndarray, words: list[str], drop: list[int]):
    """The same with the special tokens taken out and the other words renumbered in order."""
    gone = np.isin(codes, drop)
    line = np.repeat(np.arange(len(per_line)), per_line)
    per_line = per_line - np.bincount(line[gone], minlength=len(per_line))
    del line
    keep = np.ones(len(words), dtype=bool)
    keep[drop] = False
    renumber = np.cumsum(keep, dtype=np.int64).astype(np.int32) - 1
    return renumber[codes[~gone]], per_line, [w for w, k in zip(words, keep) if k]
