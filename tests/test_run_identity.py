"""A cached record stands in for a run only with the same config, hyperparameters, code and data;
the report never pools records that differ in any of them (issue 14, items 1-4, 7, 9)."""
from __future__ import annotations

import dataclasses
import json
import os
import random
from pathlib import Path

import pytest

from tests.helpers import FAST, compose_conf

WORDS = "the cat dog sat on a mat ran far near house tree river stone light dark".split()


def _write_data(path: Path, seed: int) -> None:
    rng = random.Random(seed)
    docs = ["\n".join(" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(6)) for _ in range(60)]
    path.write_text("\n\n".join(docs) + "\n")


@pytest.fixture
def setup(tmp_path):
    data = tmp_path / "data.txt"
    _write_data(data, 0)
    res = tmp_path / "res"
    base = ["arch=ngram", *FAST, "task.source=files", f"task.path={data}", f"results_dir={res}"]
    return data, res, base


def _run(base, *extra):
    from harness.run import run_one

    return run_one(compose_conf(*base, *extra), list(extra))


def _board(res):
    from harness.report.frame import load_runs
    from harness.report.leaderboard import leaderboard

    return leaderboard(load_runs(res), "lm")


def _superseded(res) -> list[Path]:
    return sorted((res / "runs" / "superseded").glob("*.json"))


def test_stale_data_is_rerun_and_never_pooled(setup, capsys):
    data, res, base = setup
    first = _run(base, "seed=0")
    _write_data(data, 1)  # the same path and config, other data
    _run(base, "seed=1")
    board, _, _, notes = _board(res)
    assert len(board) == 2 and list(board["seeds"]) == [1, 1]
    assert len(set(board["data"])) == 2 and "data fingerprint" in notes[0]
    capsys.readouterr()
    again = _run(base, "seed=0")  # the cached seed-0 record is of the old data: rerun
    assert "data changed" in capsys.readouterr().out
    assert again.data.fingerprint != first.data.fingerprint and again.created_at >= first.created_at
    assert len(_superseded(res)) == 1
    assert json.loads(_superseded(res)[0].read_text())["data"]["fingerprint"] == first.data.fingerprint
    board, _, _, notes = _board(res)
    assert len(board) == 1 and board["seeds"].iloc[0] == 2 and not notes
    capsys.readouterr()
    _run(base, "seed=0")  # now everything matches: skipped
    assert "skip" in capsys.readouterr().out and len(_superseded(res)) == 1


def test_stale_code_is_rerun_and_never_pooled(setup, capsys, monkeypatch):
    from harness.identity import SALT_ENV

    _, res, base = setup
    first = _run(base, "seed=0")
    monkeypatch.setenv(SALT_ENV, "a code change")
    second = _run(base, "seed=1")
    assert first.code_version and second.code_version != first.code_version
    board, _, _, notes = _board(res)
    assert len(board) == 2 and "code" in board and "code version" in notes[0]
    capsys.readouterr()
    _run(base, "seed=0")
    assert "code changed" in capsys.readouterr().out and len(_superseded(res)) == 1
    board, _, _, _ = _board(res)
    assert len(board) == 1 and board["seeds"].iloc[0] == 2


def test_changed_preset_is_another_run_and_another_row(setup, monkeypatch):
    from archbench import get_arch

    _, res, base = setup
    spec = get_arch("ngram")
    a = _run(base, "seed=0")
    monkeypatch.setitem(spec.sizes, "tiny", dataclasses.replace(spec.sizes["tiny"], order=2))
    b = _run(base, "seed=0")
    assert a.run_key != b.run_key and b.hparams["order"] == 2
    board, _, _, notes = _board(res)
    assert len(board) == 2 and list(board["seeds"]) == [1, 1]  # never "seeds 2" for seeds {0, 0}
    assert "hparams.order" in notes[0]


def test_lmeval_scores_survive_a_forced_rerun(setup):
    from archbench.record import read_record, record_path, write_record

    _, res, base = setup
    rec = _run(base, "seed=0")
    rec.lmeval = {"archbench_lm/bits_per_byte": 1.5}
    rec.lmeval_info = {"archbench_lm": {"limit": None}}
    write_record(res, rec)
    _run(base, "seed=0", "force=true")
    new = read_record(record_path(res, rec.run_key))
    assert new.created_at >= rec.created_at and new.lmeval == rec.lmeval
    assert new.lmeval_info["archbench_lm"]["carried_over_from"] == rec.created_at
    assert json.loads(_superseded(res)[0].read_text())["lmeval"] == rec.lmeval


def test_records_without_a_metric_are_not_seeds(setup):
    from archbench.record import read_record, record_path, write_record

    _, res, base = setup
    _run(base, "seed=0")
    b = _run(base, "seed=1")
    b.metrics = {}
    write_record(res, b)
    board, _, _, _ = _board(res)
    assert board["seeds"].tolist() == [1]
    assert read_record(record_path(res, b.run_key)).metrics == {}


def test_bad_files_in_runs_are_quarantined(tmp_path, capsys):
    from harness.report import build_report

    runs = tmp_path / "runs"
    runs.mkdir()
    bad = {"latin1.json": b"\xe9\xff", "obj.json": b'{"foo": 1}', "array.json": b"[1, 2]", "empty.json": b"",
           "cut.json": b'{"run_key": "ab", "stat', "status.json": b'{"run_key": "ab", "status": "weird"}'}
    for name, data in bad.items():
        (runs / name).write_bytes(data)
    capsys.readouterr()
    assert build_report(tmp_path).is_file()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == len(bad) and all(line.startswith("warning: moved") for line in err)
    assert sorted(p.name for p in (runs / "quarantine").iterdir()) == sorted(bad)
    assert not list(runs.glob("*.json"))


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_files_get_the_mode_open_would_give(tmp_path, umask):
    from archbench.files import write_atomic

    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_orphan_temp_files_of_dead_writers_are_removed(tmp_path):
    import socket
    import subprocess
    import sys

    from archbench.files import remove_orphans

    host = socket.gethostname().split(".")[0]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    orphan = tmp_path / f".r.json.{host}.{dead}.abc.tmp"
    live = tmp_path / f".r.json.{host}.{os.getpid()}.abc.tmp"
    foreign = tmp_path / ".r.json.otherhost.1.abc.tmp"
    for p in (orphan, live, foreign):
        p.write_text("x")
    assert remove_orphans(tmp_path) == [orphan]
    os.utime(foreign, (0, 0))  # a day old on another host: its writer is gone too
    assert remove_orphans(tmp_path) == [foreign] and live.exists()
