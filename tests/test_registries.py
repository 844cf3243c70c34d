import pytest

import harness  # noqa: F401  (registers the built-ins)
from archbench import ARCHS, KINDS, TASKS, TaskSpec, build_model, get_arch, task_kind
from archbench.errors import UserError


def test_core_archs_registered_with_kinds_and_sizes():
    for name in ("gpt", "lstm"):
        spec = ARCHS[name]
        assert "lm" in spec.kinds
        assert "tiny" in spec.sizes
        assert set(spec.kinds) <= set(KINDS)


def test_every_arch_has_a_yaml_and_every_yaml_an_arch():
    from harness.config import group_options

    assert set(group_options("arch")) == set(ARCHS)
    assert set(group_options("task")) == set(TASKS)


def test_unknown_arch_lists_valid_choices():
    with pytest.raises(UserError, match="unknown arch 'nope'; valid archs: .*gpt.*lstm"):
        get_arch("nope")


def test_unknown_size_lists_valid_sizes():
    with pytest.raises(UserError, match="no size 'huge'; valid sizes: tiny"):
        get_arch("gpt").hparams("huge")


def test_unknown_hyperparameter_is_rejected():
    with pytest.raises(UserError, match="no hyperparameter 'n_layers'"):
        get_arch("gpt").hparams("tiny", {"n_layers": 3})


def test_null_overrides_keep_the_preset_and_values_replace_it():
    hp = get_arch("gpt").hparams("tiny", {"name": "gpt", "n_layer": None, "d_model": 64})
    assert hp.n_layer == get_arch("gpt").sizes["tiny"].n_layer and hp.d_model == 64


def test_kind_the_arch_cannot_do_is_a_clear_error():
    spec = get_arch("gpt")
    missing = [k for k in KINDS if k not in spec.kinds]
    if not missing:
        pytest.skip("gpt supports every kind")  # nothing to refuse
    with pytest.raises(UserError, match=f"arch 'gpt' cannot do task kind '{missing[0]}'.*supports"):
        build_model("gpt", "tiny", missing[0], TaskSpec(kind=missing[0], vocab_size=16, max_seq_len=8))


def test_task_registry_knows_kinds_without_building_data():
    assert task_kind("lm") == "lm"
    with pytest.raises(UserError, match="unknown task 'nope'; valid tasks: .*lm"):
        task_kind("nope")


# Hyperparameters a run derives rather than the user: the vocabulary and context length come from
# the task and train.seq_len (GPT's block_size), the attention kernel from the top-level ``attention`` key.
RUN_DERIVED = {"vocab_size", "block_size", "attention"}


def test_arch_yaml_declares_exactly_the_hyperparameters_of_the_arch():
    """sweeps/arch/<name>.yaml declares ``name`` and every field of the arch's hyperparameter
    dataclass as null (= from the size preset): a field added to the dataclass without the YAML
    could not be overridden, and a YAML key the dataclass lacks would be rejected at run time."""
    import dataclasses

    from omegaconf import OmegaConf

    from tests.helpers import ROOT

    for name, spec in ARCHS.items():
        path = ROOT / "sweeps" / "arch" / f"{name}.yaml"
        declared = OmegaConf.to_container(OmegaConf.load(path))
        fields = {f.name for f in dataclasses.fields(next(iter(spec.sizes.values())))} - RUN_DERIVED
        assert declared.pop("name") == name
        assert set(declared) == fields, f"{path.name}: missing {fields - set(declared)}, extra {set(declared) - fields}"
        assert all(v is None for v in declared.values()), f"{path.name}: every hyperparameter is null (preset)"


def test_plugin_arch_from_outside_the_repo_runs_like_a_builtin(tmp_path):
    """A .py file in a temporary folder that imports only archbench registers an arch; plugins=[file]
    makes arch=<it> compose (a generated config node), validate and run through the one engine."""
    import json

    from tests.helpers import FAST, run_cli

    from tests.helpers import write_bigram_plugin

    plugin = write_bigram_plugin(tmp_path / "plug" / "bigram_arch.py", "bigram_plugin")
    results = tmp_path / "results"
    proc = run_cli(f"plugins=[{plugin}]", "arch=bigram_plugin", f"results_dir={results}", *FAST)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (rec,) = [json.loads(p.read_text()) for p in (results / "runs").glob("*.json")]
    assert rec["arch"] == "bigram_plugin" and rec["status"] == "ok" and rec["metrics"]["bits_per_byte"] > 0
    assert rec["params"] == 256 * 256  # byte-level vocabulary

    bad = run_cli(f"plugins=[{tmp_path / 'nope.py'}]", f"results_dir={results}", *FAST)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: plug-in file")
