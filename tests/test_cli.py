"""The entry point: bad input is one line + exit 2 and writes nothing; a multirun lands records and a report."""
import json

import pytest

from harness.sweep import main
from tests.helpers import FAST, run_cli


def _bad(capsys, tmp_path, *args):
    with pytest.raises(SystemExit) as exc:
        main([f"results_dir={tmp_path}", *args])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert not (tmp_path / "runs").exists()
    return err


@pytest.mark.parametrize("args, expected", [
    (["arch=transformerxl"], "unknown arch 'transformerxl'; valid: .*gpt.*lstm"),
    (["task=poetry"], "unknown task 'poetry'; valid: .*lm"),
    (["study=everything"], "unknown study 'everything'; valid: .*compare"),
    (["size=enormous"], "arch 'gpt' has no size 'enormous'; valid sizes: tiny"),
    (["arch=lstm", "size=7b"], "arch 'lstm' has no size '7b'"),
    (["train.max_step=5"], "unknown config key 'train.max_step'"),
    (["bogus=1"], "unknown config key 'bogus'"),
    (["train.max_steps=ten"], "train.max_steps must be a positive integer or null, got 'ten'"),
    (["train.max_seconds=-1"], "train.max_seconds must be a positive number or null"),
    (["device=tpu"], "unknown device 'tpu'; valid: auto, cpu, cuda"),
    (["threads=0"], "threads must be a positive integer or null, got 0"),
    (["attention=flash9"], "unknown attention backend 'flash9'; valid: auto, math, sdpa, xformers"),
    (["-m", "arch=gpt,nope"], "unknown arch 'nope'"),
    (["train.schedule=linear"], "unknown train.schedule 'linear'; valid: cosine, inverse_sqrt"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, args, expected):
    import re

    err = _bad(capsys, tmp_path, *args)
    assert re.search(expected, err), err


def test_unwritable_results_dir(capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exc:
        main([f"results_dir={blocker}/sub"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "cannot be written" in err and len(err.splitlines()) == 1


def test_cli_single_run_then_skip_then_report(tmp_path):
    """Real subprocesses: the command a user types, no traceback, a record and a report."""
    bad = run_cli("arch=nope", f"results_dir={tmp_path}")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == ["error: unknown arch 'nope'; valid: gpt, lstm"] or \
        bad.stderr.strip().startswith("error: unknown arch 'nope'")

    fast = [a for a in FAST if a != "report=false"]
    ok = run_cli("-m", "arch=gpt,lstm", "seed=0", f"results_dir={tmp_path}", *fast)
    assert ok.returncode == 0, ok.stderr[-2000:]
    recs = [json.loads(p.read_text()) for p in sorted((tmp_path / "runs").glob("*.json"))]
    assert sorted(r["arch"] for r in recs) == ["gpt", "lstm"]
    assert all(r["status"] == "ok" for r in recs)
    report = (tmp_path / "report.md").read_text()
    assert "| gpt |" in report and "| lstm |" in report and "bits_per_byte" in report
    pngs = list(tmp_path.glob("*.png"))
    assert pngs and all(p.stat().st_size > 5000 for p in pngs)
    assert (tmp_path / "runs.parquet").is_file()

    again = run_cli("-m", "arch=gpt,lstm", "seed=0", f"results_dir={tmp_path}", *fast)
    assert again.returncode == 0 and again.stdout.count("skip ") == 2

    rebuilt = run_cli(str(tmp_path), module="harness.report")
    assert rebuilt.returncode == 0 and "report.md" in rebuilt.stdout
