"""Budgets: budget.tokens / budget.flops / budget.seconds are the user's names; one Budget object
(archbench/budget.py) turns them into limits; a FLOP budget becomes each run's token limit through
its own arch's FLOPs per token; disagreeing spellings are an error."""
import json

import pytest

from archbench import Budget
from archbench.errors import UserError
from harness.config import validate
from tests.helpers import FAST, compose_conf, run_cli


def test_budget_keys_drive_the_engine_limits():
    conf = compose_conf("budget.tokens=5000", "budget.seconds=12.5")
    assert conf["train"]["max_tokens"] == 5000 and conf["train"]["max_seconds"] == 12.5
    assert Budget.from_config(conf).given() == {"steps": None, "tokens": 5000, "flops": None, "seconds": 12.5}  # a budget: no default step cap
    assert validate(conf) == Budget.from_config(conf)


def test_two_spellings_that_disagree_are_an_error():
    conf = compose_conf("budget.tokens=5000", "train.max_tokens=6000")
    with pytest.raises(UserError, match="disagree"):
        validate(conf)


def test_a_flop_budget_alone_is_a_budget_and_must_be_positive():
    validate(compose_conf("train.max_steps=null", "budget.flops=1e9"))
    with pytest.raises(UserError, match="budget.flops"):
        validate(compose_conf("budget.flops=-3"))
    # no budget at all: train.max_steps null means the engine's default cap (harness/recipes.py)
    conf = compose_conf("train.max_steps=null")
    assert validate(conf).steps == 300 and conf["recipe_source"]["max_steps"].startswith("default")


@pytest.mark.parametrize("fpt, tokens, expected", [(1000, None, 1_000_000), (3000, None, 333_333), (1000, 5000, 5000)])
def test_flop_budget_becomes_tokens_per_run(fpt, tokens, expected):
    budget = Budget(flops=1e9, tokens=tokens).for_model(fpt)
    assert budget.token_limit == expected
    assert budget.tokens_from_flops == int(1e9 // fpt)
    rec = budget.record()
    assert rec.token_limit == expected and rec.tokens_from_flops_formula.startswith("floor(budget.flops")


def test_a_flop_budget_needs_the_model_to_state_its_flops():
    with pytest.raises(UserError, match="flops_per_token"):
        Budget(flops=1e9).for_model(None)


@pytest.mark.parametrize("budget, horizon", [
    (Budget(steps=300), (300, "max_steps")),
    (Budget(steps=300, tokens=10_000), (10, "max_tokens")),  # ceil(10000 / 1024)
    (Budget(steps=10, tokens=10_240), (10, "max_steps")),  # a tie: the step limit names it
    (Budget(seconds=5.0), (None, "max_seconds")),
])
def test_the_schedule_horizon_is_the_first_limit_reached(budget, horizon):
    assert budget.horizon(1024) == horizon


def test_fitted_models_read_the_tokens_a_gradient_run_would():
    assert Budget(steps=10).fit_tokens(64) == 640
    assert Budget(steps=10, tokens=100).fit_tokens(64) == 100
    assert Budget(seconds=3.0).fit_tokens(64) is None


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
        assert r["budget"]["tokens_from_flops"] == allowed == r["budget"]["token_limit"]
        used = r["budget"]["consumed"]
        assert allowed <= used["tokens"] < allowed + per_step  # stops at the first step that reaches it
        assert used["flops"] == used["tokens"] * r["flops_per_token"]
    assert recs["gpt"]["tokens_seen"] != recs["lstm"]["tokens_seen"]
