"""The memory pass: peak memory of the attention and GPT steps, measured in a fresh process.

It runs after all timings, since serving every block by mmap slows allocation-heavy code. The
worker process tells glibc to serve every allocation over 64 KiB by mmap from the start, so that
freed tensors leave the resident set and no freed heap memory hides an allocation from the
resident high-water mark.
"""
from __future__ import annotations

from typing import Any

import torch

from harness.bench.attention import add_memory, attention_step
from harness.bench.gpt_step import gpt_step
from harness.bench.measure import mmap_large_allocations, peak_memory_of


def memory_worker(device_name: str, threads: int, attention_rows: list[tuple[str, int, str]], gpt: bool) -> dict:
    """Runs in the fresh process: the peak of one call of each attention row and of one GPT step."""
    mmap = mmap_large_allocations()
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    out: dict[str, Any] = {"malloc_mmap_threshold_set": mmap, "attention": [], "gpt": None}
    for backend, t, dtype in attention_rows:
        step = attention_step(backend, t, device, getattr(torch, dtype))
        step()  # warm-up: lazily created state is not part of the peak
        out["attention"].append(peak_memory_of(step, device))
    if gpt:
        _model, step = gpt_step(device)
        step()  # creates the AdamW state
        out["gpt"] = peak_memory_of(step, device)
    return out


def measure_memory(results: dict[str, Any], device: torch.device) -> None:
    """Add peak_mem_bytes to the attention rows and the GPT result in ``results`` (and the exponents)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    att = results.get("attention")
    rows = [(r["backend"], r["seq_len"], att["shape"]["dtype"]) for r in att["rows"]] if att else []
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        mem = pool.submit(memory_worker, str(device), torch.get_num_threads(), rows, "gpt" in results).result()
    results["malloc_mmap_threshold_set"] = mem["malloc_mmap_threshold_set"]
    if att:
        add_memory(att, mem["attention"])
    if "gpt" in results:
        results["gpt"]["peak_mem_bytes"] = mem["gpt"]
