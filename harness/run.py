"""One run, start to finish: task -> model -> train (or fit) -> evaluate -> measure -> one record.

Every arch and task goes through this one path. A run that breaks is written as a ``failed``
record (the sweep goes on); a user mistake raises UserError before anything is written.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import random
import time
import traceback
from typing import Any, Mapping

import numpy as np
import torch

from archbench import get_arch
from archs.layers.attention import resolve_backend
from harness import checkpoints, hardware, records
from harness import planner as planning
from harness.config import validate
from archbench.errors import UserError
from harness.train import train
from archbench import build_task, task_kind


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _base_record(conf: Mapping[str, Any], key: str, overrides: list[str]) -> dict[str, Any]:
    return {
        "schema_version": records.SCHEMA_VERSION,
        "run_key": key,
        "status": "failed",
        "error": None,
        "arch": conf["arch"]["name"],
        "size": conf["size"],
        "task": conf["task"]["name"],
        "kind": None,
        "seed": conf["seed"],
        "params": None,
        "flops_per_token": None,
        "tokens_seen": 0,
        "steps": 0,
        "budget": given_budget(conf),
        "metrics": {},
        "primary_metric": None,
        "lower_is_better": None,
        "throughput": {"tokens_per_s": None, "mfu": None, "peak_mem_bytes": None},
        "data": {},
        "env": {},
        "wall_s": None,
        "overrides": list(overrides),
        "config": dict(conf),
        "curve": [],
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def given_budget(conf: Mapping[str, Any]) -> dict[str, Any]:
    """The limits a run was given, by their user-facing names (sweeps/config.yaml ``budget``)."""
    b, t = conf.get("budget") or {}, conf["train"]
    return {"steps": t["max_steps"], "tokens": b.get("tokens") or t["max_tokens"], "flops": b.get("flops"),
            "seconds": b.get("seconds") or t["max_seconds"]}


def apply_flop_budget(tcfg: Mapping[str, Any], budget: dict[str, Any], flops_per_token) -> dict[str, Any]:
    """A FLOP budget becomes this run's token limit: tokens = floor(budget.flops / flops_per_token),
    using the arch's own FLOPs per token, so equal-FLOP runs of different archs see different token
    counts. The tighter of that and budget.tokens is what the engine gets as train.max_tokens."""
    if not budget.get("flops"):
        return dict(tcfg)
    if not flops_per_token:
        raise UserError("budget.flops needs the arch's flops_per_token, which this model does not state; "
                        "use budget.tokens or budget.seconds")
    from_flops = max(1, int(budget["flops"] // flops_per_token))
    budget["tokens_from_flops"] = from_flops
    budget["tokens_from_flops_formula"] = "floor(budget.flops / flops_per_token(seq_len))"
    limit = min(from_flops, int(tcfg["max_tokens"])) if tcfg.get("max_tokens") else from_flops
    return {**tcfg, "max_tokens": limit}


def non_embedding_params(model) -> int | None:
    """N for scaling fits (Kaplan et al. 2020): parameters minus the weights of nn.Embedding modules
    (token and learned position tables; an LM head tied to the token table is that table, so it is
    excluded too). None for models that are not torch modules."""
    if not isinstance(model, torch.nn.Module):
        return None
    seen, emb = set(), 0
    for m in model.modules():
        if isinstance(m, torch.nn.Embedding) and id(m.weight) not in seen:
            seen.add(id(m.weight))
            emb += m.weight.numel()
    return int(model.num_params()) - emb


def run_one(conf: Mapping[str, Any], overrides: list[str] | None = None, *, single: bool = True) -> dict[str, Any]:
    """Run the config and write its record; returns the record (an existing one when skipped)."""
    overrides = list(overrides or [])
    arch_spec = get_arch(conf["arch"]["name"])
    kind = task_kind(conf["task"]["name"])
    validate(conf, check_kind=single)
    key = records.run_key(dict(conf))
    results_dir = conf["results_dir"]
    path = records.record_path(results_dir, key)
    old = records.read_record(path)
    wants_checkpoint = conf.get("checkpoint") and not checkpoints.checkpoint_path(results_dir, key).is_file()
    if old and old.get("status") == "ok" and not conf["force"] and not wants_checkpoint:
        print(f"skip {conf['arch']['name']}/{conf['size']} {conf['task']['name']} seed={conf['seed']}: "
              f"an ok record exists ({path}); force=true reruns it")
        return old

    rec = _base_record(conf, key, overrides)
    rec["kind"] = kind
    if kind not in arch_spec.kinds:  # in a multirun an unsupported pair is recorded, not fatal
        rec["status"] = "skipped"
        rec["error"] = f"arch '{arch_spec.name}' does not support task kind '{kind}': " + \
            arch_spec.unsupported.get(kind, f"it supports {', '.join(arch_spec.kinds)}")
        records.write_record(results_dir, rec)
        print(f"skipped {key}: {rec['error']}")
        return rec

    t_start = time.perf_counter()
    try:
        _execute(conf, rec, arch_spec)
    except UserError:
        raise
    except Exception as e:  # a broken run is a result too: record it and let the sweep go on
        rec["status"] = "failed"
        rec["error"] = f"{type(e).__name__}: {e}"
        rec["traceback"] = traceback.format_exc()
        print(f"run {key} failed: {rec['error']}")
    rec["wall_s"] = time.perf_counter() - t_start
    records.write_record(results_dir, rec)
    _print_summary(rec, path)
    return rec


def _execute(conf: Mapping[str, Any], rec: dict[str, Any], arch_spec) -> None:
    tcfg = conf["train"]
    generator = seed_everything(int(conf["seed"]))
    if conf.get("threads"):
        torch.set_num_threads(int(conf["threads"]))  # recorded below in env.threads
    device = hardware.resolve_device(conf["device"])
    dtype = hardware.compute_dtype(device)
    rec["env"] = hardware.environment(device)
    rec["precision"] = str(dtype).replace("torch.", "")

    task = build_task(conf["task"], int(conf["seed"]))
    rec["data"] = task.data_info()
    rec["primary_metric"], rec["lower_is_better"] = task.primary_metric, task.lower_is_better

    hp = arch_spec.hparams(conf["size"], conf["arch"])
    if any(f.name == "attention" for f in dataclasses.fields(hp)):
        # the one run-time choice an arch cannot make alone: which attention kernel this device runs
        backend = resolve_backend(conf["attention"], device, dtype)
        hp = dataclasses.replace(hp, attention=backend)
        rec["attention_backend"] = backend
    rec["hparams"] = dataclasses.asdict(hp)
    seq_len = int(tcfg["seq_len"])
    spec = task.spec(seq_len)
    if not arch_spec.fitted:
        # plan on the meta device first: a run that would not fit is estimated, never allocated
        plan = planning.plan_memory(arch_spec, task, hp, spec, tcfg, device, dtype, int(conf["seed"]))
        rec["plan"] = plan.record
        if conf.get("plan") == "always" or not plan.fits:
            planning.estimate_speed(plan, tcfg, device, dtype)
            rec["params"] = int(plan.model.num_params())
            rec["flops_per_token"] = plan.model.flops_per_token(seq_len)
            rec["status"] = "planned"
            print(planning.describe(plan))
            return
        del plan
    mem_base = hardware.reset_peak_memory(device)  # peak memory counts from here: model, training, eval
    with torch.device(device):  # built where it runs: a large model never passes through host memory
        model = arch_spec.build(task.kind, hp, spec)
    if hasattr(model, "to"):
        model = model.to(device)
    if conf.get("init_from"):
        rec["init_from"] = checkpoints.load_into(model, conf["init_from"], arch_spec.name)
    rec["params"] = int(model.num_params())
    rec["non_embedding_params"] = non_embedding_params(model)
    rec["non_embedding_params_formula"] = "params - weights of nn.Embedding modules (None: not a torch module)"
    rec["flops_per_token"] = model.flops_per_token(seq_len)
    tcfg = apply_flop_budget(tcfg, rec["budget"], rec["flops_per_token"])

    desc = f"{rec['arch']}/{rec['size']} seed={rec['seed']}"
    if getattr(model, "fitted", False):
        t0 = time.perf_counter()
        fit_info = model.fit(task, tcfg, device, generator)
        rec["fit"] = fit_info
        rec["tokens_seen"] = int(fit_info.get("tokens", 0))
        rec["throughput"]["fit_seconds"] = time.perf_counter() - t0
        rec["throughput"]["tokens_per_s"] = fit_info.get("tokens_per_s")  # measured by the fit, if it says
        rec["params"] = int(model.num_params())  # a fitted model's size is known only after fitting
        rec["stop_reason"] = "fit"
        status = "ok"
    else:
        out = train(model, task, tcfg, device, dtype, generator, desc=desc)
        rec.update(steps=out.steps, tokens_seen=out.tokens_seen, curve=out.curve, stop_reason=out.stop_reason)
        rec["throughput"]["tokens_per_s"] = out.tokens_per_s
        rec["throughput"]["train_seconds"] = out.train_seconds
        status, rec["error"] = out.status, out.error
    train_mem, _ = hardware.peak_memory(device, mem_base)  # before the test evaluation (validation passes included)
    rec["budget"]["consumed"] = {"steps": rec["steps"], "tokens": rec["tokens_seen"],
                                 "seconds": rec["throughput"].get("train_seconds") or rec["throughput"].get("fit_seconds"),
                                 "flops": (rec["flops_per_token"] * rec["tokens_seen"]) if rec["flops_per_token"] else None}
    if status == "ok":
        t0 = time.perf_counter()
        with torch.no_grad():
            rec["metrics"] = task.evaluate(model, device, seq_len)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        eval_s = time.perf_counter() - t0
        scored = rec["metrics"].get("test_tokens")  # tasks that score tokens say how many
        rec["throughput"]["eval_seconds"] = eval_s
        rec["throughput"]["inference_tokens_per_s"] = (scored / eval_s) if scored and eval_s > 0 else None
    peak, peak_source = hardware.peak_flops(device, dtype)
    tps, fpt = rec["throughput"]["tokens_per_s"], rec["flops_per_token"]
    mem, mem_kind = hardware.peak_memory(device, mem_base)
    rec["throughput"].update(
        peak_flops=peak, peak_flops_source=peak_source,
        achieved_flops=(tps * fpt) if (tps and fpt) else None,
        mfu=(tps * fpt / peak) if (tps and fpt and peak) else None,
        peak_mem_bytes=train_mem, peak_mem_with_eval_bytes=mem, peak_mem_kind=mem_kind,
    )
    if status == "ok" and conf.get("checkpoint"):
        path = checkpoints.checkpoint_path(conf["results_dir"], rec["run_key"])
        checkpoints.save_checkpoint(path, model, arch=rec["arch"], size=rec["size"], kind=task.kind, hparams=hp,
                                    task_spec=task.spec(seq_len), run_key=rec["run_key"],
                                    task_config=dict(conf["task"]))
        rec["checkpoint"] = str(path)
    rec["status"] = status


def _print_summary(rec: dict[str, Any], path) -> None:
    m = rec.get("metrics") or {}
    pm = rec.get("primary_metric")
    metric = f"{pm}={m[pm]:.4f}" if pm in m else ""
    tp = rec["throughput"]
    tps = f"{tp['tokens_per_s']:.0f} tok/s" if tp.get("tokens_per_s") else ""
    mfu = f"MFU {100 * tp['mfu']:.1f}%" if tp.get("mfu") else ""
    parts = [p for p in (rec["status"], metric, f"params={rec['params']:,}" if rec["params"] else "", tps, mfu) if p]
    print(f"{rec['arch']}/{rec['size']} {rec['task']} seed={rec['seed']}: {' '.join(parts)} -> {path}")
