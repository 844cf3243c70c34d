"""Rebuild the comparison report from whatever records exist: ``python -m harness.report``."""
from __future__ import annotations

import os
from pathlib import Path

from archbench.errors import ArgumentParser, UserError, fail
from harness.report.build import build_report


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m harness.report", description=__doc__.splitlines()[0])
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
        if not os.access(results_dir, os.W_OK):
            raise UserError(f"results_dir '{results_dir}' cannot be written (permission denied); the report goes "
                            "there as report.md")
        from harness.config import check_report_target

        check_report_target(results_dir)
        path = build_report(results_dir)
    except OSError as e:
        fail(f"cannot write the report into '{results_dir}' ({e.strerror or e})")
    except UserError as e:
        fail(str(e))
    print(f"report: {path}")
    return 0
