"""study=tune: picks the lr with the lowest validation loss, flags a best value at the grid's edge,
writes tuned_recipes.json, and a later run of the same arch/size/task uses it and says so."""
from __future__ import annotations

import json

from archbench.record import RunRecord, write_record
from harness import tune
from harness.report.frame import frame, load_records
from harness.report.tuning import tuning_section
from tests.helpers import compose_conf


def _tune_record(tmp_path, arch, lr, val):
    rec = RunRecord(run_key=f"{arch}{lr}", status="ok", arch=arch, size="tiny", task="lm", kind="lm", seed=0,
                    overrides=[f"arch={arch}", f"train.lr={lr}", "study=tune"], config={"train": {"lr": lr}},
                    curve=[{"step": 10, "tokens": 100, "val_loss": val}], tokens_seen=100, params=1,
                    primary_metric="bits_per_byte", lower_is_better=True, metrics={"bits_per_byte": val / 0.69})
    write_record(tmp_path, rec)


def test_tune_picks_by_validation_loss_and_flags_the_edge(tmp_path):
    for lr, val in ((1e-3, 2.5), (3e-3, 2.1), (1e-2, 2.3)):  # bracketed
        _tune_record(tmp_path, "gpt", lr, val)
    for lr, val in ((1e-3, 3.0), (3e-3, 2.8), (1e-2, 2.6)):  # still falling at the top of the grid
        _tune_record(tmp_path, "lstm", lr, val)
    tune.write_tuned(tmp_path)
    chosen = json.loads((tmp_path / tune.FILE).read_text())
    assert chosen["gpt/tiny/lm"]["lr"] == 3e-3 and chosen["gpt/tiny/lm"]["at_edge"] is None
    assert chosen["lstm/tiny/lm"]["lr"] == 1e-2 and chosen["lstm/tiny/lm"]["at_edge"] == "highest"
    conf = compose_conf("arch=lstm", f"results_dir={tmp_path}")
    assert conf["train"]["lr"] == 1e-2 and conf["recipe_source"]["lr"] == "tuned"
    assert compose_conf("arch=lstm", f"results_dir={tmp_path}", "train.lr=5e-3")["recipe_source"]["lr"] == "user"
    md = "\n".join(tuning_section(frame(load_records(tmp_path)), tmp_path))
    assert "Learning-rate tuning" in md and "| highest |" in md and "tuning_lr.png" in md


def test_tune_study_composes_a_log_grid():
    from harness.config import compose

    cfg = compose(["study=tune"], hydra_cfg=True)
    grid = [float(x) for x in str(cfg.hydra.sweeper.params["train.lr"]).split(",")]
    assert len(grid) >= 5 and all(b / a == 2 for a, b in zip(grid, grid[1:]))
