"""Decoding benchmark: the seq2seq cells of ``study=tasks`` (each arch that decodes, on mt and
summarization, trained as the study trains them), their test split decoded by the task's own search
with incremental decoding (KV cache / RNN state) and without it (the prefix reread every step), in
interleaved rounds in one process. Outputs must be identical; the ratio of the best times is the
speed-up. ``python -m harness.bench --only decoding``."""
from __future__ import annotations

import time
from typing import Any

import torch

from archbench import RunRecord, get_arch
from harness import hardware

CELLS = [(a, t) for t in ("mt", "summarization") for a in ("gpt", "transformer", "lstm")]
STUDY = ["size=tiny", "train.max_steps=60", "train.warmup_steps=10", "train.eval_every=0",
         "train.progress=false"]  # sweeps/study/tasks.yaml's settings


def trained_cell(arch: str, task: str, steps: int, threads: int):
    """(model, task, device) of one study cell after its training."""
    from harness.config import compose_dict, validate
    from harness.run import build, prepare, train_or_fit

    conf = compose_dict([f"arch={arch}", f"task={task}", *STUDY, f"train.max_steps={steps}", f"threads={threads}"])
    budget = validate(conf)
    rec = RunRecord(run_key="bench", arch=arch, size="tiny", task=task, seed=0)
    p = prepare(conf, get_arch(arch), rec)
    model = build(p, rec)
    train_or_fit(model, p, budget.for_model(rec.flops_per_token), rec)
    model.eval()
    return model, p.task, p.device


def _timed(fn) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def decoding_bench(steps: int = 60, rounds: int = 2, threads: int = 1, cells=CELLS) -> list[dict[str, Any]]:
    rows = []
    for arch, task_name in cells:
        model, task, device = trained_cell(arch, task_name, steps, threads)
        times: dict[bool, list[float]] = {True: [], False: []}
        outs: dict[bool, list[str]] = {}
        with torch.no_grad():
            for r in range(rounds):
                for cached in ((True, False) if r % 2 == 0 else (False, True)):
                    seconds, outs[cached] = _timed(lambda: task.decode_split(model, "test", device, use_cache=cached))
                    hardware.sync(device)
                    times[cached].append(seconds)
        rows.append({"arch": arch, "task": task_name, "examples": len(outs[True]), "beam": task.search.beam_size,
                     "cached_s": min(times[True]), "uncached_s": min(times[False]),
                     "speedup": min(times[False]) / min(times[True]), "identical": outs[True] == outs[False],
                     "threads": torch.get_num_threads()})
        print_row(rows[-1])
    return rows


def print_row(r: dict[str, Any]) -> None:
    print(f"  {r['arch']:11} {r['task']:13} {r['examples']:4} examples, beam {r['beam']}: cached "
          f"{r['cached_s']:.2f} s, uncached {r['uncached_s']:.2f} s -> {r['speedup']:.2f}x same run; "
          f"outputs identical: {r['identical']}", flush=True)
