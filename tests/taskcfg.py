"""Task configs for tests: the shipped sweeps/task/<name>.yaml with overrides, as a plain dict."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

TASK_DIR = Path(__file__).resolve().parents[1] / "sweeps" / "task"


def task_config(name: str, cache_dir, **overrides) -> dict:
    """``overrides`` use ``__`` for nesting: ``hmm__total_bytes=20000`` sets ``hmm.total_bytes``."""
    cfg = OmegaConf.load(TASK_DIR / f"{name}.yaml")
    cfg.cache_dir = str(cache_dir)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, merge=False)
    return OmegaConf.to_container(cfg, resolve=True)
