"""Saving a trained model with what it takes to rebuild it; loading it back whole (evaluation,
lm-eval) or in part (pretrain -> finetune with ``init_from``).

A checkpoint is ``<results_dir>/checkpoints/<run_key>.pt``, written atomically: the arch, size,
task and kind, the resolved hyperparameters and the TaskSpec the model was built with, and its
state. ``load_checkpoint`` rebuilds the model through the arch registry. ``load_into`` copies every
tensor whose name and shape match into another model (the shared backbone) and leaves the rest as
initialized (e.g. a classifier head replacing a masked-LM head); the record lists what was loaded.
A missing file, another arch, a shape mismatch or nothing in common is one clear error.
Count-based models are checkpointable too if they offer ``state_dict`` / ``load_state_dict``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from archbench import TaskSpec, get_arch
from archbench.errors import UserError
from archbench.files import atomic_target
from harness import plugins

FORMAT = 1


def checkpoint_path(results_dir, run_key: str) -> Path:
    return Path(results_dir) / "checkpoints" / f"{run_key}.pt"


def save_checkpoint(path: Path, model, *, arch: str, size: str, kind: str, hparams, task_spec: TaskSpec,
                    run_key: str, task_config: dict[str, Any], plugin_names: list[str] | None = None,
                    state_dict: dict[str, Any] | None = None) -> Path:
    """Write the checkpoint; ``state_dict`` when given (e.g. gathered from FSDP shards) else the model's."""
    payload = {
        "format": FORMAT,
        "arch": arch, "size": size, "kind": kind, "task": task_config.get("name"), "run_key": run_key,
        "hparams": dataclasses.asdict(hparams),
        "task_spec": dataclasses.asdict(task_spec),
        "task_config": task_config,
        "plugins": list(plugin_names or []),  # what registers a plug-in arch or task, for whoever loads this
        "state_dict": {k: v.detach().cpu() if torch.is_tensor(v) else v
                       for k, v in (state_dict if state_dict is not None else model.state_dict()).items()},
    }
    with atomic_target(path) as tmp:  # whole or absent, mode 0666 minus the umask
        torch.save(payload, tmp)
    return path


def read_checkpoint(path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint '{path}' does not exist; point at a <results_dir>/checkpoints/<run_key>.pt "
                        "that a run with checkpoint=true saved")
    try:
        # our own files: count-based models keep numpy arrays in their state, so not weights_only
        payload = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:
        raise UserError(f"checkpoint '{path}' cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "state_dict" not in payload:
        raise UserError(f"checkpoint '{path}' is not an archbench checkpoint (format {FORMAT})")
    plugins.load(payload.get("plugins"))  # a plug-in arch or task must be registered to rebuild the model
    return payload


def check(path, arch: str) -> dict[str, Any]:
    """The checkpoint's contents; a UserError when it is missing or was saved by another arch."""
    payload = read_checkpoint(path)
    if payload["arch"] != arch:
        raise UserError(f"checkpoint '{path}' holds a '{payload['arch']}' model, but this run's arch is '{arch}'; "
                        f"use arch={payload['arch']} or another checkpoint")
    return payload


def load_checkpoint(path, *, expect_arch: str | None = None, device: str | torch.device = "cpu"):
    """(model, payload): the whole model rebuilt through the registry, in eval mode."""
    payload = check(path, expect_arch) if expect_arch is not None else read_checkpoint(path)
    spec = get_arch(payload["arch"])
    hp_type = type(next(iter(spec.sizes.values())))
    model = spec.build(payload["kind"], hp_type(**payload["hparams"]), TaskSpec(**payload["task_spec"]))
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


def load_into(model: torch.nn.Module, path, arch: str) -> dict[str, Any]:
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
    return {"path": str(path), "from_run": payload["run_key"], "from_task": payload.get("task"),
            "from_kind": payload["kind"], "loaded": len(loaded),
            "not_in_checkpoint": sorted(n for n in own if n not in saved),
            "not_used": sorted(n for n in saved if n not in own)}
