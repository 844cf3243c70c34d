import pytest

from archbench import ARCHS, TASKS
from harness.report.capabilities import capability_matrix
from harness.sweep import main

TASK_KINDS = {name: TASKS[name].kind for name in TASKS}


def test_every_arch_meets_every_task_with_a_verdict():
    m = capability_matrix()
    assert len(m) == len(ARCHS) * len(TASK_KINDS)
    assert not m.duplicated(["arch", "task"]).any()
    assert set(m["task"]) == {"lm", "mt", "classification", "summarization", "mlm"}
    for row in m.itertuples():
        assert row.kind == TASK_KINDS[row.task]
        assert row.supported == (row.kind in ARCHS[row.arch].kinds)
        if not row.supported:  # every arch says why it cannot do a kind
            assert row.reason and row.reason == ARCHS[row.arch].unsupported.get(row.kind), (row.arch, row.kind)
        else:
            assert row.reason == ""


def test_an_unsupported_pair_is_one_line_and_exit_2(tmp_path, capsys):
    m = capability_matrix()
    cell = m[~m["supported"]].iloc[0]
    with pytest.raises(SystemExit) as exc:
        main([f"arch={cell.arch}", f"task={cell.task}", f"results_dir={tmp_path}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and cell.reason in err[0] and f"arch '{cell.arch}'" in err[0]
    assert not (tmp_path / "runs").exists()
