"""Budgets: budget.tokens / budget.flops / budget.seconds are the user's names; a FLOP budget becomes
each run's token limit through its own arch's FLOPs per token; disagreeing spellings are an error."""
import json

import pytest

from harness.config import validate
from archbench.errors import UserError
from harness.run import apply_flop_budget, given_budget
from tests.helpers import FAST, compose_conf, run_cli


def test_budget_keys_drive_the_engine_limits():
    conf = compose_conf("budget.tokens=5000", "budget.seconds=12.5")
    assert conf["train"]["max_tokens"] == 5000 and conf["train"]["max_seconds"] == 12.5
    assert given_budget(conf) == {"steps": 300, "tokens": 5000, "flops": None, "seconds": 12.5}


def test_two_spellings_that_disagree_are_an_error():
    conf = compose_conf("budget.tokens=5000", "train.max_tokens=6000")
    with pytest.raises(UserError, match="disagree"):
        validate(conf)


def test_a_flop_budget_alone_is_a_budget_and_must_be_positive():
    validate(compose_conf("train.max_steps=null", "budget.flops=1e9"))
    with pytest.raises(UserError, match="budget.flops"):
        validate(compose_conf("budget.flops=-3"))


@pytest.mark.parametrize("fpt, tokens, expected", [(1000, None, 1_000_000), (3000, None, 333_333), (1000, 5000, 5000)])
def test_flop_budget_becomes_tokens_per_run(fpt, tokens, expected):
    budget = {"flops": 1e9, "tokens": tokens}
    tcfg = apply_flop_budget({"max_tokens": tokens, "max_steps": None}, budget, fpt)
    assert tcfg["max_tokens"] == expected
    assert budget["tokens_from_flops"] == int(1e9 // fpt)


def test_equal_flop_runs_read_tokens_by_their_own_flops_per_token(tmp_path):
    flops = 2e10
    fast = [o for o in FAST if not o.startswith("train.max_steps")]
    proc = run_cli("-m", "arch=gpt,lstm", "train.max_steps=null", f"budget.flops={flops}", "train.eval_every=0",
                   f"results_dir={tmp_path}", *fast)
    assert proc.returncode == 0, proc.stderr[-2000:]
    recs = {r["arch"]: r for r in (json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json"))}
    assert set(recs) == {"gpt", "lstm"}
    for r in recs.values():
        per_step = r["config"]["train"]["batch_size"] * r["config"]["train"]["seq_len"]
        allowed = int(flops // r["flops_per_token"])
        assert r["budget"]["tokens_from_flops"] == allowed
        used = r["budget"]["consumed"]
        assert allowed <= used["tokens"] < allowed + per_step  # stops at the first step that reaches it
        assert used["flops"] == used["tokens"] * r["flops_per_token"]
    assert recs["gpt"]["tokens_seen"] != recs["lstm"]["tokens_seen"]
