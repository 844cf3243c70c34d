"""Mid-run checkpoints, so a preempted or killed run resumes where it stopped and ends with the record
it would have written uninterrupted.

Every ``train.checkpoint_every`` steps (0: never), and whenever SIGTERM / SIGUSR1 / SIGUSR2 arrives
during training, whatever checkpoint_every says (Slurm sends them on preemption and before the time
limit, also to jobs that never asked for periodic checkpoints), the model and optimizer are saved with
torch.distributed.checkpoint (each rank writes its own shards; one process works the same way),
beside ``meta.pt``: the step (which fixes the learning-rate schedule), tokens and seconds so far,
the learning curve, and the data position (how many global batches were drawn, and the data
generator's and torch's RNG states). A checkpoint is written to ``.step_N.tmp`` and renamed to
``step_N`` once whole, so a kill mid-save leaves the previous one intact. They live under
``<results_dir>/checkpoints/<run_key>/`` and are removed once the run's record is written.

A rerun of the same config finds the latest one and resumes: the model and optimizer are loaded
(resharded if the world size changed), and the data stream is replayed to the saved position and
checked against the saved generator state. ``train.resume_from`` names a checkpoint explicitly; one
of another config is refused (one line naming the differing keys).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import warnings
from pathlib import Path
from typing import Any

import torch

from archbench.errors import UserError
from harness import distributed

SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGUSR1", "SIGUSR2")) if s is not None)
KEEP = 2  # complete checkpoints kept (the newest ones)


class Interrupted(Exception):
    """The run stopped on a signal after saving a checkpoint; no record is written."""

    def __init__(self, signum: int, path: Path, step: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}: checkpoint saved to {path}; "
                         "rerun the same command to resume")
        self.signum, self.path, self.step = signum, path, step


def run_dir(results_dir, key: str) -> Path:
    return Path(results_dir) / "checkpoints" / key


def discard(results_dir, key: str) -> None:
    """Remove a finished run's mid-run checkpoints."""
    shutil.rmtree(run_dir(results_dir, key), ignore_errors=True)


def latest(folder: Path) -> Path | None:
    """The newest complete checkpoint in ``folder`` (step_N with its meta.pt), or None."""
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("step_*") if (p / "meta.pt").is_file() and p.name[5:].isdigit()]
    return max(done, key=lambda p: int(p.name[5:]), default=None)


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out


def read_meta(path: Path) -> dict[str, Any]:
    meta = path / "meta.pt"
    if not meta.is_file():
        raise UserError(f"train.resume_from '{path}' is not a mid-run checkpoint (no meta.pt); point at a "
                        "<results_dir>/checkpoints/<run_key>/step_N folder")
    return torch.load(meta, map_location="cpu", weights_only=False)


def check_resume_from(path: str, key: str, config: dict) -> None:
    """A checkpoint named by train.resume_from must come from this very config."""
    meta = read_meta(Path(path))
    if meta.get("run_key") != key:
        diff = _config_diff(json.loads(json.dumps(meta.get("config", {}), default=str)),
                            json.loads(json.dumps(config, default=str)))
        diff = [d for d in diff if d not in ("train.resume_from", "results_dir", "force", "train.checkpoint_every")]
        raise UserError(f"train.resume_from '{path}' is a checkpoint of another config (run {meta.get('run_key')}, "
                        f"this is {key}; differing keys: {', '.join(diff[:8]) or 'none visible'}); "
                        "resume with the config it was saved from, or drop train.resume_from")


class Checkpointer:
    """Saves and restores one run's mid-run state; installs the signal handlers while training."""

    def __init__(self, folder: Path, every: int, d: distributed.Dist, key: str, config: dict,
                 resume_from: str | None = None):
        self.folder, self.every, self.dist, self.key, self.config = folder, every, d, key, config
        self.source = Path(resume_from) if resume_from else latest(folder)
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    # ------------------------------------------------------------------ signals
    def __enter__(self):
        """Catch the signals even with checkpoint_every=0: a preempted job then saves and resumes."""
        for s in SIGNALS:
            try:
                self._previous[s] = signal.signal(s, self._on_signal)
            except ValueError:  # not the main thread: no handlers, periodic checkpoints only
                break
        return self

    def __exit__(self, *exc):
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()

    def _on_signal(self, signum, frame):
        self.signum = signum

    def signalled(self, device) -> int | None:
        """The signal any rank received (all ranks agree, so all save at the same step)."""
        if not self.dist.active:
            return self.signum
        got = distributed.all_sum([float(self.signum or 0)], self.dist, device)[0]
        return self.signum or (int(got) if got else None)

    def pass_on(self, signum: int, path: Path, step: int):
        """After the checkpoint: let an outer handler act (submitit requeues the job), else stop."""
        prev = self._previous.get(signum)
        self.__exit__()
        if callable(prev):
            prev(signum, None)
        raise Interrupted(signum, path, step)

    # ------------------------------------------------------------------ save / load
    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def save(self, model, opt, meta: dict[str, Any]) -> Path:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        step = int(meta["step"])
        tmp, final = self.folder / f".step_{step}.tmp", self.folder / f"step_{step}"
        if self.dist.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True, exist_ok=True)
        distributed.barrier(self.dist)
        msd, osd = get_state_dict(distributed.unwrap(model), opt)
        with warnings.catch_warnings():  # one process: DCP says it saves without a process group, as meant
            warnings.simplefilter("ignore", UserWarning)
            dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(tmp))
        if self.dist.is_main:
            meta = {**meta, "run_key": self.key, "config": self.config, "world_size": self.dist.world_size}
            torch.save(meta, tmp / "meta.pt")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            self._prune(final)
        distributed.barrier(self.dist)
        return final

    def _prune(self, newest: Path) -> None:
        done = sorted((p for p in self.folder.glob("step_*") if p.name[5:].isdigit()), key=lambda p: int(p.name[5:]))
        for old in done[:-KEEP]:
            if old != newest:
                shutil.rmtree(old, ignore_errors=True)

    def load(self, model, opt) -> dict[str, Any] | None:
        """Load the latest (or named) checkpoint into model and optimizer; its meta, or None."""
        if self.source is None:
            return None
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        meta = read_meta(self.source)
        inner = distributed.unwrap(model)
        msd, osd = get_state_dict(inner, opt)
        state = {"model": msd, "optim": osd}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            dcp.load(state, checkpoint_id=str(self.source))
        set_state_dict(inner, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
        torch.set_rng_state(meta["torch_rng"])
        if torch.cuda.is_available() and meta.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(meta["cuda_rng"])
        return meta


def rng_state() -> dict[str, Any]:
    return {"torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None}
