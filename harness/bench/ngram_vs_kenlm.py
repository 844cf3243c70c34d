"""Our Kneser-Ney estimator against KenLM's ``lmplz`` and ``query``, measured alike.

Both sides run as child processes on the same temporary text file, one sentence a line; each
child's wall time is taken around its start and exit, its max RSS and CPU time come from
``os.wait4`` (the kernel's accounting of that child alone). Rounds are interleaved (ours, lmplz at
its default -S, lmplz at a stated -S; the order flips each round) and the best of each is kept, so
load on a shared machine falls on all alike.

- ours: ``python -m harness.bench.ngram_child`` = interpreter start, package import (torch
  included, as every use of ``archs`` imports it), text file -> ids -> model. No ARPA write: that
  is measured once more in its own child and reported on its own line.
- lmplz: ``lmplz -o N --discount_fallback --text FILE --arpa /dev/null -T TMP`` (its ARPA is
  formatted and thrown away: lmplz cannot stop before writing), once without ``-S`` (its default:
  80% of physical memory) and once with ``-S`` given (``--lmplz-memory``).
- query: our model scores a test file (perplexity as ``query`` reports it, best of 3, model already
  in memory) against ``query -v summary`` on the ``build_binary`` (probing) file of our ARPA, the
  same model: KenLM's scoring time is its run on the test file minus its run on an empty file
  (the load), best of 3 each. The perplexities must agree.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

KIB = 1024


def run_child(cmd: list[str], stdin_path: str | None = None, env: dict | None = None) -> dict:
    """Wall time, max RSS and CPU seconds of one child process, and its stdout."""
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"child_{os.getpid()}_{time.monotonic_ns()}.out"
    with open(out_path, "w+") as out, open(os.devnull, "w") as err, \
            open(stdin_path or os.devnull) as stdin:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        out.seek(0)
        text = out.read()
    out_path.unlink()
    return {"wall_s": wall, "max_rss_bytes": usage.ru_maxrss * KIB, "cpu_s": usage.ru_utime + usage.ru_stime,
            "rc": proc.returncode, "stdout": text}


def kenlm_tool(name: str) -> str | None:
    """Path of a KenLM binary from $KENLM_BIN or PATH, else None."""
    import shutil

    if os.environ.get("KENLM_BIN"):
        path = Path(os.environ["KENLM_BIN"]) / name
        return str(path) if path.exists() else None
    return shutil.which(name)


def _child_env() -> dict:
    """The parent's environment with this checkout first on the path, one thread per numeric library."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _best(runs: list[dict]) -> dict:
    ok = [r for r in runs if r["rc"] == 0]
    if not ok:
        return {"rc": runs[-1]["rc"]}
    best = min(ok, key=lambda r: r["wall_s"])
    return {"wall_s": best["wall_s"], "cpu_s": best["cpu_s"], "rc": 0, "rounds": len(ok),
            "max_rss_bytes": max(r["max_rss_bytes"] for r in ok), "stdout": best["stdout"]}


def estimation_rounds(text: str, tmp: str, order: int, rounds: int, lmplz_memory: str) -> dict:
    """Best wall time (and the largest max RSS) of each side over interleaved rounds."""
    env = _child_env()
    sides = {"ours": [sys.executable, "-m", "harness.bench.ngram_child", text, "--order", str(order)]}
    lmplz = kenlm_tool("lmplz")
    if lmplz:
        common = [lmplz, "-o", str(order), "--discount_fallback", "-T", tmp, "--text", text, "--arpa", os.devnull]
        sides["lmplz_default"] = common
        sides[f"lmplz_S{lmplz_memory}"] = common + ["-S", lmplz_memory]
    runs: dict[str, list[dict]] = {k: [] for k in sides}
    for r in range(rounds):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            runs[name].append(run_child(sides[name], env=env))
    out = {k: _best(v) for k, v in runs.items()}
    if out["ours"].get("rc") == 0:
        out["ours"]["phases"] = json.loads(out["ours"].pop("stdout"))
    for k in out:
        out[k].pop("stdout", None)
    if not lmplz:
        out["lmplz_skipped"] = "KenLM's lmplz is not on PATH or in $KENLM_BIN"
    return out


def query_comparison(text: str, test: str, tmp: str, order: int) -> dict:
    """Our ARPA write and test-file scoring (one child), then KenLM query on the same model."""
    arpa = str(Path(tmp) / "ours.arpa")
    child = run_child([sys.executable, "-m", "harness.bench.ngram_child", text, "--order", str(order),
                       "--arpa", arpa, "--test", test], env=_child_env())
    if child["rc"] != 0:
        return {"error": f"our child exited with {child['rc']}"}
    ours = json.loads(child["stdout"])
    out = {"ours": {"arpa_write_s": ours["arpa_write_s"], "query_s": ours["query_s"], "query": ours["query"],
                    "max_rss_bytes_with_arpa_and_query": child["max_rss_bytes"]}}
    build, query = kenlm_tool("build_binary"), kenlm_tool("query")
    if not (build and query):
        out["kenlm_skipped"] = "KenLM's build_binary and query are not on PATH or in $KENLM_BIN"
        return out
    binary = str(Path(tmp) / "ours.binary")
    built = subprocess.run([build, arpa, binary], capture_output=True, text=True)
    if built.returncode != 0:
        out["kenlm_skipped"] = f"build_binary exited with {built.returncode}: {built.stderr.strip()[-200:]}"
        return out
    empty = Path(tmp) / "empty.txt"
    empty.write_text("")
    runs = {"test": [], "empty": []}
    for _ in range(3):
        for name, path in (("test", test), ("empty", str(empty))):
            runs[name].append(run_child([query, "-v", "summary", binary], stdin_path=path))
    best_test = min(runs["test"], key=lambda r: r["wall_s"])
    load = min(r["wall_s"] for r in runs["empty"])
    summary = dict(line.split(":\t", 1) for line in best_test["stdout"].splitlines() if ":\t" in line)
    out["kenlm"] = {"wall_s": best_test["wall_s"], "load_s": load, "query_s": max(best_test["wall_s"] - load, 1e-9),
                    "tokens": int(summary.get("Tokens", 0)), "max_rss_bytes": best_test["max_rss_bytes"],
                    "perplexity": float(summary.get("Perplexity including OOVs", "nan"))}
    return out
