"""lm-eval integration: every LM arch is an lm-eval model, and lm-eval's bits per byte on our test split
is our evaluator's to 1e-6; loglikelihood / is_greedy / generate_until are right; bad input is one line."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from archbench import ARCHS, ArchSpec, TaskSpec
from archbench.model import NeuralLM
from archbench import build_task
from archbench.errors import UserError
from harness.checkpoints import load_checkpoint, save_checkpoint
from harness.lmeval import BUILTIN_TASK, evaluate_run, main, parse_args
from harness.run import run_one
from tasks.lm import DOC_SEPARATOR
from tasks.scoring.lm_scoring import boundary_ids, continuation_scores, rolling_nll
from tasks.text.tokenizers import ByteTokenizer
from tests.helpers import FAST, compose_conf, run_cli

# every LM arch whose preset is a model (arch=hf needs a model folder: tests/test_arch_hf.py)
LM_ARCHS = sorted(name for name, spec in ARCHS.items() if "lm" in spec.kinds and name != "hf")
TINY = [o for o in FAST if o.split("=")[0] not in ("task.max_bytes", "train.max_steps", "train.eval_every")] + [
    "task.max_bytes=8000", "train.max_steps=6", "train.eval_every=0", "checkpoint=true", "device=cpu",
    "train.lr=3e-3"]  # a 6-step run with 2 warmup steps: the tiny recipes' lr (tuned for 700 steps) overshoots
CPU = torch.device("cpu")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is ~50x faster than two fighting for cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    """One tiny trained, checkpointed run per LM arch, shared by every test here."""
    results = tmp_path_factory.mktemp("lmeval")
    return results, {a: run_one(compose_conf(f"results_dir={results}", f"arch={a}", *TINY)).to_dict() for a in LM_ARCHS}


def _checkpointed(runs, arch):
    results, recs = runs
    rec = recs[arch]
    failed_saving = rec["status"] != "ok" and "save_checkpoint" in (rec.get("traceback") or "")
    assert rec["status"] == "ok" or failed_saving, f"{arch} run failed: {rec.get('error')}"
    if failed_saving or rec.get("checkpoint_error"):  # the record says the model cannot be checkpointed
        pytest.skip(f"arch {arch} is not checkpointable: {rec.get('checkpoint_error') or rec.get('error')}")
    assert rec.get("checkpoint"), f"{arch}: checkpoint=true but the record names no checkpoint"
    return results, rec


def _lm(rec, batch_size=32):
    from harness.lmeval.model import ArchbenchLM, load_lm_checkpoint

    model, payload, task = load_lm_checkpoint(rec["checkpoint"])
    return ArchbenchLM(model, task.tokenizer, payload["task_spec"]["max_seq_len"], "cpu", batch_size), model, task


def _requests(kind, *args):
    from lm_eval.api.instance import Instance

    return [Instance(request_type=kind, doc={}, arguments=a, idx=0) for a in args]


@pytest.mark.parametrize("arch", LM_ARCHS)
def test_lmeval_bits_per_byte_equals_our_evaluator(runs, arch):
    results, rec = _checkpointed(runs, arch)
    before = dict(rec["metrics"])
    new, path, scores = evaluate_run(parse_args([f"run={rec['run_key']}", f"results_dir={results}", "device=cpu"]))

    # our evaluator: the LM test metric, defined through the shared scoring function (tasks/scoring/lm_scoring.py)
    model, payload = load_checkpoint(rec["checkpoint"])
    task = build_task(payload["task_config"])
    text = DOC_SEPARATOR.join(task.splits["test"])
    ids, n_context = boundary_ids(task.tokenizer, text, DOC_SEPARATOR)
    nll, n_targets = rolling_nll(model, ids, n_context, rec["config"]["train"]["seq_len"], CPU)
    n_bytes = len(text.encode("utf-8"))
    ours = nll / math.log(2) / n_bytes

    assert n_targets == len(ids) - n_context == len(task.tokenizer.encode(text))  # every test token predicted
    assert scores[f"{BUILTIN_TASK}/bits_per_byte"] == pytest.approx(ours, rel=1e-6)
    # and the number the run itself recorded, from the LM task's own evaluate()
    assert scores[f"{BUILTIN_TASK}/bits_per_byte"] == pytest.approx(before["bits_per_byte"], rel=1e-6)
    assert scores[f"{BUILTIN_TASK}/byte_perplexity"] == pytest.approx(2 ** ours, rel=1e-6)
    on_disk = json.loads(path.read_text())
    assert on_disk["lmeval"][f"{BUILTIN_TASK}/bits_per_byte"] == scores[f"{BUILTIN_TASK}/bits_per_byte"]
    info = on_disk["lmeval_info"][BUILTIN_TASK]
    assert info["bytes"] == n_bytes and info["data_fingerprint"] == task.fingerprint and info["docs_evaluated"] == 1
    assert info["joined_test_documents"] == len(task.splits["test"])
    assert on_disk["metrics"] == before and on_disk["status"] == "ok"  # the run's own results are untouched
    assert 0.5 < ours < 9  # a barely trained byte model: between a good LM and uniform-ish


def test_rolling_nll_follows_its_definition(runs):
    """Oracle: each target scored on its own, with the window the definition gives it."""
    _, rec = _checkpointed(runs, "gpt")
    model, _ = load_checkpoint(rec["checkpoint"])
    L, n_context = 8, 3
    ids = torch.randint(0, 256, (40,), generator=torch.Generator().manual_seed(0))
    expected = 0.0
    for p in range(n_context, len(ids)):
        s = n_context + (p - n_context) // L * L  # the first target of p's window
        x = ids[s - 1:min(s - 1 + L, len(ids) - 1)]
        expected -= F.log_softmax(model(x[None]).double(), -1)[0, p - s, ids[p]].item()
    nll, n = rolling_nll(model, ids, n_context, L, CPU, batch_size=2)  # 4 full windows in 2 batches + a tail
    assert n == len(ids) - n_context
    assert nll == pytest.approx(expected, rel=1e-5)


def test_loglikelihood_windows_end_at_their_last_target_and_score_every_token_once(runs):
    """Oracle: each continuation token predicted on its own, from the window the definition gives it:
    chunks of seq_len targets, each window the seq_len tokens before the chunk's last target (as HFLM)."""
    _, rec = _checkpointed(runs, "gpt")
    lm, model, task = _lm(rec, batch_size=3)
    L = lm.seq_len
    text = DOC_SEPARATOR.join(task.splits["test"])[:400]
    pairs = [(text[:150], text[150:200]),  # context longer than the window, continuation too
             (text[:10], text[10:10 + 3 * L + 5]),  # continuation of several windows
             ("", text[:20]),  # empty context: the document boundary
             (text[:30] + " ", text[30:40])]  # trailing space moves to the continuation (HFLM)

    def oracle(context, continuation):
        if context:
            ids = torch.as_tensor(task.tokenizer.encode(context + continuation))
            n_ctx = len(task.tokenizer.encode(context.rstrip()))
        else:
            ids, n_ctx = boundary_ids(task.tokenizer, continuation, DOC_SEPARATOR)
        total, greedy = 0.0, True
        for s in range(n_ctx, len(ids), L):
            e = min(s + L, len(ids))
            lo = max(0, e - 1 - L)
            for p in range(s, e):
                dist = F.log_softmax(model(ids[lo:p][None]).float(), -1)[0, -1]
                total += dist[ids[p]].item()
                greedy = greedy and int(dist.argmax()) == int(ids[p])
        return total, greedy

    got = lm.loglikelihood(_requests("loglikelihood", *pairs))
    for (ll, greedy), pair in zip(got, pairs):
        want_ll, want_greedy = oracle(*pair)
        assert ll == pytest.approx(want_ll, rel=1e-5, abs=1e-4)
        assert greedy == want_greedy
    rolled = lm.loglikelihood_rolling(_requests("loglikelihood_rolling", (text,)))
    ids, n_ctx = boundary_ids(task.tokenizer, text, DOC_SEPARATOR)
    assert rolled[0] == -rolling_nll(model, ids, n_ctx, L, CPU)[0]


class CycleLM(NeuralLM):
    """A hand-set bigram model: after 'a' comes 'b', then 'c', 'd', 'a' ...; after anything else, 'a'.
    Its greedy continuation of any text is known, and so is the log-probability of any string."""

    CYCLE = "abcd"

    def __init__(self):
        super().__init__()
        table = torch.zeros(256, 256)
        table[:, ord("a")] = 6.0
        for cur, nxt in zip(self.CYCLE, self.CYCLE[1:] + self.CYCLE[0]):
            table[ord(cur)] = 0.0
            table[ord(cur), ord(nxt)] = 6.0
        self.table = torch.nn.Parameter(table)

    def forward(self, idx):
        return self.table[idx]

    def flops_per_token(self, seq_len):
        return None


class ScoreOnlyLM:
    """A model with target_logprobs only (like a count-based LM without a next-token distribution)."""

    def __init__(self, inner):
        self.inner = inner

    def target_logprobs(self, x, y):
        return self.inner.target_logprobs(x, y)


def _cycle_lm(seq_len=8, batch_size=2, model=None):
    from harness.lmeval.model import ArchbenchLM

    return ArchbenchLM(model or CycleLM(), ByteTokenizer(), seq_len, "cpu", batch_size, name="cycle")


def test_is_greedy_on_a_model_whose_greedy_continuation_is_known():
    lm = _cycle_lm()
    logp = F.log_softmax(CycleLM().table, -1)
    best = logp[ord("a"), ord("b")].item()  # the greedy token's log-probability (the same after every byte)
    long = ("cdab" * 10)[:37]  # longer than seq_len=8: scored in windows
    got = lm.loglikelihood(_requests("loglikelihood", ("xab", "cd"), ("xab", "ce"), ("xab", long), ("", "abc"),
                                     ("x" * 30 + "ab", "cda"), ("xab", "dcba")))
    assert [g for _, g in got] == [True, False, True, True, True, False]
    assert got[0][0] == pytest.approx(2 * best, rel=1e-6)
    assert got[1][0] == pytest.approx(best + logp[ord("c"), ord("e")].item(), rel=1e-6)
    assert got[2][0] == pytest.approx(len(long) * best, rel=1e-6)
    assert got[3][0] == pytest.approx(3 * best, rel=1e-6)  # after the boundary "\n\n" comes "a"


def test_generate_until_stops_at_until_strings_and_max_gen_toks():
    lm = _cycle_lm()
    reqs = _requests("generate_until",
                     ("xab", {"until": ["a"], "max_gen_toks": 50}),
                     ("xab", {"until": ["zz"], "max_gen_toks": 5}),
                     ("xab", {"until": ["ab", "bc"], "max_gen_toks": 50}),
                     ("xab", {"until": "c", "max_gen_toks": 50}),
                     ("y" * 20 + "b", {"until": ["zz"], "max_gen_toks": 11}),  # context longer than seq_len
                     ("xab", {"max_gen_toks": 3, "do_sample": False, "temperature": 0.0}),
                     ("xab", {"until": ["zz"], "max_gen_toks": 6, "do_sample": True, "top_k": 1}))
    assert lm.generate_until(reqs) == ["cd", "cdabc", "cd", "", "cdabcdabcda", "cda", "cdabcd"]


def test_a_model_without_a_next_token_distribution_says_so_in_one_line():
    lm = _cycle_lm(model=ScoreOnlyLM(CycleLM()))
    assert lm.loglikelihood_rolling(_requests("loglikelihood_rolling", ("abcd",)))[0] < 0  # scoring still works
    for kind, args in (("loglikelihood", ("ab", "c")), ("generate_until", ("ab", {"until": ["a"]}))):
        with pytest.raises(UserError, match=r"cycle gives no next-token distribution \(next_token_logprobs"):
            getattr(lm, kind)(_requests(kind, args))
    with pytest.raises(UserError, match="cannot score text: its model has no target_logprobs"):
        _cycle_lm(model=torch.nn.Linear(2, 2))
    with pytest.raises(UserError, match="generation option.*top_z.*not supported"):
        _cycle_lm().generate_until(_requests("generate_until", ("ab", {"until": ["a"], "top_z": 3})))


def _bad(capsys, argv, expected):
    import re

    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert re.search(expected, err), err


def test_bad_input_is_one_line_and_exit_2_and_leaves_the_record_alone(runs, tmp_path, capsys, monkeypatch):
    results, rec = _checkpointed(runs, "gpt")
    record = results / "runs" / f"{rec['run_key']}.json"
    before = record.read_bytes()
    _bad(capsys, [f"results_dir={results}"], "missing run=")
    _bad(capsys, ["run=x", "task=lm"], "unknown argument 'task'; valid: run, tasks")
    _bad(capsys, [f"run={rec['run_key']}", f"results_dir={results}", "limit=0"], "limit must be")
    _bad(capsys, ["run=ffffffffffff", f"results_dir={results}"], "no run 'ffffffffffff' in .*runs")

    # a run without a checkpoint
    other = tmp_path / "no_ckpt"
    (other / "runs").mkdir(parents=True)
    (other / "runs" / record.name).write_text(json.dumps({k: v for k, v in rec.items() if k != "checkpoint"}))
    _bad(capsys, [f"run={rec['run_key'][:6]}", f"results_dir={other}"],
         "has no checkpoint; rerun it with checkpoint=true")
    (other / "runs" / record.name).write_text(json.dumps({**rec, "status": "failed"}))
    _bad(capsys, [f"run={rec['run_key']}", f"results_dir={other}"], "has status 'failed', not ok")

    # a checkpoint of a model that is not a language model, and an arch that cannot score text at all
    model, payload = load_checkpoint(rec["checkpoint"])
    spec = TaskSpec(**payload["task_spec"])
    monkeypatch.setitem(ARCHS, "textless", ArchSpec("textless", ("classify",), ARCHS["gpt"].sizes, ARCHS["gpt"].build,
                                                    unsupported={"lm": "bidirectional: it sees the next token"}))
    not_lm = "holds a 'classify' model of arch 'gpt', not a language model"
    cannot = (r"arch 'textless' cannot score text for lm-eval \(bidirectional: it sees the next token\); "
              r"archs that can: .*gpt")
    for arch, kind, expected in (("gpt", "classify", not_lm), ("textless", "classify", cannot)):
        ckpt = save_checkpoint(tmp_path / f"{arch}.pt", model, arch=arch, size="tiny", kind=kind,
                               hparams=type(ARCHS["gpt"].sizes["tiny"])(**payload["hparams"]), task_spec=spec,
                               run_key=rec["run_key"], task_config=payload["task_config"])
        (other / "runs" / record.name).write_text(json.dumps({**rec, "checkpoint": str(ckpt)}))
        _bad(capsys, [f"run={rec['run_key']}", f"results_dir={other}"], expected)
    assert record.read_bytes() == before


def test_cli_unknown_task_is_one_line_and_exit_2(runs):
    """Through the real entry point: lm-eval's whole task index is searched, and its logs stay quiet."""
    results, rec = _checkpointed(runs, "gpt")
    before = (results / "runs" / f"{rec['run_key']}.json").read_bytes()
    proc = run_cli(f"run={rec['run_key']}", f"results_dir={results}", "tasks=archbench_lm,lambada_openaii",
                   "device=cpu", module="harness.lmeval")
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "lm-eval knows no task 'lambada_openaii' (close: lambada_openai" in err
    assert (results / "runs" / f"{rec['run_key']}.json").read_bytes() == before


def test_cli_prints_scores_and_a_copied_results_dir_works(runs, tmp_path, capsys):
    """A record file path works as run=; the scores are printed and merged into that record."""
    results, rec = _checkpointed(runs, "lstm" if "lstm" in LM_ARCHS else "gpt")
    copy = tmp_path / "copy"
    shutil.copytree(results / "runs", copy / "runs")
    record = copy / "runs" / f"{rec['run_key']}.json"
    assert main([f"run={record}", "batch_size=7", "bootstrap_iters=0", "device=cpu"]) == 0
    out = capsys.readouterr().out
    assert f"{BUILTIN_TASK}/bits_per_byte" in out and str(record) in out
    stored = json.loads(record.read_text())
    assert stored["lmeval_info"][BUILTIN_TASK]["batch_size"] == 7
    assert (copy / "lmeval_tasks").is_dir()


def test_run_can_be_named_by_its_hydra_job_folder_and_lm_eval_can_build_the_model_itself(runs, tmp_path):
    from omegaconf import OmegaConf

    from harness.lmeval import resolve_run
    from harness.lmeval.model import ArchbenchLM

    results, rec = _checkpointed(runs, "gpt")
    job = tmp_path / "job"
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(rec["config"]), job / ".hydra" / "config.yaml")
    assert resolve_run(str(job), "elsewhere") == (results, results / "runs" / f"{rec['run_key']}.json")

    # lm-eval's own way in: model="archbench", model_args="checkpoint=..."
    lm = ArchbenchLM.create_from_arg_string(f"checkpoint={rec['checkpoint']},batch_size=4,device=cpu", {"device": None})
    direct, _, _ = _lm(rec)
    assert lm.seq_len == rec["config"]["train"]["seq_len"] and lm.tokenizer_name == "byte" and lm.batch_size == 4
    req = _requests("loglikelihood_rolling", ("Return the sum of a and b.",))
    assert lm.loglikelihood_rolling(req) == direct.loglikelihood_rolling(req)


def test_any_lm_eval_task_from_include_path_multiple_choice_and_generation(runs, tmp_path):
    """lm-eval's own request building reaches the adapter intact: its accuracy is the one our direct calls
    give, and its greedy generation (until / max_gen_toks from the task YAML) is ours character for character."""
    import yaml

    results, rec = _checkpointed(runs, "gpt")
    lm, _, _ = _lm(rec)
    docs = [{"q": "The capital of France is", "choices": [" Paris", " banana", " the"], "label": 0},
            {"q": "def add(a, b):\n    return", "choices": [" a + b", " 1234", " ))"], "label": 0},
            {"q": "Return the", "choices": [" value", " list", "zzz"], "label": 2}]
    settings = {"until": ["\n", "."], "max_gen_toks": 7, "do_sample": False}
    for d in docs:  # the target of the generation task: what the model generates when asked directly
        d["generated"] = lm.generate_until(_requests("generate_until", (d["q"], settings)))[0]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    common = {"dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}}, "test_split": "test",
              "doc_to_text": "{{q}}"}
    (tmp_path / "mc.yaml").write_text(yaml.safe_dump({
        "task": "my_choice", **common, "output_type": "multiple_choice", "doc_to_target": "label",
        "doc_to_choice": "choices", "target_delimiter": "",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}))
    (tmp_path / "gen.yaml").write_text(yaml.safe_dump({
        "task": "my_generation", **common, "output_type": "generate_until", "doc_to_target": "{{generated}}",
        "generation_kwargs": settings,
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}]}))

    _, _, scores = evaluate_run(parse_args([f"run={rec['run_key']}", f"results_dir={results}", "device=cpu",
                                            "tasks=my_choice,my_generation", f"include_path={tmp_path}"]))
    right = []
    for d in docs:
        lls = [ll for ll, _ in lm.loglikelihood(_requests("loglikelihood", *[(d["q"], c) for c in d["choices"]]))]
        right.append(lls.index(max(lls)) == d["label"])
    assert scores["my_choice/acc"] == pytest.approx(sum(right) / len(docs))
    assert scores["my_generation/exact_match"] == 1.0
    assert all(len(d["generated"]) <= 7 and "\n" not in d["generated"] for d in docs)


def test_lm_evals_own_cli_finds_the_archbench_model(runs, tmp_path):
    """``archbench-lm-eval run --model archbench ...`` is lm-eval's CLI with our model registered."""
    from harness.lmeval.export import export_lm_task
    from harness.lmeval.model import load_lm_checkpoint

    results, rec = _checkpointed(runs, "gpt")
    _, _, task = load_lm_checkpoint(rec["checkpoint"])
    folder, _ = export_lm_task(task, tmp_path)
    proc = run_cli("run", "--model", "archbench", "--model_args", f"checkpoint={rec['checkpoint']},device=cpu",
                   "--tasks", BUILTIN_TASK, "--include_path", str(folder), "--limit", "3",
                   module="harness.lmeval.lm_eval_cli", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bits_per_byte" in proc.stdout and BUILTIN_TASK in proc.stdout
