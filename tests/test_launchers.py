"""Scale-out launchers: the Slurm preset composes and validates here (Slurm itself cannot run), and a
real two-job multirun goes through the joblib launcher (separate worker processes) to two records."""
import json

import pytest
from omegaconf import OmegaConf

from archbench.errors import UserError
from harness.config import compose as _compose_cfg
from tests.helpers import FAST, run_cli


@pytest.mark.parametrize("launcher", ["submitit_slurm", "slurm"])
def test_slurm_launcher_config_composes_and_validates(launcher):
    cfg = _compose_cfg(["study=scaling", f"hydra/launcher={launcher}", "hydra.launcher.partition=gpu",
                    "hydra.launcher.timeout_min=30"], hydra_cfg=True)
    hl = cfg.hydra.launcher
    assert hl._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert hl.partition == "gpu" and hl.timeout_min == 30
    assert OmegaConf.select(cfg, "hydra.sweeper.params.model").startswith("gpt_s1")


def test_slurm_launcher_rejects_a_mistyped_key():
    with pytest.raises(UserError):
        _compose_cfg(["hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=soon"], hydra_cfg=True)


def test_joblib_launcher_runs_a_real_two_job_multirun(tmp_path):
    overrides = [o for o in FAST if not o.startswith(("train.max_steps", "task.max_bytes", "train.eval_every"))]
    proc = run_cli("-m", "arch=gpt", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                   "train.max_steps=3", "train.eval_every=0", "task.max_bytes=20000", "device=cpu",
                   f"results_dir={tmp_path}", *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")]
    assert sorted(r["seed"] for r in recs) == [0, 1]
    assert all(r["status"] == "ok" and r["steps"] == 3 and r["metrics"]["bits_per_byte"] > 0 for r in recs)
    assert "JoblibLauncher" in proc.stdout + proc.stderr or "Joblib" in proc.stdout + proc.stderr


def test_slurm_submit_host_needs_no_gpu_and_requeues_on_preemption():
    """The login node that submits has no CUDA: device checks run in the job, not before submitting."""
    import torch

    from harness.sweep import preflight

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: nothing to show")
    confs = preflight(["hydra/launcher=slurm", "device=cuda", "attention=xformers", "arch=gpt", "size=7b",
                       "dist=fsdp", "train.batch_size=8"], multirun=False)
    assert confs[0]["device"] == "cuda" and confs[0]["dist"] == "fsdp"
    with pytest.raises(UserError, match="no CUDA device"):  # run here, the same job is refused at once
        preflight(["device=cuda"], multirun=False)
    hl = _compose_cfg(["hydra/launcher=slurm"], hydra_cfg=True).hydra.launcher
    assert hl.max_num_timeout > 0 and hl.signal_delay_s > 0
