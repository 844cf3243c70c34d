"""One run, start to finish: prepare -> build -> train (or fit) -> evaluate -> measure -> one record.

Every arch and task goes through this one path; each stage fills its typed part of the RunRecord
(archbench/record.py). A run that breaks is written as a ``failed`` record (the sweep goes on); a
user mistake raises UserError before anything is written.
"""
from __future__ import annotations

import contextlib
import dataclasses
import random
import time
import traceback
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from archbench import ArchSpec, Budget, Task, TaskSpec, build_task, check_model, get_arch, task_kind
from archbench.budget import consumed
from archbench.errors import UserError
from archbench.record import DataInfo, Env, RunRecord, Throughput, NEWER, load_record, quarantine, record_path, write_record
from archs.layers.attention import backend_choice, resolve_backend
from harness import checkpoints, distributed, hardware, meta_init, planner as planning, plugins, recipes, resume
from harness.config import validate
from harness.evaluate import evaluate
from harness.identity import carry_over, code_version, key_of, stale_reason, supersede
from harness.locks import run_lock
from harness.train import TrainOutcome, train

NON_EMBEDDING_FORMULA = "params - weights of nn.Embedding modules (None: not a torch module)"


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


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


@dataclass
class Prepared:
    """What the stages after ``prepare`` share: the resolved pieces of one run."""

    conf: Mapping[str, Any]
    arch: ArchSpec
    task: Task
    hparams: Any
    spec: TaskSpec
    device: torch.device
    dtype: torch.dtype
    generator: torch.Generator
    dist: distributed.Dist = dataclasses.field(default_factory=distributed.Dist)

    @property
    def tcfg(self) -> Mapping[str, Any]:
        return self.conf["train"]

    @property
    def seq_len(self) -> int:
        return int(self.conf["train"]["seq_len"])


def run_one(conf: Mapping[str, Any], overrides: list[str] | None = None, *, single: bool = True) -> RunRecord:
    """Run the config and write its record; returns the record (an existing one when skipped)."""
    plugins.load(conf.get("plugins"))
    arch = get_arch(conf["arch"]["name"])
    kind = task_kind(conf["task"]["name"])
    recipes.resolve(conf, overrides)  # before validate: it knows which keys the user set
    budget = validate(conf, check_kind=single)
    key = key_of(conf)
    results_dir = conf["results_dir"]
    path = record_path(results_dir, key)
    desc = f"{conf['arch']['name']}/{conf['size']} {conf['task']['name']} seed={conf['seed']}"
    main = distributed.env_rank() == 0  # under torchrun only rank 0 writes records and prints
    # a second sweep waits here, then finds the ok record; the ranks of one torchrun job share the run
    lock = run_lock(results_dir, key, desc) if main else contextlib.nullcontext()
    with lock:
        old, reuse = cached(conf, path, desc, quiet=not main)
        if reuse:
            return old
        return _run(conf, overrides, arch, kind, budget, key, old, main)


def cached(conf: Mapping[str, Any], path, desc: str, quiet: bool = False) -> tuple[RunRecord | None, bool]:
    """(the record on disk, whether it stands in for this run): only an ok record of the same run
    key, code version and data fingerprint does, unless force=true or a checkpoint is wanted."""
    old, why = load_record(path)
    if old is None and why not in ("missing", NEWER) and not quiet:
        quarantine(path, why)
    wants_checkpoint = conf.get("checkpoint") and not checkpoints.checkpoint_path(conf["results_dir"],
                                                                                 path.stem).is_file()
    if not old or old.status != "ok" or conf["force"] or wants_checkpoint:
        return old, False
    reason = stale_reason(old, None)
    if reason is None:  # the code matches: is the data the same? (known once the task reads it)
        seed_everything(int(conf["seed"]))
        reason = stale_reason(old, build_task(conf["task"]).data_info().get("fingerprint"))
    if reason:
        quiet or print(f"rerun {desc}: {reason}; the old record is kept in runs/superseded/")
        return old, False
    quiet or print(f"skip {desc}: an ok record of this config, code and data exists ({path}); force=true reruns it")
    return old, True


def _run(conf, overrides, arch: ArchSpec, kind: str, budget: Budget, key: str, old: RunRecord | None,
         main: bool = True) -> RunRecord:
    results_dir = conf["results_dir"]
    path = record_path(results_dir, key)
    rec = RunRecord(run_key=key, arch=arch.name, size=conf["size"], task=conf["task"]["name"], kind=kind,
                    seed=conf["seed"], budget=budget.record(), overrides=list(overrides or []), config=dict(conf),
                    code_version=code_version(), recipe=recipes.recipe_record(conf),
                    recipe_source=dict(conf.get(recipes.SOURCE_KEY) or {}))
    if kind not in arch.kinds:  # in a multirun an unsupported pair is recorded, not fatal
        rec.status = "skipped"
        rec.error = f"arch '{arch.name}' does not support task kind '{kind}': " + \
            arch.unsupported.get(kind, f"it supports {', '.join(arch.kinds)}")
        if main:
            _write(results_dir, rec, old)
            print(f"skipped {key}: {rec.error}")
        return rec

    t_start = time.perf_counter()
    try:
        execute(conf, rec, arch, budget)
    except (UserError, resume.Interrupted):  # a mistake, or stopped by a signal after a checkpoint: no record
        raise
    except Exception as e:  # a broken run is a result too: record it and let the sweep go on
        rec.status, rec.error = "failed", f"{type(e).__name__}: {e}"
        rec.traceback = traceback.format_exc()
        print(f"run {key} failed (rank {distributed.env_rank()}): {rec.error}")
    rec.wall_s = time.perf_counter() - t_start
    if main:
        _write(results_dir, rec, old)
        _print_summary(rec, path)
        if rec.status == "ok":
            resume.discard(results_dir, key)  # the record is whole: mid-run checkpoints are spent
    return rec


def _write(results_dir, rec: RunRecord, old: RunRecord | None) -> None:
    """The new record, with the old one (if any) copied to runs/superseded/ first, never overwritten."""
    carry_over(old, rec)
    supersede(results_dir, rec.run_key)  # whatever is there: a record of any status or schema
    write_record(results_dir, rec)


def execute(conf: Mapping[str, Any], rec: RunRecord, arch: ArchSpec, budget: Budget) -> None:
    """The stages of one run, each filling its part of ``rec``; status is set last. The run's
    ``flush_denormal`` holds from its first torch op to its end (recorded in env.flush_denormal)."""
    with hardware.denormals_flushed(bool(conf.get("flush_denormal", True))):
        p = prepare(conf, arch, rec)
        try:
            _stages(p, rec, arch, budget)
        except BaseException:
            distributed.teardown(p.dist, ok=False)
            raise
        distributed.teardown(p.dist)


def _stages(p: Prepared, rec: RunRecord, arch: ArchSpec, budget: Budget) -> None:
    conf = p.conf
    if not arch.fitted and plan_only(p, rec):
        return
    mem_base = hardware.reset_peak_memory(p.device)  # peak memory counts from here: model, training, eval
    model = build(p, rec)
    budget = budget.for_model(rec.flops_per_token)
    outcome = train_or_fit(model, p, budget, rec)
    train_mem, _ = hardware.peak_memory(p.device, mem_base)  # before the test evaluation (validation included)
    seconds = rec.throughput.train_seconds or rec.throughput.fit_seconds
    rec.budget = budget.record(consumed(rec.steps, rec.tokens_seen, seconds, rec.flops_per_token, outcome.flops))
    eval_timing: dict[str, Any] = {}
    if outcome.status == "ok":
        with distributed.gathered(model):  # FSDP: whole parameters for methods other than forward
            rec.metrics, eval_timing = evaluate(p.task, model, p.device, p.seq_len)
    rec.throughput = measure(p, rec, eval_timing, train_mem, mem_base)
    if outcome.status == "ok" and conf.get("checkpoint"):
        rec.checkpoint = str(save(p, rec, model))
    rec.status, rec.error = outcome.status, outcome.error


def prepare(conf: Mapping[str, Any], arch: ArchSpec, rec: RunRecord) -> Prepared:
    """Seed, threads, device, the task's data and the resolved hyperparameters."""
    generator = seed_everything(int(conf["seed"]))
    if conf.get("threads"):
        torch.set_num_threads(int(conf["threads"]))  # recorded below in env.threads
    device = hardware.resolve_device(conf["device"])
    dist, device = distributed.setup(conf.get("dist", "none"), device)  # torchrun's rank -> its device
    distributed.check_batch(dist.mode, int(conf["train"]["batch_size"]), int(conf["train"].get("grad_accum", 1)),
                            dist.world_size)
    dtype = hardware.compute_dtype(device)
    hardware.peak_flops(device, dtype)  # the start probe on CPU, at this run's thread count (cached per count)
    rec.env = Env(**hardware.environment(device), world_size=dist.world_size)
    rec.precision = str(dtype).replace("torch.", "")
    task = build_task({**conf["task"], "eval_stride": (conf.get("eval") or {}).get("stride")})
    rec.data = DataInfo.from_dict(task.data_info())
    rec.primary_metric, rec.lower_is_better = task.primary_metric, task.lower_is_better
    hp = arch.hparams(conf["size"], conf["arch"])
    if any(f.name == "attention" for f in dataclasses.fields(hp)):
        # the one run-time choice an arch cannot make alone: which attention kernel this device runs
        hp = dataclasses.replace(hp, attention=resolve_backend(conf["attention"], device, dtype))
        rec.attention_backend = hp.attention
        rec.attention_choice = backend_choice(conf["attention"], hp.attention, device, dtype)
    rec.hparams = dataclasses.asdict(hp)
    spec = task.spec(int(conf["train"]["seq_len"]))
    return Prepared(conf, arch, task, hp, spec, device, dtype, generator, dist)


def plan_only(p: Prepared, rec: RunRecord) -> bool:
    """Plan memory on the meta device; a run that would not fit (or ``plan=always``) is estimated,
    never allocated, and recorded as ``planned``. True when that is all this run does."""
    plan = planning.plan_memory(p.arch, p.task, p.hparams, p.spec, p.tcfg, p.device, p.dtype, int(p.conf["seed"]),
                                world_size=p.dist.world_size, sharded=p.dist.mode == "fsdp")
    rec.plan = plan.record
    if p.conf.get("plan") != "always" and plan.fits:
        return False
    planning.estimate_speed(plan, p.tcfg, p.device, p.dtype)
    rec.params = int(plan.model.num_params())
    rec.flops_per_token = p.task.flops_per_token(plan.model, p.seq_len)
    rec.status = "planned"
    print(planning.describe(plan))
    return True


def build(p: Prepared, rec: RunRecord):
    """The model, built on the device it runs on (a large model never passes through host memory);
    under FSDP built on meta, sharded and initialized shard by shard (harness/meta_init.py), so no
    rank ever holds it whole -- with the very weights the ordinary build gives."""
    model = None
    if p.dist.mode == "fsdp" and not p.arch.fitted and not p.conf.get("init_from"):
        model, why = meta_init.build_sharded(
            lambda: p.arch.build(p.task.kind, p.hparams, p.spec),
            lambda m: distributed.wrap(m, p.dist, p.dtype, p.device, compile_layers=bool(p.tcfg.get("compile"))),
            p.device)
        rec.dist = {"init": why if model is not None else f"built whole on every rank, then sharded: {why}"}
    if model is None:
        with torch.device(p.device):
            model = p.arch.build(p.task.kind, p.hparams, p.spec)
    if hasattr(model, "to") and not distributed.is_sharded(model):
        model = model.to(p.device)
    check_model(model, p.task.kind, p.arch.name)
    if p.conf.get("init_from"):
        rec.init_from = checkpoints.load_into(model, p.conf["init_from"], p.arch.name)
    rec.params = int(model.num_params())
    rec.non_embedding_params = non_embedding_params(model)
    rec.non_embedding_params_formula = NON_EMBEDDING_FORMULA
    rec.flops_per_token = p.task.flops_per_token(model, p.seq_len)
    return model


def train_or_fit(model, p: Prepared, budget: Budget, rec: RunRecord) -> TrainOutcome:
    """Gradient steps through the one training loop, or the model's own fit (counts, EM)."""
    if getattr(model, "fitted", False):
        t0 = time.perf_counter()
        rec.fit = model.fit(p.task, budget, p.tcfg, p.device, p.generator)
        rec.throughput.fit_seconds = time.perf_counter() - t0
        rec.throughput.tokens_per_s = rec.fit.get("tokens_per_s")  # measured by the fit, if it says
        rec.tokens_seen = int(rec.fit.get("tokens", 0))
        rec.params = int(model.num_params())  # a fitted model's size is known only after fitting
        rec.stop_reason = "fit"
        return TrainOutcome(status="ok", tokens_seen=rec.tokens_seen, stop_reason="fit")
    if p.tcfg.get("mode") == "eval":  # evaluate the model as built or loaded: no step, no data read
        rec.stop_reason = "eval-only"
        return TrainOutcome(status="ok", stop_reason="eval-only")
    desc = f"{rec.arch}/{rec.size} seed={rec.seed}"
    t = p.tcfg  # say what a long first step is doing (a 64k context on a CPU sits there for minutes)
    val = f"; validation ({t['eval_batches']} x 32 windows) at step 0 and every {t['eval_every']} steps" \
        if t["eval_every"] else ""
    if p.dist.rank == 0:
        print(f"{desc}: training on {p.device.type}, up to {t['max_steps'] or 'budget'} steps of {t['batch_size']} x "
              f"{p.seq_len} tokens{val}", flush=True)
    rec.dist = {**p.dist.record(int(p.tcfg.get("grad_accum", 1)), int(p.tcfg["batch_size"]), p.dtype),
                **(rec.dist or {})}  # + how build() made the sharded model
    ckpt = resume.Checkpointer(resume.run_dir(p.conf["results_dir"], rec.run_key), int(p.tcfg.get("checkpoint_every", 0)),
                               p.dist, rec.run_key, dict(p.conf), p.tcfg.get("resume_from"))
    wrapped = distributed.wrap(model, p.dist, p.dtype, p.device, compile_layers=bool(p.tcfg.get("compile")))
    out = train(wrapped, p.task, p.tcfg, budget, p.device, p.dtype, p.generator, desc=desc, dist=p.dist, ckpt=ckpt)
    rec.resumed_from = out.resumed_from
    rec.steps, rec.tokens_seen, rec.curve, rec.stop_reason = out.steps, out.tokens_seen, out.curve, out.stop_reason
    rec.throughput.tokens_per_s, rec.throughput.train_seconds = out.tokens_per_s, out.train_seconds
    return out


def measure(p: Prepared, rec: RunRecord, eval_timing: dict[str, Any], train_mem: int, mem_base) -> Throughput:
    """Throughput, MFU against the device's peak, and peak memory of training and of the whole run."""
    peak, peak_source = hardware.peak_flops(p.device, p.dtype)
    probes = None
    if p.device.type == "cpu" and peak:  # other processes' load lowers a probe: keep the higher (lower MFU)
        probes = [peak, hardware.probe_cpu_peak()]
        peak, peak_source = max(probes), peak_source + "; the higher of that and a probe at the end of the run"
    if peak and p.dist.world_size > 1:  # tokens/s counts every rank, so MFU is against every device's peak
        peak, peak_source = peak * p.dist.world_size, f"{peak_source}, x {p.dist.world_size} devices"
    tps, fpt = rec.throughput.tokens_per_s, rec.flops_per_token
    spent = rec.budget.consumed if rec.budget else None
    if spent and spent.flops and spent.tokens:  # FLOPs counted per batch: the run's own FLOPs per token
        fpt = spent.flops / spent.tokens
    mem, mem_kind = hardware.peak_memory(p.device, mem_base)
    return dataclasses.replace(
        rec.throughput, **eval_timing, peak_flops=peak, peak_flops_source=peak_source, peak_flops_probes=probes,
        achieved_flops=(tps * fpt) if (tps and fpt) else None, mfu=(tps * fpt / peak) if (tps and fpt and peak) else None,
        peak_mem_bytes=train_mem, peak_mem_with_eval_bytes=mem, peak_mem_kind=mem_kind)


def save(p: Prepared, rec: RunRecord, model):
    path = checkpoints.checkpoint_path(p.conf["results_dir"], rec.run_key)
    state = distributed.full_state_dict(model, p.dist)  # collective under FSDP; rank 0 writes
    if not p.dist.is_main:
        return path
    return checkpoints.save_checkpoint(path, model, state_dict=state, arch=rec.arch, size=rec.size, kind=p.task.kind,
                                       hparams=p.hparams, task_spec=p.spec, run_key=rec.run_key,
                                       task_config=dict(p.conf["task"]),
                                       plugin_names=list(p.conf.get("plugins") or []))


def _print_summary(rec: RunRecord, path) -> None:
    m, pm = rec.metrics or {}, rec.primary_metric
    metric = f"{pm}={m[pm]:.4f}" if pm in m else ""
    tp = rec.throughput
    tps = f"{tp.tokens_per_s:.0f} tok/s" if tp.tokens_per_s else ""
    mfu = f"MFU {100 * tp.mfu:.1f}%" if tp.mfu else ""
    parts = [x for x in (rec.status, metric, f"params={rec.params:,}" if rec.params else "", tps, mfu) if x]
    print(f"{rec.arch}/{rec.size} {rec.task} seed={rec.seed}: {' '.join(parts)} -> {path}")
