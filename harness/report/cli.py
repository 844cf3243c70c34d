"""Rebuild the comparison report from whatever records exist: ``python -m harness.report``."""
from __future__ import annotations

import argparse
from pathlib import Path

from archbench.errors import UserError, fail
from harness.report.build import build_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.report", description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", nargs="?", default=None, help="folder holding runs/ (default: results)")
    parser.add_argument("--results-dir", dest="results_dir_opt", default=None)
    args = parser.parse_args(argv)
    results_dir = args.results_dir_opt or args.results_dir or "results"
    if results_dir.startswith("results_dir="):  # Hydra-style spelling, as the sweep takes it
        results_dir = results_dir.split("=", 1)[1]
    try:
        if not Path(results_dir).is_dir():
            raise UserError(f"results_dir '{results_dir}' does not exist; run a sweep first or pass the folder "
                            "that holds runs/")
        path = build_report(results_dir)
    except UserError as e:
        fail(str(e))
    print(f"report: {path}")
    return 0
