"""Training recipes live with the size ladders; the engine resolves user > study > recipe > default
and records where each value came from; the divergence rule and the inverse-sqrt schedule."""
from __future__ import annotations

import math

import pytest

from archbench import ARCHS, Recipe, get_arch
from harness import recipes
from harness.config import validate
from harness.run import run_one
from harness.train import DivergenceWatch, lr_at
from tests.helpers import FAST, compose_conf


def test_every_size_of_every_gradient_trained_arch_has_a_recipe_with_provenance():
    for name in ARCHS.names() if hasattr(ARCHS, "names") else list(ARCHS):
        arch = get_arch(name)
        if arch.fitted or name == "hf":  # a local HF model's recipe is its owner's: given on the command line
            continue
        assert set(arch.recipes) == set(arch.sizes), name
        for size, r in arch.recipes.items():
            assert isinstance(r, Recipe) and r.source and r.lr and r.lr > 0, (name, size)


def test_published_recipes_carry_the_papers_learning_rates():
    gpt = get_arch("gpt")
    assert gpt.recipe("small").lr == 6.0e-4 and "Table 2.1" in gpt.recipe("small").source
    assert gpt.recipe("7b").lr == 3.0e-4 and gpt.recipe("7b").warmup_steps == 2000
    assert get_arch("transformer").recipe("base").schedule == "inverse_sqrt"


def test_precedence_user_then_study_then_recipe_then_default():
    conf = compose_conf("arch=gpt", "size=7b", "train.lr=1e-4")
    src = conf["recipe_source"]
    assert conf["train"]["lr"] == 1e-4 and src["lr"] == "user"
    assert conf["train"]["warmup_steps"] == 2000 and src["warmup_steps"] == "recipe"
    assert conf["train"]["batch_size"] == recipes.DEFAULTS["batch_size"] and src["batch_size"] == "default"
    conf = compose_conf("arch=gpt", "size=tiny", "study=context")
    assert conf["train"]["seq_len"] == 256 and conf["recipe_source"]["seq_len"] == "study"
    assert conf["train"]["lr"] == get_arch("gpt").recipe("tiny").lr and conf["recipe_source"]["lr"] == "recipe"


def test_a_planned_7b_record_shows_the_recipe_lr(tmp_path):
    rec = run_one(compose_conf("arch=gpt", "size=7b", "plan=always", "device=cpu", "train.progress=false",
                               "report=false", "task.max_bytes=20000", f"results_dir={tmp_path}"))
    assert rec.status == "planned"
    assert rec.config["train"]["lr"] == 3.0e-4 and rec.recipe_source["lr"] == "recipe"
    assert "Llama-2" in rec.recipe["source"]


def test_a_budget_is_not_capped_by_the_default_step_limit():
    conf = compose_conf("budget.tokens=2000000")
    assert conf["train"]["max_steps"] is None and validate(conf).horizon(2048) == (977, "max_tokens")
    conf = compose_conf()
    assert validate(conf).steps == recipes.DEFAULT_MAX_STEPS


def test_inverse_sqrt_schedule_peaks_at_warmup_and_decays_as_one_over_sqrt_step():
    t = {"lr": 1e-3, "warmup_steps": 100, "schedule": "inverse_sqrt", "min_lr_ratio": 0.1}
    assert lr_at(99, t, 1000) == pytest.approx(1e-3)
    assert lr_at(399, t, 1000) == pytest.approx(1e-3 * math.sqrt(100 / 400))


def test_divergence_rule_needs_a_sustained_rise():
    w = DivergenceWatch(3.0, 3)
    assert [w.check(x) for x in (5.0, 16.0, 17.0, 5.0, 16.0, 16.0)] == [None] * 6  # reset by the 5.0
    assert "3 consecutive" in w.check(26.0)
    assert DivergenceWatch(0, 3).check(1e9) is None  # off


def test_a_loss_that_climbs_ends_the_run_as_diverged(tmp_path):
    rec = run_one(compose_conf(f"results_dir={tmp_path}", *FAST, "train.lr=30", "train.max_steps=40",
                               "train.warmup_steps=1", "train.diverge_factor=1.2", "train.diverge_patience=3"))
    assert rec.status == "diverged" and rec.stop_reason == "diverged"
    assert "consecutive" in rec.error or "nan" in rec.error.lower() or "inf" in rec.error.lower()


def test_an_explicit_step_cap_below_the_budget_says_it_will_stop_the_run(tmp_path, capsys):
    rec = run_one(compose_conf(f"results_dir={tmp_path}", *FAST, "budget.tokens=1000000"))
    assert rec.stop_reason == "max_steps" and rec.tokens_seen < 1_000_000
    assert "train.max_steps=12" in capsys.readouterr().out
