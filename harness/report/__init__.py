"""The comparison report, rebuilt from whatever records exist: ``python -m harness.report [results_dir]``.

Reads every ``<results_dir>/runs/*.json`` (typed ``archbench.record.RunRecord``, older schemas
upgraded on read) into one pandas DataFrame (saved as runs.parquet and runs.csv), then writes
report.md with an environment stamp, the arch x task capability matrix, one leaderboard per task
(mean and 95% confidence interval over seeds, Student t; no-training reference rows beside it),
scaling fits (L(N) = a N^-alpha + c, bootstrap CIs), loss by context position, throughput and
memory, planned (estimated) runs apart, the runs that did not finish, and seaborn plots. Nothing
here computes a number the records do not hold, except the stated aggregates and fits.

Modules, each importing only the ones above it in this list (no cycles):

* ``frame``: records -> DataFrame; the schema-checked column names the sections read
* ``tables``: markdown tables, runs.parquet / runs.csv;  ``figures``: plot theme, the one PNG saver
* ``powerlaw``: the power-law fit and its bootstrap (no pandas)
* ``significance``: paired bootstrap of bits per byte over seeds and documents
* sections: ``environment``, ``capabilities``, ``leaderboard``, ``scaling``, ``context``,
  ``throughput``, ``planned``
* ``build``: report.md assembled from the sections;  ``cli``: the command line
"""
from harness.report.build import build_report
from harness.report.cli import main
from harness.report.frame import load_runs

__all__ = ["build_report", "load_runs", "main"]
