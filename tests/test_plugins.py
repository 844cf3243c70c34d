"""A plug-in from outside the repository works in every process: a 2-job joblib multirun (workers
are other processes), harness.lmeval on its checkpoint, and harness.report's capability matrix."""
from __future__ import annotations

import json

from tests.helpers import FAST, run_cli, write_bigram_plugin


def test_plugin_in_a_joblib_multirun_then_lmeval_then_report(tmp_path):
    plugin = write_bigram_plugin(tmp_path / "elsewhere" / "bigram_ext.py", "bigram_ext")
    results = tmp_path / "results"
    proc = run_cli("-m", "hydra/launcher=local_parallel", f"plugins=[{plugin}]", "arch=bigram_ext", "seed=0,1",
                   "checkpoint=true", f"results_dir={results}", *FAST, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = [json.loads(p.read_text()) for p in sorted((results / "runs").glob("*.json"))]
    assert sorted(r["seed"] for r in recs) == [0, 1] and {r["status"] for r in recs} == {"ok"}
    assert {r["arch"] for r in recs} == {"bigram_ext"}

    key = recs[0]["run_key"]
    ev = run_cli(f"run={key}", f"results_dir={results}", "limit=20", module="harness.lmeval", timeout=600)
    assert ev.returncode == 0, ev.stderr[-3000:]
    scored = json.loads((results / "runs" / f"{key}.json").read_text())
    assert scored["lmeval"], scored.get("lmeval")

    rep = run_cli(str(results), module="harness.report")
    assert rep.returncode == 0, rep.stderr[-2000:]
    assert "bigram_ext" in (results / "report.md").read_text().split("## Task")[0]  # in the capability matrix
