"""Our n-gram estimator as a process of its own, the way ``lmplz`` runs, so that the benchmark
(harness/bench/ngram_vs_kenlm.py) measures both sides alike: wall time and max RSS of a child.

``python -m harness.bench.ngram_child TEXT --order 5 [--arpa OUT] [--test TEST] [--repeats 3]``:
text file -> ids -> Kneser-Ney model (lmplz's defaults and ``--discount_fallback``); then, if
asked, the ARPA write and the scoring of a test file (best of ``--repeats``). Prints one JSON line
with the time of each phase, measured inside the process; the parent measures the whole (interpreter
start and imports included: ``-m`` imports ``harness`` first, and with it every arch and task).
"""
from __future__ import annotations

import json
import sys
import time

from archbench.errors import ArgumentParser


def run(argv: list[str] | None = None) -> dict:
    ap = ArgumentParser(prog="python -m harness.bench.ngram_child")
    ap.add_argument("text")
    ap.add_argument("--order", type=int, default=5)
    ap.add_argument("--arpa", help="write the model here (phase arpa_write_s)")
    ap.add_argument("--test", help="score this file, KenLM query's way (phase query_s, best of --repeats)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    from archs.ngram.kneser_ney import KENLM_FALLBACK
    from archs.ngram.words import WordVocab, estimate_from_file, perplexity_of_ids

    out = {}
    t0 = time.perf_counter()
    lm = estimate_from_file(args.text, args.order, KENLM_FALLBACK)
    out["read_and_estimate_s"] = time.perf_counter() - t0
    out["ngrams"] = lm.counts()
    out["discount_fallback_orders"] = lm.info["discount_fallback_orders"]
    out["words"] = lm.info["tokens"]
    out["sentences"] = lm.info["sentences"]
    out["types"] = len(lm.vocab)
    if args.arpa:
        from archs.ngram.arpa import write_arpa

        t0 = time.perf_counter()
        write_arpa(lm, args.arpa)
        out["arpa_write_s"] = time.perf_counter() - t0
    if args.test:
        ids, lengths, n_oov = WordVocab(lm.vocab).encode_file(args.test)
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            r = perplexity_of_ids(lm, ids, lengths, n_oov)
            best = min(best, time.perf_counter() - t0)
        out["query_s"] = best
        out["query"] = r
    return out


if __name__ == "__main__":
    print(json.dumps(run()))
    sys.exit(0)
