"""Benchmarks of the classic baselines: ``python -m harness.bench.baselines [--words N] [--ks 16,64,...]``.

1. n-gram: order-5 Kneser-Ney on a word corpus of about 10M words, made from the builtin English
   text: each line is a real sentence spliced at a random point with the tail of another real
   sentence (plain repetition would leave almost no singleton n-grams and so no Kneser-Ney
   discounts), drawn with a fixed seed until the word count is reached, written to a temporary
   text file. Our estimator and KenLM's ``lmplz`` (on PATH or in $KENLM_BIN; skipped otherwise)
   each run as child processes on that file, interleaved, and query throughput is compared with
   KenLM's ``query``: harness/bench/ngram_vs_kenlm.py states exactly what each side includes.
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

import statistics
import sys
import tempfile
import time
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


def bench_ngram(n_words: int, order: int = 5, rounds: int = 3, lmplz_memory: str = "1G",
                test_words: int = 1_000_000) -> dict:
    """Write the corpus (and a test file, another seed) as text, then time both sides as child
    processes on those files (harness/bench/ngram_vs_kenlm.py says exactly what each includes)."""
    from harness.bench.ngram_vs_kenlm import estimation_rounds, query_comparison

    t0 = time.perf_counter()
    corpus = spliced_corpus(n_words)
    t_corpus = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        text, test = Path(tmp) / "corpus.txt", Path(tmp) / "test.txt"
        text.write_text("\n".join(" ".join(s) for s in corpus) + "\n", encoding="utf-8")
        del corpus
        test_lines = spliced_corpus(min(test_words, n_words), seed=1)
        test.write_text("\n".join(" ".join(s) for s in test_lines) + "\n", encoding="utf-8")
        result = {"order": order, "corpus_build_s": t_corpus, "corpus_bytes": text.stat().st_size,
                  "lmplz_memory": lmplz_memory, "rounds": rounds}
        result["estimation"] = estimation_rounds(str(text), tmp, order, rounds, lmplz_memory)
        result["query"] = query_comparison(str(text), str(test), tmp, order)
    return result


def print_ngram(r: dict) -> None:
    mib = 2 ** 20
    est = r["estimation"]
    ours = est["ours"]
    if ours.get("rc") != 0:
        print(f"n-gram: our estimator's child failed (rc={ours.get('rc')})")
        return
    ph = ours["phases"]
    print(f"n-gram order {r['order']} on {ph['words']:,} words ({ph['sentences']:,} lines, {ph['types']:,} types, "
          f"{r['corpus_bytes'] / mib:,.0f} MiB of text; builtin sentences spliced at random points); each side a "
          f"child process on the same text file, {r['rounds']} interleaved rounds, best wall time, largest max RSS (wait4):")
    print(f"  n-grams per order {ph['ngrams']}; fallback discounts at orders {ph['discount_fallback_orders'] or 'none'}")
    print(f"  ours  estimation, text -> ids -> model: {ours['wall_s']:.2f} s wall ({ours['cpu_s']:.2f} s CPU), max RSS "
          f"{ours['max_rss_bytes'] / mib:,.0f} MiB; of it read + estimate {ph['read_and_estimate_s']:.2f} s, the rest "
          f"({ours['wall_s'] - ph['read_and_estimate_s']:.2f} s) Python start and imports (torch included); no ARPA write")
    for name, side in est.items():
        if name.startswith("lmplz_") and isinstance(side, dict):
            _print_lmplz(name, side, ours, r)
    if "lmplz_skipped" in est:
        print(f"  lmplz: skipped ({est['lmplz_skipped']})")
    q = r["query"]
    if "error" in q:
        print(f"  query: {q['error']}")
        return
    o = q["ours"]
    with_arpa = ours["wall_s"] + o["arpa_write_s"]
    lmplz_default = est.get("lmplz_default", {})
    vs = (f" -> with it, {lmplz_default['wall_s'] / with_arpa:.2f}x the speed of lmplz at its default -S"
          if lmplz_default.get("rc") == 0 else "")
    print(f"  ours  ARPA write (its own child, after the estimate): {o['arpa_write_s']:.2f} s; estimation + ARPA "
          f"{with_arpa:.2f} s{vs}")
    print(f"  query: ours {o['query']['tokens'] / o['query_s']:,.0f} tokens/s ({o['query']['tokens']:,} tokens, "
          f"{o['query_s']:.3f} s, model in memory, perplexity {o['query']['perplexity']:.4f})", end="")
    if "kenlm" in q:
        k = q["kenlm"]
        print(f"; KenLM query (probing binary of our ARPA) {k['tokens'] / k['query_s']:,.0f} tokens/s "
              f"({k['query_s']:.3f} s = {k['wall_s']:.3f} s run - {k['load_s']:.3f} s load of an empty input, "
              f"perplexity {k['perplexity']:.4f})")
    else:
        print(f"; KenLM query skipped ({q['kenlm_skipped']})")


def _print_lmplz(name: str, side: dict, ours: dict, r: dict) -> None:
    mib = 2 ** 20
    flag = "at its default -S (80% of RAM)" if name == "lmplz_default" else f"-S {r['lmplz_memory']}"
    if side.get("rc") != 0:
        print(f"  lmplz {flag}: failed (rc={side.get('rc')})")
        return
    print(f"  lmplz -o {r['order']} {flag}, its ARPA write to /dev/null included: {side['wall_s']:.2f} s wall "
          f"({side['cpu_s']:.2f} s CPU), max RSS {side['max_rss_bytes'] / mib:,.0f} MiB -> ours: "
          f"{side['wall_s'] / ours['wall_s']:.2f}x its speed by wall time ({side['cpu_s'] / ours['cpu_s']:.2f}x by CPU time), "
          f"{ours['max_rss_bytes'] / side['max_rss_bytes']:.2f}x its max RSS")


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
    if args.rounds < 1:
        raise UserError(f"--rounds must be a positive integer, got {args.rounds}")
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
    ap.add_argument("--rounds", type=int, default=3, help="interleaved n-gram rounds, best of each side (default 3)")
    ap.add_argument("--lmplz-memory", default="1G", help="the stated -S lmplz also runs with, beside its default (default 1G)")
    ap.add_argument("--ks", default="16,64,256,1024", help="HMM state counts, comma-separated")
    ap.add_argument("--skip-ngram", action="store_true")
    ap.add_argument("--skip-hmm", action="store_true")
    args = ap.parse_args(argv)
    with user_errors_exit():
        ks = check_args(args)
    if not args.skip_ngram:
        print_ngram(bench_ngram(args.words, args.order, args.rounds, args.lmplz_memory))
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
