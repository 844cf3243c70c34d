"""Files that readers on a shared filesystem can trust: written whole or not at all, readable by
colleagues, and no litter from a killed writer.

Every write goes to a temporary file in the target's folder and is renamed over the target
(``os.replace``), so a reader sees the old file or the new one, never half of one. ``mkstemp``
creates files 0600; before the rename the file gets the mode a plain ``open`` would give it
(0666 minus the umask), so records, reports and checkpoints are as readable as any other file.
A temporary file's name carries the host and process id of its writer: ``remove_orphans`` deletes
those whose writer is gone (same host, process not alive), or that are over a day old (another
host), and never the file of a writer still running.
"""
from __future__ import annotations

import os
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TMP_SUFFIX = ".tmp"
FOREIGN_ORPHAN_AGE_S = 24 * 3600  # a temp file from another host: its writer cannot be asked


def file_mode() -> int:
    """The mode ``open()`` would create a file with: 0666 minus the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _host() -> str:
    return socket.gethostname().split(".")[0].replace(".", "_") or "host"


@contextmanager
def atomic_target(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; renamed over ``path`` when the block
    ends normally, removed when it raises. For writers that want a file name (parquet, PNG, torch)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_host()}.{os.getpid()}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, fsync and a rename (never half a file)."""
    with atomic_target(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def _writer_gone(name: str, now: float, mtime: float) -> bool:
    parts = name[:-len(TMP_SUFFIX)].split(".")
    # .<target name>.<host>.<pid>.<random>.tmp; the target name may hold dots itself
    try:
        host, pid = parts[-3], int(parts[-2])
    except (IndexError, ValueError):
        return now - mtime > FOREIGN_ORPHAN_AGE_S
    if host != _host():
        return now - mtime > FOREIGN_ORPHAN_AGE_S
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def remove_orphans(*folders: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed writer left in ``folders``; returns what was removed."""
    removed, now = [], time.time()
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for p in folder.glob(f".*{TMP_SUFFIX}"):
            try:
                if p.is_file() and _writer_gone(p.name, now, p.stat().st_mtime):
                    p.unlink()
                    removed.append(p)
            except FileNotFoundError:  # its writer renamed it meanwhile
                pass
    return removed
