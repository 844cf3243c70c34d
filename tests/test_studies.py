"""Study presets expand to the runs they promise, with their budget rule applied to every run."""
import dataclasses

import pytest
import torch

from archbench import TaskSpec, get_arch
from harness.run import non_embedding_params
from harness.sweep import preflight


def _jobs(study, tmp_path, *extra):
    return preflight([f"study={study}", f"results_dir={tmp_path}", *extra], multirun=True)


def _n(conf):
    spec = get_arch(conf["arch"]["name"])
    hp = spec.hparams(conf["size"], conf["arch"])
    if any(f.name == "attention" for f in dataclasses.fields(hp)):
        hp = dataclasses.replace(hp, attention="math")
    with torch.device("meta"):
        model = spec.build("lm", hp, TaskSpec(kind="lm", vocab_size=259, max_seq_len=conf["train"]["seq_len"]))
    return non_embedding_params(model)


def test_scaling_is_two_ladders_of_five_sizes_under_one_token_budget(tmp_path):
    confs = _jobs("scaling", tmp_path)
    assert len(confs) == 20
    for arch in ("gpt", "lstm"):
        ns = sorted({_n(c) for c in confs if c["arch"]["name"] == arch})
        assert len(ns) == 5 and ns[-1] / ns[0] > 20, ns
    assert {c["budget"]["tokens"] for c in confs} == {1048576}
    assert {c["train"]["max_steps"] for c in confs} == {None}


def test_context_pairs_gpt_and_lstm_at_matched_parameters(tmp_path):
    confs = _jobs("context", tmp_path)
    ns = {c["arch"]["name"]: _n(c) for c in confs}
    assert set(ns) == {"gpt", "lstm"} and abs(ns["gpt"] / ns["lstm"] - 1) < 0.1, ns
    assert {c["train"]["seq_len"] for c in confs} == {256}


@pytest.mark.parametrize("study, n_jobs", [("throughput", 24), ("compare", 4)])
def test_study_sizes(study, n_jobs, tmp_path):
    confs = _jobs(study, tmp_path)
    assert len(confs) == n_jobs


def test_a_flop_budget_on_the_command_line_replaces_the_study_token_budget(tmp_path):
    confs = _jobs("scaling", tmp_path, "budget.tokens=null", "budget.flops=2e12")
    assert {(c["budget"]["tokens"], c["budget"]["flops"]) for c in confs} == {(None, 2e12)}


def test_tasks_study_runs_every_cell_two_at_a_time_on_one_thread_each(tmp_path):
    """study=tasks: 6 archs x 5 tasks, through the joblib launcher (2 jobs), threads=1 in every cell,
    so its metrics are those of the cells run one after another at threads=1."""
    from harness.config import compose

    confs = _jobs("tasks", tmp_path)
    assert len(confs) == 30 and {c["threads"] for c in confs} == {1}
    launcher = compose(["study=tasks"], hydra_cfg=True).hydra.launcher
    assert launcher.n_jobs == 2 and "joblib" in launcher._target_.lower()
