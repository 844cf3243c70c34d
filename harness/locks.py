"""One process at a time per run key: two sweeps into one results_dir never train the same config.

``run_lock`` takes an exclusive ``fcntl.flock`` on ``<results_dir>/locks/<run_key>.lock`` (the
kernel drops it when the process dies, SIGKILL included, so a lock is never stale). A second
process waits for it, then finds the first one's ok record and skips. flock works across processes
on one host and on NFS/Lustre mounts that support it.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from archbench.files import file_mode


def lock_path(results_dir, key: str) -> Path:
    return Path(results_dir) / "locks" / f"{key}.lock"


@contextmanager
def run_lock(results_dir, key: str, what: str = "") -> Iterator[None]:
    path = lock_path(results_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting: another process is running {what or key} ({path})", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
