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


BIGRAM_PLUGIN = """
from dataclasses import dataclass

import torch.nn as nn

from archbench import NeuralLM, TaskSpec, register_arch


@dataclass(frozen=True)
class BigramConfig:
    vocab_size: int | None = None


class Bigram(NeuralLM):
    def __init__(self, vocab_size: int):
        super().__init__()
        self.table = nn.Embedding(vocab_size, vocab_size)

    def forward(self, idx):
        return self.table(idx)

    def flops_per_token(self, seq_len):
        return 6 * self.table.weight.shape[1]


@register_arch("%(name)s", kinds=("lm",), sizes={"tiny": BigramConfig()})
def build(kind: str, hp: BigramConfig, task: TaskSpec):
    return Bigram(hp.vocab_size or task.vocab_size)
"""


def write_bigram_plugin(path: Path, name: str) -> Path:
    """A plug-in arch in a file outside the repo, importing only archbench: a bigram table LM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(BIGRAM_PLUGIN % {"name": name})
    return path
