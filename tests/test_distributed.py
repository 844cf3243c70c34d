"""Distributed training and mid-run checkpoints on CPU: torchrun with 2 gloo processes trains the same
model as one process with the same global batch; a killed or SIGTERM'd run resumes to the record an
uninterrupted run writes; bad distributed input is one line and exit 2."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from archbench.errors import UserError
from harness.distributed import Dist, check_batch, micro_batches
from tests.helpers import ROOT, run_cli

TINY = ["train.max_steps=6", "train.batch_size=4", "train.seq_len=32", "train.eval_every=3", "train.eval_batches=1",
        "train.warmup_steps=2", "train.progress=false", "task.max_bytes=60000", "report=false", "device=cpu"]
# long enough that a run is still training when the test interrupts it (each step takes milliseconds)
LONG = [o for o in TINY if not o.startswith(("train.max_steps", "train.eval_every"))] + \
       ["train.max_steps=200", "train.eval_every=50", "train.checkpoint_every=5"]


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), HYDRA_FULL_ERROR="0", OMP_NUM_THREADS="1")


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "harness.sweep", *args]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)


def only_record(results_dir):
    paths = list((results_dir / "runs").glob("*.json"))
    assert len(paths) == 1, paths
    return json.loads(paths[0].read_text())


def final_losses(rec):
    return rec["curve"][-1]["train_loss"], rec["curve"][-1]["val_loss"], rec["metrics"]["bits_per_byte"]


@pytest.fixture(scope="module")
def one_process_accum2(tmp_path_factory):
    d = tmp_path_factory.mktemp("one")
    proc = run_cli(*TINY, "train.grad_accum=2", f"results_dir={d}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return only_record(d)


@pytest.mark.parametrize("mode, extra", [("fsdp", ()), ("ddp", ()),
                                         # checkpointing changes no gradient, also inside sharded layers
                                         ("fsdp", ("arch.activation_checkpointing=selective",))])
def test_two_processes_train_like_one_with_the_same_global_batch(mode, extra, tmp_path, one_process_accum2):
    proc = torchrun(*TINY, f"dist={mode}", *extra, f"results_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    rec = only_record(tmp_path)  # rank 0 alone wrote it
    assert rec["status"] == "ok" and rec["env"]["world_size"] == 2
    assert rec["dist"]["mode"] == mode and rec["dist"]["micro_batch"] == 2 and rec["dist"]["global_batch"] == 4
    if mode == "fsdp":  # built on meta and initialized shard by shard, yet the same weights (losses below)
        assert "fully_shard" in rec["dist"]["sharding"]
        assert rec["dist"]["init"].startswith("built on the meta device, sharded"), rec["dist"]
    assert rec["tokens_seen"] == one_process_accum2["tokens_seen"] == 6 * 4 * 32  # tokens of all ranks
    assert "x 2 devices" in rec["throughput"]["peak_flops_source"]
    for ours, ref in zip(final_losses(rec), final_losses(one_process_accum2)):
        assert ours == pytest.approx(ref, abs=1e-4)


def test_dist_without_torchrun_is_one_line_exit_2(tmp_path):
    env_clean = {k: v for k, v in _env().items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    proc = subprocess.run([sys.executable, "-m", "harness.sweep", *TINY, "dist=fsdp", f"results_dir={tmp_path}"],
                          cwd=ROOT, env=env_clean, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "torchrun" in err[0]
    assert not (tmp_path / "runs").exists()


def test_world_size_must_divide_the_global_batch(monkeypatch, tmp_path):
    proc = run_cli(*TINY, "train.grad_accum=3", f"results_dir={tmp_path}")
    assert proc.returncode == 2 and "not divisible" in proc.stderr and not (tmp_path / "runs").exists()
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(UserError, match="world size 3"):
        check_batch("fsdp", 4, 1)
    check_batch("none", 4, 1)  # one process: WORLD_SIZE from elsewhere does not count
    with pytest.raises(UserError, match="valid: none, ddp, fsdp"):
        check_batch("zero3", 4, 1)


def test_each_rank_gets_its_rows_in_micro_batches():
    import torch

    batch = (torch.arange(8)[:, None], {"y": torch.arange(8)})
    parts = micro_batches(batch, Dist("ddp", rank=1, world_size=2), 2)
    assert [p[0][:, 0].tolist() for p in parts] == [[4, 5], [6, 7]]
    assert [p[1]["y"].tolist() for p in parts] == [[4, 5], [6, 7]]


def _interrupt(results_dir, sig) -> subprocess.CompletedProcess:
    """Start a long run, send ``sig`` once its first checkpoint is on disk, and wait for it."""
    proc = subprocess.Popen([sys.executable, "-m", "harness.sweep", *LONG, f"results_dir={results_dir}"],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not list(results_dir.glob("checkpoints/*/step_*/meta.pt")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=240)
    assert not (results_dir / "runs").exists(), "the run ended before it was interrupted"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    d = tmp_path_factory.mktemp("whole")
    proc = run_cli(*LONG, f"results_dir={d}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return only_record(d)


def test_sigkill_after_a_checkpoint_then_rerun_gives_the_same_record(tmp_path, uninterrupted):
    killed = _interrupt(tmp_path, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    proc = run_cli(*LONG, f"results_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = only_record(tmp_path)
    assert rec["resumed_from"]["step"] >= 5 and rec["resumed_from"]["reason"] == "checkpoint_every"
    assert rec["steps"] == uninterrupted["steps"] == 200 and rec["tokens_seen"] == uninterrupted["tokens_seen"]
    for k, v in uninterrupted["metrics"].items():
        assert rec["metrics"][k] == pytest.approx(v, abs=1e-6), k
    assert [c["val_loss"] for c in rec["curve"]] == pytest.approx([c["val_loss"] for c in uninterrupted["curve"]], abs=1e-6)
    assert not (tmp_path / "checkpoints" / rec["run_key"]).exists()  # spent once the record is written


def test_sigterm_checkpoints_before_exiting_and_a_config_change_cannot_resume_it(tmp_path):
    import torch

    term = _interrupt(tmp_path, signal.SIGTERM)
    assert term.returncode == 128 + signal.SIGTERM, term.stderr[-3000:]
    assert "interrupted by SIGTERM" in term.stderr
    latest = max(tmp_path.glob("checkpoints/*/step_*"), key=lambda p: int(p.name[5:]))
    meta = torch.load(latest / "meta.pt", weights_only=False)
    assert meta["reason"] == "SIGTERM" and meta["step"] >= 5
    other = run_cli(*LONG, "train.lr=0.001", f"train.resume_from={latest}", f"results_dir={tmp_path}")
    assert other.returncode == 2 and "another config" in other.stderr and "train.lr" in other.stderr
    assert not (tmp_path / "runs").exists()


def test_compile_layers_compiles_each_repeated_layer_and_nothing_else():
    """train.compile wraps every ModuleList element with torch.compile (lazily: nothing compiles here)."""
    from dataclasses import replace

    import torch

    from archs.gpt import GPT, SIZES
    from harness.config import _validate_train
    from harness.distributed import SINGLE, wrap
    from tests.helpers import compose_conf

    model = GPT(replace(SIZES["tiny"], vocab_size=50, block_size=16))
    wrap(model, SINGLE, torch.float32, torch.device("cpu"), compile_layers=True)
    assert all(b._compiled_call_impl is not None for b in model.blocks)
    assert model._compiled_call_impl is None and model.lm_head._compiled_call_impl is None
    with pytest.raises(UserError, match="train.compile must be true or false"):
        _validate_train({**compose_conf()["train"], "compile": "yes"})


# a run that never asked for periodic checkpoints sends itself SIGTERM after its 7th step (in the
# training loop, so the moment is exact), as Slurm's preemption would
SIGNAL_AT_STEP_7 = """
import os, signal, sys
from harness import sweep, train
step = train.Stepper.__call__
def stepped(self, batch, _n=[0]):
    out = step(self, batch)
    _n[0] += 1
    if _n[0] == 7:
        os.kill(os.getpid(), signal.SIGTERM)
    return out
train.Stepper.__call__ = stepped
sys.exit(sweep.main(sys.argv[1:]))
"""
NO_PERIODIC = [o for o in TINY if not o.startswith(("train.max_steps", "train.eval_every"))] + \
              ["train.max_steps=12", "train.eval_every=4", "train.checkpoint_every=0"]


def test_sigterm_saves_a_checkpoint_even_with_checkpoint_every_0_and_the_rerun_resumes(tmp_path):
    whole = tmp_path / "whole"
    proc = run_cli(*NO_PERIODIC, f"results_dir={whole}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = only_record(whole)
    cut = tmp_path / "cut"
    term = subprocess.run([sys.executable, "-c", SIGNAL_AT_STEP_7, *NO_PERIODIC, f"results_dir={cut}"], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert term.returncode == 128 + signal.SIGTERM, term.stderr[-3000:]
    assert "interrupted by SIGTERM at step 7" in term.stderr and not (cut / "runs").exists()
    assert [p.name for p in cut.glob("checkpoints/*/step_*")] == ["step_7"]
    proc = run_cli(*NO_PERIODIC, f"results_dir={cut}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = only_record(cut)
    assert rec["resumed_from"]["step"] == 7 and rec["resumed_from"]["reason"] == "SIGTERM"
    assert rec["run_key"] == ref["run_key"] and rec["steps"] == ref["steps"] == 12
    for k, v in ref["metrics"].items():
        assert rec["metrics"][k] == pytest.approx(v, abs=1e-6), k
    assert [c["val_loss"] for c in rec["curve"]] == pytest.approx([c["val_loss"] for c in ref["curve"]], abs=1e-6)
    assert not (cut / "checkpoints" / rec["run_key"]).exists()
