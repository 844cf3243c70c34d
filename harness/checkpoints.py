"""Save a trained model after its run, and start another run from it (pretrain -> finetune).

A checkpoint is ``<results_dir>/checkpoints/<run_key>.pt``: the arch name, size, task kind, the
resolved hyperparameters and the state dict, written atomically. ``init_from`` loads every tensor
whose name and shape match the new model (the shared backbone) and leaves the rest as initialized
(e.g. a classifier head replacing a masked-LM head); the record lists what was loaded and what was
not. A missing file, another arch, a shape mismatch or nothing in common is one clear error.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from harness.errors import UserError

FORMAT = 1


def checkpoint_path(results_dir, run_key: str) -> Path:
    return Path(results_dir) / "checkpoints" / f"{run_key}.pt"


def save(model: torch.nn.Module, rec: dict[str, Any], results_dir) -> Path:
    path = checkpoint_path(results_dir, rec["run_key"])
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "arch": rec["arch"], "size": rec["size"], "kind": rec["kind"], "task": rec["task"],
               "run_key": rec["run_key"], "hparams": rec.get("hparams"), "state_dict": model.state_dict()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _read(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"init_from '{path}' does not exist; point it at a <results_dir>/checkpoints/<run_key>.pt "
                        "that a run with checkpoint=true saved")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise UserError(f"init_from '{path}' is not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "state_dict" not in payload:
        raise UserError(f"init_from '{path}' is not an archbench checkpoint (format {FORMAT})")
    return payload


def check(path: str, arch: str) -> dict[str, Any]:
    """The checkpoint's header; a UserError when it is missing or was saved by another arch."""
    payload = _read(path)
    if payload["arch"] != arch:
        raise UserError(f"init_from '{path}' holds a '{payload['arch']}' model, but this run's arch is '{arch}'; "
                        f"use arch={payload['arch']} or another checkpoint")
    return payload


def load_into(model: torch.nn.Module, path: str, arch: str) -> dict[str, Any]:
    """Copy the matching tensors of the checkpoint into ``model``; returns what was loaded."""
    payload = check(path, arch)
    saved, own = payload["state_dict"], model.state_dict()
    for name, tensor in own.items():
        if name in saved and saved[name].shape != tensor.shape:
            raise UserError(
                f"init_from '{path}': tensor '{name}' has shape {tuple(saved[name].shape)} in the checkpoint but "
                f"{tuple(tensor.shape)} in this model (size {payload['size']} with hparams {payload['hparams']}); "
                "use the same size, vocabulary (tokenizer) and train.seq_len as the run that saved it")
    loaded = sorted(n for n in own if n in saved)
    if not loaded:
        raise UserError(f"init_from '{path}': no tensor of the checkpoint matches this model by name")
    model.load_state_dict({n: saved[n] for n in loaded}, strict=False)
    return {"path": str(path), "from_run": payload["run_key"], "from_task": payload["task"],
            "from_kind": payload["kind"], "loaded": len(loaded),
            "not_in_checkpoint": sorted(n for n in own if n not in saved),
            "not_used": sorted(n for n in saved if n not in own)}
