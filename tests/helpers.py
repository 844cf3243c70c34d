"""Shared test helpers: compose a config the way the entry point does, small and fast."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
FAST = ["train.max_steps=12", "train.batch_size=4", "train.seq_len=32", "train.eval_every=6",
        "train.eval_batches=1", "train.warmup_steps=2", "train.progress=false", "task.max_bytes=60000",
        "report=false"]


def compose_conf(*overrides: str) -> dict:
    from harness.config import compose_dict

    return compose_dict(list(overrides))


def run_cli(*args: str, module: str = "harness.sweep", timeout: int = 300) -> subprocess.CompletedProcess:
    # one thread, as conftest.py sets in-process: OpenMP barriers stall for minutes on shared CPUs
    env = dict(os.environ, PYTHONPATH=str(ROOT), HYDRA_FULL_ERROR="0", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
