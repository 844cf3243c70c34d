"""Benchmarks of the classic baselines: ``python -m harness.bench.baselines [--words N] [--ks 16,64,...]``.

1. n-gram: order-5 Kneser-Ney estimation time and peak memory on a word corpus of about 10M words,
   made from the builtin English text: each line is a real sentence spliced at a random point with
   the tail of another real sentence (plain repetition would leave almost no singleton n-grams and
   so no Kneser-Ney discounts), drawn with a fixed seed until the word count is reached. Reported:
   word -> id mapping time, estimation time (counting + smoothing), peak numpy memory during
   estimation (tracemalloc), the process's max RSS. If KenLM's ``lmplz`` is on PATH (or in
   $KENLM_BIN) the same corpus is given to it (``-o 5 -S 4G``) for a reference time.
2. HMM: forward-backward throughput (tokens/s) against the number of states K, for one gradient
   step (forward filter + hand-written backward) and one EM E-step (forward, backward, expected
   counts), batch 16 x 128 tokens, byte vocabulary, fp32, median of 3 timed runs after a warm-up.
   Beside it, where hmmlearn is installed (a dev dependency), hmmlearn's CategoricalHMM with the
   same probabilities on the same sequences: ``score_samples`` (forward, backward and posteriors,
   its default log-space implementation), in rounds interleaved with our E-step (which does more:
   the expected transition and emission counts too), best of each; the log-likelihoods must agree.

Timings are wall-clock on whatever machine runs this; on a shared machine they are noisy.
"""
from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from archbench.errors import ArgumentParser, UserError, user_errors_exit


def spliced_corpus(n_words: int, seed: int = 0) -> list[list[str]]:
    """Lines of real sentences, each spliced at a random point with the tail of another one."""
    from tasks.data.word_corpus import builtin_sentences

    sents = [s for s in builtin_sentences() if len(s) >= 2]
    rng = np.random.default_rng(seed)
    out, total = [], 0
    while total < n_words:
        a, b = rng.integers(0, len(sents), size=(4096, 2)).T
        cut_a = rng.integers(1, [len(sents[i]) + 1 for i in a])
        cut_b = rng.integers(0, [len(sents[i]) for i in b])
        for i, j, ca, cb in zip(a.tolist(), b.tolist(), cut_a.tolist(), cut_b.tolist()):
            line = sents[i][:ca] + sents[j][cb:]
            out.append(line)
            total += len(line)
            if total >= n_words:
                break
    return out


def bench_ngram(n_words: int, order: int = 5) -> dict:
    from archs.ngram.kneser_ney import KENLM_FALLBACK, estimate
    from archs.ngram.words import WordVocab

    t0 = time.perf_counter()
    corpus = spliced_corpus(n_words)
    t_corpus = time.perf_counter() - t0
    t0 = time.perf_counter()
    vocab = WordVocab.from_sentences(corpus)
    ids, lengths, _ = vocab.encode(corpus)
    t_map = time.perf_counter() - t0
    tracemalloc.start()
    t0 = time.perf_counter()
    lm = estimate(ids, lengths, order=order, vocab=vocab.words, eos=vocab.eos, unk=vocab.unk,
                  discount_fallback=KENLM_FALLBACK)
    t_est = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    result = {"words": int(len(ids)), "sentences": len(corpus), "types": len(vocab.words), "order": order,
              "corpus_build_s": t_corpus, "word_to_id_s": t_map, "estimate_s": t_est,
              "estimate_peak_numpy_bytes": peak,
              "process_max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
              "ngrams": lm.counts(), "discount_fallback_orders": lm.info["discount_fallback_orders"]}
    lmplz = _lmplz()
    if lmplz:
        with tempfile.TemporaryDirectory() as tmp:
            text = Path(tmp) / "corpus.txt"
            text.write_text("\n".join(" ".join(s) for s in corpus) + "\n", encoding="utf-8")
            t0 = time.perf_counter()
            r = subprocess.run(["/usr/bin/time", "-v", lmplz, "-o", str(order), "-S", "4G", "-T", tmp,
                                "--discount_fallback", "--text", str(text), "--arpa", os.devnull],
                               capture_output=True, text=True)
            t_lmplz = time.perf_counter() - t0
            rss = next((int(line.split(":")[1]) * 1024 for line in r.stderr.splitlines()
                        if "Maximum resident set size" in line), None)
            result["lmplz"] = {"seconds_incl_arpa_write": t_lmplz, "max_rss_bytes": rss, "rc": r.returncode}
    return result


def _lmplz() -> str | None:
    if os.environ.get("KENLM_BIN"):
        path = Path(os.environ["KENLM_BIN"]) / "lmplz"
        return str(path) if path.exists() else None
    found = shutil.which("lmplz")
    return found if found and shutil.which("/usr/bin/time") else None


def bench_hmm(ks: list[int], batch: int = 16, seq_len: int = 128, vocab: int = 256, repeats: int = 3) -> list[dict]:
    import torch

    from archs.hmm import HMM

    rows = []
    for k in ks:
        torch.manual_seed(0)
        hmm = HMM(k, vocab)
        x = torch.randint(0, vocab, (batch, seq_len))

        def grad_step():
            hmm.zero_grad(set_to_none=True)
            logp = hmm.next_token_logprobs(x)
            (-logp[:, :-1].gather(-1, x[:, 1:, None]).mean()).backward()

        def e_step():
            hmm.expected_counts(x)

        row = {"K": k, "threads": torch.get_num_threads()}
        for name, fn in (("gradient_step", grad_step), ("em_e_step", e_step)):
            fn()  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            row[f"{name}_tokens_per_s"] = batch * seq_len / statistics.median(times)
        row |= _versus_hmmlearn(hmm, x, e_step, repeats)
        rows.append(row)
    return rows


def check_args(args) -> list[int]:
    """The HMM state counts; a UserError for values the benchmarks cannot use."""
    if args.words < 1:
        raise UserError(f"--words must be a positive integer, got {args.words}")
    if not 1 <= args.order <= 6:
        raise UserError(f"--order must be in 1..6, got {args.order}")
    try:
        ks = [int(k) for k in args.ks.split(",") if k.strip()]
    except ValueError:
        ks = []
    if not ks or min(ks) < 1:
        raise UserError(f"--ks must be positive integers separated by commas (e.g. 16,64), got {args.ks!r}")
    return ks


def _versus_hmmlearn(hmm, x, e_step, repeats: int, budget_s: float = 20.0) -> dict:
    """hmmlearn's forward-backward beside our E-step on the same sequences, interleaved, best of each."""
    try:
        from hmmlearn.hmm import CategoricalHMM
    except ImportError as e:
        return {"hmmlearn_skipped": f"hmmlearn not installed ({e})"}
    start, trans, emit = (p.detach().double().exp().numpy() for p in hmm.log_params())
    ref = CategoricalHMM(n_components=hmm.n_states, n_features=hmm.vocab_size)
    ref.startprob_, ref.transmat_ = start / start.sum(), trans / trans.sum(1, keepdims=True)
    ref.emissionprob_ = emit / emit.sum(1, keepdims=True)
    obs, lengths = x.reshape(-1, 1).numpy(), [x.shape[1]] * x.shape[0]
    ours, theirs, ll_ref, spent = [], [], None, 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        ll = hmm.expected_counts(x)[3]
        ours.append(time.perf_counter() - t0)
        if spent < budget_s or not theirs:  # hmmlearn at K=1024 takes many seconds per call
            t0 = time.perf_counter()
            ll_ref, _post = ref.score_samples(obs, lengths)
            theirs.append(time.perf_counter() - t0)
            spent += theirs[-1]
    tokens = x.numel()
    return {"hmmlearn_tokens_per_s": tokens / min(theirs), "ours_e_step_best_tokens_per_s": tokens / min(ours),
            "speedup_vs_hmmlearn": min(theirs) / min(ours), "hmmlearn_calls": len(theirs),
            "loglik_ours": ll, "loglik_hmmlearn": float(ll_ref),
            "loglik_rel_diff": abs(ll - ll_ref) / abs(ll_ref)}


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m harness.bench.baselines", description=__doc__.split("\n\n")[0])
    ap.add_argument("--words", type=int, default=10_000_000, help="n-gram corpus size in words (default 10M)")
    ap.add_argument("--order", type=int, default=5)
    ap.add_argument("--ks", default="16,64,256,1024", help="HMM state counts, comma-separated")
    ap.add_argument("--skip-ngram", action="store_true")
    ap.add_argument("--skip-hmm", action="store_true")
    args = ap.parse_args(argv)
    with user_errors_exit():
        ks = check_args(args)
    mib = 2 ** 20
    if not args.skip_ngram:
        r = bench_ngram(args.words, args.order)
        print(f"n-gram order {r['order']} on {r['words']:,} words ({r['sentences']:,} lines, {r['types']:,} types; "
              f"builtin sentences spliced at random points):")
        print(f"  word->id {r['word_to_id_s']:.1f} s; estimation {r['estimate_s']:.1f} s "
              f"({r['words'] / r['estimate_s']:,.0f} words/s); peak numpy memory during estimation "
              f"{r['estimate_peak_numpy_bytes'] / mib:,.0f} MiB; process max RSS {r['process_max_rss_bytes'] / mib:,.0f} MiB")
        print(f"  n-grams per order {r['ngrams']}; fallback discounts at orders {r['discount_fallback_orders'] or 'none'}")
        if "lmplz" in r:
            lz = r["lmplz"]
            rss = f"{lz['max_rss_bytes'] / mib:,.0f} MiB" if lz["max_rss_bytes"] else "?"
            print(f"  KenLM lmplz on the same text: {lz['seconds_incl_arpa_write']:.1f} s (incl. ARPA to /dev/null), "
                  f"max RSS {rss}, rc={lz['rc']}")
    if not args.skip_hmm:
        print("HMM forward-backward, batch 16 x 128 tokens, vocab 256, fp32 (tokens/s, median of 3); hmmlearn's "
              "score_samples on the same sequences, interleaved with our E-step (best of each):")
        print(f"  {'K':>6} {'gradient step':>14} {'EM E-step':>12} {'E-step best':>12} {'hmmlearn':>10} {'ratio':>7}")
        for row in bench_hmm(ks):
            vs = (f"{row['ours_e_step_best_tokens_per_s']:>12,.0f} {row['hmmlearn_tokens_per_s']:>10,.0f} "
                  f"{row['speedup_vs_hmmlearn']:>6.1f}x  (log-likelihoods agree to {row['loglik_rel_diff']:.1e})"
                  if "hmmlearn_tokens_per_s" in row else row.get("hmmlearn_skipped", ""))
            print(f"  {row['K']:>6} {row['gradient_step_tokens_per_s']:>14,.0f} {row['em_e_step_tokens_per_s']:>12,.0f} "
                  f"{vs}   ({row['threads']} threads)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
