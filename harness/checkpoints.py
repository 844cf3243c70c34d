"""Saving a trained model with what it takes to rebuild it, and loading it back safely.

A checkpoint holds the arch name, size, task kind, resolved hyperparameters and the TaskSpec the
model was built with, next to its state: loading rebuilds the model through the arch registry and
refuses, in one line, a file that is missing or does not match the arch asked for.
Count-based models are checkpointable too if they offer ``state_dict`` / ``load_state_dict``.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from archs import TaskSpec, get_arch
from harness.errors import UserError

FORMAT_VERSION = 1


def checkpoint_path(results_dir, run_key: str) -> Path:
    return Path(results_dir) / "checkpoints" / f"{run_key}.pt"


def save_checkpoint(path: Path, model, *, arch: str, size: str, kind: str, hparams, task_spec: TaskSpec,
                    run_key: str, task_config: dict[str, Any]) -> Path:
    payload = {
        "format_version": FORMAT_VERSION,
        "arch": arch, "size": size, "kind": kind, "run_key": run_key,
        "hparams": dataclasses.asdict(hparams),
        "task_spec": dataclasses.asdict(task_spec),
        "task_config": task_config,
        "state_dict": {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in model.state_dict().items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint '{path}' does not exist; train with checkpoint=true to write one")
    try:
        # our own files hold numpy arrays and dataclass dicts too, so not weights_only
        payload = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:
        raise UserError(f"checkpoint '{path}' cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise UserError(f"checkpoint '{path}' is not an archbench checkpoint (format {FORMAT_VERSION})")
    return payload


def load_checkpoint(path, *, expect_arch: str | None = None, device: str | torch.device = "cpu"):
    """(model, payload) rebuilt through the registry; a clear error if the arch does not match."""
    payload = read_checkpoint(path)
    if expect_arch is not None and payload["arch"] != expect_arch:
        raise UserError(f"checkpoint '{path}' holds arch '{payload['arch']}', not '{expect_arch}'")
    spec = get_arch(payload["arch"])
    hp_type = type(next(iter(spec.sizes.values())))
    hp = hp_type(**payload["hparams"])
    model = spec.build(payload["kind"], hp, TaskSpec(**payload["task_spec"]))
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise UserError(f"checkpoint '{path}' does not match arch '{payload['arch']}' "
                        f"({' '.join(str(e).split())[:200]})") from None
    if hasattr(model, "to"):
        model = model.to(device)
    if hasattr(model, "eval"):
        model.eval()
    return model, payload
