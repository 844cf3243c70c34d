"""Every bad input ends in one line and exit 2: no traceback, nothing written (issue 14, item 10).

Run in-process through each command line's ``main(argv)``; almost every case fails before a model
or a data set is built, so the table runs in seconds."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.helpers import FAST


def _sweep(argv):
    from harness.sweep import main
    return main(argv)


def _report(argv):
    from harness.report.cli import main
    return main(argv)


def _lmeval(argv):
    from harness.lmeval.cli import main
    return main(argv)


def _bench(argv):
    from harness.bench.cli import main
    return main(argv)


def _baselines(argv):
    from harness.bench.baselines import main
    return main(argv)


def _archs(argv):
    from archs.__main__ import main
    return main(argv)


def _tasks(argv):
    from tasks.__main__ import main
    return main(argv)


def _setup(tmp: Path) -> dict[str, str]:
    """Files the cases point at: a plain file, a results folder whose runs/ is a file, one whose
    report.md is a folder, a non-UTF-8 record, a text that is not ARPA."""
    (tmp / "afile").write_text("x\n")
    (tmp / "runs_is_file").mkdir()
    (tmp / "runs_is_file" / "runs").write_text("x")
    (tmp / "report_is_dir" / "report.md").mkdir(parents=True)
    (tmp / "report_is_dir" / "runs").mkdir()
    (tmp / "latin1" / "runs").mkdir(parents=True)
    (tmp / "latin1" / "runs" / "abc123.json").write_bytes(b'{"run_key": "abc123", "arch": "caf\xe9"}')
    (tmp / "words.txt").write_bytes(b"caf\xe9 au lait\n")
    (tmp / "ok_words.txt").write_text("the cat sat\nthe dog sat\n")
    return {"tmp": str(tmp), "file": str(tmp / "afile"), "res": str(tmp / "res")}


S = ["report=false", *[f for f in FAST if f != "report=false"]]
CASES = [
    # sweep: flags, + and ~, numbers, names, paths
    (_sweep, ["force=no"]), (_sweep, ["force=off"]), (_sweep, ["force='false'"]), (_sweep, ["report=maybe"]),
    (_sweep, ["checkpoint=yes"]), (_sweep, ["train.progress=1"]), (_sweep, ["flush_denormal=no"]), (_sweep, ["+train.max_stepz=5"]),
    (_sweep, ["+train.max_steps=5"]), (_sweep, ["~train.lr"]), (_sweep, ["train.max_stepz=5"]),
    (_sweep, ["arch.d_model=-8"]), (_sweep, ["train.lr=nan"]), (_sweep, ["train.lr=inf"]),
    (_sweep, ["train.lr=-1"]), (_sweep, ["train.batch_size=0"]), (_sweep, ["train.seq_len=abc"]),
    (_sweep, ["seed=x"]), (_sweep, ["arch=nope"]), (_sweep, ["task=nope"]), (_sweep, ["device=tpu"]),
    (_sweep, ["attention=flash9"]), (_sweep, ["plan=sometimes"]), (_sweep, ["threads=0"]),
    (_sweep, ["train.min_lr_ratio=2"]), (_sweep, ["train.betas=[0.9]"]), (_sweep, ["budget.tokens=-5"]),
    (_sweep, ["size=huge"]), (_sweep, ["init_from={tmp}/missing.pt"]), (_sweep, ["-m", "seed=0,1", "force=no"]),
    (_sweep, ["results_dir={file}"]), (_sweep, ["results_dir={tmp}/runs_is_file"]),
    (_sweep, ["results_dir={tmp}/report_is_dir", "report=true"]),
    # report
    (_report, ["{tmp}/missing"]), (_report, ["{tmp}/report_is_dir"]), (_report, ["--bogus"]),
    (_report, ["{file}"]),
    # lmeval
    (_lmeval, []), (_lmeval, ["run=nope", "results_dir={tmp}/latin1"]),
    (_lmeval, ["run={tmp}/latin1/runs/abc123.json"]), (_lmeval, ["run=abc", "batch_size=0"]),
    (_lmeval, ["run=abc", "limit=abc"]), (_lmeval, ["run=abc", "offline=maybe"]), (_lmeval, ["run=abc", "bogus=1"]),
    (_lmeval, ["run=abc", "tasks="]),
    # bench and baselines
    (_bench, ["--steps", "-1"]), (_bench, ["--max-len", "0"]), (_bench, ["--threads", "0"]),
    (_bench, ["--only", "nope"]), (_bench, ["--json", "{tmp}"]), (_bench, ["--json", "{file}/out.json"]),
    (_baselines, ["--ks", "abc"]), (_baselines, ["--words", "0"]), (_baselines, ["--ks", "0,16"]),
    (_baselines, ["--order", "9"]),
    # n-gram command line and the word-corpus writer
    (_archs, ["ngram"]), (_archs, ["ngram", "--train", "{tmp}/missing.txt"]),
    (_archs, ["ngram", "--train", "{tmp}/words.txt"]), (_archs, ["ngram", "--order", "x"]),
    (_archs, ["ngram", "--train", "{tmp}/ok_words.txt", "--write-arpa", "{file}/m.arpa"]),
    (_archs, ["ngram", "--train", "{tmp}/ok_words.txt", "--write-arpa", "{tmp}"]),
    (_archs, ["ngram", "--read-arpa", "{file}"]), (_archs, ["nope"]), (_tasks, ["word-corpus", "{file}"]),
]
if not torch.cuda.is_available():
    CASES.append((_bench, ["--device", "cuda"]))


def _snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under ``root``; files with size and mtime (a folder's mtime moves with a write check)."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None for p in root.rglob("*")}


@pytest.mark.parametrize("fn,argv", CASES, ids=[f"{f.__name__[1:]}:{' '.join(a)}" for f, a in CASES])
def test_bad_input_is_one_line_and_exit_2(fn, argv, tmp_path, capsys, monkeypatch):
    paths = _setup(tmp_path)
    argv = [a.format(**paths) for a in argv]
    if fn is _sweep and not any(a.startswith("results_dir=") for a in argv):
        argv = [*argv, f"results_dir={paths['res']}"]
    if fn is _sweep:
        argv = [*S, *argv] if "report=true" not in argv else [*[a for a in S if a != "report=false"], *argv]
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        code = fn(argv)
        raise SystemExit(code)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert exc.value.code == 2, err
    assert "Traceback" not in err
    assert 1 <= len(lines) <= 2, err
    assert _snapshot(tmp_path) == before, "a bad input wrote files"


def test_cases_cover_every_command_line():
    assert len(CASES) >= 40
    assert {f for f, _ in CASES} >= {_sweep, _report, _lmeval, _bench, _baselines, _archs}
