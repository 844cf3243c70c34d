"""How the benchmarks measure: time per call, peak memory of one call, growth exponents.

Warm-up calls come first and the clock is read after synchronizing the device (nanoGPT's
bench.py). Peak memory is harness/hardware.py's probe, the one the engine records runs with: on
CUDA torch.cuda.max_memory_allocated, on a Linux CPU the process's resident high-water mark
(/proc/self/status VmHWM, reset through /proc/self/clear_refs); here reported above the level
before the call.
"""
from __future__ import annotations

import ctypes
import math
import time
from typing import Any, Callable

import numpy as np
import torch

from harness import hardware

FIT_FROM = 512  # growth exponents are fitted over T >= this, where fixed overheads no longer dominate


def mmap_large_allocations() -> bool:
    """Make freed large CPU buffers leave the resident set, so the RSS high-water mark is a peak."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 16)) and bool(libc.mallopt(m_trim_threshold, 1 << 16))
    except OSError:
        return False


def peak_memory_of(fn: Callable[[], Any], device: torch.device) -> int | None:
    """Bytes above the starting level at the peak of one call of ``fn``; None where not measurable."""
    hardware.sync(device)
    base = hardware.reset_peak_memory(device)
    fn()
    hardware.sync(device)
    return hardware.peak_memory_above(device, base)


def time_of(fn: Callable[[], Any], device: torch.device, *, warmup: int = 1, repeats: int = 3,
            budget_s: float = 3.0) -> list[float]:
    """Seconds per call: ``warmup`` untimed calls, then up to ``repeats`` timed ones (fewer once
    ``budget_s`` is spent, at least one)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < repeats and (not times or sum(times) < budget_s):
        hardware.sync(device)
        t0 = time.perf_counter()
        fn()
        hardware.sync(device)
        times.append(time.perf_counter() - t0)
    return times


def fit_exponent(lengths, values) -> float | None:
    """k of values ~ lengths^k: least squares on log-log over lengths >= FIT_FROM."""
    pts = [(math.log(t), math.log(v)) for t, v in zip(lengths, values) if t >= FIT_FROM and v and v > 0]
    if len(pts) < 2:
        return None
    x, y = zip(*pts)
    return float(np.polyfit(x, y, 1)[0])
