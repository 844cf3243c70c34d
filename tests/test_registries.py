import pytest

from archbench import ARCHS, KINDS, TaskSpec, build_model, get_arch
from archbench.errors import UserError
from archbench import TASKS, task_kind


def test_core_archs_registered_with_kinds_and_sizes():
    for name in ("gpt", "lstm"):
        spec = ARCHS[name]
        assert "lm" in spec.kinds
        assert "tiny" in spec.sizes
        assert set(spec.kinds) <= set(KINDS)


def test_every_arch_has_a_yaml_and_every_yaml_an_arch():
    from harness.sweep import group_options

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
