"""The HMM: log-likelihood, one EM step and Viterbi against hmmlearn; the hand-written backward against
plain autograd; expected counts against the gradient of the log-likelihood; EM monotonicity;
sampling; the classifier; bad config; runs through the harness (gradient and EM)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from archbench import Budget
from archbench.errors import UserError
from archs.hmm import HMM, HMMClassifier, HMMConfig, run_em
from tests.baseline_helpers import LabeledTask

hmmlearn_hmm = pytest.importorskip("hmmlearn.hmm", reason="hmmlearn is the reference implementation (test dependency)")


@pytest.fixture(autouse=True)
def one_thread():
    """These tests run many tiny ops in step loops; on a shared 2-core machine a second intra-op
    thread makes each one wait for a descheduled peer (ms instead of us). One thread, then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_problem(seed: int, k: int, v: int, lengths: list[int]):
    rng = np.random.default_rng(seed)
    start = rng.dirichlet(np.ones(k))
    trans = rng.dirichlet(np.ones(k) * 0.7, size=k)
    emit = rng.dirichlet(np.ones(v) * 0.7, size=k)
    seqs = [rng.integers(0, v, size=n) for n in lengths]
    x = torch.zeros(len(seqs), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(x, dtype=torch.bool)
    for i, s in enumerate(seqs):
        x[i, :len(s)] = torch.from_numpy(s)
        mask[i, :len(s)] = True
    return (start, trans, emit), seqs, x, mask


def reference(probs, **kw):
    ref = hmmlearn_hmm.CategoricalHMM(n_components=len(probs[0]), n_features=probs[2].shape[1],
                                      init_params="", **kw)
    ref.startprob_, ref.transmat_, ref.emissionprob_ = probs
    return ref


def ours(params, dtype=torch.float64) -> HMM:
    h = HMM(len(params[0]), params[2].shape[1]).to(dtype)
    h.set_probabilities(*params)
    return h


@pytest.mark.parametrize("seed,k,v,lengths", [(0, 1, 4, [5]), (1, 3, 5, [7, 1, 12]), (2, 8, 20, [30, 17, 3, 25]),
                                              (3, 16, 6, [60, 45])])
def test_loglik_equals_hmmlearn(seed, k, v, lengths):
    params, seqs, x, mask = random_problem(seed, k, v, lengths)
    want = reference(params).score(np.concatenate(seqs).reshape(-1, 1), lengths)
    with torch.no_grad():
        got = float(ours(params).log_likelihood(x, mask).sum())
        got32 = float(ours(params, torch.float32).log_likelihood(x, mask).double().sum())
    assert got == pytest.approx(want, rel=1e-6)
    assert got32 == pytest.approx(want, rel=1e-5)  # fp32, the CPU training precision


def test_one_em_iteration_equals_hmmlearn():
    params, seqs, x, mask = random_problem(5, 4, 6, [9, 4, 13, 20])
    ref = reference(params, params="ste", n_iter=1)
    ref.fit(np.concatenate(seqs).reshape(-1, 1), [len(s) for s in seqs])
    h = ours(params)
    run_em(h, [(x, mask)], iters=1, pseudocount=0.0)
    start, trans, emit = (p.exp().detach().numpy() for p in h.log_params())
    np.testing.assert_allclose(start, ref.startprob_, atol=1e-10)
    np.testing.assert_allclose(trans, ref.transmat_, atol=1e-10)
    np.testing.assert_allclose(emit, ref.emissionprob_, atol=1e-10)


def test_viterbi_equals_hmmlearn():
    params, seqs, x, mask = random_problem(6, 5, 7, [11, 3, 16])
    want_lp, want_path = reference(params).decode(np.concatenate(seqs).reshape(-1, 1), [len(s) for s in seqs])
    path, score = ours(params).viterbi(x, mask)
    got = np.concatenate([path[i, :len(s)].numpy() for i, s in enumerate(seqs)])
    assert float(score.sum()) == pytest.approx(want_lp, rel=1e-9)
    np.testing.assert_array_equal(got, want_path)


def test_hand_written_backward_equals_autograd():
    torch.manual_seed(0)
    h = HMM(6, 9).double()
    x = torch.randint(0, 9, (3, 7))
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[1, 4:] = False
    weights = torch.linspace(0, 1, 6, dtype=torch.float64)

    def loss(reference: bool):
        filt, norm, pred = h.filter(x, mask, reference=reference)
        return filt.sin().sum() + 1.3 * norm.sum() + (pred * weights).sum()

    want = torch.autograd.grad(loss(True), list(h.parameters()))
    got = torch.autograd.grad(loss(False), list(h.parameters()))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_expected_counts_are_the_loglik_gradient():
    """d log p(x) / d log theta = expected count of theta (Fisher's identity): an independent check
    of the backward messages and the expected-transition product. With free log-parameters on
    sequences of one length; with padding, through the softmax: d/d logits = counts - rowsum x probs."""
    params, _, x, _ = random_problem(7, 4, 5, [9, 9, 9])
    h = ours(params)
    start, trans, emit, ll = h.expected_counts(x)
    free = [p.detach().clone().requires_grad_(True) for p in h.log_params()]
    total = h.log_likelihood(x, params=tuple(free)).sum()
    grads = torch.autograd.grad(total, free)
    assert ll == pytest.approx(total.item())
    for a, b in zip((start, trans, emit), grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)

    params, _, x, mask = random_problem(8, 4, 5, [6, 9, 2])
    h = ours(params)
    counts = h.expected_counts(x, mask)[:3]
    grads = torch.autograd.grad(h.log_likelihood(x, mask).sum(), [h.start_logits, h.trans_logits, h.emit_logits])
    for c, g, logp in zip(counts, grads, h.log_params()):
        torch.testing.assert_close(g, c - c.sum(-1, keepdim=True) * logp.exp().detach(), rtol=1e-9, atol=1e-10)


def test_em_never_decreases_the_likelihood():
    torch.manual_seed(1)
    truth = HMM(3, 6, init_std=2.0).double()
    _, x = truth.sample(20, 30, torch.Generator().manual_seed(0))
    h = HMM(4, 6).double()
    info = run_em(h, [(x, None)], iters=12, pseudocount=0.0)
    history = info["train_loglik_per_token"]
    assert all(b >= a - 1e-12 for a, b in zip(history, history[1:]))
    assert history[-1] > history[0]
    assert info["tokens"] == 12 * 600 and info["em_iterations"] == 12


def test_next_token_distribution_is_the_likelihood_ratio():
    torch.manual_seed(2)
    h = HMM(5, 7).double()
    x = torch.randint(0, 7, (2, 6))
    logp = h.next_token_logprobs(x)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(2, 6, dtype=torch.float64))
    ll = torch.stack([h.log_likelihood(x[:, :t]) for t in range(1, 7)], 1)  # log p(x_1..x_t)
    step = logp[:, :-1].gather(-1, x[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(step, ll[:, 1:] - ll[:, :-1])


def test_sampling_follows_the_parameters():
    params = (np.array([0.7, 0.3]), np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([[0.6, 0.4, 0.0], [0.0, 0.1, 0.9]]))
    h = ours(params)
    states, tokens = h.sample(4000, 3, torch.Generator().manual_seed(0))
    assert (states[:, 0] == 0).double().mean().item() == pytest.approx(0.7, abs=0.03)
    from_0 = states[:, 1][states[:, 0] == 0]
    assert (from_0 == 0).double().mean().item() == pytest.approx(0.9, abs=0.03)
    assert not ((states == 0) & (tokens == 2)).any() and not ((states == 1) & (tokens == 0)).any()


@pytest.mark.parametrize("field,value,match", [("n_states", 0, "K"), ("n_states", 2.5, "K"),
                                               ("training", "sgd", "arch.training"), ("em_iters", 0, "em_iters"),
                                               ("em_pseudocount", -1, "em_pseudocount")])
def test_bad_config_is_a_user_error(field, value, match):
    with pytest.raises(UserError, match=match):
        HMMConfig(**{field: value})


def test_class_conditional_classifier_with_em():
    torch.manual_seed(3)
    gens = [HMM(2, 5, init_std=3.0), HMM(2, 5, init_std=3.0)]
    data, labels = [], []
    for c, n in ((0, 30), (1, 15)):
        _, toks = gens[c].sample(n, 10, torch.Generator().manual_seed(c))
        data += [t.numpy() for t in toks]
        labels += [c] * n
    model = HMMClassifier(HMMConfig(n_states=2, training="em", em_iters=8, vocab_size=5), num_classes=2)
    info = model.fit(LabeledTask(data, labels), Budget(), {"batch_size": 16, "seq_len": 1},
                     torch.device("cpu"), None)
    assert info["examples"] == 45 and model.fitted
    x = torch.as_tensor(np.stack(data))
    mask = torch.ones_like(x, dtype=torch.bool)
    with torch.no_grad():
        logits = model(x, mask)
        ll = model.hmms[1].log_likelihood(x[:1], mask[:1])
    assert (logits.argmax(1) == torch.tensor(labels)).double().mean() > 0.8
    assert float(logits[0, 1]) == pytest.approx(float(ll) + np.log(15 / 45), rel=1e-5)


@pytest.mark.parametrize("training,extra", [("gradient", ["train.max_steps=4"]),
                                            ("em", ["arch.em_iters=2", "train.max_tokens=4000"])])
def test_runs_through_the_harness(tmp_path, training, extra):
    from harness.run import run_one
    from tests.baseline_helpers import tiny_text_file
    from tests.helpers import compose_conf

    text = tiny_text_file(tmp_path / "docs.txt")
    conf = compose_conf(*["arch=hmm", "arch.n_states=8", f"arch.training={training}", "task.source=files",
                    f"task.path={text}", f"results_dir={tmp_path / 'results'}", "report=false",
                    "train.progress=false", "train.eval_every=0", "train.seq_len=32", *extra])
    rec = run_one(conf).to_dict()
    assert rec["status"] == "ok", rec.get("error")
    assert 0 < rec["metrics"]["bits_per_byte"] < 9
    assert rec["flops_per_token"] == (6 * 64 if training == "em" else 6 * 64 + 6 * 8 * 256)
    if training == "em":
        assert rec["fit"]["em_iterations"] == 2 and rec["tokens_seen"] <= 4000
        assert rec["throughput"]["mfu"] is not None  # measured tokens/s x the stated FLOP formula
    else:
        assert rec["steps"] == 4


def test_benchmark_prints_figures(monkeypatch, capsys):
    import tasks.data.word_corpus
    from harness.bench.baselines import main

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    fake = [[words[i] for i in rng.zipf(1.3, size=rng.integers(3, 15)) % 300] for _ in range(3000)]
    monkeypatch.setattr(tasks.data.word_corpus, "builtin_sentences", lambda: fake)
    monkeypatch.delenv("KENLM_BIN", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")  # no lmplz: the reference timing is skipped
    assert main(["--words", "20000", "--order", "3", "--ks", "4,8"]) == 0
    out = capsys.readouterr().out
    assert "n-gram order 3 on 20,0" in out and "estimation" in out and "MiB" in out
    assert "lmplz: skipped" in out and "KenLM query skipped" in out and "tokens/s" in out
    assert out.count("(1 threads)") == 2  # both K rows, under this file's one-thread fixture


def test_logit_scale_changes_the_step_not_the_model():
    params, _, x, mask = random_problem(9, 3, 4, [5, 7])
    plain, scaled = ours(params), HMM(3, 4, logit_scale=30.0).double()
    scaled.set_probabilities(*params)
    for a, b in zip(plain.log_params(), scaled.log_params()):
        torch.testing.assert_close(a, b)
    # one SGD step of size lr on the stored parameters moves the logits 30x as far (30 x 30 x gradient)
    lr = 1e-3
    for h in (plain, scaled):
        loss = -h.log_likelihood(x, mask).sum()
        loss.backward()
        with torch.no_grad():
            for p in h.parameters():
                p -= lr * p.grad
    d_plain = (plain.trans_logits * 1.0).detach() - torch.log(torch.as_tensor(params[1]))
    d_scaled = (scaled.trans_logits * 30.0).detach() - torch.log(torch.as_tensor(params[1]))
    torch.testing.assert_close(d_scaled, 900 * d_plain, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("with_mask", [False, True])
def test_scaled_e_step_equals_the_log_space_one(with_mask, monkeypatch):
    """The probability-space fast path and the log-space recursion give the same counts and likelihood."""
    import archs.hmm as hmm_mod

    torch.manual_seed(3)
    hmm = HMM(7, 11, init_std=2.0)
    x = torch.randint(0, 11, (4, 9))
    mask = torch.ones(4, 9, dtype=torch.bool)
    if with_mask:
        mask[1, 5:] = False
        mask[3, 2:] = False
    fast = hmm.expected_counts(x, mask if with_mask else None)
    monkeypatch.setattr(hmm_mod, "scaled_expected_counts", lambda *a, **k: None)  # force the log-space path
    slow = hmm.expected_counts(x, mask if with_mask else None)
    for a, b in zip(fast[:3], slow[:3]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    assert fast[3] == pytest.approx(slow[3], rel=1e-5)
