"""The CPU peak is probed per thread count and again at the end of a run; the report shows the probes'
spread and marks runs whose probes disagree by more than 20% as measured under load."""
import pandas as pd
import torch

from harness import hardware
from harness.report.environment import environment_stamp, probe_spread
from harness.report.frame import ARCH, PEAK_FLOPS, PEAK_FLOPS_PROBES, SIZE, TASK


def test_peak_is_cached_per_thread_count(monkeypatch):
    calls = []
    monkeypatch.setattr(hardware, "probe_cpu_peak", lambda n=1024, repeats=8: calls.append(torch.get_num_threads()) or
                        1e9 * torch.get_num_threads())
    hardware._cached_cpu_peak.cache_clear()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = hardware.cpu_matmul_peak()
        torch.set_num_threads(2)
        two = hardware.cpu_matmul_peak()
        torch.set_num_threads(1)
        again = hardware.cpu_matmul_peak()
    finally:
        torch.set_num_threads(before)
        hardware._cached_cpu_peak.cache_clear()
    assert (one, two, again) == (1e9, 2e9, 1e9) and calls == [1, 2]  # a 1-thread peak is never reused at 2


def test_report_marks_runs_whose_probes_disagree():
    df = pd.DataFrame({ARCH: ["gpt", "lstm", "hmm"], SIZE: ["tiny"] * 3, TASK: ["lm"] * 3,
                       PEAK_FLOPS: [100e9, 100e9, None],
                       PEAK_FLOPS_PROBES: [[95e9, 100e9], [60e9, 100e9], None]})
    spread = probe_spread(df)
    assert abs(spread[0] - 0.05) < 1e-9 and abs(spread[1] - 0.40) < 1e-9 and pd.isna(spread[2])
    stamp = environment_stamp(df)
    assert "max 40% over 2 run(s)" in stamp
    assert stamp.count("measured under load") == 1 and "lstm/tiny lm: probes 60.0, 100.0" in stamp


def test_a_run_records_both_probes(tmp_path):
    from harness.run import run_one
    from tests.helpers import FAST, compose_conf

    rec = run_one(compose_conf(f"results_dir={tmp_path}", *FAST)).to_dict()
    tp = rec["throughput"]
    assert rec["status"] == "ok" and len(tp["peak_flops_probes"]) == 2
    assert tp["peak_flops"] == max(tp["peak_flops_probes"]) and "end of the run" in tp["peak_flops_source"]
