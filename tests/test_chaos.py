"""Crashes and neighbours: a sweep SIGKILLed at random moments and rerun ends with one valid record
per config, no temp files and a report; two sweeps on one results_dir train each config once."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

from tests.helpers import FAST, ROOT, compose_conf, run_cli

CONFIGS = ["arch=lstm,ngram", "seed=0,1"]
KILLS = 5


def _args(res) -> list[str]:
    fast = [a for a in FAST if a not in ("report=false", "train.max_steps=12")]
    return ["-m", *CONFIGS, *fast, "train.max_steps=8", "train.eval_every=4", f"results_dir={res}"]


def _keys(res) -> set[str]:
    from harness.identity import key_of

    fast = [a for a in _args(res) if a != "-m" and a not in CONFIGS]
    return {key_of(compose_conf(*fast, f"arch={a}", f"seed={s}")) for a in ("lstm", "ngram") for s in (0, 1)}


def _popen(args):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "harness.sweep", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def test_sigkill_at_random_moments_then_rerun(tmp_path):
    from archbench.record import iter_records

    res = tmp_path / "res"
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    for _ in range(KILLS):
        proc = _popen(_args(res))
        time.sleep(rng.uniform(1.0, 7.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    ok_before = {r.run_key for r in iter_records(res) if r.status == "ok"}
    (res / "runs").mkdir(parents=True, exist_ok=True)
    (res / "runs" / "garbage.json").write_bytes(b"\xff\xfe not a record")  # the sweep goes on past it
    final = run_cli(*_args(res))
    assert final.returncode == 0, f"kill seed {seed}: {final.stdout[-2000:]}{final.stderr[-2000:]}"
    records = list(iter_records(res))
    assert {r.run_key for r in records} == _keys(res), f"kill seed {seed}"
    assert len(list((res / "runs").glob("*.json"))) == 4 and all(r.status == "ok" for r in records)
    assert not [p for p in res.rglob("*.tmp")], f"kill seed {seed}: temp files left"
    assert (res / "report.md").is_file() and (res / "runs.parquet").is_file()
    assert final.stdout.count("skip ") == len(ok_before), f"kill seed {seed}: finished runs were not skipped"
    assert (res / "runs" / "quarantine" / "garbage.json").is_file() and "warning: moved" in final.stderr


def test_two_concurrent_sweeps_train_each_config_once(tmp_path):
    res = tmp_path / "res"
    args = [a for a in _args(res) if a != "arch=lstm,ngram"] + ["arch=lstm"]
    procs = [_popen(args), _popen(args)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    both = "".join(outs)
    # each config ends in one "...: ok ..." summary line in one sweep and a skip in the other
    assert both.count(": ok ") == 2 and both.count("skip lstm/tiny") == 2, outs
    assert len(list((res / "runs").glob("*.json"))) == 2 and not (res / "runs" / "superseded").exists()
    assert len(list((res / "hydra").iterdir())) == 2  # each sweep its own job folder


def test_exit_3_when_a_run_diverges_and_the_report_is_still_built(tmp_path):
    fast = [a for a in FAST if a != "report=false"]
    r = run_cli("arch=lstm", *fast, "train.lr=1e12", "train.grad_clip=1e12", f"results_dir={tmp_path}")
    assert r.returncode == 3, r.stdout[-1500:] + r.stderr[-1500:]
    assert "diverged" in r.stderr and "Traceback" not in r.stderr
    assert "diverged" in (tmp_path / "report.md").read_text()
