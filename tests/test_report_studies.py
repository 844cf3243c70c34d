"""The report is built from records alone: fixture records from a known power law give back its
exponent inside the report's own CI, and every PNG the report names exists; schema-1 records still
make a report; the column names the report reads are checked against the record schema."""
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from archbench.record import SCHEMA_VERSION, RunRecord, write_record
from harness.report import build_report, load_runs
from harness.report import frame

ALPHA, C = 0.35, 1.2
SIZES = [2e4, 6e4, 2e5, 6e5, 2e6]  # non-embedding parameters
SEEDS = 3


def _record(i: int, n: float, seed: int, loss: float, **extra) -> RunRecord:
    key = f"fixture{i:04d}"
    return RunRecord.from_dict({
        "schema_version": SCHEMA_VERSION, "run_key": key, "status": "ok", "error": None,
        "arch": "gpt", "size": f"n{int(n)}", "task": "lm", "kind": "lm", "seed": seed,
        "params": int(n) + 50_000, "non_embedding_params": int(n), "flops_per_token": int(6 * n),
        "tokens_seen": 1_000_000, "steps": 100,
        "budget": {"given": {"steps": None, "tokens": 1_000_000, "flops": None, "seconds": None},
                   "token_limit": 1_000_000,
                   "consumed": {"steps": 100, "tokens": 1_000_000, "flops": 6 * n * 1_000_000, "seconds": 1.0}},
        "metrics": {"bits_per_byte": loss, "bayes_bits_per_byte": 1.0,
                    "loss_by_position": list(np.linspace(3.0, 2.0, 16) + 0.01 * seed)},
        "primary_metric": "bits_per_byte", "lower_is_better": True,
        "throughput": {"tokens_per_s": 1e4, "mfu": 0.1, "peak_mem_bytes": 2**20, "peak_flops": 1e11,
                       "peak_flops_source": "fixture"},
        "data": {"fingerprint": "fixture", "reference_rows": {
            "uniform-bytes": {"metrics": {"bits_per_byte": 8.0}, "about": "every byte equally likely"}}}, "env": {"torch": "fixture"}, "wall_s": 1.0,
        "overrides": [f"seed={seed}"], "config": {"train": {"batch_size": 4, "seq_len": 16}},
        "curve": [{"step": 0, "tokens": 0, "val_loss": 4.0}, {"step": 100, "tokens": 1_000_000, "val_loss": loss}],
        **extra,
    })


def test_report_recovers_a_known_exponent_and_links_only_existing_pngs(tmp_path):
    rng = np.random.default_rng(0)
    a = 3.0 * SIZES[0] ** ALPHA
    i = 0
    for n in SIZES:
        for seed in range(SEEDS):
            loss = (a * n ** -ALPHA + C) * float(np.exp(rng.normal(0, 0.01)))
            write_record(tmp_path, _record(i, n, seed, loss))
            i += 1
    md = build_report(tmp_path).read_text()

    rows = [line for line in md.splitlines() if line.startswith("| gpt | 1 | non-embedding params |")]
    assert len(rows) == 1, md
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    alpha = float(cells[3])
    lo, hi = map(float, re.findall(r"[-\d.e+]+", cells[4]))
    assert lo <= ALPHA <= hi and abs(alpha - ALPHA) < 0.1, cells
    assert "Bayes-optimal bits_per_byte" in md

    pngs = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert {"lm_scaling_params.png", "lm_scaling_flops.png", "lm_loss_by_position.png"} <= set(pngs)
    for name in pngs:
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "runs.csv").is_file() and (tmp_path / "runs.parquet").is_file()
    assert "## Capability matrix" in md
    # reference rows beside the leaderboard, labelled by the data set they were computed on
    assert re.search(r"\| uniform-bytes \| [^|]+ \| 8 \| every byte equally likely \|", md)


def test_schema_1_records_are_upgraded_and_reported(tmp_path):
    golden = Path(__file__).parent / "data" / "golden"
    (tmp_path / "runs").mkdir()
    for path in golden.glob("*.json"):
        shutil.copy(path, tmp_path / "runs" / path.name)
    df = load_runs(tmp_path)
    assert set(df["schema_version"]) == {SCHEMA_VERSION} and frame.BUDGET_GIVEN in df
    md = build_report(tmp_path).read_text()
    assert "| gpt | tiny |" in md and "| ngram | tiny |" in md and "## Environment" in md


def test_report_columns_are_checked_against_the_record_schema():
    assert frame.column("throughput.mfu") == "throughput.mfu"
    assert frame.column("metrics.anything") == "metrics.anything"  # free-form dict below its name
    assert frame.column("data.reference_rows") == "data.reference_rows"  # a task's own data key
    with pytest.raises(LookupError, match="tokens"):
        frame.column("budget.tokens")  # the schema-1 name
    with pytest.raises(LookupError):
        frame.column("throughput.tokens_per_second")
    with pytest.raises(LookupError):
        frame.column("budget.consumed.flops")  # deeper than the frame flattens: read from the dict
    assert frame.key_in(frame.BUDGET_CONSUMED, "flops") == "flops"


def test_loss_by_position_never_pools_runs_on_other_data_or_code(tmp_path):
    """Two records of one arch/size, one on changed data: the position curves keep them apart."""
    from harness.report.context import positions
    from harness.report.frame import frame

    a = _record(1, 1e5, 0, 2.5)
    b = _record(2, 1e5, 1, 2.4)
    b.data.fingerprint = "changed-data"
    long = positions(frame([a, b]))
    labels = sorted(long["model"].unique())
    assert len(labels) == 2 and any("changed-" in label for label in labels), labels
    same = positions(frame([a, _record(3, 1e5, 1, 2.4)]))
    assert same["model"].nunique() == 1  # same data and code: one curve over both seeds
