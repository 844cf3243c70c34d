"""Where a run executes and how fast that hardware could go.

MFU needs a peak. On CPU it is measured with an fp32 matmul probe at the run's thread count (cached
per thread count; harness/run.py probes again at the end of a run and keeps the higher); on a GPU it
comes from a table of datasheet dense peaks keyed by the device name. An unknown device gets no
peak and so no MFU: never a guess (torchtitan falls back to an A100's peak; we do not).
"""
from __future__ import annotations

import contextlib
import functools
import os
import platform
import subprocess
import sys
import time

import torch

from archbench.errors import UserError

DEVICES = ("auto", "cpu", "cuda")

# Dense (no sparsity) datasheet peaks in FLOP/s: (name substring, bf16/fp16 tensor core, fp32 non-tensor).
GPU_PEAKS = (
    ("H200", 989.4e12, 66.9e12),
    ("H100 PCIe", 756.0e12, 51.2e12),
    ("H100", 989.4e12, 66.9e12),  # SXM
    ("A100", 312.0e12, 19.5e12),
    ("L40S", 362.0e12, 91.6e12),
    ("L4", 121.0e12, 30.3e12),
    ("A10G", 70.0e12, 31.2e12),
    ("V100", 125.0e12, 15.7e12),
    ("RTX 4090", 165.2e12, 82.6e12),
    ("RTX 3090", 71.0e12, 35.6e12),
)


def resolve_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise UserError(f"unknown device '{name}'; valid: {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is visible to torch; use device=cpu or device=auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 autocast on GPUs; fp32 on CPU, where bf16 matmul is ~150x slower on this class of machine."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so a clock read after it times the work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: torch.dtype):
    """The mixed-precision context of a run: torch.autocast to ``dtype`` unless it is fp32."""
    return torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_model()


@functools.cache
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_matmul_peak(n: int = 1024, repeats: int = 8) -> float:
    """Best fp32 matmul rate at the current thread count (FLOP/s): the CPU's practical peak, probed
    once per thread count and process (``probe_cpu_peak`` probes afresh)."""
    return _cached_cpu_peak(torch.get_num_threads(), n, repeats)


@functools.cache
def _cached_cpu_peak(threads: int, n: int, repeats: int) -> float:
    return probe_cpu_peak(n, repeats)


def probe_cpu_peak(n: int = 1024, repeats: int = 8) -> float:
    """A fresh probe: the best of ``repeats`` fp32 n x n matmuls at the current thread count."""
    g = torch.Generator().manual_seed(0)  # its own generator: a probe never moves the run's seeded RNG
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    a @ b  # warm-up: thread pool start, page faults
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def peak_flops(device: torch.device, dtype: torch.dtype) -> tuple[float | None, str]:
    """(peak FLOP/s, how it was obtained); (None, why) when it is not known."""
    if device.type == "cpu":
        if dtype != torch.float32:
            return None, f"no CPU probe for {dtype}"
        return cpu_matmul_peak(), (f"measured: best of 8 fp32 1024x1024 matmuls at {torch.get_num_threads()} "
                                   "thread(s) in this process")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tensor_peak, fp32_peak in GPU_PEAKS:
            if key in name:
                if dtype in (torch.bfloat16, torch.float16):
                    return tensor_peak, f"datasheet dense {dtype} peak for '{key}'"
                return fp32_peak, f"datasheet fp32 peak for '{key}'"
        return None, f"unknown GPU '{name}': no peak, so no MFU"
    return None, f"unknown device type '{device.type}'"


def _proc_status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _release_free_heap() -> None:
    """glibc keeps freed heap pages resident; an earlier run's freed tensors would then be reused
    here without raising the resident set, hiding them from this run's peak. malloc_trim(0) returns
    every whole free page to the OS (madvise), so what this run touches counts again."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_memory(device: torch.device) -> int | None:
    """Start a per-run peak: CUDA's peak counter, or on Linux the process's resident high-water mark
    (VmHWM, reset to the current RSS through /proc/self/clear_refs). Returns the level now (bytes)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    _release_free_heap()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _proc_status_bytes("VmRSS:")


def peak_memory(device: torch.device, base: int | None = None) -> tuple[int, str]:
    """(peak bytes, what was measured). With ``base`` from reset_peak_memory on a Linux CPU: the
    resident high-water mark above the level at the reset, i.e. what this run added (free heap is
    handed back to the OS at the reset, so memory an earlier run in the same process freed counts
    again when this run touches it)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    above = peak_memory_above(device, base)
    if above is not None:
        return above, "rss_high_water_above_run_start"
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process_max_rss"


def peak_memory_above(device: torch.device, base: int | None) -> int | None:
    """Bytes at the peak since reset_peak_memory above the level it returned (``base``): CUDA's peak
    counter, or on Linux the resident high-water mark; None where neither can be read."""
    if base is None:
        return None
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) - base
    hwm = _proc_status_bytes("VmHWM:")
    return None if hwm is None else max(0, hwm - base)


def git_state() -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)

    try:
        sha = git("rev-parse", "HEAD")
        if sha.returncode != 0:
            return {"sha": None, "dirty": None}
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip() != ""
        return {"sha": sha.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def environment(device: torch.device) -> dict:
    return {
        "git": git_state(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device.type,
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "flush_denormal": flushes_denormals() if device.type == "cpu" else None,
        "cuda": torch.version.cuda,
    }


@contextlib.contextmanager
def denormals_flushed(on: bool):
    """Subnormal floats read and written as zero on the CPU (or not) inside, the caller's setting
    after. Set it before torch's first parallel op: Linux threads copy their creator's floating-point
    mode, so an intra-op pool started inside inherits it (one started earlier keeps its own)."""
    before = flushes_denormals()
    torch.set_flush_denormal(on)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def flushes_denormals() -> bool:
    """Whether this process treats subnormal floats as zero (torch.set_flush_denormal): read back,
    as the product of two small normal floats whose exact value is subnormal."""
    return bool((torch.tensor(1e-30) * torch.tensor(1e-10)).item() == 0.0)
